"""Spark schemas of the tables, declared once for every stage (names and reasons: :mod:`deeplog_spark.core.names`)."""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# the plain names, re-exported so `schemas.TRACES` and `schemas.Reason` read as before
from deeplog_spark.core.names import (  # noqa: F401
    COUNT_PATTERNS,
    DETECTION_RUNS,
    INGEST_REJECTS,
    LATEST_VERDICTS,
    METRICS,
    MINER_STATE,
    OPEN_SESSIONS,
    PADDING_ID,
    PREDICTIONS,
    SESSION_STATE,
    SOURCE_ANOMALY_LABELS,
    SOURCE_EVENT_TRACES,
    SOURCE_RAW_LOG,
    SOURCE_SEQUENCES,
    TEMPLATE_COUNTS,
    TEMPLATES,
    TRACES,
    VERDICTS,
    WINDOWS,
    Reason,
)

TEMPLATES_SCHEMA = StructType(
    [
        StructField("event_id", IntegerType(), False),
        StructField("event_key", StringType(), False),
        StructField("template", StringType(), False),
    ]
)

TRACES_SCHEMA = StructType(
    [
        StructField("block_id", StringType(), False),
        StructField("events", ArrayType(IntegerType()), False),
        StructField("intervals", ArrayType(DoubleType()), True),
        StructField("label", IntegerType(), True),
        StructField("split", StringType(), False),
        StructField("event_count", IntegerType(), False),
        StructField("type", StringType(), True),
        StructField("latency", DoubleType(), True),
        StructField("source_file", StringType(), True),
        StructField("ingest_batch", StringType(), True),
        # when this batch was ingested (UTC): the windows stage re-windows a batch ingested again
        StructField("ingested_at", TimestampType(), True),
        # the event times of the session's first and last events (raw logs; null without times)
        StructField("session_start", TimestampType(), True),
        StructField("session_end", TimestampType(), True),
    ]
)

INGEST_REJECTS_SCHEMA = StructType(
    [
        StructField("source", StringType(), False),
        StructField("source_file", StringType(), True),
        StructField("block_id", StringType(), True),
        StructField("raw", StringType(), True),
        StructField("reason", StringType(), False),
        StructField("detail", StringType(), True),
        StructField("ingested_at", TimestampType(), False),
        StructField("ingest_batch", StringType(), True),
    ]
)

WINDOWS_SCHEMA = StructType(
    [
        StructField("block_id", StringType(), False),
        StructField("split", StringType(), False),
        StructField("label", IntegerType(), True),
        StructField("position", IntegerType(), False),
        StructField("window", ArrayType(IntegerType()), False),
        StructField("next_event", IntegerType(), False),
        StructField("window_intervals", ArrayType(DoubleType()), True),
        StructField("next_interval", DoubleType(), True),
        StructField("ingest_batch", StringType(), True),
        StructField("ingested_at", TimestampType(), True),
    ]
)


METRICS_SCHEMA = StructType(
    [StructField("run_id", StringType(), False), StructField("g", IntegerType(), False),
     StructField("k", DoubleType(), False), StructField("split", StringType(), False),
     StructField("threshold_source", StringType(), False), StructField("detector", StringType(), False),
     # the detector's threshold (rank g for `key`, a score for the others; null for rules such as fused)
     StructField("threshold", DoubleType(), True), StructField("sessions", LongType(), False)]
    + [StructField(c, LongType(), False) for c in ("tp", "fp", "tn", "fn")]
    + [StructField(c, DoubleType(), False)
       for c in ("precision", "recall", "f1", "fpr", "accuracy", "balanced_accuracy", "mcc")]
    + [StructField("auroc", DoubleType(), True),
       # the verdicts evaluated: detect's (g, k); a re-run of that evaluation replaces these rows
       StructField("detect_g", IntegerType(), False), StructField("detect_k", DoubleType(), False),
       StructField("evaluated_at", TimestampType(), False),
       # the batch evaluated (eval --ingest_batch: split "all"); null for the whole detection
       StructField("ingest_batch", StringType(), True)]
)

DETECTION_RUNS_SCHEMA = StructType(
    [StructField("detection_id", StringType(), False), StructField("detected_at", TimestampType(), False),
     StructField("run_id", StringType(), False), StructField("g", IntegerType(), False),
     StructField("k", DoubleType(), False), StructField("model", StringType(), False),
     StructField("registered_version", StringType(), True), StructField("ingest_batch", StringType(), True),
     StructField("sessions", LongType(), False), StructField("anomalies", LongType(), False),
     StructField("deeplog_anomalies", LongType(), False), StructField("new_anomalies", LongType(), False),
     StructField("seconds", DoubleType(), False), StructField("alert_status", StringType(), True)]
)

OPEN_SESSIONS_SCHEMA = StructType(
    [StructField("block_id", StringType(), False), StructField("t", DoubleType(), False),
     StructField("f", StringType(), True), StructField("o", LongType(), True), StructField("e", IntegerType(), False),
     StructField("lab", IntegerType(), True), StructField("ingest_batch", StringType(), True)]
)

SESSION_STATE_SCHEMA = StructType(
    [StructField("seq", LongType(), False), StructField("ingest_batch", StringType(), False),
     StructField("ingested_at", TimestampType(), False), StructField("max_event_time", TimestampType(), True),
     StructField("watermark", TimestampType(), True), StructField("session_timeout", DoubleType(), False),
     StructField("flushed", BooleanType(), False), StructField("open_version", LongType(), True),
     StructField("lines", LongType(), False), StructField("sessions_closed", LongType(), False),
     StructField("sessions_open", LongType(), False), StructField("events_open", LongType(), False),
     StructField("late_events", LongType(), False), StructField("late_sessions", LongType(), False)]
)
