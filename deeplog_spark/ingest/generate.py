"""Workload generator: full-size, SYNTHETIC Loghub-format inputs resampled from real sessions.

Everything this writes is synthetic and says so (``GENERATED.md`` beside the files, ``Type``
column ``synthetic-*``). It resamples whole real sessions (event sequences) of a real sample:

- ``gen_blocks`` blocks, of which ``gen_anomaly_ratio`` are anomalies. A share ``gen_timing_share``
  of the anomalies are *timing* anomalies: a resampled normal session whose interval at one
  position is stretched 1000x (a stall), for the value model. The other anomalies are resampled
  real anomalous sessions (normal and anomalous pools are sampled separately, so lengths and
  repetition structure stay those of real HDFS sessions).
- Time intervals come from a documented model, not from data: the real per-event timestamps of
  these blocks are not available, and ``HDFS_2k.log`` cannot calibrate per-block gaps (its 2,000
  lines name 1,989 different blocks). The interval before event ``e`` is log-normal with the median
  and spread of :data:`INTERVAL_MODEL` (seconds): write-pipeline events within about a second,
  reads and verification minutes later, deletion about an hour later. The first interval is 0.
  Intervals are rounded to whole seconds, as real ones are (HDFS log timestamps have 1 s resolution).
- Everything is a function of (seed, block index): the same seed gives the same files on any
  cluster and partitioning. BlockIds are ``blk_<xxhash64(seed, index)>`` (64-bit; a collision
  among 3M ids has probability about 2e-7 and would show as ``duplicate_block_id`` rejects).

Output under ``gen_out``: ``Event_traces.csv/`` (BlockId, Label Success/Fail, Type, Features,
TimeInterval, Latency = sum of intervals) and ``anomaly_label.csv/`` (BlockId, Label), each a
directory of CSV part files that the ingest reads as one input.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from deeplog_spark.core.config import Config
from deeplog_spark.core.logs import stage
from deeplog_spark.core.runs import write_json
from deeplog_spark.ingest.traces import ingest, read_anomaly_labels, read_event_traces, read_templates

log = logging.getLogger(__name__)

#: event id -> (median seconds, log-space sigma) of the interval before that event.
#: Write pipeline (allocate, receive, responder, received, addStoredBlock, replication): ~0.5 s.
#: Serving, verification, exceptions while serving: ~10 min. Deletion: ~1 h. Others: ~5 s.
INTERVAL_MODEL: dict[int, tuple[float, float]] = {
    **{e: (0.5, 1.0) for e in (5, 6, 9, 11, 13, 14, 15, 16, 18, 22, 25, 26, 27)},
    **{e: (600.0, 1.5) for e in (2, 3, 4)},
    **{e: (3600.0, 1.0) for e in (20, 21, 23, 24, 28)},
}
DEFAULT_INTERVAL = (5.0, 1.5)
STALL_FACTOR = 1000.0


def _uniform(seed: int, *parts: Column) -> Column:
    """A uniform in (0, 1) from a hash of the parts (deterministic, partitioning-independent)."""
    return (F.pmod(F.xxhash64(F.lit(seed), *parts), F.lit(2**31)) + F.lit(0.5)) / F.lit(float(2**31))


def _normal(seed: int, *parts: Column) -> Column:
    """A standard normal by Box-Muller from two hashed uniforms."""
    u1, u2 = _uniform(seed, *parts, F.lit(1)), _uniform(seed, *parts, F.lit(2))
    return F.sqrt(F.lit(-2.0) * F.log(u1)) * F.cos(F.lit(2 * math.pi) * u2)


def _interval_params(event: Column) -> tuple[Column, Column]:
    mu = F.lit(math.log(DEFAULT_INTERVAL[0]))
    sigma = F.lit(DEFAULT_INTERVAL[1])
    for e, (median, s) in INTERVAL_MODEL.items():
        mu = F.when(event == e, F.lit(math.log(median))).otherwise(mu)
        sigma = F.when(event == e, F.lit(s)).otherwise(sigma)
    return mu, sigma


def _pool(traces: DataFrame, label: int) -> DataFrame:
    return (traces.where(F.col("label") == label).select("events")
            .withColumn("idx", F.row_number().over(Window.orderBy(F.xxhash64(F.col("events").cast("string"), F.lit(label)), "events")) - 1))


def generate(spark: SparkSession, real: DataFrame, blocks: int, anomaly_ratio: float, timing_share: float,
             seed: int) -> DataFrame:
    """Synthetic sessions ``block_id, label (0/1), type, events, intervals`` resampled from ``real``
    (``traces`` rows with ``label`` and ``events``)."""
    normal, anomalous = _pool(real, 0).cache(), _pool(real, 1).cache()
    n_norm_pool, n_anom_pool = normal.count(), anomalous.count()
    if n_norm_pool == 0 or n_anom_pool == 0:
        raise ValueError("the real sample needs both normal and anomalous labelled sessions")
    n_anom = round(blocks * anomaly_ratio)
    n_timing = round(n_anom * timing_share)
    n_struct = n_anom - n_timing
    i = F.col("id")
    kind = F.when(i < n_struct, "structural").when(i < n_anom, "timing").otherwise("normal")
    ids = spark.range(blocks).select("id", kind.alias("kind"))
    pick = lambda size: F.pmod(F.xxhash64(F.lit(seed), i, F.lit("pick")), F.lit(size))  # noqa: E731
    struct = (ids.where(F.col("kind") == "structural").withColumn("idx", pick(n_anom_pool))
              .join(F.broadcast(anomalous), "idx"))
    rest = (ids.where(F.col("kind") != "structural").withColumn("idx", pick(n_norm_pool))
            .join(F.broadcast(normal), "idx"))
    sessions = struct.unionByName(rest)

    def interval(e: Column, pos: Column) -> Column:
        mu, sigma = _interval_params(e)
        value = F.exp(mu + sigma * _normal(seed, i, pos))
        stall_at = F.lit(1) + F.pmod(F.xxhash64(F.lit(seed), i, F.lit("stall")), F.greatest(F.size("events") - 1, F.lit(1)))
        value = F.when((F.col("kind") == "timing") & (pos == stall_at), value * F.lit(STALL_FACTOR)).otherwise(value)
        # whole seconds: HDFS log timestamps have 1 s resolution, so real intervals do too
        return F.when(pos == 0, F.lit(0.0)).otherwise(F.round(value, 0))

    return sessions.select(
        F.concat(F.lit("blk_"), F.xxhash64(F.lit(seed), i, F.lit("block")).cast("string")).alias("block_id"),
        F.when(F.col("kind") == "normal", 0).otherwise(1).alias("label"),
        F.when(F.col("kind") == "normal", F.lit(None)).otherwise(F.concat(F.lit("synthetic-"), F.col("kind"))).alias("type"),
        "events",
        F.transform("events", interval).alias("intervals"),
        F.xxhash64(F.lit(seed), i, F.lit("order")).alias("_order"),
    )


def to_event_traces(df: DataFrame) -> DataFrame:
    """Loghub ``Event_traces.csv`` columns as text."""
    return df.orderBy("_order").select(
        F.col("block_id").alias("BlockId"),
        F.when(F.col("label") == 1, "Fail").otherwise("Success").alias("Label"),
        F.col("type").alias("Type"),
        F.concat(F.lit("["), F.array_join(F.transform("events", lambda e: F.concat(F.lit("E"), e.cast("string"))), ","),
                 F.lit("]")).alias("Features"),
        F.concat(F.lit("["), F.array_join(F.transform("intervals", lambda x: x.cast("string")), ", "),
                 F.lit("]")).alias("TimeInterval"),
        F.round(F.aggregate("intervals", F.lit(0.0), lambda acc, x: acc + x), 3).cast("string").alias("Latency"),
    )


def run_generate(spark: SparkSession, cfg: Config) -> dict:
    """Write a synthetic workload resampled from ``event_traces`` + ``anomaly_labels`` to ``gen_out``."""
    with stage("generate") as st:
        templates = read_templates(spark, cfg.templates)
        labels = read_anomaly_labels(spark, cfg.anomaly_labels) if cfg.anomaly_labels else None
        res = ingest(read_event_traces(spark, cfg.event_traces), templates, labels, _now())
        out = Path(cfg.gen_out)
        df = generate(spark, res.traces, cfg.gen_blocks, cfg.gen_anomaly_ratio, cfg.gen_timing_share, cfg.seed).cache()
        try:
            traces = to_event_traces(df)
            opts = {"header": "true", "quoteAll": "false", "escape": '"'}
            traces.write.mode("overwrite").options(**opts).csv(str(out / "Event_traces.csv"))
            (df.orderBy("_order").select(F.col("block_id").alias("BlockId"),
                                         F.when(F.col("label") == 1, "Anomaly").otherwise("Normal").alias("Label"))
             .write.mode("overwrite").options(**opts).csv(str(out / "anomaly_label.csv")))
            counts = df.agg(F.count(F.lit(1)).alias("blocks"), F.sum("label").alias("anomalies"),
                            F.sum(F.size("events")).alias("events"),
                            F.sum((F.col("type") == "synthetic-timing").cast("int")).alias("timing"),
                            F.sum(F.greatest(F.size("events") - cfg.h, F.lit(1))).alias("windows")).first()
        finally:
            df.unpersist()
        summary = {"out": str(out), "blocks": counts["blocks"], "anomalies": int(counts["anomalies"]),
                   "timing_anomalies": int(counts["timing"]), "events": int(counts["events"]),
                   f"windows_h{cfg.h}": int(counts["windows"]), "seed": cfg.seed,
                   "source": cfg.event_traces}
        (out / "GENERATED.md").write_text(_readme(summary))
        write_json(out / "generated.json", {**summary, "anomaly_ratio": cfg.gen_anomaly_ratio,
                                            "timing_share": cfg.gen_timing_share, "synthetic": True})
        st.update(summary)
    return summary


def _now():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _readme(s: dict) -> str:
    model = ", ".join(f"E{e}: median {m:g} s, sigma {sg:g}" for e, (m, sg) in sorted(INTERVAL_MODEL.items()))
    return (f"# SYNTHETIC workload (not real data)\n\nGenerated by `--task generate` from the real sessions of "
            f"`{s['source']}` (seed {s['seed']}): {s['blocks']:,} blocks, {s['anomalies']:,} anomalies "
            f"({s['timing_anomalies']:,} of them timing anomalies: a normal session with one interval stretched "
            f"{STALL_FACTOR:g}x), {s['events']:,} events. Event sequences are real sessions resampled; BlockIds, "
            f"intervals and the timing anomalies are synthetic.\n\nInterval before each event: log-normal, "
            f"{model}; other events median {DEFAULT_INTERVAL[0]:g} s, sigma {DEFAULT_INTERVAL[1]:g}. "
            "The first interval of a session is 0; intervals are rounded to whole seconds (the resolution of HDFS "
            "log timestamps).\n")
