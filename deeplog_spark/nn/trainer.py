"""Training loop for the Key and Value LSTMs (torch only, no Spark).

The loop takes *batch sources*, not a data library: any object with ``epoch(e)`` returning the
batches of epoch ``e`` and ``full()`` returning one pass over all rows. A batch is a dict of
tensors ``window`` [B, h], ``target`` [B] and ``weight`` [B] (how many identical windows the row
stands for; 1.0 when windows are not de-duplicated). Losses and metrics are weighted by it, so
training on distinct (window, target) pairs has the same expected gradient as the full set and
reports the same metrics. Under ``torch.distributed`` every rank runs the same number of steps
and metrics are summed across ranks, so all ranks take the same early-stopping decision.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from deeplog_spark.nn.model import CheckpointError

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


class BatchSource(Protocol):
    def epoch(self, epoch: int) -> Iterable[Batch]: ...
    def full(self) -> Iterable[Batch]: ...


@dataclasses.dataclass(frozen=True)
class FitOptions:
    task: str  # 'key' or 'value'
    epochs: int = 20
    lr: float = 1e-3
    patience: int = 5
    top_g: int = 9
    seed: int = 1337
    resume_path: str | None = None  # per-epoch state for resuming an interrupted run (rank 0 writes)
    # What "best epoch" means: lowest validation loss ("loss"), or highest validation top-g recall
    # ("top_g_recall"; ties go to the later epoch). With baseline=True the starting weights are
    # scored first and count as epoch 0, so an update that only makes things worse is not kept.
    monitor: str = "loss"
    baseline: bool = False
    # An epoch counts as an improvement only if it lowers the monitored loss by more than this
    # fraction of the best so far (0: any decrease). Long runs on big data plateau in tiny steps.
    min_delta: float = 0.0
    # Multiply the learning rate by this after every epoch that is not an improvement (1.0: never).
    # Constant-rate Adam stalls on a noise floor; halving on each plateau gets below it.
    lr_decay: float = 1.0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for repeatable runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _allreduce(values: list[float], device: torch.device) -> list[float]:
    if _world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _to_device(batch: Batch, device: torch.device, task: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = batch["window"].to(device, non_blocking=True)
    y = batch["target"].to(device, non_blocking=True)
    w = batch["weight"].to(device, non_blocking=True).float()
    if task == "key":
        return x.long(), y.long(), w
    return x.float(), y.float(), w


def _losses(model: nn.Module, task: str, x, y):
    out = model(x)
    if task == "key":
        return nn.functional.cross_entropy(out, y, reduction="none"), out
    return (out - y) ** 2, out


@torch.no_grad()
def evaluate(model: nn.Module, task: str, batches: Iterable[Batch], device: torch.device, top_g: int = 9) -> dict:
    """Weighted loss (and for the key model accuracy and top-g recall) over ``batches``."""
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # weight, loss*w, correct*w, in_top_g*w
    for batch in batches:
        x, y, w = _to_device(batch, device, task)
        loss, out = _losses(model, task, x, y)
        sums[0] += w.sum().item()
        sums[1] += (loss * w).sum().item()
        if task == "key":
            top = out.topk(min(top_g, out.shape[1]), dim=1).indices
            sums[2] += ((top[:, 0] == y).float() * w).sum().item()
            sums[3] += ((top == y.unsqueeze(1)).any(dim=1).float() * w).sum().item()
    total, loss_sum, correct, in_top = _allreduce(sums, device)
    if total == 0:
        return {"windows": 0}
    metrics = {"windows": int(total), "loss": loss_sum / total}
    if task == "key":
        metrics.update(accuracy=correct / total, top_g_recall=in_top / total)
    return metrics


def fit(model: nn.Module, opts: FitOptions, train: BatchSource, val: BatchSource | None,
        device: torch.device, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train with Adam and early stopping on the validation metric ``opts.monitor``; returns the history.

    The optimizer is built once. After the last epoch the weights of the best validation epoch
    are restored. With ``opts.resume_path`` the loop resumes from the last finished epoch.
    """
    rank, world = _world()
    params = model.parameters()
    optimizer = torch.optim.Adam(params, lr=opts.lr)
    history: list[dict] = []
    best = {"loss": math.inf, "epoch": -1, "state": copy.deepcopy(_unwrap(model).state_dict())}
    bad_epochs, start, baseline = 0, 0, None
    if opts.baseline and val is not None:
        baseline = evaluate(model, opts.task, val.full(), device, opts.top_g)
        best = {"loss": _monitored(opts, {f"val_{k}": v for k, v in baseline.items()}), "epoch": 0,
                "state": best["state"]}
        if rank == 0:
            log.info("%s: before training val_loss=%.5f val_top%d=%.4f", opts.task, baseline["loss"], opts.top_g,
                     baseline.get("top_g_recall", float("nan")))
    if opts.resume_path and Path(opts.resume_path).is_file():
        state = _load_resume(opts.resume_path)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, best, bad_epochs = state["history"], state["best"], state["bad_epochs"]
        torch.set_rng_state(state["rng"])  # dropout draws continue exactly where they stopped
        start = len(history)
        if rank == 0:
            log.info("%s: resuming after epoch %d from %s", opts.task, start, opts.resume_path)
    stopped = start > 0 and bad_epochs >= opts.patience

    for epoch in range(start, opts.epochs):
        if stopped:
            break
        model.train()
        t0 = time.perf_counter()
        sums = [0.0, 0.0, 0.0]  # weight, loss*w, rows
        for batch in train.epoch(epoch):
            x, y, w = _to_device(batch, device, opts.task)
            loss, _ = _losses(model, opts.task, x, y)
            wsum = w.sum()
            objective = (loss * w).sum() / wsum.clamp_min(1e-12)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            sums[0] += wsum.item()
            sums[1] += (loss.detach() * w).sum().item()
            sums[2] += len(y)
        weight, loss_sum, rows = _allreduce(sums, device)
        train_seconds = time.perf_counter() - t0
        val_metrics = evaluate(model, opts.task, val.full(), device, opts.top_g) if val is not None else {}
        seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(weight, 1e-12),
            "train_windows": int(weight),
            "train_rows": int(rows),
            "seconds": round(seconds, 3),
            "train_seconds": round(train_seconds, 3),
            "windows_per_s": round(weight / max(train_seconds, 1e-9), 1),
            "rows_per_s": round(rows / max(train_seconds, 1e-9), 1),
        }
        record.update({f"val_{k}": v for k, v in val_metrics.items()})
        monitored = _monitored(opts, record)
        margin = max(1e-7, opts.min_delta * abs(best["loss"])) if math.isfinite(best["loss"]) else 0.0
        if monitored < best["loss"] - margin or (opts.monitor == "top_g_recall" and monitored <= best["loss"]):
            best = {"loss": monitored, "epoch": epoch + 1, "state": copy.deepcopy(_unwrap(model).state_dict())}
            bad_epochs = 0
        else:
            bad_epochs += 1
            if opts.lr_decay < 1.0:
                for group in optimizer.param_groups:
                    group["lr"] *= opts.lr_decay
        record["lr_next"] = optimizer.param_groups[0]["lr"]
        history.append(record)
        mean_epoch = sum(h["seconds"] for h in history[start:]) / len(history[start:])
        record["eta_s"] = round(mean_epoch * (opts.epochs - epoch - 1), 1)
        if rank == 0:
            _log_epoch(opts, record)
            if opts.resume_path:
                _save_resume(opts.resume_path, model, optimizer, history, best, bad_epochs)
        if on_epoch is not None:
            on_epoch(record)
        if bad_epochs >= opts.patience:
            if rank == 0:
                log.info("%s: early stop after epoch %d (best epoch %d, val loss %.5f)",
                         opts.task, epoch + 1, best["epoch"], best["loss"])
            stopped = True

    _unwrap(model).load_state_dict(best["state"])
    return {"history": history, "best_epoch": best["epoch"], "best_loss": best["loss"],
            "early_stopped": stopped, "world_size": world, "baseline": baseline}


def _monitored(opts: FitOptions, record: dict) -> float:
    """The number early stopping minimises for this epoch's record."""
    if opts.monitor == "top_g_recall" and "val_top_g_recall" in record:
        return -record["val_top_g_recall"]
    if opts.monitor not in ("loss", "top_g_recall"):
        raise ValueError(f"monitor must be 'loss' or 'top_g_recall', got {opts.monitor!r}")
    return record.get("val_loss", record["train_loss"])


@torch.no_grad()
def prediction_errors(model: nn.Module, batches: Iterable[Batch], device: torch.device) -> tuple[float, float, int]:
    """Weighted mean and std of |prediction - target| of a value model (the threshold's mu, sigma)."""
    model.eval()
    s = [0.0, 0.0, 0.0]  # weight, sum(w*e), sum(w*e^2)
    for batch in batches:
        x, y, w = _to_device(batch, device, "value")
        err = (model(x) - y).abs().double()
        wd = w.double()
        s[0] += wd.sum().item()
        s[1] += (wd * err).sum().item()
        s[2] += (wd * err * err).sum().item()
    total, e1, e2 = _allreduce(s, device)
    if total == 0:
        raise ValueError("no windows to compute prediction errors on")
    mu = e1 / total
    return mu, math.sqrt(max(e2 / total - mu * mu, 0.0)), int(total)


def _log_epoch(opts: FitOptions, r: dict) -> None:
    extra = ""
    if "val_top_g_recall" in r:
        extra = f" val_acc={r['val_accuracy']:.4f} val_top{opts.top_g}={r['val_top_g_recall']:.4f}"
    log.info("%s epoch %d/%d train_loss=%.5f val_loss=%s%s %.1fs %.0f windows/s (%.0f rows/s) eta %.0fs",
             opts.task, r["epoch"], opts.epochs, r["train_loss"],
             f"{r['val_loss']:.5f}" if "val_loss" in r else "n/a", extra, r["seconds"],
             r["windows_per_s"], r["rows_per_s"], r["eta_s"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _save_resume(path: str, model, optimizer, history, best, bad_epochs) -> None:
    tmp = f"{path}.tmp"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "history": history, "best": best, "bad_epochs": bad_epochs, "rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def _load_resume(path: str) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path}: cannot resume from this file: {exc}") from exc


def model_config(cfg, task: str, vocab_size: int) -> dict:
    """Model constructor arguments for ``task`` from a :class:`deeplog_spark.config.Config`."""
    if task == "key":
        return {"vocab_size": vocab_size, "h": cfg.h, "embed_dim": cfg.embed_dim, "hidden": cfg.key_hidden,
                "layers": cfg.key_layers, "dropout": cfg.key_dropout}
    return {"h": cfg.h, "hidden": cfg.value_hidden, "layers": cfg.value_layers, "dropout": cfg.value_dropout}


def run_task(spec: dict, train: BatchSource, val: BatchSource | None, device: torch.device) -> dict:
    """Build, train (DDP when distributed) and summarise one model; the same on every path.

    ``spec``: task, model_config, epochs, lr, patience, top_g, seed; optional resume_path,
    init_state (weights to start from), monitor and baseline (see :class:`FitOptions`).
    Returns the fit result plus ``state_dict`` (CPU tensors) and, for the value model, the
    mean/std of |error| on the training rows (train-normal windows) for its threshold.
    """
    from deeplog_spark.nn.model import build_model

    seed_everything(spec["seed"])
    model = build_model(spec["task"], spec["model_config"])
    if spec.get("init_state") is not None:  # fine-tuning (online update) starts from these weights
        model.load_state_dict(spec["init_state"])
    model = model.to(device)
    if _world()[1] > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opts = FitOptions(task=spec["task"], epochs=spec["epochs"], lr=spec["lr"], patience=spec["patience"],
                      top_g=spec["top_g"], seed=spec["seed"], resume_path=spec.get("resume_path"),
                      monitor=spec.get("monitor", "loss"), baseline=spec.get("baseline", False),
                      min_delta=spec.get("min_delta", 0.0), lr_decay=spec.get("lr_decay", 1.0))
    result = fit(model, opts, train, val, device)
    if spec["task"] == "value":
        mu, sigma, n = prediction_errors(model, train.full(), device)
        result["train_errors"] = {"mu": mu, "sigma": sigma, "windows": n}
    result["state_dict"] = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    result["rank_digests"] = _gather_digests(result["state_dict"])
    if len(set(result["rank_digests"])) > 1:
        raise RuntimeError(f"ranks ended with different weights: {result['rank_digests']}")
    return result


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A hash of a model's weights (to check that DDP ranks agree)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _gather_digests(state_dict: dict[str, torch.Tensor]) -> list[str]:
    digest = state_digest(state_dict)
    if _world()[1] == 1:
        return [digest]
    out: list = [None] * _world()[1]
    dist.all_gather_object(out, digest)
    return out
