"""Split stage: train/val/test assigned from a hash of the BlockId.

The assignment depends only on the BlockId string and the seed, so it is identical across runs,
partitionings, row orders and machines. In SQL, for seed 1337 and 80/10/10::

    CASE WHEN pmod(xxhash64(CAST(1337 AS INT), block_id), 10000) < 8000 THEN 'train'
         WHEN pmod(xxhash64(CAST(1337 AS INT), block_id), 10000) < 9000 THEN 'val'
         ELSE 'test' END

``xxhash64`` is Spark's 64-bit xxHash of its arguments in order (the seed as a 4-byte int, then
the UTF-8 bytes of ``block_id``); ``pmod`` keeps the bucket in [0, 10000).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

#: Hash buckets; ratios are applied with a resolution of 1/BUCKETS.
BUCKETS = 10_000


def split_bucket(block_id: Column, seed: int) -> Column:
    """``pmod(xxhash64(seed, block_id), BUCKETS)`` as a column."""
    return F.pmod(F.xxhash64(F.lit(seed).cast("int"), block_id), F.lit(BUCKETS))


def split_column(block_id: Column, seed: int, train_ratio: float, val_ratio: float) -> Column:
    """'train' / 'val' / 'test' for each BlockId (test takes the remaining buckets)."""
    if not (0 <= train_ratio <= 1 and 0 <= val_ratio <= 1 and train_ratio + val_ratio <= 1 + 1e-9):
        raise ValueError(f"train_ratio={train_ratio} and val_ratio={val_ratio} must be in [0, 1] "
                         "and sum to at most 1")
    train_end = round(train_ratio * BUCKETS)
    val_end = round((train_ratio + val_ratio) * BUCKETS)
    bucket = split_bucket(block_id, seed)
    return F.when(bucket < train_end, "train").when(bucket < val_end, "val").otherwise("test")


def assign_split(traces: DataFrame, seed: int, train_ratio: float, val_ratio: float,
                 block_col: str = "block_id") -> DataFrame:
    """Add (or replace) the ``split`` column from the hash of ``block_col``.

    Example::

        assign_split(traces, seed=1337, train_ratio=0.8, val_ratio=0.1)
    """
    if block_col not in traces.columns:
        raise ValueError(f"assign_split: column {block_col!r} not in {traces.columns}")
    return traces.withColumn("split", split_column(F.col(block_col), seed, train_ratio, val_ratio))


def fold_split(traces: DataFrame, seed: int, folds: int, test_fold: int, block_col: str = "block_id") -> DataFrame:
    """Cross-validation folds by BlockId hash: ``test`` is fold ``test_fold``, ``val`` the next fold
    (mod ``folds``), ``train`` the rest. Over the ``folds`` values of ``test_fold`` every block is
    tested exactly once; the folds depend only on (seed, BlockId), like the split.

    Example::

        fold_split(traces, seed=1, folds=10, test_fold=3)  # 80 / 10 / 10, the test tenth rotating
    """
    if not (folds >= 3 and 0 <= test_fold < folds):
        raise ValueError(f"need folds >= 3 and 0 <= test_fold < folds, got folds={folds} test_fold={test_fold}")
    bucket = F.pmod(F.xxhash64(F.lit(seed).cast("int"), F.col(block_col)), F.lit(folds))
    return traces.withColumn("split", F.when(bucket == test_fold, "test")
                             .when(bucket == (test_fold + 1) % folds, "val").otherwise("train"))
