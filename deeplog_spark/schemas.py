"""Table names, schemas and reject reasons, declared once for every stage."""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# Delta table names under Config.tables_root.
TEMPLATES = "templates"
TRACES = "traces"
INGEST_REJECTS = "ingest_rejects"
WINDOWS = "windows"
PREDICTIONS = "predictions"
VERDICTS = "verdicts"
METRICS = "metrics"
TEMPLATE_COUNTS = "template_counts"

#: Event id used to left-pad windows of sessions shorter than h+1; real event ids start at 1.
PADDING_ID = 0

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
        StructField("window_intervals", ArrayType(FloatType()), True),
        StructField("next_interval", FloatType(), True),
        StructField("ingest_batch", StringType(), True),
    ]
)


METRICS_SCHEMA = StructType(
    [StructField("run_id", StringType(), False), StructField("g", IntegerType(), False),
     StructField("k", DoubleType(), False), StructField("split", StringType(), False),
     StructField("threshold_source", StringType(), False), StructField("detector", StringType(), False),
     StructField("sessions", LongType(), False)]
    + [StructField(c, LongType(), False) for c in ("tp", "fp", "tn", "fn")]
    + [StructField(c, DoubleType(), False) for c in ("precision", "recall", "f1", "accuracy", "balanced_accuracy", "mcc")]
    + [StructField("auroc", DoubleType(), True),
       # the verdicts evaluated: detect's (g, k); a re-run of that evaluation replaces these rows
       StructField("detect_g", IntegerType(), False), StructField("detect_k", DoubleType(), False),
       StructField("evaluated_at", TimestampType(), False)]
)


class Reason:
    """Reasons written to ``ingest_rejects.reason``."""

    MALFORMED_CSV_ROW = "malformed_csv_row"
    # bytes that are not UTF-8 (decoded as U+FFFD): the row's values cannot be trusted
    INVALID_ENCODING = "invalid_encoding"
    MISSING_BLOCK_ID = "missing_block_id"
    DUPLICATE_BLOCK_ID = "duplicate_block_id"
    MALFORMED_FEATURES = "malformed_features"
    EMPTY_SEQUENCE = "empty_sequence"
    UNKNOWN_EVENT_KEY = "unknown_event_key"
    MALFORMED_TIME_INTERVAL = "malformed_time_interval"
    INVALID_TIME_INTERVAL = "invalid_time_interval"
    LENGTH_MISMATCH = "length_mismatch"
    MALFORMED_LABEL = "malformed_label"
    MALFORMED_LATENCY = "malformed_latency"
    DUPLICATE_LABEL = "duplicate_label"
    LABEL_UNKNOWN_BLOCK = "label_unknown_block"
    BLOCK_ALREADY_INGESTED = "block_already_ingested"
    # raw HDFS log lines
    MALFORMED_LOG_LINE = "malformed_log_line"
    MALFORMED_TIMESTAMP = "malformed_timestamp"
    UNKNOWN_TEMPLATE = "unknown_template"
    NO_BLOCK_ID = "no_block_id"


# Input sources named in ingest_rejects.source.
SOURCE_EVENT_TRACES = "event_traces"
SOURCE_ANOMALY_LABELS = "anomaly_labels"
SOURCE_RAW_LOG = "raw_log"
