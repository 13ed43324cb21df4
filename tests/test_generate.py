"""Workload generator: deterministic, Loghub-format, resampled from real sessions, ingestable."""

from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.ingest.generate import run_generate
from deeplog_spark.ingest.runner import run_ingest
from deeplog_spark.core.tables import read_table


def test_generated_workload_is_deterministic_real_shaped_and_ingests_cleanly(spark, cfg, tmp_path):
    gen = cfg.replace(gen_blocks=3000, gen_anomaly_ratio=0.05, gen_timing_share=0.2)
    out1 = run_generate(spark, gen.replace(gen_out=str(tmp_path / "a")))
    out2 = run_generate(spark, gen.replace(gen_out=str(tmp_path / "b"), shuffle_partitions=3))
    assert (out1["blocks"], out1["anomalies"], out1["timing_anomalies"]) == (3000, 150, 30)
    read = lambda d: sorted(map(tuple, spark.read.option("header", True).csv(str(tmp_path / d / "Event_traces.csv"))  # noqa: E731
                                .collect()))
    rows = read("a")
    assert rows == read("b") and out1["events"] == out2["events"]  # same seed, other partitioning: same files
    header = spark.read.option("header", True).csv(str(tmp_path / "a" / "Event_traces.csv")).columns
    assert header == ["BlockId", "Label", "Type", "Features", "TimeInterval", "Latency"]
    assert "SYNTHETIC" in (tmp_path / "a" / "GENERATED.md").read_text()

    counts = run_ingest(spark, cfg.replace(event_traces=str(tmp_path / "a" / "Event_traces.csv"),
                                           anomaly_labels=str(tmp_path / "a" / "anomaly_label.csv")))
    assert (counts["traces"], counts["trace_rejects"], counts["anomalies"]) == (3000, 0, 150)
    assert counts.get("label_rejects", 0) == 0
    traces = read_table(spark, cfg.table_path(schemas.TRACES))
    assert traces.where(F.size("intervals") != F.size("events")).count() == 0
    assert traces.where(F.col("intervals")[0] != 0.0).count() == 0
    # whole seconds, as real HDFS intervals are (log timestamps have 1 s resolution)
    assert traces.where(F.exists("intervals", lambda x: x != F.floor(x))).count() == 0
    # every generated event sequence is a real session of the source sample; timing anomalies are
    # resampled *normal* sessions (their anomaly is the stalled interval), the rest keep their pool
    src = spark.read.option("header", True).csv(cfg.event_traces).join(
        spark.read.option("header", True).csv(cfg.anomaly_labels), "BlockId")
    pools = {lab: {r[0] for r in src.where(F.col("Label") == lab).select("Features").collect()}
             for lab in ("Normal", "Anomaly")}
    by_type = {}
    for r in rows:
        by_type.setdefault(r[2], set()).add(r[3])
    assert by_type[None] <= pools["Normal"] and by_type["synthetic-timing"] <= pools["Normal"]
    assert by_type["synthetic-structural"] <= pools["Anomaly"]
    assert traces.where((F.col("type") == "synthetic-timing") & (F.col("label") != 1)).count() == 0
