"""BlockId hash split: ratios, independence from partitioning/order, the documented SQL formula."""

import pytest
from pyspark.sql import functions as F

from deeplog_spark.ingest.split import assign_split


def _ids(n):
    return [f"blk_{(i * 7919) % 1000003 - 500000}" for i in range(n)]


def test_split_ignores_partitioning_and_row_order(spark):
    df = spark.createDataFrame([(b,) for b in _ids(5000)], "block_id string")
    a = {r.block_id: r.split for r in assign_split(df.repartition(1), 1337, 0.8, 0.1).collect()}
    b = {r.block_id: r.split for r in assign_split(df.repartition(7).orderBy(F.rand(3)), 1337, 0.8, 0.1).collect()}
    assert a == b
    assert set(a.values()) == {"train", "val", "test"}


def test_split_matches_the_documented_sql(spark):
    df = spark.createDataFrame([(b,) for b in _ids(2000)], "block_id string")
    df.createOrReplaceTempView("blocks")
    sql = spark.sql("""
        SELECT block_id,
               CASE WHEN pmod(xxhash64(CAST(1337 AS INT), block_id), 10000) < 8000 THEN 'train'
                    WHEN pmod(xxhash64(CAST(1337 AS INT), block_id), 10000) < 9000 THEN 'val'
                    ELSE 'test' END AS split
        FROM blocks""")
    ours = assign_split(df, 1337, 0.8, 0.1)
    assert ours.exceptAll(sql).count() == 0 and sql.exceptAll(ours).count() == 0


def test_seed_changes_the_assignment(spark):
    df = spark.createDataFrame([(b,) for b in _ids(1000)], "block_id string")
    a = {r.block_id: r.split for r in assign_split(df, 1337, 0.8, 0.1).collect()}
    b = {r.block_id: r.split for r in assign_split(df, 1338, 0.8, 0.1).collect()}
    assert sum(a[k] != b[k] for k in a) > 100


def test_known_assignments_stay_fixed(spark):
    # Golden values: if the formula changes, every stored split silently changes with it.
    df = spark.createDataFrame([("blk_5321056764407740209",), ("blk_-3477372135918515549",),
                                ("blk_38865049064139660",)], "block_id string")
    got = {r.block_id: (r.bucket, r.split) for r in assign_split(df, 1337, 0.8, 0.1).select(
        "block_id", "split", F.pmod(F.xxhash64(F.lit(1337), "block_id"), 10000).alias("bucket")).collect()}
    assert got == GOLDEN


def test_split_ratios_on_sample15k(spark, cfg, shared_hdfs):
    from deeplog_spark.ingest.runner import run_ingest

    counts = run_ingest(spark, cfg.replace(
        event_traces=str(shared_hdfs / "sample15k" / "Event_traces.csv.gz"),
        anomaly_labels=str(shared_hdfs / "sample15k" / "anomaly_label.csv.gz")))
    n = counts["traces"]
    for split, ratio in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(counts["splits"][split] / n - ratio) < 0.01, (split, counts["splits"])


def test_bad_ratios_are_refused(spark):
    df = spark.createDataFrame([("a",)], "block_id string")
    with pytest.raises(ValueError, match="train_ratio"):
        assign_split(df, 1337, 0.9, 0.2)
    with pytest.raises(ValueError, match="block_id"):
        assign_split(df.withColumnRenamed("block_id", "x"), 1337, 0.8, 0.1)


# Measured once with pyspark 4.0.5 (xxhash64 is specified by Spark and platform-independent).
GOLDEN = {
    "blk_5321056764407740209": (5192, "train"),
    "blk_-3477372135918515549": (8249, "val"),
    "blk_38865049064139660": (9586, "test"),
}
