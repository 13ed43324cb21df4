"""DeepLog models (torch only, no Spark): the Key LSTM and the Value LSTM, and their checkpoints.

Key LSTM: Embedding(classes, embed) -> LSTM(embed, hidden, layers, dropout) -> Linear(hidden,
classes). Event ids are 1..vocab_size and 0 is the padding id. With ``markers`` every session is
framed by a start id (vocab_size + 1) and an end id (vocab_size + 2), so the model also learns how
sessions begin and end: a session that stops early is one whose end the model did not expect.

Value LSTM: DeepLog keeps one parameter model per log key; here one network conditioned on the
event ids plays that part. Each step sees the event's embedding and its z-scored log interval;
the state after step t, with the embedding of the next event, predicts the mean and log-variance
of the next z-scored log interval. Its error is the standardized residual |z - mean| / sd, so a
minute-long gap before a read and a sub-second gap inside a write are judged each by their own law.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(..., weights_only=True)``; anything else is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeplog_spark.core.errors import CheckpointError

__all__ = ["CheckpointError", "KeyLSTM", "KeyModelConfig", "ValueLSTM", "ValueModelConfig", "build_model",
           "load_checkpoint", "load_checkpoint_bytes", "save_checkpoint"]

#: Format 2 added session markers (key) and the event-conditioned value model. Format 1 key
#: checkpoints still load (as models without markers); format 1 value models are refused.
CHECKPOINT_FORMAT = "deeplog-spark/checkpoint/2"
OLD_FORMATS = ("deeplog-spark/checkpoint/1",)
TASKS = ("key", "value")
#: Bounds of the value model's predicted log-variance (keeps the Gaussian NLL finite).
LOGVAR_RANGE = (-8.0, 8.0)


@dataclasses.dataclass(frozen=True)
class KeyModelConfig:
    vocab_size: int  # event ids are 1..vocab_size; 0 pads
    h: int = 10
    embed_dim: int = 64
    hidden: int = 64
    layers: int = 2
    dropout: float = 0.2
    markers: bool = False  # sessions framed by start (vocab_size + 1) and end (vocab_size + 2) ids

    @property
    def classes(self) -> int:
        """Outputs of the model: padding, the events and, with markers, start and end."""
        return self.vocab_size + (3 if self.markers else 1)

    @property
    def start_id(self) -> int | None:
        return self.vocab_size + 1 if self.markers else None

    @property
    def end_id(self) -> int | None:
        return self.vocab_size + 2 if self.markers else None


@dataclasses.dataclass(frozen=True)
class ValueModelConfig:
    vocab_size: int  # event ids 1..vocab_size; 0 is padding (and any event the model never saw)
    event_dim: int = 16
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    chunk: int = 32  # steps per training row; longer sessions are cut into chunks (see scoring.chunk_starts)
    context: int = 10  # steps each later chunk repeats from the one before, as context only


class KeyLSTM(nn.Module):
    """Next-event classifier: window of h ids -> logits over ``cfg.classes`` ids."""

    def __init__(self, cfg: KeyModelConfig):
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {cfg.vocab_size}")
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.classes, cfg.embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.fc = nn.Linear(cfg.hidden, cfg.classes)

    def forward(self, window: torch.Tensor) -> torch.Tensor:  # [B, h] int64 -> [B, classes]
        out, _ = self.lstm(self.embedding(window))
        return self.fc(out[:, -1, :])


class ValueLSTM(nn.Module):
    """Next-interval model conditioned on the events: (events, z) [B, T] -> mean, log-variance [B, T-1]."""

    def __init__(self, cfg: ValueModelConfig):
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {cfg.vocab_size}")
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size + 1, cfg.event_dim, padding_idx=0)
        self.lstm = nn.LSTM(cfg.event_dim + 1, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                            dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = nn.Linear(cfg.hidden + cfg.event_dim, 2)

    def forward(self, events: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embedding(events)
        out, _ = self.lstm(torch.cat([emb, values.unsqueeze(-1)], dim=-1))
        # the state after step t, told which event comes next, predicts that event's interval
        pred = self.head(torch.cat([out[:, :-1], emb[:, 1:]], dim=-1))
        return pred[..., 0], pred[..., 1].clamp(*LOGVAR_RANGE)


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


def load_checkpoint(path: str | os.PathLike, expect_task: str | None = None,
                    expect_run: str | None = None) -> tuple[nn.Module, dict]:
    """Load a checkpoint saved by :func:`save_checkpoint`; returns (model in eval mode, payload).

    ``expect_run``: the run the file must belong to (its own ``extra.run_id``), so a checkpoint
    copied from another run is refused even with its sidecar. Raises :class:`CheckpointError`
    for a missing, corrupted, tampered or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file() and sidecar.read_text().strip() != _sha256(path):
        raise CheckpointError(f"{path}: contents do not match {sidecar.name} (modified or corrupted)")
    model, payload = _load(path, path, expect_task)
    own = payload.get("extra", {}).get("run_id")
    if expect_run is not None and own != expect_run:
        raise CheckpointError(f"{path}: belongs to run {own!r}, not to run {expect_run!r} (copied from another "
                              "run?); train this run again or use --model " + str(own))
    return model, payload


def load_checkpoint_bytes(data: bytes, expect_task: str | None = None, sha256: str | None = None,
                          name: str = "checkpoint") -> tuple[nn.Module, dict]:
    """:func:`load_checkpoint` for file contents already in memory (e.g. shipped to executors)."""
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{name}: contents do not match the expected sha256")
    return _load(io.BytesIO(data), name, expect_task)


def _verify_archive(source, path) -> None:
    """A checkpoint is a zip archive whose every member carries a CRC-32: a flipped byte anywhere is
    caught here, sidecar or not (torch.load itself would read altered weights without a word)."""
    try:
        with zipfile.ZipFile(source) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a loadable deeplog-spark checkpoint (not a zip archive, or truncated: "
                              f"{exc})") from exc
    finally:
        if hasattr(source, "seek"):
            source.seek(0)
    if bad is not None:
        raise CheckpointError(f"{path}: corrupted: its member {bad} fails its CRC check")


def _load(source, path, expect_task: str | None) -> tuple[nn.Module, dict]:
    _verify_archive(source, path)
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a loadable deeplog-spark checkpoint "
                              f"(corrupted, or holds objects other than tensors): {exc}") from exc
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in (CHECKPOINT_FORMAT, *OLD_FORMATS):
        raise CheckpointError(f"{path}: not a deeplog-spark checkpoint (format {CHECKPOINT_FORMAT} expected)")
    task = payload.get("task")
    if task not in TASKS or (expect_task and task != expect_task):
        raise CheckpointError(f"{path}: holds a {task!r} model, expected {expect_task or TASKS!r}")
    if fmt in OLD_FORMATS and task == "value":
        raise CheckpointError(f"{path}: a value model of {fmt} (intervals only, not conditioned on the events) "
                              "is no longer supported; train the value model again (--task value)")
    try:
        model = build_model(task, payload["model_config"])  # format 1 key configs: no markers
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
