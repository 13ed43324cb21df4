"""Benchmark: how fast each training recipe reaches the full-data validation loss of the Key LSTM.

    .venv/bin/python bench/train_speed.py --tables_root generated/bench/work_57k/warehouse --name 57k \\
        --session_markers false --eval_steps 250 --target_from bench/results/fulldata_57k_key_history.json \\
        --only b2048_lr1e-2_3000,b512_lr1e-2_2000_p1,b512_lr1e-2_2000_p0.5,b512_lr1e-2_2500_p0.5

Reads the ``traces`` table with delta-rs (no Spark; the rows are those the Spark job trains on,
``deeplog_spark.nn.local``) and trains the Key LSTM, one recipe after another in this process,
on the same distinct (window, next) rows of the train-normal sessions, validating on the val-normal
rows every ``--eval_steps`` steps (a tenth of that for the full-batch recipes, whose steps each see every
window; count-weighted, so the loss is the loss over all windows):

- ``spec``: the DeepLog spec's training, every window once per epoch in batches of 128, Adam at a
  constant 1e-3, 20 epochs (the full-data reference; its best validation loss is the target);
  ``--target_from`` takes that target from a committed full-data run instead (checked to have been
  validated on as many windows as this val split has);
- candidates: distinct windows drawn by count ** sampling power (each step ``batch`` draws,
  deduplicated, each window against its next-event law: ``CountSampledSource``), Adam with a
  one-cycle schedule to a peak rate, a fixed number of steps.
- full-batch recipes (``FULL_BATCH``): every step is the exact count-weighted loss over all
  distinct windows against their next-event laws (the full-data training loss), without dropout
  (a deterministic objective, as L-BFGS's line search needs): Adam with a one-cycle schedule, or
  L-BFGS with a strong-Wolfe line search (``steps`` = its iterations).

``--precisions fp32,bf16,bf16,fp32`` runs each candidate in those training precisions
(``train_precision``: bf16 autocast forward passes), in that order, each run a row of its own.

Writes ``bench/results/train_speed_<name>.{json,md}``: per recipe the best validation loss, the
seconds to reach the target (if it does) and the whole curve. Timings: one process, the torch
threads of this machine, nothing else running.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from deeplog_spark.core.config import Config, parse_overrides
from deeplog_spark.nn.local import key_rows, read_delta
from deeplog_spark.nn.model import KeyLSTM, KeyModelConfig
from deeplog_spark.nn.sources import ArraySource, CountSampledSource, key_columns
from deeplog_spark.nn.trainer import _batch_loss, adam, autocast_context, autocast_dtype, evaluate, seed_everything
from deeplog_spark.train.job import markers

from _common import command, options, write_results

#: name -> (draws per step, peak lr, steps, sampling power); the spec reference is run besides.
CANDIDATES = {
    "b2048_lr1e-2_3000": (2048, 1e-2, 3000, 1.0),  # the recipe before sampling_power (12 epochs of 250 steps)
    "b512_lr1e-2_2000_p1": (512, 1e-2, 2000, 1.0),
    "b512_lr1e-2_2000_p0.5": (512, 1e-2, 2000, 0.5),
    "b512_lr1e-2_2500_p0.5": (512, 1e-2, 2500, 0.5),  # conf/deeplog.toml: 10 epochs of 250 steps
    "b512_lr1e-2_2000_p0.6": (512, 1e-2, 2000, 0.6),
    # fewer steps at a higher peak rate (bench/results/train_speed_575k_sweep.md)
    "b512_lr2e-2_2000_p0.5": (512, 2e-2, 2000, 0.5),
    "b512_lr2e-2_1500_p0.5": (512, 2e-2, 1500, 0.5),
    "b512_lr3e-2_2000_p0.5": (512, 3e-2, 2000, 0.5),
    "b1024_lr2e-2_1250_p0.5": (1024, 2e-2, 1250, 0.5),
}

#: name -> (optimizer, peak lr, steps): full-batch training over every distinct window.
FULL_BATCH = {
    "full_adam_lr2e-2_250": ("adam", 2e-2, 250),
    "full_lbfgs_200": ("lbfgs", 1.0, 200),
}


def _model(cfg: Config, vocab: int) -> KeyLSTM:
    return KeyLSTM(KeyModelConfig(vocab_size=vocab, h=cfg.h, embed_dim=cfg.embed_dim, hidden=cfg.key_hidden,
                                  layers=cfg.key_layers, dropout=cfg.key_dropout, markers=cfg.session_markers))


def _val(model, val) -> float:
    return evaluate(model, "key", val.full(), torch.device("cpu"))["loss"]


def run_candidate(cfg, vocab, train_cols, val, batch, lr, steps, power, eval_steps, precision="fp32") -> dict:
    """A candidate recipe, its forward passes in ``precision`` (the trainer's autocast, ``train_precision``)."""
    seed_everything(cfg.seed)
    amp = autocast_dtype(precision, torch.device("cpu"))
    model = _model(cfg, vocab)
    opt = adam(model.parameters(), lr, torch.device("cpu"))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    src = CountSampledSource(train_cols, steps, batch_size=batch, seed=cfg.seed, power=power)
    curve, t_train, step = [], 0.0, 0
    for b in src.epoch(0):
        t0 = time.perf_counter()
        model.train()
        with autocast_context(torch.device("cpu"), amp):
            loss_sum, weight, _, _ = _batch_loss(model, "key", b, torch.device("cpu"))
        opt.zero_grad()
        (loss_sum / weight).backward()
        opt.step()
        if step + 1 < steps:
            sched.step()
        step += 1
        t_train += time.perf_counter() - t0
        if step % eval_steps == 0 or step == steps:
            curve.append({"step": step, "seconds": round(t_train, 2), "val_loss": _val(model, val)})
    return {"batch": batch, "lr": lr, "steps": steps, "sampling_power": power, "schedule": "onecycle",
            "precision": "bf16" if amp else "fp32", "curve": curve}


def run_full_batch(cfg, vocab, train_cols, val, method: str, lr: float, steps: int, eval_steps: int) -> dict:
    """Full-batch training (``FULL_BATCH``): each step the loss over every distinct window, weighted
    by its count (the training loss over all windows), the model in eval mode (no dropout)."""
    seed_everything(cfg.seed)
    model = _model(cfg, vocab)
    grouped = CountSampledSource(train_cols, 1, batch_size=1, seed=cfg.seed)
    x, soft, share = grouped.windows.long(), grouped.soft, (grouped.counts / grouped.counts.sum()).float()

    def loss() -> torch.Tensor:
        model.eval()
        return -((soft * torch.log_softmax(model(x), dim=1)[:, :soft.shape[1]]).sum(dim=1) * share).sum()

    curve, t_train, done = [], 0.0, 0
    if method == "lbfgs":
        opt = torch.optim.LBFGS(model.parameters(), lr=lr, max_iter=eval_steps, history_size=50,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            value = loss()
            value.backward()
            return value

        while done < steps:
            opt.param_groups[0]["max_iter"] = min(eval_steps, steps - done)
            t0 = time.perf_counter()
            opt.step(closure)
            t_train += time.perf_counter() - t0
            done += opt.param_groups[0]["max_iter"]
            curve.append({"step": done, "seconds": round(t_train, 2), "val_loss": _val(model, val)})
    else:
        opt = adam(model.parameters(), lr, torch.device("cpu"))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
        for done in range(1, steps + 1):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss().backward()
            opt.step()
            if done < steps:
                sched.step()
            t_train += time.perf_counter() - t0
            if done % eval_steps == 0 or done == steps:
                curve.append({"step": done, "seconds": round(t_train, 2), "val_loss": _val(model, val)})
    return {"batch": f"all {len(x):,} windows", "lr": lr, "steps": steps, "sampling_power": "",
            "schedule": "L-BFGS, strong Wolfe" if method == "lbfgs" else "onecycle, full batch", "curve": curve}


def run_spec(cfg, vocab, train_cols, val, epochs: int) -> dict:
    """Every window once per epoch (rows repeated by their counts), batch 128, constant lr 1e-3."""
    seed_everything(cfg.seed)
    model = _model(cfg, vocab)
    opt = adam(model.parameters(), 1e-3, torch.device("cpu"))
    reps = train_cols["weight"].astype(np.int64)
    cols = {"window": np.repeat(train_cols["window"], reps, axis=0), "target": np.repeat(train_cols["target"], reps)}
    src = ArraySource(key_columns(cols["window"], cols["target"]), batch_size=128, seed=cfg.seed)
    curve, t_train = [], 0.0
    for e in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for b in src.epoch(e):
            loss = torch.nn.functional.cross_entropy(model(b["window"].long()), b["target"].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
        t_train += time.perf_counter() - t0
        curve.append({"epoch": e + 1, "seconds": round(t_train, 2), "val_loss": _val(model, val)})
        print(f"spec epoch {e + 1}: val {curve[-1]['val_loss']:.4f} at {t_train:.0f}s", flush=True)
    return {"batch": 128, "lr": 1e-3, "epochs": epochs, "schedule": "constant", "windows_per_epoch": len(cols["target"]),
            "curve": curve}


def main() -> None:
    # precisions: the candidates' training precisions (train_precision), each a recipe of its own: fp32,bf16;
    # target_from: the target from a committed full-data run (its key history) instead of running the spec here
    opts, args = options({"name": "bench", "spec_epochs": "20", "eval_steps": "100", "only": "", "precisions": "fp32",
                          "target_from": ""})
    name, spec_epochs, eval_steps, only, precisions, target_from = (
        opts[k] for k in ("name", "spec_epochs", "eval_steps", "only", "precisions", "target_from"))
    cfg = Config.load(overrides=parse_overrides(args))
    torch.set_num_threads(os.cpu_count() or 1)
    traces, version = read_delta(Path(cfg.tables_root) / "traces", ["split", "label", "events"])
    vocab = int(max(read_delta(Path(cfg.tables_root) / "templates", ["event_id"])[0].column("event_id").to_pylist()))
    m = markers(cfg, vocab)
    train_cols = key_columns(*key_rows(traces, "train", cfg.h, m))
    val = ArraySource(key_columns(*key_rows(traces, "val", cfg.h, m)), batch_size=4096)
    out = {"name": name, "command": command(__file__), "torch_threads": torch.get_num_threads(),
           "train_rows": len(train_cols["target"]), "train_windows": int(train_cols["weight"].sum()),
           "val_rows": len(val), "h": cfg.h, "session_markers": cfg.session_markers, "recipes": {}}
    print(f"{out['train_rows']} distinct training rows ({out['train_windows']} windows), {len(val)} val rows", flush=True)
    if not only or "spec" in only.split(","):
        out["recipes"]["spec"] = run_spec(cfg, vocab, train_cols, val, int(spec_epochs))
    for key, (batch, lr, steps, power) in CANDIDATES.items():
        if only and key not in only.split(","):
            continue
        seen: dict[str, int] = {}
        for precision in precisions.split(","):  # a precision named twice runs twice (side-by-side repeats)
            seen[precision] = seen.get(precision, 0) + 1
            label = key if precisions == "fp32" else f"{key} {precision}" + (f" #{seen[precision]}" if seen[precision] > 1 else "")
            out["recipes"][label] = run_candidate(cfg, vocab, train_cols, val, batch, lr, steps, power, int(eval_steps),
                                                  precision)
            best = min(c["val_loss"] for c in out["recipes"][label]["curve"])
            print(f"{label}: best val {best:.4f} in {out['recipes'][label]['curve'][-1]['seconds']:.0f}s", flush=True)
    for key, (method, lr, steps) in FULL_BATCH.items():
        if only and key not in only.split(","):
            continue
        out["recipes"][key] = run_full_batch(cfg, vocab, train_cols, val, method, lr, steps, int(eval_steps) // 10 or 1)
        best = min(c["val_loss"] for c in out["recipes"][key]["curve"])
        print(f"{key}: best val {best:.4f} in {out['recipes'][key]['curve'][-1]['seconds']:.0f}s", flush=True)
    target = min(c["val_loss"] for c in out["recipes"]["spec"]["curve"]) if "spec" in out["recipes"] else None
    if target_from:
        ref = json.loads(Path(target_from).read_text())
        if ref["history"][-1].get("val_windows") != int(val.columns["weight"].sum()):
            raise SystemExit(f"{target_from} was validated on {ref['history'][-1].get('val_windows')} windows, "
                             f"these val rows stand for {int(val.columns['weight'].sum())}: not the same val split")
        target = float(ref["best_loss"])
        out["target_from"] = target_from
    for r in out["recipes"].values():
        r["best_val_loss"] = min(c["val_loss"] for c in r["curve"])
        r["seconds"] = r["curve"][-1]["seconds"]
        hit = next((c for c in r["curve"] if target is not None and c["val_loss"] <= target), None)
        r["seconds_to_target"] = hit["seconds"] if hit else None
    out["target_val_loss"] = target
    write_results(f"train_speed_{name}", out, markdown(out))


def markdown(out: dict) -> str:
    lines = [f"# Key LSTM training recipes: {out['name']}", "", f"Command: `.venv/bin/python {out['command']}`.", "",
             f"{out['train_rows']:,} distinct (window, next) training rows standing for {out['train_windows']:,} windows "
             f"(h={out['h']}, session markers {'on' if out['session_markers'] else 'off'}); {out['val_rows']:,} val rows, "
             f"count-weighted loss. {out['torch_threads']} torch threads, training time only (validation excluded).", "",
             f"Target: the best validation loss of the spec's full-data training, **{out['target_val_loss']:.4f}**"
             + (f" (`{out['target_from']}`, the same val split)" if out.get("target_from") else "")
             if out["target_val_loss"] is not None else "No spec reference in this run.", "",
             "| recipe | batch | peak lr | schedule | sampling power | precision | steps / epochs | best val loss | seconds | "
             "seconds to target |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in out["recipes"].items():
        span = f"{r['epochs']} epochs" if "epochs" in r else f"{r['steps']} steps"
        hit = "" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.0f}"
        lines.append(f"| {key} | {r['batch']} | {r['lr']:g} | {r['schedule']} | {r.get('sampling_power', '')} | {r.get('precision', 'fp32')} | {span} | {r['best_val_loss']:.4f} | "
                     f"{r['seconds']:.0f} | {hit} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
