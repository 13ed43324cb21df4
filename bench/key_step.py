"""Where a training step of the Key LSTM spends its time: variants of the step, interleaved in one process.

    .venv/bin/python bench/key_step.py --tables_root generated/bench/work_575k/warehouse --name 575k

Reads the distinct (window, next) train rows of a kept pipeline's tables with delta-rs (the rows
the product trains on), draws the product's batches (``CountSampledSource``: ``batch_size`` windows
by count ** ``sampling_power``) and times the product's step (``_batch_loss`` under the training
precision's autocast, backward, optimizer step) on one torch thread, as the key model trains beside
the value model. Variants, each its own model, run in blocks of 20 steps, in turn (the order
reversed every other round) so that the machine's drift falls on all of them alike:

- ``product``: the trainer's step (``deeplog_spark.nn.trainer.adam``: Adam fused into one kernel);
- ``adam_foreach``: the same with PyTorch's default (for-each) Adam;
- ``no_dropout``: the product's step without the LSTM's dropout between its layers (a bound on
  what the dropout masks cost; not a recipe);
- ``two_threads``: the product's step on 2 torch threads (its blocks only), as when the key model
  trains alone on 2 cores.

Writes ``bench/results/key_step_<name>.{json,md}``: the median and the fastest milliseconds per step.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from deeplog_spark.core.config import Config, parse_overrides
from deeplog_spark.nn.local import key_rows, read_delta
from deeplog_spark.nn.model import KeyLSTM, KeyModelConfig
from deeplog_spark.nn.sources import CountSampledSource, key_columns
from deeplog_spark.nn.trainer import _batch_loss, adam, autocast_context, autocast_dtype
from deeplog_spark.train.job import markers

from _common import command, options, write_results

VARIANTS = ("product", "adam_foreach", "no_dropout", "two_threads")
BLOCK = 20


def _variant(name: str, cfg: Config, vocab: int):
    torch.manual_seed(cfg.seed)
    model = KeyLSTM(KeyModelConfig(vocab_size=vocab, h=cfg.h, embed_dim=cfg.embed_dim, hidden=cfg.key_hidden,
                                   layers=cfg.key_layers, dropout=0.0 if name == "no_dropout" else cfg.key_dropout,
                                   markers=cfg.session_markers))
    opt = (torch.optim.Adam(model.parameters(), lr=cfg.lr) if name == "adam_foreach"
           else adam(model.parameters(), cfg.lr, torch.device("cpu")))
    return model.train(), opt


def main() -> None:
    opts, args = options({"name": "bench", "rounds": "16"})
    name, rounds = (opts[o] for o in ("name", "rounds"))
    cfg = Config.load(overrides=parse_overrides(args))
    torch.set_num_threads(1)
    traces, _ = read_delta(Path(cfg.tables_root) / "traces", ["split", "label", "events"])
    vocab = int(max(read_delta(Path(cfg.tables_root) / "templates", ["event_id"])[0].column("event_id").to_pylist()))
    source = CountSampledSource(key_columns(*key_rows(traces, "train", cfg.h, markers(cfg, vocab))),
                                int(rounds) * BLOCK, batch_size=cfg.batch_size, seed=cfg.seed, power=cfg.sampling_power)
    batches = list(source.epoch(0))
    device, amp = torch.device("cpu"), autocast_dtype(cfg.train_precision, torch.device("cpu"))
    models = {v: _variant(v, cfg, vocab) for v in VARIANTS}
    ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(int(rounds)):
        block = batches[r * BLOCK:(r + 1) * BLOCK]
        for v in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            model, opt = models[v]
            torch.set_num_threads(2 if v == "two_threads" else 1)
            t0 = time.perf_counter()
            for b in block:
                with autocast_context(device, amp):
                    loss_sum, weight, _, _ = _batch_loss(model, "key", b, device)
                opt.zero_grad(set_to_none=True)
                (loss_sum / weight.clamp_min(1e-12)).backward()
                opt.step()
                weight.item(), loss_sum.item()  # the trainer reads both every step
            ms[v].append((time.perf_counter() - t0) / len(block) * 1e3)
    out = {"name": name, "command": command(__file__),
           "precision": "bf16" if amp else "fp32", "batch_size": cfg.batch_size,
           "rows_per_step": round(statistics.mean(len(b["window"]) for b in batches), 1), "steps_per_block": BLOCK,
           "rounds": int(rounds),
           "variants": {v: {"median_ms": round(statistics.median(x[1:]), 2), "min_ms": round(min(x), 2),
                            "blocks_ms": [round(t, 2) for t in x]} for v, x in ms.items()}}
    write_results(f"key_step_{name}", out, markdown(out))


def markdown(out: dict) -> str:
    base = out["variants"]["product"]["median_ms"]
    lines = [f"# The Key LSTM's training step ({out['name']})", "",
             f"Command: `.venv/bin/python {out['command']}`. One process, 1 torch thread (but `two_threads`), {out['precision']} "
             f"forward passes, {out['batch_size']} windows drawn per step ({out['rows_per_step']} distinct rows on "
             f"average); {out['rounds']} rounds of {out['steps_per_block']} steps per variant, in turn. Median over "
             "the rounds after the first.", "",
             "| variant | median ms per step | fastest block ms per step | median / product |", "|---|---|---|---|"]
    lines += [f"| {v} | {x['median_ms']:.2f} | {x['min_ms']:.2f} | {x['median_ms'] / base:.3f} |"
              for v, x in out["variants"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
