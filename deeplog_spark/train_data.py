"""Training data: the windows table turned into (window, target, weight) rows for each model.

Training uses the normal sessions of the train split (unlabelled sessions count as normal, as
DeepLog assumes of its training logs); validation uses the normal sessions of the val split.
With ``distinct=True`` identical (window, target) rows are merged and ``weight`` holds how many
windows each stands for, so weighted losses and metrics equal those over all windows.
"""

from __future__ import annotations

import dataclasses
import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class IntervalStats:
    """Z-score statistics of the intervals, fitted on train-normal windows only."""

    mean: float
    std: float
    count: int


def normal_windows(windows: DataFrame, split: str) -> DataFrame:
    """Windows of ``split`` whose session is normal (label 0) or unlabelled."""
    return windows.where((F.col("split") == split) & (F.coalesce(F.col("label"), F.lit(0)) == 0))


def _weighted(df: DataFrame, distinct: bool, cap: int, seed: int) -> DataFrame:
    """``window, target, weight`` rows, merged when ``distinct``, capped at ``cap`` rows.

    The cap keeps a row when a hash of (seed, the row's identity) falls under cap/rows: the
    window's block and position, or the (window, target) pair itself when distinct. So the sample
    is uniform and the same on any partitioning and run. Weights are kept as they are, so the
    weighted loss stays an unbiased estimate of the full one. ``cap`` 0 keeps every row.
    """
    if distinct:
        df = df.groupBy("window", "target").agg(F.count(F.lit(1)).cast("float").alias("weight"))
        ident = [F.col("window"), F.col("target")]
    else:
        df = df.withColumn("weight", F.lit(1.0).cast("float"))
        ident = [F.col("block_id"), F.col("position")]
    if cap > 0:
        n = df.count()
        if n > cap:
            u = F.pmod(F.xxhash64(F.lit(seed), *ident), F.lit(2**31)) / F.lit(float(2**31))
            df = df.where(u < F.lit(cap / n))
            log.info("training rows: a hashed sample of about %d of %d rows (cap %d)", cap, n, cap)
    return df.select("window", "target", "weight")


def key_dataset(windows: DataFrame, distinct: bool, cap: int = 0, seed: int = 0) -> DataFrame:
    """``window array<int>, target int, weight float`` for the Key LSTM (see :func:`_weighted`)."""
    cols = [F.col("window"), F.col("next_event").alias("target")]
    if not distinct:
        cols = ["block_id", "position", *cols]
    return _weighted(windows.select(*cols), distinct, cap, seed)


def has_intervals(windows: DataFrame) -> bool:
    """Whether any window carries time intervals (the value model needs them)."""
    return windows.where(F.col("next_interval").isNotNull()).limit(1).count() > 0


def interval_stats(train_windows: DataFrame) -> IntervalStats:
    """Mean and std of ``next_interval`` over the given (train-normal) windows."""
    row = train_windows.where(F.col("next_interval").isNotNull()).agg(
        F.avg("next_interval").alias("mean"), F.stddev_pop("next_interval").alias("std"),
        F.count(F.lit(1)).alias("n")).first()
    if not row["n"]:
        raise ValueError("no train-normal windows with time intervals")
    std = float(row["std"] or 0.0)
    return IntervalStats(float(row["mean"]), std if std > 0 else 1.0, int(row["n"]))


def value_dataset(windows: DataFrame, stats: IntervalStats, distinct: bool, cap: int = 0,
                  seed: int = 0) -> DataFrame:
    """``window array<float>, target float, weight float`` (z-scored) for the Value LSTM."""
    m, s = F.lit(stats.mean), F.lit(stats.std)
    df = windows.where(F.col("next_interval").isNotNull()).select(
        "block_id", "position", F.col("window_intervals").alias("window"), F.col("next_interval").alias("target"))
    df = _weighted(df, distinct, cap, seed)
    return df.select(
        F.transform("window", lambda x: ((x - m) / s).cast("float")).alias("window"),
        ((F.col("target") - m) / s).cast("float").alias("target"),
        "weight",
    )
