"""Training data: the ``traces`` table turned into the rows each model trains on (Spark).

Training uses the normal sessions of the train split (unlabelled sessions count as normal, as
DeepLog assumes of its training logs); validation uses the normal sessions of the val split.

- Key model: the windows of the distinct event sequences (the model's h and session markers),
  merged by (window, next event) with ``weight`` = how many windows of the sessions each stands
  for, so weighted losses and metrics equal those over all windows. Sessions repeat, so this reads
  the traces once and never materialises a row per window.
- Value model: sessions with intervals cut into chunks of ``chunk`` steps (the rule of
  :func:`deeplog_spark.nn.scoring.chunk_starts`), intervals as z-scored log1p seconds.
"""

from __future__ import annotations

import dataclasses
import math

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.config import Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.tables import read_table
from deeplog_spark.features.windows import window_rows


@dataclasses.dataclass(frozen=True)
class IntervalStats:
    """Mean and std of log1p(interval seconds), fitted on train-normal sessions (steps after the first)."""

    mean: float
    std: float
    count: int


def normal_sessions(traces: DataFrame, split: str) -> DataFrame:
    """Sessions of ``split`` that are normal (label 0) or unlabelled."""
    return traces.where((F.col("split") == split) & (F.coalesce(F.col("label"), F.lit(0)) == 0))


def hashed_sample(df: DataFrame, cap: int, seed: int, *keys: str) -> DataFrame:
    """At most ``cap`` rows of ``df`` (all of them when ``cap`` is 0 or not below their number): those
    with the smallest hash of ``keys`` (a row's identity; ties broken by the keys themselves), so a
    uniform sample, the same on any partitioning. Lazy: no count first, one top-``cap`` pass
    when the rows are read."""
    if cap <= 0:
        return df
    return df.orderBy(F.xxhash64(F.lit(seed), *keys), *keys).limit(cap)


def key_dataset(sessions: DataFrame, h: int, markers: tuple[int, int] | None, cap: int = 0, seed: int = 0) -> DataFrame:
    """``window array<int>, target int, weight float``: distinct (window, next event) rows of the
    sessions' windows with their counts. ``cap`` > 0 keeps at most that many rows, a
    :func:`hashed_sample` (weights kept, so the weighted loss stays unbiased)."""
    seqs = sessions.groupBy("events").agg(F.count(F.lit(1)).alias("sessions"))
    rows = (window_rows(seqs, h, markers, keep=["sessions"])
            .groupBy("window", F.col("next_event").alias("target"))
            .agg(F.sum("sessions").cast("float").alias("weight")))
    return hashed_sample(rows, cap, seed, "window", "target")


def has_intervals(traces: DataFrame) -> bool:
    """Whether any session carries time intervals (the value model needs them)."""
    return traces.where(F.col("intervals").isNotNull() & (F.size("intervals") > 1)).limit(1).count() > 0


def _log_steps(sessions: DataFrame) -> DataFrame:
    # every interval but the first (0 by definition: nothing came before the first event)
    return sessions.where(F.col("intervals").isNotNull()).select(
        F.explode(F.slice("intervals", 2, F.greatest(F.size("intervals") - 1, F.lit(0)))).alias("x")) \
        .select(F.log1p(F.greatest(F.col("x"), F.lit(0.0))).alias("v"))


def interval_stats(train_sessions: DataFrame) -> IntervalStats:
    """Mean and std of log1p(interval) over the (train-normal) sessions' steps after the first.

    Raises ValueError when there are none, or when they are not finite (a huge value overflows
    nothing here, but an infinite one would poison the model: ingest rejects them).
    """
    row = _log_steps(train_sessions).agg(F.avg("v").alias("mean"), F.stddev_pop("v").alias("std"),
                                         F.count(F.lit(1)).alias("n")).first()
    if not row["n"]:
        raise ValueError("no train-normal sessions with time intervals")
    mean, std = float(row["mean"]), float(row["std"] or 0.0)
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise ValueError(f"interval statistics are not finite (mean {mean}, std {std}): check the input's TimeInterval values")
    return IntervalStats(mean, std if std > 0 else 1.0, int(row["n"]))


def value_chunks(sessions: DataFrame, stats: IntervalStats, vocab_size: int, chunk: int, context: int,
                 cap: int = 0, seed: int = 0) -> DataFrame:
    """``events array<int>[chunk], values array<float>[chunk], first int, length int``: sessions with
    intervals cut into chunks (zero-padded to ``chunk``); steps ``first`` .. ``length``-1 of a chunk
    are its targets. ``cap`` > 0 keeps the chunks of at most that many sessions, a :func:`hashed_sample`."""
    df = hashed_sample(sessions.where(F.col("intervals").isNotNull() & (F.size("events") > 1)), cap, seed, "block_id")
    m, s = F.lit(stats.mean), F.lit(stats.std)
    n = F.size("events")
    chunks = F.when(n <= chunk, F.lit(1)).otherwise(1 + F.ceil((n - chunk) / F.lit(chunk - context)).cast("int"))
    ev = F.transform("events", lambda e: F.when((e >= 1) & (e <= vocab_size), e).otherwise(F.lit(0)))
    z = F.transform("intervals", lambda x: ((F.log1p(F.greatest(x, F.lit(0.0))) - m) / s).cast("float"))
    base = df.select(ev.alias("ev"), z.alias("z"), F.explode(F.sequence(F.lit(0), chunks - 1)).alias("c"))
    start = F.col("c") * F.lit(chunk - context)
    part_e = F.slice("ev", start + 1, chunk)
    part_z = F.slice("z", start + 1, chunk)
    pad = F.lit(chunk) - F.size(part_e)
    return base.select(
        F.concat(part_e, F.array_repeat(F.lit(0), pad)).alias("events"),
        F.concat(part_z, F.array_repeat(F.lit(0.0).cast("float"), pad)).alias("values"),
        F.when(F.col("c") == 0, F.lit(1)).otherwise(F.lit(context)).alias("first"),
        F.size(part_e).alias("length"))


def vocab_size_of(spark: SparkSession, cfg: Config) -> int:
    """The largest event id of the templates table: the models' vocabulary is 1..this."""
    size = read_table(spark, cfg.table(schemas.TEMPLATES)).agg(F.max("event_id")).first()[0]
    if not size:
        raise InputError(f"the templates table {cfg.table(schemas.TEMPLATES)} is empty")
    return int(size)
