"""The training job description built from the config (no Spark import).

Both training paths build their :class:`deeplog_spark.nn.trainer.TrainJob` here: the Spark job
(``deeplog_spark.training``, Petastorm + TorchDistributor) and the Spark-free trainer
(``deeplog_spark.nn.local``, for GPU machines without Java). So a setting reaches the model the same
way on both, and an option neither knows is an error (``TrainJob`` is a frozen dataclass).
"""

from __future__ import annotations

from pathlib import Path

from deeplog_spark.config import Config

#: Config keys that define a trained model; with the input table's path and version they make the run id.
RUN_KEYS = ("h", "session_markers", "embed_dim", "key_hidden", "key_layers", "key_dropout", "value_hidden",
            "value_layers", "value_dropout", "value_event_dim", "value_chunk", "value_batch_size", "value_epochs", "batch_size", "lr", "lr_decay",
            "lr_schedule", "epochs", "patience", "min_delta", "distinct_windows", "sampling_power", "steps_per_epoch",
            "max_train_rows", "max_val_rows", "seed", "train_ratio", "val_ratio", "test_ratio", "num_processes",
            "use_gpu", "train_precision")


def markers(cfg: Config, vocab_size: int) -> tuple[int, int] | None:
    """The session marker ids for ``vocab_size`` when the config frames sessions (else None)."""
    from deeplog_spark.names import marker_ids

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
    from deeplog_spark.nn.trainer import TrainJob

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
