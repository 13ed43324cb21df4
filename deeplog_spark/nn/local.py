"""Train without Spark or Java, from the Delta ``traces`` table (how training runs on a GPU machine).

    python -m deeplog_spark.nn.local --tables_root warehouse --task key --use_gpu true
    torchrun --nproc_per_node 2 -m deeplog_spark.nn.local --tables_root warehouse --task key

It reads the current snapshot of the ``traces`` and ``templates`` Delta tables with delta-rs
(``deltalake``), prepares the same rows as the Spark job (the windows of the distinct sequences of
the train-normal sessions with their counts; the value model's chunks of z-scored log intervals),
builds the same :class:`~deeplog_spark.nn.trainer.TrainJob` from the same config, runs the same
:func:`~deeplog_spark.nn.trainer.run_task` and saves the run the way the Spark job does, under the
same run id (``<artifacts_root>/runs/<run id>``, or ``--out DIR``). The count and PCA models and
the calibration are Spark jobs: run ``--task calibrate --model RUN_ID`` where Spark runs.
No pyspark import anywhere on this path.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from deeplog_spark.core.config import Config, ConfigError, parse_overrides, pop_option
from deeplog_spark.core.logs import setup_logging
from deeplog_spark.core.names import TEMPLATES, TRACES
from deeplog_spark.core.runs import run_dir, write_json
from deeplog_spark.features.window_rule import distinct_windows
from deeplog_spark.nn.scoring import chunk_starts, log_intervals
from deeplog_spark.nn.sources import key_columns
from deeplog_spark.nn.trainer import init_distributed, run_task, shutdown_distributed
from deeplog_spark.train.job import (
    batch_sources,
    interval_norm,
    markers,
    model_extra,
    run_id,
    save_trained,
    train_job,
    train_vocab,
)

log = logging.getLogger(__name__)


def read_delta(table: str | os.PathLike, columns: list[str]):
    """(current snapshot of a Delta table as a pyarrow Table, its version), read with delta-rs."""
    try:
        dt = DeltaTable(str(table))
    except TableNotFoundError as exc:
        raise FileNotFoundError(f"no Delta table at {table}: run the stage that writes it first") from exc
    return dt.to_pyarrow_table(columns=columns), dt.version()


def _normal(t, split: str):
    label = pc.fill_null(t.column("label"), 0)
    return t.filter(pc.and_(pc.equal(t.column("split"), split), pc.equal(label, 0)))


def key_rows(traces, split: str, h: int, markers: tuple[int, int] | None):
    """(window [n, h], target [n], weight [n]): distinct windows of the split's normal sessions with counts."""
    seqs = collections.Counter(tuple(e) for e in _normal(traces, split).column("events").to_pylist())
    return distinct_windows(list(seqs), list(seqs.values()), h, markers)


def interval_stats(traces) -> tuple[float, float, int]:
    """Mean and std of log1p(interval) over the train-normal sessions' steps after the first, and
    how many steps there are."""
    steps = [x for iv in _normal(traces, "train").column("intervals").to_pylist() if iv for x in iv[1:]]
    if not steps:
        raise ValueError("no train-normal sessions with time intervals")
    v = np.log1p(np.maximum(np.asarray(steps, dtype=np.float64), 0.0))
    std = float(v.std())
    return float(v.mean()), std if std > 0 else 1.0, len(steps)


def value_rows(traces, split: str, vocab_size: int, chunk: int, context: int, norm: tuple[float, float]) -> dict:
    """The value model's chunk columns (events, values, first, length) of the split's normal sessions."""
    t = _normal(traces, split)
    out: dict[str, list] = {"events": [], "values": [], "first": [], "length": []}
    for ev, iv in zip(t.column("events").to_pylist(), t.column("intervals").to_pylist()):
        if iv is None or len(ev) < 2:
            continue
        e = np.array([x if 1 <= x <= vocab_size else 0 for x in ev], dtype=np.int64)
        z = log_intervals(iv, *norm)
        for start, first in chunk_starts(len(e), chunk, context):
            pe, pz = e[start:start + chunk], z[start:start + chunk]
            out["events"].append(np.pad(pe, (0, chunk - len(pe))))
            out["values"].append(np.pad(pz, (0, chunk - len(pz))))
            out["first"].append(first)
            out["length"].append(len(pe))
    return {k: np.array(v) for k, v in out.items()}


def cap_rows(columns: dict, cap: int, seed: int) -> dict:
    """A uniform sample of ``cap`` rows (all when ``cap`` is 0 or not below the row count)."""
    n = len(next(iter(columns.values())))
    if cap <= 0 or n <= cap:
        return columns
    keep = np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))
    return {k: v[keep] for k, v in columns.items()}


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = list(sys.argv[1:] if argv is None else argv)
    args, task = pop_option(args, "task", "key")
    args, out = pop_option(args, "out", "")
    args, config = pop_option(args, "config", "")
    try:
        if task not in ("key", "value"):
            raise ConfigError(f"--task must be key or value, got {task!r}")
        cfg = Config.load(config or None, parse_overrides(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rank, world, device = init_distributed(cfg.use_gpu)
    root = Path(cfg.tables_root)
    traces, version = read_delta(root / TRACES, ["block_id", "split", "label", "events", "intervals"])
    vocab_size = int(max(read_delta(root / TEMPLATES, ["event_id"])[0].column("event_id").to_pylist()))
    # the Spark job's run id for the same config, table and version, so the run lands where detect looks
    rid = run_id(cfg, cfg.table_path(TRACES), version, DeltaTable(str(root / TRACES)).metadata().id)
    out_dir = Path(out) if out else run_dir(cfg.artifacts_root, rid)
    job = train_job(cfg, task, vocab_size)
    vocab = train_vocab((e for ev in _normal(traces, "train").column("events").to_pylist() for e in ev), vocab_size)
    extra = model_extra(rid, version, vocab_size, vocab, trained_by="nn.local")
    if task == "key":
        m = markers(cfg, vocab_size)
        train_cols = cap_rows(key_columns(*key_rows(traces, "train", cfg.h, m)), cfg.max_train_rows, cfg.seed)
        val_cols = cap_rows(key_columns(*key_rows(traces, "val", cfg.h, m)), cfg.max_val_rows, cfg.seed)
    else:
        mean, std, steps = interval_stats(traces)
        extra["norm"] = interval_norm(mean, std, steps)
        train_cols = cap_rows(value_rows(traces, "train", vocab_size, cfg.value_chunk, cfg.h, (mean, std)),
                              cfg.max_train_rows, cfg.seed)
        val_cols = cap_rows(value_rows(traces, "val", vocab_size, cfg.value_chunk, cfg.h, (mean, std)),
                            cfg.max_val_rows, cfg.seed)
    n_train, n_val = (len(c["first" if task == "value" else "target"]) for c in (train_cols, val_cols))
    if rank == 0:
        log.info("%s: %d training rows, %d validation rows, device %s, world %d", task, n_train, n_val, device, world)
    train, val = batch_sources(job, train_cols, val_cols if n_val else None, rank, world)
    try:
        result = run_task(job, train, val, device)
    finally:
        shutdown_distributed()
    if rank == 0:
        if task == "value":
            write_json(out_dir / "value_norm.json", extra["norm"])
        summary = save_trained(out_dir, job, result, extra, cfg)
        print(json.dumps({"run_id": rid, "out": str(out_dir), **summary}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
