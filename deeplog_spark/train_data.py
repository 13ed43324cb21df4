"""Training data: the windows table turned into (window, target, weight) rows for each model.

Training uses the normal sessions of the train split (unlabelled sessions count as normal, as
DeepLog assumes of its training logs); validation uses the normal sessions of the val split.
With ``distinct=True`` identical (window, target) rows are merged and ``weight`` holds how many
windows each stands for, so weighted losses and metrics equal those over all windows.
"""

from __future__ import annotations

import dataclasses

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


@dataclasses.dataclass(frozen=True)
class IntervalStats:
    """Z-score statistics of the intervals, fitted on train-normal windows only."""

    mean: float
    std: float
    count: int


def normal_windows(windows: DataFrame, split: str) -> DataFrame:
    """Windows of ``split`` whose session is normal (label 0) or unlabelled."""
    return windows.where((F.col("split") == split) & (F.coalesce(F.col("label"), F.lit(0)) == 0))


def _weighted(df: DataFrame, distinct: bool) -> DataFrame:
    if distinct:
        return df.groupBy("window", "target").agg(F.count(F.lit(1)).cast("float").alias("weight"))
    return df.withColumn("weight", F.lit(1.0).cast("float"))


def key_dataset(windows: DataFrame, distinct: bool) -> DataFrame:
    """``window array<int>, target int, weight float`` for the Key LSTM."""
    df = windows.select(F.col("window"), F.col("next_event").alias("target"))
    return _weighted(df, distinct)


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


def value_dataset(windows: DataFrame, stats: IntervalStats, distinct: bool) -> DataFrame:
    """``window array<float>, target float, weight float`` (z-scored) for the Value LSTM."""
    m, s = F.lit(stats.mean), F.lit(stats.std)
    df = windows.where(F.col("next_interval").isNotNull()).select(
        F.col("window_intervals").alias("window"), F.col("next_interval").alias("target"))
    df = _weighted(df, distinct)
    return df.select(
        F.transform("window", lambda x: ((x - m) / s).cast("float")).alias("window"),
        ((F.col("target") - m) / s).cast("float").alias("target"),
        "weight",
    )
