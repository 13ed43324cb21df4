"""The training job and the run's bookkeeping, shared by both training paths (no Spark import).

The Spark job (:mod:`deeplog_spark.train.runner`, a feed + TorchDistributor) and the Spark-free
trainer (:mod:`deeplog_spark.nn.local`, for GPU machines without Java) build their
:class:`~deeplog_spark.nn.trainer.TrainJob`, run id, checkpoint metadata, batch sources and run
files here, so a setting reaches the model the same way on both and both write the same run.
An option neither knows is an error (``TrainJob`` is a frozen dataclass).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from deeplog_spark.core.config import Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.names import marker_ids
from deeplog_spark.core.runs import write_json
from deeplog_spark.evaluate.plots import plot_history
from deeplog_spark.nn.model import build_model, save_checkpoint
from deeplog_spark.nn.sources import ArraySource, CountSampledSource
from deeplog_spark.nn.trainer import TrainJob

#: Config keys that define a trained model; with the input table's path and version they make the run id.
RUN_KEYS = ("h", "session_markers", "embed_dim", "key_hidden", "key_layers", "key_dropout", "value_hidden",
            "value_layers", "value_dropout", "value_event_dim", "value_chunk", "value_batch_size", "value_epochs", "batch_size", "lr", "lr_decay",
            "lr_schedule", "epochs", "patience", "min_delta", "distinct_windows", "sampling_power", "steps_per_epoch",
            "max_train_rows", "max_val_rows", "seed", "train_ratio", "val_ratio", "test_ratio", "num_processes",
            "use_gpu", "train_precision")

#: Config keys a training reads that do not change the model it trains (so they stay out of the run
#: id), with the reason. ``tests/test_training.py`` checks that a training reads no other key.
NOT_RUN_KEYS = {
    "top_g": "only the history's val top-g recall, a report",
    "loader_workers": "how Petastorm reads the rows, not which",
    "feed": "how the rows reach the ranks, not which (in-memory tables train the same weights either way)",
    "k_sigma": "the value model's reported threshold; detection takes its own --k_sigma",
    "pca_max_events": "a limit checked before the training; it changes no model",
}


def markers(cfg: Config, vocab_size: int) -> tuple[int, int] | None:
    """The session marker ids for ``vocab_size`` when the config frames sessions (else None)."""
    return marker_ids(vocab_size) if cfg.session_markers else None


def model_config(cfg: Config, task: str, vocab_size: int) -> dict:
    """Model constructor arguments (``deeplog_spark.nn.model``) for ``task`` from the config."""
    if task == "key":
        return {"vocab_size": vocab_size, "h": cfg.h, "embed_dim": cfg.embed_dim, "hidden": cfg.key_hidden,
                "layers": cfg.key_layers, "dropout": cfg.key_dropout, "markers": cfg.session_markers}
    if task == "value":
        return {"vocab_size": vocab_size, "event_dim": cfg.value_event_dim, "hidden": cfg.value_hidden,
                "layers": cfg.value_layers, "dropout": cfg.value_dropout, "chunk": cfg.value_chunk, "context": cfg.h}
    raise ValueError(f"task must be 'key' or 'value', got {task!r}")


def train_job(cfg: Config, task: str, vocab_size: int, out_dir: Path | None = None, **overrides):
    """The :class:`TrainJob` of ``task`` from the config; ``overrides`` are TrainJob fields (fine-tuning)."""
    key = task == "key"
    fields = {"task": task, "model_config": model_config(cfg, task, vocab_size),
              "epochs": cfg.epochs if key else cfg.value_epochs, "lr": cfg.lr,
              "batch_size": cfg.batch_size if key else cfg.value_batch_size, "patience": cfg.patience, "top_g": cfg.top_g, "seed": cfg.seed,
              "min_delta": cfg.min_delta, "lr_decay": cfg.lr_decay, "schedule": cfg.lr_schedule,
              "count_sampling": task == "key" and cfg.distinct_windows,
              "steps_per_epoch": cfg.steps_per_epoch if task == "key" and cfg.distinct_windows else 0,
              "sampling_power": cfg.sampling_power,
              "use_gpu": cfg.use_gpu, "loader_workers": cfg.loader_workers, "precision": cfg.train_precision}
    if out_dir is not None:
        fields.update(resume_path=str((out_dir / f"{task}_resume.pt").resolve()),
                      result_path=str((out_dir / f"{task}_result.pt").resolve()))
    fields.update(overrides)
    return TrainJob(**fields)


def run_id(cfg: Config, traces_path: str, traces_version: int, traces_table_id: str) -> str:
    """The run id: a hash of the model-defining config keys and the traces table (absolute path, Delta
    table id and version), so the same settings on the same data land in the same run, and only
    there does a crashed training resume. A traces table deleted and ingested again is a new table
    id, so a new run, even at the same version."""
    return cfg.fingerprint(RUN_KEYS, extra={"traces": os.path.abspath(traces_path), "traces_version": traces_version,
                                            "traces_table_id": traces_table_id})


def train_vocab(ids: Iterable[int], vocab_size: int) -> list[int]:
    """The event ids seen in the train-normal sessions (within 1..vocab_size), sorted."""
    return sorted({int(e) for e in ids if 1 <= e <= vocab_size})


def model_extra(run_id_: str, traces_version: int, vocab_size: int, vocab: list[int], trained_by: str) -> dict:
    """What a checkpoint records besides its weights: its run, the data it was trained on and its vocabulary."""
    return {"run_id": run_id_, "traces_version": traces_version, "vocab_size": vocab_size, "train_vocab": vocab,
            "trained_by": trained_by}


def interval_norm(mean: float, std: float, steps: int) -> dict:
    """``value_norm.json``: how the value model's intervals are standardized."""
    return {"mean": mean, "std": std, "of": "log1p(interval seconds)",
            "fitted_on": "train split, normal sessions, every interval but the first", "steps": steps}


def batch_sources(job: TrainJob, train: Mapping[str, Any] | Any, val: Mapping[str, Any] | Any | None,
                  rank: int, world: int):
    """(train, val) batch sources of ``job`` on this rank. Each of ``train`` and ``val`` is a dict of
    in-memory columns or a streaming source, used as it is (``val`` may be None). Distinct key rows
    are drawn by count ** ``sampling_power`` (:class:`CountSampledSource`)."""
    def one(rows, sampled: bool):
        if rows is None or not isinstance(rows, Mapping):
            return rows
        if sampled:
            return CountSampledSource(rows, job.steps_per_epoch, batch_size=job.batch_size, seed=job.seed,
                                      rank=rank, world=world, power=job.sampling_power)
        return ArraySource(rows, job.batch_size, job.seed, rank, world)

    return one(train, job.count_sampling), one(val, False)


def save_trained(out_dir: Path, job: TrainJob, result: dict, extra: dict, cfg: Config) -> dict:
    """Write a trained model's checkpoint, history and loss curve (and the value model's residual
    threshold) into its run folder, remove its resume file, and return its summary."""
    summary = save_model(out_dir, job.task, job.model_config, result, extra, cfg.top_g)
    if job.task == "value":
        e = result["train_errors"]
        if not all(math.isfinite(v) for v in (e["mu"], e["sigma"])):
            raise InputError(f"the value model's residuals are not finite (mu {e['mu']}, sigma {e['sigma']}): "
                             "check the intervals of the input")
        threshold = {"mu": e["mu"], "sigma": e["sigma"], "k": cfg.k_sigma,
                     "threshold": e["mu"] + cfg.k_sigma * e["sigma"],
                     "error": "standardized residual |z - mean| / sd of log1p(interval)",
                     "fitted_on": "train split, normal sessions", "steps": e["steps"]}
        write_json(out_dir / "value_threshold.json", threshold)
        summary["threshold"] = threshold["threshold"]
    if job.resume_path:
        Path(job.resume_path).unlink(missing_ok=True)  # finished: a re-run trains afresh
    return summary


def save_model(out_dir: Path, task: str, model_config: dict, result: dict, extra: dict, top_g: int = 9) -> dict:
    """Write a trained model's checkpoint, history JSON and loss curve into its run directory and
    return its summary (used by the Spark job and the Spark-free trainer alike)."""
    model = build_model(task, model_config)
    model.load_state_dict(result["state_dict"])
    history = result["history"]
    ckpt = save_checkpoint(out_dir / f"{task}_model.pt", task, model, extra)
    write_json(out_dir / f"{task}_history.json", {k: v for k, v in result.items() if k != "state_dict"})
    plot_history(history, task, out_dir / f"{task}_loss_curve.png", top_g)
    out = {"checkpoint": str(ckpt), "epochs": len(history), "best_epoch": result["best_epoch"],
           "early_stopped": result["early_stopped"]}
    if result["best_epoch"] > 0:
        best = history[result["best_epoch"] - 1]
    elif result.get("baseline"):  # no epoch beat the starting weights (a fine-tuning run)
        best = {f"val_{k}": v for k, v in result["baseline"].items()}
    else:
        best = history[-1]
    out.update({k: best[k] for k in ("val_loss", "val_accuracy", "val_top_g_recall", "val_mean_residual") if k in best})
    if result.get("baseline"):
        out["val_top_g_recall_before"] = result["baseline"].get("top_g_recall")
    out["median_windows_per_s"] = sorted(h["windows_per_s"] for h in history)[len(history) // 2]
    out["train_seconds"] = round(sum(h["seconds"] for h in history), 2)
    out["precision"] = result.get("precision", "fp32")
    return out
