"""DeepLog models (torch only, no Spark): the Key LSTM and the Value LSTM, and their checkpoints.

Key LSTM: Embedding(vocab_size+1, embed) -> LSTM(embed, hidden, layers, dropout) ->
Linear(hidden, vocab_size+1); index 0 is the padding id. Value LSTM: LSTM(1, hidden, layers) ->
Linear(hidden, 1) on z-scored intervals. Checkpoints hold only tensors and plain Python values,
so they load with ``torch.load(..., weights_only=True)``; anything else is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeplog_spark.errors import CheckpointError

CHECKPOINT_FORMAT = "deeplog-spark/checkpoint/1"
TASKS = ("key", "value")


__all__ = ["CheckpointError", "KeyLSTM", "KeyModelConfig", "ValueLSTM", "ValueModelConfig", "build_model",
           "load_checkpoint", "load_checkpoint_bytes", "save_checkpoint"]


@dataclasses.dataclass(frozen=True)
class KeyModelConfig:
    vocab_size: int  # number of event ids (E1..En); logits have vocab_size + 1 entries (0 = padding)
    h: int = 10
    embed_dim: int = 64
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.2


@dataclasses.dataclass(frozen=True)
class ValueModelConfig:
    h: int = 10
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0


class KeyLSTM(nn.Module):
    """Next-event classifier: window of h event ids -> logits over vocab_size + 1 ids."""

    def __init__(self, cfg: KeyModelConfig):
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {cfg.vocab_size}")
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size + 1, cfg.embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.fc = nn.Linear(cfg.hidden, cfg.vocab_size + 1)

    def forward(self, window: torch.Tensor) -> torch.Tensor:  # [B, h] int64 -> [B, V+1]
        out, _ = self.lstm(self.embedding(window))
        return self.fc(out[:, -1, :])


class ValueLSTM(nn.Module):
    """Next-interval regressor: window of h z-scored intervals -> predicted next interval."""

    def __init__(self, cfg: ValueModelConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(1, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.fc = nn.Linear(cfg.hidden, 1)

    def forward(self, window: torch.Tensor) -> torch.Tensor:  # [B, h] float -> [B]
        out, _ = self.lstm(window.unsqueeze(-1))
        return self.fc(out[:, -1, :]).squeeze(-1)


def build_model(task: str, model_config: dict[str, Any]) -> nn.Module:
    """A fresh model for ``task`` ('key' or 'value') from a plain config dict."""
    if task == "key":
        return KeyLSTM(KeyModelConfig(**model_config))
    if task == "value":
        return ValueLSTM(ValueModelConfig(**model_config))
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


# -- checkpoints --------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, task: str, model: nn.Module,
                    extra: dict[str, Any] | None = None) -> Path:
    """Save a model with its config (and ``extra`` plain values: vocabulary, run id, ...).

    A ``<path>.sha256`` sidecar records the file's hash; loading checks it when present.
    The file is written to a temporary name and renamed, so a crash never leaves half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    payload = {
        "format": CHECKPOINT_FORMAT,
        "task": task,
        "model_config": dataclasses.asdict(module.cfg),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "extra": dict(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    digest = _sha256(tmp)
    os.replace(tmp, path)
    path.with_name(path.name + ".sha256").write_text(digest + "\n")
    return path


def load_checkpoint(path: str | os.PathLike, expect_task: str | None = None) -> tuple[nn.Module, dict]:
    """Load a checkpoint saved by :func:`save_checkpoint`; returns (model in eval mode, payload).

    Raises :class:`CheckpointError` for a missing, corrupted, tampered or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file() and sidecar.read_text().strip() != _sha256(path):
        raise CheckpointError(f"{path}: contents do not match {sidecar.name} (modified or corrupted)")
    return _load(path, path, expect_task)


def load_checkpoint_bytes(data: bytes, expect_task: str | None = None, sha256: str | None = None,
                          name: str = "checkpoint") -> tuple[nn.Module, dict]:
    """:func:`load_checkpoint` for file contents already in memory (e.g. broadcast to executors)."""
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{name}: contents do not match the expected sha256")
    return _load(io.BytesIO(data), name, expect_task)


def _load(source, path, expect_task: str | None) -> tuple[nn.Module, dict]:
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a loadable deeplog-spark checkpoint "
                              f"(corrupted, or holds objects other than tensors): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a deeplog-spark checkpoint (format {CHECKPOINT_FORMAT} expected)")
    task = payload.get("task")
    if task not in TASKS or (expect_task and task != expect_task):
        raise CheckpointError(f"{path}: holds a {task!r} model, expected {expect_task or TASKS!r}")
    try:
        model = build_model(task, payload["model_config"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: model config or weights do not fit a {task} model: {exc}") from exc
    model.eval()
    return model, payload


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
