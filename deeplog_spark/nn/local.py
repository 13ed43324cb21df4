"""Train without Spark or Java, from the Parquet files of the Delta windows table.

This is how training runs on a GPU machine that has only Python, torch and pyarrow::

    python -m deeplog_spark.nn.local --tables_root warehouse --out artifacts/gpu_run --task key --use_gpu true
    torchrun --nproc_per_node 2 -m deeplog_spark.nn.local --tables_root warehouse --out DIR

It reads the current snapshot of the ``windows`` and ``templates`` Delta tables (replaying the
Delta log with pyarrow), prepares the same (window, target, weight) rows as the Spark job
(normal sessions of train/val, optional de-duplication with counts, z-scored intervals) and
runs the same :func:`deeplog_spark.nn.trainer.run_task`. Config comes from conf/deeplog.toml with the
same ``--key value`` overrides. No pyspark import anywhere on this path.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np

log = logging.getLogger(__name__)


class DeltaReadError(ValueError):
    """The Delta table cannot be read by this minimal reader."""


def snapshot_files(table: str | os.PathLike) -> list[tuple[Path, dict[str, str]]]:
    """(data file, partition values) of the current version of a local Delta table."""
    import pyarrow.parquet as pq

    root = Path(table)
    log_dir = root / "_delta_log"
    if not log_dir.is_dir():
        raise DeltaReadError(f"no Delta table at {root} (no _delta_log)")
    files: dict[str, dict[str, str]] = {}
    start = -1
    last = log_dir / "_last_checkpoint"
    if last.is_file():
        start = json.loads(last.read_text())["version"]
        parts = sorted(log_dir.glob(f"{start:020d}.checkpoint*.parquet"))
        if not parts:
            raise DeltaReadError(f"{root}: checkpoint {start} listed but not found")
        for part in parts:
            for row in pq.read_table(part, columns=["add"]).column("add").to_pylist():
                if row:
                    _add(files, row)
    commits = sorted(p for p in log_dir.glob("*.json") if p.stem.isdigit() and int(p.stem) > start)
    for commit in commits:
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                _add(files, action["add"])
            elif "remove" in action:
                files.pop(unquote(action["remove"]["path"]), None)
    return [(root / path, pv) for path, pv in sorted(files.items())]


def _add(files: dict, add: dict) -> None:
    if add.get("deletionVector"):
        raise DeltaReadError("table uses deletion vectors, which this reader does not support")
    pv = add.get("partitionValues") or {}
    if isinstance(pv, list):  # checkpoint parquet stores maps as key/value pairs
        pv = dict(pv)
    files[unquote(add["path"])] = pv


def read_delta(table: str | os.PathLike, columns: list[str]):
    """The current snapshot of a Delta table as one pyarrow Table (partition columns included)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pieces = []
    for path, pv in snapshot_files(table):
        data_cols = [c for c in columns if c not in pv]
        t = pq.read_table(path, columns=data_cols)
        for c in columns:
            if c in pv:
                t = t.append_column(c, pa.array([pv[c]] * t.num_rows, pa.string()))
        pieces.append(t.select(columns))
    if not pieces:
        raise DeltaReadError(f"{table}: the table is empty")
    return pa.concat_tables(pieces)


def _matrix(column, h: int, dtype) -> np.ndarray:
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.astype(dtype).reshape(-1, h)


def prepare(windows, split: str, task: str, h: int, distinct: bool, norm: tuple[float, float] | None = None):
    """(window, target, weight) arrays for ``task`` from the normal windows of ``split``."""
    import pyarrow.compute as pc

    label = pc.fill_null(windows.column("label"), 0)
    mask = pc.and_(pc.equal(windows.column("split"), split), pc.equal(label, 0))
    if task == "value":
        mask = pc.and_(mask, pc.is_valid(windows.column("next_interval")))
    t = windows.filter(mask)
    if task == "key":
        x, y = _matrix(t.column("window"), h, np.int64), t.column("next_event").to_numpy().astype(np.int64)
    else:
        x = _matrix(t.column("window_intervals"), h, np.float32)
        y = t.column("next_interval").to_numpy(zero_copy_only=False).astype(np.float32)
    w = np.ones(len(y), dtype=np.float32)
    if distinct and len(y):
        rows, counts = np.unique(np.column_stack([x, y]), axis=0, return_counts=True)
        x, y, w = rows[:, :h].astype(x.dtype), rows[:, h].astype(y.dtype), counts.astype(np.float32)
    if task == "value" and norm is not None:
        mean, std = norm
        x, y = (x - mean) / std, (y - mean) / std
    return x, y, w


def cap_rows(x, y, w, cap: int, seed: int):
    """A uniform sample of ``cap`` rows (all when ``cap`` is 0 or not below the row count).

    Seeded, so repeatable; not the same rows as the Spark job's hashed sample (same size and law).
    """
    if cap <= 0 or len(y) <= cap:
        return x, y, w
    keep = np.sort(np.random.default_rng(seed).choice(len(y), size=cap, replace=False))
    return x[keep], y[keep], w[keep]


def interval_norm(windows, h: int) -> tuple[float, float]:
    """Mean and std of next_interval over train-normal windows (as the Spark job fits them)."""
    _, y, _ = prepare(windows, "train", "value", h, distinct=False)
    y = y.astype(np.float64)
    if len(y) == 0:
        raise ValueError("no train-normal windows with time intervals")
    std = float(y.std())
    return float(y.mean()), std if std > 0 else 1.0


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.distributed as dist

    from deeplog_spark.runs import write_json
    from deeplog_spark.plots import plot_history
    from deeplog_spark.config import Config, ConfigError, parse_overrides, pop_option
    from deeplog_spark.logs import setup_logging
    from deeplog_spark.nn.model import build_model, save_checkpoint
    from deeplog_spark.nn.sources import ArraySource, CountSampledSource
    from deeplog_spark.nn.trainer import model_config, run_task

    setup_logging()
    args = list(sys.argv[1:] if argv is None else argv)
    args, task = pop_option(args, "task", "key")
    args, out = pop_option(args, "out", "")
    args, config = pop_option(args, "config", "")
    try:
        if not out:
            raise ConfigError("--out DIR is required (where the checkpoint and history go)")
        if task not in ("key", "value"):
            raise ConfigError(f"--task must be key or value, got {task!r}")
        cfg = Config.load(config or None, parse_overrides(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.use_gpu:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1:
        dist.init_process_group("nccl" if cfg.use_gpu else "gloo")

    root = Path(cfg.tables_root)
    cols = ["split", "label", "window", "next_event", "window_intervals", "next_interval"]
    windows = read_delta(root / "windows", cols)
    vocab_size = int(max(read_delta(root / "templates", ["event_id"]).column("event_id").to_pylist()))
    norm = interval_norm(windows, cfg.h) if task == "value" else None
    xt, yt, wt = cap_rows(*prepare(windows, "train", task, cfg.h, cfg.distinct_windows, norm), cfg.max_train_rows, cfg.seed)
    xv, yv, wv = cap_rows(*prepare(windows, "val", task, cfg.h, cfg.distinct_windows, norm), cfg.max_val_rows, cfg.seed)
    if rank == 0:
        log.info("%s: %d training rows (%d windows), %d validation rows, device %s, world %d",
                 task, len(yt), int(wt.sum()), len(yv), device, world)
    spec = {"task": task, "model_config": model_config(cfg, task, vocab_size), "epochs": cfg.epochs,
            "lr": cfg.lr, "patience": cfg.patience, "min_delta": cfg.min_delta, "lr_decay": cfg.lr_decay,
            "top_g": cfg.top_g,
            "seed": cfg.seed}
    if cfg.distinct_windows:  # the same law as the Spark job: distinct rows drawn by count
        train = CountSampledSource(xt, yt, wt, cfg.max_train_rows, cfg.batch_size, cfg.seed, rank, world)
    else:
        train = ArraySource(xt, yt, wt, cfg.batch_size, cfg.seed, rank, world)
    val = ArraySource(xv, yv, wv, cfg.batch_size, cfg.seed, rank, world) if len(yv) else None
    result = run_task(spec, train, val, device)
    if rank == 0:
        out_dir = Path(out)
        model = build_model(task, spec["model_config"])
        model.load_state_dict(result.pop("state_dict"))
        extra = {"vocab_size": vocab_size, "trained_by": "train_local"}
        if norm:
            extra["norm"] = {"mean": norm[0], "std": norm[1]}
        save_checkpoint(out_dir / f"{task}_model.pt", task, model, extra)
        write_json(out_dir / f"{task}_history.json", result)
        plot_history(result["history"], task, out_dir / f"{task}_loss_curve.png", cfg.top_g)
        print(json.dumps({"out": str(out_dir), "epochs": len(result["history"]), "best_epoch": result["best_epoch"],
                          "last": result["history"][-1]}, indent=2, default=str))
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
