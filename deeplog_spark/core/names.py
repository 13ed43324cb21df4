"""Table names, ids and reject reasons: the plain names every layer uses (no Spark import).

:mod:`deeplog_spark.core.schemas` adds the Spark schemas of the tables; the torch side
(:mod:`deeplog_spark.nn`) reads table names from here.
"""

from __future__ import annotations

import dataclasses

# Delta table names under Config.tables_root.
TEMPLATES = "templates"
TRACES = "traces"
INGEST_REJECTS = "ingest_rejects"
WINDOWS = "windows"
PREDICTIONS = "predictions"
VERDICTS = "verdicts"
METRICS = "metrics"
TEMPLATE_COUNTS = "template_counts"
#: the normal count patterns of every trained run (the quantitative model), partitioned by run_id
COUNT_PATTERNS = "count_patterns"
#: the Drain3 miner of mined templates (one row: its JSON state), so later batches get the same ids
MINER_STATE = "miner_state"
#: one row per detection (when, which model, what it found), for SQL alerts
DETECTION_RUNS = "detection_runs"
#: the view of the newest final verdict per session of the newest detection's model (with a catalog)
LATEST_VERDICTS = "latest_verdicts"
#: the events of the sessions still open after the last batch (the session rule across batches)
OPEN_SESSIONS = "open_sessions"
#: one row per batch of the session rule: its watermark, what it closed, the state it started from
SESSION_STATE = "session_state"
#: Every table a stage writes (``--task register`` registers the existing ones in the catalog).
ALL_TABLES = (TEMPLATES, TRACES, INGEST_REJECTS, WINDOWS, PREDICTIONS, VERDICTS, METRICS, TEMPLATE_COUNTS,
              COUNT_PATTERNS, MINER_STATE, DETECTION_RUNS, OPEN_SESSIONS, SESSION_STATE)

#: Event id used to left-pad windows of sessions shorter than h+1; real event ids start at 1.
PADDING_ID = 0


class Reason:
    """Reasons written to ``ingest_rejects.reason``."""

    MALFORMED_CSV_ROW = "malformed_csv_row"
    # the header line again inside a file (two files concatenated)
    REPEATED_HEADER = "repeated_header"
    # an id holding a quote or a control character (the fragment of a row broken by a line break)
    MALFORMED_BLOCK_ID = "malformed_block_id"
    # a NaN, negative or absurdly large Latency
    INVALID_LATENCY = "invalid_latency"
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
    CONFLICTING_LABEL = "conflicting_label"
    LABEL_UNKNOWN_BLOCK = "label_unknown_block"
    BLOCK_ALREADY_INGESTED = "block_already_ingested"
    # an event of a session that an earlier batch closed (the session rule across batches)
    SESSION_CLOSED = "session_closed"
    # raw HDFS log lines
    MALFORMED_LOG_LINE = "malformed_log_line"
    MALFORMED_TIMESTAMP = "malformed_timestamp"
    # a time before EARLIEST_EVENT_TIME or more than a day after the ingest (a broken clock, an
    # epoch of nines, a two-digit year read in the wrong century)
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    UNKNOWN_TEMPLATE = "unknown_template"
    NO_BLOCK_ID = "no_block_id"
    # raw lines of other systems segmented by id: the line names no session
    NO_SESSION_ID = "no_session_id"


# Input sources named in ingest_rejects.source.
SOURCE_EVENT_TRACES = "event_traces"
SOURCE_ANOMALY_LABELS = "anomaly_labels"
SOURCE_RAW_LOG = "raw_log"
SOURCE_SEQUENCES = "sequences"


def marker_ids(vocab_size: int) -> tuple[int, int]:
    """(start, end) ids framing sessions for a vocabulary of event ids 1..vocab_size."""
    return vocab_size + 1, vocab_size + 2


@dataclasses.dataclass(frozen=True)
class TableRef:
    """A Delta table: its location, and its catalog name (``schema.table`` or
    ``catalog.schema.table``) when it is registered in the session catalog."""

    path: str
    name: str | None = None

    def __str__(self) -> str:
        return self.name or self.path

    @property
    def sql(self) -> str:
        """The table in SQL: its name, or ``delta.`<path>```."""
        return self.name or f"delta.`{self.path}`"
