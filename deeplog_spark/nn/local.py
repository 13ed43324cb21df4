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

from deeplog_spark.names import PADDING_ID, TEMPLATES, TRACES

log = logging.getLogger(__name__)


def read_delta(table: str | os.PathLike, columns: list[str]):
    """(current snapshot of a Delta table as a pyarrow Table, its version), read with delta-rs."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        dt = DeltaTable(str(table))
    except TableNotFoundError as exc:
        raise FileNotFoundError(f"no Delta table at {table}: run the stage that writes it first") from exc
    return dt.to_pyarrow_table(columns=columns), dt.version()


def _normal(t, split: str):
    import pyarrow.compute as pc

    label = pc.fill_null(t.column("label"), 0)
    return t.filter(pc.and_(pc.equal(t.column("split"), split), pc.equal(label, 0)))


def session_windows(events: list[int], h: int, markers: tuple[int, int] | None) -> list[tuple[tuple, int]]:
    """(window, next id) of a session, by the rule of ``deeplog_spark.windows`` (the Spark side)."""
    seq = [markers[0], *events, markers[1]] if markers else list(events)
    pad = h - 1 if markers else max(h + 1 - len(seq), 0)
    padded = [PADDING_ID] * pad + seq
    return [(tuple(padded[p:p + h]), padded[p + h]) for p in range(len(padded) - h)]


def key_rows(traces, split: str, h: int, markers: tuple[int, int] | None):
    """(window [n, h], target [n], weight [n]): distinct windows of the split's normal sessions with counts."""
    counts: collections.Counter = collections.Counter()
    for ev, n in collections.Counter(tuple(e) for e in _normal(traces, split).column("events").to_pylist()).items():
        for w in session_windows(list(ev), h, markers):
            counts[w] += n
    if not counts:
        return np.zeros((0, h), np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows = sorted(counts.items())
    return (np.array([w for (w, _), _ in rows], dtype=np.int64), np.array([y for (_, y), _ in rows], dtype=np.int64),
            np.array([c for _, c in rows], dtype=np.float32))


def interval_norm(traces) -> tuple[float, float]:
    """Mean and std of log1p(interval) over the train-normal sessions' steps after the first."""
    steps = [x for iv in _normal(traces, "train").column("intervals").to_pylist() if iv for x in iv[1:]]
    if not steps:
        raise ValueError("no train-normal sessions with time intervals")
    v = np.log1p(np.maximum(np.asarray(steps, dtype=np.float64), 0.0))
    std = float(v.std())
    return float(v.mean()), std if std > 0 else 1.0


def value_rows(traces, split: str, vocab_size: int, chunk: int, context: int, norm: tuple[float, float]) -> dict:
    """The value model's chunk columns (events, values, first, length) of the split's normal sessions."""
    from deeplog_spark.nn.scoring import chunk_starts, log_intervals

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
    from deeplog_spark.config import Config, ConfigError, parse_overrides, pop_option
    from deeplog_spark.logs import setup_logging
    from deeplog_spark.nn.sources import ArraySource, CountSampledSource, key_columns
    from deeplog_spark.nn.trainer import init_distributed, run_task, shutdown_distributed
    from deeplog_spark.runs import run_dir, save_model, write_json
    from deeplog_spark.train_job import RUN_KEYS, markers, train_job

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
    # the Spark job's run id for the same config and table version, so the run lands where detect looks
    traces_path = os.path.abspath(cfg.table_path(TRACES))
    run_id = cfg.fingerprint(RUN_KEYS, extra={"traces": traces_path, "traces_version": version})
    out_dir = Path(out) if out else run_dir(cfg.artifacts_root, run_id)
    job = train_job(cfg, task, vocab_size)
    extra: dict = {"run_id": run_id, "traces_version": version, "vocab_size": vocab_size, "trained_by": "nn.local",
                   "train_vocab": sorted({e for ev in _normal(traces, "train").column("events").to_pylist()
                                          for e in ev if 1 <= e <= vocab_size})}
    if task == "key":
        m = markers(cfg, vocab_size)
        train_cols = cap_rows(key_columns(*key_rows(traces, "train", cfg.h, m)), cfg.max_train_rows, cfg.seed)
        val_cols = cap_rows(key_columns(*key_rows(traces, "val", cfg.h, m)), cfg.max_val_rows, cfg.seed)
    else:
        norm = interval_norm(traces)
        extra["norm"] = {"mean": norm[0], "std": norm[1], "of": "log1p(interval seconds)"}
        train_cols = cap_rows(value_rows(traces, "train", vocab_size, cfg.value_chunk, cfg.h, norm),
                              cfg.max_train_rows, cfg.seed)
        val_cols = cap_rows(value_rows(traces, "val", vocab_size, cfg.value_chunk, cfg.h, norm),
                            cfg.max_val_rows, cfg.seed)
    n_train, n_val = len(train_cols["first" if task == "value" else "target"]), len(val_cols["first" if task == "value" else "target"])
    if rank == 0:
        log.info("%s: %d training rows, %d validation rows, device %s, world %d", task, n_train, n_val, device, world)
    if job.count_sampling:  # the same draws as the Spark job: distinct windows by count ** power
        train = CountSampledSource(train_cols, job.steps_per_epoch, job.batch_size, job.seed, rank, world,
                                   power=job.sampling_power)
    else:
        train = ArraySource(train_cols, job.batch_size, job.seed, rank, world)
    val = ArraySource(val_cols, job.batch_size, job.seed, rank, world) if n_val else None
    try:
        result = run_task(job, train, val, device)
    finally:
        shutdown_distributed()
    if rank == 0:
        summary = save_model(out_dir, task, job.model_config, result, extra, cfg.top_g)
        if task == "value":
            e = result["train_errors"]
            write_json(out_dir / "value_norm.json", extra["norm"])
            write_json(out_dir / "value_threshold.json", {"mu": e["mu"], "sigma": e["sigma"], "k": cfg.k_sigma,
                                                          "threshold": e["mu"] + cfg.k_sigma * e["sigma"]})
        print(json.dumps({"run_id": run_id, "out": str(out_dir), **summary}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
