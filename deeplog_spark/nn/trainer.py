"""Training loop for the Key and Value LSTMs (torch only, no Spark).

The loop takes *batch sources*, not a data library: any object with ``epoch(e)`` returning the
batches of epoch ``e``, ``full()`` returning one pass over all rows and ``steps_per_epoch``.

- Key batches: ``window`` [B, h], ``target`` [B] and ``weight`` [B] (how many windows the row
  stands for). Losses and metrics are weighted by it, so distinct (window, target) rows with their
  counts give the same loss and metrics as all windows. Training batches of distinct windows carry
  ``soft`` [B, K] (each window's next-event law) instead of ``target``: the cross-entropy against it.
- Value batches: ``events`` [B, T], ``values`` [B, T] (z-scored log intervals), ``first`` [B] and
  ``length`` [B]: steps ``first`` .. ``length``-1 of each chunk are predicted (Gaussian NLL).

Under ``torch.distributed`` every rank runs the same number of steps and metrics are summed across
ranks, so all ranks take the same early-stopping decision. :class:`TrainJob` is the one typed
description of a training run, the same on the Spark path (``deeplog_spark.train.runner``) and the
Spark-free path (``deeplog_spark.nn.local``); :func:`init_distributed` sets up devices for both.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
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

from deeplog_spark.core.config import PRECISIONS, SCHEDULES
from deeplog_spark.core.errors import CheckpointError
from deeplog_spark.nn.model import build_model

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
MONITORS = ("loss", "top_g_recall")


class BatchSource(Protocol):
    steps_per_epoch: int

    def epoch(self, epoch: int) -> Iterable[Batch]: ...
    def full(self) -> Iterable[Batch]: ...


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """Everything one training run needs, checked when it is made (an unknown option is a TypeError).

    ``schedule``: ``onecycle`` (warm up to ``lr`` over the first 10 % of the steps, then anneal to
    ~0: the default, docs/training.md), ``plateau`` (multiply the rate by ``lr_decay``
    after each epoch without a ``min_delta`` gain) or ``constant``. ``monitor``: what the best
    epoch is (lowest validation loss, or highest top-g recall); with ``baseline`` the starting
    weights are scored first and count as epoch 0 (fine-tuning keeps them if nothing is better).
    ``precision``: the training forward passes in ``bf16`` (autocast; the weights, the optimizer,
    the losses and validation stay fp32), ``fp32``, or ``auto`` (:func:`autocast_dtype`).
    """

    task: str  # 'key' or 'value'
    model_config: dict
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 128
    patience: int = 5
    top_g: int = 9
    seed: int = 1337
    min_delta: float = 0.0
    lr_decay: float = 1.0
    schedule: str = "constant"
    count_sampling: bool = False  # key rows are distinct (window, target) rows: windows drawn by count ** sampling_power
    sampling_power: float = 1.0
    steps_per_epoch: int = 0  # count sampling: optimizer steps per epoch (0: one pass over the windows)
    use_gpu: bool = False
    loader_workers: int = 2
    resume_path: str | None = None
    result_path: str | None = None
    monitor: str = "loss"
    baseline: bool = False
    init_state: dict | None = None  # weights to start from (fine-tuning)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        checks = [
            (self.task in ("key", "value"), f"task must be 'key' or 'value', got {self.task!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.monitor in MONITORS, f"monitor must be one of {MONITORS}, got {self.monitor!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
            (self.epochs >= 1 and self.batch_size >= 1 and self.patience >= 0 and self.steps_per_epoch >= 0,
             "epochs and batch_size must be >= 1, patience and steps_per_epoch >= 0"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}"),
            (0.0 < self.lr_decay <= 1.0 and 0.0 <= self.min_delta < 1.0, "lr_decay in (0, 1], min_delta in [0, 1)"),
            (0.0 < self.sampling_power <= 1.0, f"sampling_power must be in (0, 1], got {self.sampling_power}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainJob: {message}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for repeatable runs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def init_distributed(use_gpu: bool) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process, with the process group up when world > 1.

    Reads the variables torchrun and TorchDistributor set (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE). On CPU each rank gets its share of the cores, so ranks do not oversubscribe.
    """
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("use_gpu=true but torch sees no CUDA device on this machine")
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_gpu else "gloo")
    return rank, world, device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype training forward passes autocast to (None: fp32) for ``precision`` on ``device``.

    ``auto`` is bf16 where the hardware computes it natively (a CUDA device with bf16, or a CPU with
    AMX or AVX512-BF16, where the key model trains faster at the same loss:
    ``bench/results/train_precision_575k.md``), else fp32 (emulated bf16 is usually slower than fp32).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    try:  # private helpers of torch.cpu (torch >= 2.1); without them, fp32
        native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    except AttributeError:
        native = False
    return torch.bfloat16 if native else None


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """A ``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op for None (fp32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


# -- losses ---------------------------------------------------------------------------------------


def _key_batch(batch: Batch, device: torch.device):
    x = batch["window"].to(device, non_blocking=True).long()
    y = batch["target"].to(device, non_blocking=True).long()
    w = batch["weight"].to(device, non_blocking=True).float()
    return x, y, w


def _value_batch(batch: Batch, device: torch.device):
    ev = batch["events"].to(device, non_blocking=True).long()
    z = batch["values"].to(device, non_blocking=True).float()
    first = batch["first"].to(device).long()
    length = batch["length"].to(device).long()
    width = int(length.max().item()) if len(length) else 0
    ev, z = ev[:, :max(width, 2)], z[:, :max(width, 2)]  # rows are padded to the chunk: cut what no row uses
    j = torch.arange(1, ev.shape[1], device=device).unsqueeze(0)  # local step predicted by output j-1
    mask = ((j >= first.unsqueeze(1)) & (j < length.unsqueeze(1))).float()
    return ev, z, mask


def value_residuals(model: nn.Module, ev: torch.Tensor, z: torch.Tensor):
    """(Gaussian NLL, standardized residual) of every predicted step [B, T-1]."""
    mean, logvar = model(ev, z)
    mean, logvar = mean.float(), logvar.float()  # fp32 losses under a bf16 autocast (a no-op in fp32)
    target = z[:, 1:]
    nll = 0.5 * (logvar + (target - mean) ** 2 * torch.exp(-logvar) + math.log(2 * math.pi))
    return nll, (target - mean).abs() * torch.exp(-0.5 * logvar)


def _batch_loss(model: nn.Module, task: str, batch: Batch, device: torch.device):
    """(sum of weighted losses, total weight, rows) of a batch, and the model output for metrics."""
    if task == "key" and "soft" in batch:  # distinct windows with their next-event law (CountSampledSource)
        x = batch["window"].to(device, non_blocking=True).long()
        soft = batch["soft"].to(device, non_blocking=True).float()
        w = batch["weight"].to(device, non_blocking=True).float()
        out = model(x).float()  # fp32 losses under a bf16 autocast (a no-op in fp32)
        loss = -(soft * torch.log_softmax(out, dim=1)[:, :soft.shape[1]]).sum(dim=1)
        return (loss * w).sum(), w.sum(), len(x), (out, None, w)
    if task == "key":
        x, y, w = _key_batch(batch, device)
        out = model(x).float()
        loss = nn.functional.cross_entropy(out, y, reduction="none")
        return (loss * w).sum(), w.sum(), len(y), (out, y, w)
    ev, z, mask = _value_batch(batch, device)
    nll, resid = value_residuals(model, ev, z)
    return (nll * mask).sum(), mask.sum(), len(ev), (resid, mask)


@torch.no_grad()
def evaluate(model: nn.Module, task: str, batches: Iterable[Batch], device: torch.device, top_g: int = 9) -> dict:
    """Weighted loss (key: and accuracy, top-g recall; value: mean standardized residual) over ``batches``."""
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # weight, loss*w, correct*w | residual sum, in_top_g*w
    for batch in batches:
        loss_sum, weight, _, extra = _batch_loss(model, task, batch, device)
        sums[0] += weight.item()
        sums[1] += loss_sum.item()
        if task == "key":
            out, y, w = extra
            top = out.topk(min(top_g, out.shape[1]), dim=1).indices
            sums[2] += ((top[:, 0] == y).float() * w).sum().item()
            sums[3] += ((top == y.unsqueeze(1)).any(dim=1).float() * w).sum().item()
        else:
            resid, mask = extra
            sums[2] += (resid * mask).sum().item()
    total, loss_sum, a, b = _allreduce(sums, device)
    if total == 0:
        return {"windows": 0}
    metrics = {"windows": int(total), "loss": loss_sum / total}
    if task == "key":
        metrics.update(accuracy=a / total, top_g_recall=b / total)
    else:
        metrics.update(mean_residual=a / total)
    return metrics


# -- the loop -------------------------------------------------------------------------------------


def _scheduler(job: TrainJob, optimizer, total_steps: int):
    if job.schedule != "onecycle" or total_steps < 20:  # too few steps to warm up and anneal: constant
        return None
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=job.lr, total_steps=max(total_steps, 1),
                                               pct_start=0.1, anneal_strategy="cos")


def fit(model: nn.Module, job: TrainJob, train: BatchSource, val: BatchSource | None,
        device: torch.device, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train with Adam and early stopping on the validation metric ``job.monitor``; returns the history.

    The optimizer (and schedule) is built once. After the last epoch the weights of the best
    validation epoch are restored. With ``job.resume_path`` the loop resumes from the last
    finished epoch.
    """
    rank, world = _world()
    amp = autocast_dtype(job.precision, device)
    if rank == 0:
        log.info("%s: training forward passes in %s", job.task, "bf16 (autocast)" if amp else "fp32")
    optimizer = adam(model.parameters(), job.lr, device)
    sched = _scheduler(job, optimizer, job.epochs * train.steps_per_epoch)
    history: list[dict] = []
    best = {"loss": math.inf, "epoch": -1, "state": copy.deepcopy(_unwrap(model).state_dict())}
    bad_epochs, start, baseline = 0, 0, None
    if job.baseline and val is not None:
        baseline = evaluate(model, job.task, val.full(), device, job.top_g)
        best = {"loss": _monitored(job, {f"val_{k}": v for k, v in baseline.items()}), "epoch": 0,
                "state": best["state"]}
        if rank == 0:
            log.info("%s: before training val_loss=%.5f val_top%d=%.4f", job.task, baseline["loss"], job.top_g,
                     baseline.get("top_g_recall", float("nan")))
    if job.resume_path and Path(job.resume_path).is_file():
        state = _load_resume(job.resume_path)
        _unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        history, best, bad_epochs = state["history"], state["best"], state["bad_epochs"]
        torch.set_rng_state(state["rng"])  # dropout draws continue exactly where they stopped
        start = len(history)
        if rank == 0:
            log.info("%s: resuming after epoch %d from %s", job.task, start, job.resume_path)
    stopped = start > 0 and bad_epochs >= job.patience

    for epoch in range(start, job.epochs):
        if stopped:
            break
        model.train()
        t0 = time.perf_counter()
        sums = [0.0, 0.0, 0.0]  # weight, loss*w, rows
        for batch in train.epoch(epoch):
            with autocast_context(device, amp):
                loss_sum, weight, rows, _ = _batch_loss(model, job.task, batch, device)
            objective = loss_sum / weight.clamp_min(1e-12)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            if sched is not None and sched.last_epoch + 1 < sched.total_steps:
                sched.step()
            sums[0] += weight.item()
            sums[1] += loss_sum.item()
            sums[2] += rows
        weight, loss_sum, rows = _allreduce(sums, device)
        train_seconds = time.perf_counter() - t0
        val_metrics = evaluate(model, job.task, val.full(), device, job.top_g) if val is not None else {}
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
        monitored = _monitored(job, record)
        margin = max(1e-7, job.min_delta * abs(best["loss"])) if math.isfinite(best["loss"]) else 0.0
        if monitored < best["loss"] - margin or (job.monitor == "top_g_recall" and monitored <= best["loss"]):
            best = {"loss": monitored, "epoch": epoch + 1, "state": copy.deepcopy(_unwrap(model).state_dict())}
            bad_epochs = 0
        else:
            bad_epochs += 1
            if job.schedule == "plateau" and job.lr_decay < 1.0:
                for group in optimizer.param_groups:
                    group["lr"] *= job.lr_decay
        record["lr_next"] = optimizer.param_groups[0]["lr"]
        history.append(record)
        mean_epoch = sum(h["seconds"] for h in history[start:]) / len(history[start:])
        record["eta_s"] = round(mean_epoch * (job.epochs - epoch - 1), 1)
        if rank == 0:
            _log_epoch(job, record)
            if job.resume_path:
                _save_resume(job.resume_path, model, optimizer, sched, history, best, bad_epochs)
        if on_epoch is not None:
            on_epoch(record)
        if bad_epochs >= job.patience:
            if rank == 0:
                log.info("%s: early stop after epoch %d (best epoch %d, val loss %.5f)",
                         job.task, epoch + 1, best["epoch"], best["loss"])
            stopped = True

    _unwrap(model).load_state_dict(best["state"])
    return {"history": history, "best_epoch": best["epoch"], "best_loss": best["loss"],
            "early_stopped": stopped, "world_size": world, "baseline": baseline,
            "precision": "bf16" if amp else "fp32"}


def adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """The training loop's optimizer: Adam, fused into one kernel for all parameters on CPU and CUDA.
    The same algorithm as the default (for-each) Adam in fewer operations per step; on the key model
    on 2 cores the two ran within the machine's noise of each other (``bench/key_step.py``)."""
    return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"))


def _monitored(job: TrainJob, record: dict) -> float:
    """The number early stopping minimises for this epoch's record."""
    if job.monitor == "top_g_recall" and "val_top_g_recall" in record:
        return -record["val_top_g_recall"]
    return record.get("val_loss", record["train_loss"])


@torch.no_grad()
def residual_stats(model: nn.Module, batches: Iterable[Batch], device: torch.device) -> tuple[float, float, int]:
    """Mean and std of the value model's standardized residuals over ``batches`` (the spec's mu, sigma)."""
    model.eval()
    s = [0.0, 0.0, 0.0]  # steps, sum(r), sum(r^2)
    for batch in batches:
        ev, z, mask = _value_batch(batch, device)
        _, resid = value_residuals(model, ev, z)
        r = resid.double() * mask
        s[0] += mask.sum().item()
        s[1] += r.sum().item()
        s[2] += (r * r).sum().item()
    total, e1, e2 = _allreduce(s, device)
    if total == 0:
        raise ValueError("no steps to compute residuals on")
    mu = e1 / total
    return mu, math.sqrt(max(e2 / total - mu * mu, 0.0)), int(total)


def _log_epoch(job: TrainJob, r: dict) -> None:
    extra = ""
    if "val_top_g_recall" in r:
        extra = f" val_acc={r['val_accuracy']:.4f} val_top{job.top_g}={r['val_top_g_recall']:.4f}"
    log.info("%s epoch %d/%d train_loss=%.5f val_loss=%s%s lr=%.2g %.1fs %.0f windows/s (%.0f rows/s) eta %.0fs",
             job.task, r["epoch"], job.epochs, r["train_loss"],
             f"{r['val_loss']:.5f}" if "val_loss" in r else "n/a", extra, r["lr_next"], r["seconds"],
             r["windows_per_s"], r["rows_per_s"], r["eta_s"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _save_resume(path: str, model, optimizer, sched, history, best, bad_epochs) -> None:
    tmp = f"{path}.tmp"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "history": history, "best": best, "bad_epochs": bad_epochs, "rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)


def _load_resume(path: str) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path}: cannot resume from this file: {exc}") from exc


def run_task(job: TrainJob, train: BatchSource, val: BatchSource | None, device: torch.device) -> dict:
    """Build, train (DDP when distributed) and summarise one model; the same on every path.

    Returns the fit result plus ``state_dict`` (CPU tensors), the ranks' weight digests (checked to
    be equal) and, for the value model, the mean/std of its standardized residuals on the training
    rows (train-normal sessions): the spec's per-step threshold mu + k*sigma.
    """
    seed_everything(job.seed)
    model = build_model(job.task, job.model_config)
    if job.init_state is not None:  # fine-tuning (online update) starts from these weights
        model.load_state_dict(job.init_state)
    model = model.to(device)
    if _world()[1] > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    result = fit(model, job, train, val, device)
    if job.task == "value":
        mu, sigma, n = residual_stats(_unwrap(model), train.full(), device)
        result["train_errors"] = {"mu": mu, "sigma": sigma, "steps": n}
    result["state_dict"] = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    result["rank_digests"] = _gather_digests(result["state_dict"])
    if len(set(result["rank_digests"])) > 1:
        raise RuntimeError(f"ranks ended with different weights: {result['rank_digests']}")
    return result


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A hash of a model's weights (to check that DDP ranks agree)."""
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
