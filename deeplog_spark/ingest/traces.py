"""Ingest stage: Loghub ``Event_traces.csv``, ``anomaly_label.csv`` and templates -> Delta.

Readers take a path and return raw string columns read with an explicit schema (malformed CSV
rows are kept in ``_corrupt_record``). The transforms are pure ``DataFrame -> DataFrame``: each
input row is either accepted or becomes one ``ingest_rejects`` row with a reason, so
``input rows = accepted + rejected`` for every input file.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
import re
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from deeplog_spark.core.errors import InputError
from deeplog_spark.core.schemas import (
    INGEST_REJECTS_SCHEMA,
    SOURCE_ANOMALY_LABELS,
    SOURCE_EVENT_TRACES,
    TEMPLATES_SCHEMA,
    Reason,
)

log = logging.getLogger(__name__)

CORRUPT = "_corrupt_record"
SOURCE_FILE = "_source_file"

TRACE_REQUIRED = ("BlockId", "Features")
TRACE_OPTIONAL = ("Label", "Type", "TimeInterval", "Latency")
LABEL_COLUMNS = ("BlockId", "Label")
TEMPLATE_COLUMNS = ("EventId", "EventTemplate")

_EVENT_KEY_RE = re.compile(r"^E([1-9][0-9]*)$")
#: Files read from an input folder: CSV, plain or gzipped. Anything else there (a README.md, a
#: _SUCCESS marker) is skipped; Spark skips hidden files (.crc) itself.
CSV_FILES = "*.{csv,gz}"
#: The largest interval (seconds) taken as real: about 31 years. Larger values are rejected as
#: invalid_time_interval (a 1e39 would overflow float32 and poison the value model's statistics).
MAX_INTERVAL_S = 1e9


# -- readers ------------------------------------------------------------------------------------


def _is_folder(path: str) -> bool:
    """Whether ``path`` names a folder of input files (a local directory, or a URI ending in /)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path) and not path.startswith("file:"):
        return path.endswith("/")
    return os.path.isdir(path.removeprefix("file://").removeprefix("file:"))


def _read_csv_strings(spark: SparkSession, path: str, required: tuple[str, ...],
                      optional: tuple[str, ...] = ()) -> DataFrame:
    """Read a headered CSV (RFC 4180 quoting, ``""`` inside quotes) as strings, keeping malformed rows
    in ``_corrupt_record``. A folder contributes its ``*.csv`` and ``*.gz`` files only.

    The header decides which optional columns exist; names are matched without surrounding spaces
    (``BlockId, Features`` works); a missing required column or a repeated name is an error.
    """
    # multiLine: a quoted field may hold a line break, as in any CSV reader, so a record is never cut
    # into fragments that look like rows of their own (a file is then parsed by one task; .gz files
    # are anyway)
    reader = spark.read.option("header", True).option("escape", '"').option("multiLine", True)
    if _is_folder(path):
        reader = reader.option("pathGlobFilter", CSV_FILES)
    try:
        raw_header = reader.csv(path).columns
    except Exception as exc:  # Spark raises AnalysisException subclasses for missing paths
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            raise InputError(f"input not found: {path}") from exc
        if "UNABLE_TO_INFER_SCHEMA" in str(exc):
            raise InputError(f"{path}: no input file (a folder contributes its *.csv and *.gz files)") from exc
        raise
    if not raw_header:
        raise InputError(f"{path}: empty file, expected a header with columns {', '.join(required)}")
    header = [c.strip() for c in raw_header]
    # Spark renames a repeated column (Label, Label -> Label1, Label2): read the header line itself
    lines = spark.read.option("pathGlobFilter", CSV_FILES).text(path) if _is_folder(path) else spark.read.text(path)
    first = lines.first()
    named = [c.strip() for c in next(csv.reader([first[0].lstrip("\ufeff")]))] if first and first[0] else header
    repeated = sorted({c for c in named if [h.lower() for h in named].count(c.lower()) > 1})
    if repeated:
        raise InputError(f"{path}: the header names column(s) {', '.join(repeated)} more than once")
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)}; "
            f"expected {', '.join(required + optional)}"
        )
    extra = [c for c in header if c not in required + optional]
    if extra:
        log.warning("%s: ignoring unknown column(s) %s", path, ", ".join(extra))
    schema = StructType([StructField(c, StringType(), True) for c in raw_header]
                        + [StructField(CORRUPT, StringType(), True)])
    df = (
        reader.schema(schema)
        .option("enforceSchema", False)  # every file's header must match, not just the first
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
        .csv(path)
        .withColumn(SOURCE_FILE, F.col("_metadata.file_path"))
    )
    return df.select(*(F.col(f"`{r}`").alias(c) for r, c in zip(raw_header, header) if c in required + optional),
                     CORRUPT, SOURCE_FILE)


def read_event_traces(spark: SparkSession, path: str) -> DataFrame:
    """Raw ``Event_traces.csv`` rows (plain or .gz, file, glob or directory) as strings."""
    return _read_csv_strings(spark, path, TRACE_REQUIRED, TRACE_OPTIONAL)


def read_anomaly_labels(spark: SparkSession, path: str) -> DataFrame:
    """Raw ``anomaly_label.csv`` rows (BlockId, Label) as strings."""
    return _read_csv_strings(spark, path, LABEL_COLUMNS)


#: The generic sequence input: one session per row, ``session_id,events[,label]``.
SEQUENCE_REQUIRED = ("session_id", "events")
SEQUENCE_OPTIONAL = ("label",)
SESSION_LABEL_COLUMNS = ("session_id", "label")


def _label_word(col: Column, normal: str, anomaly: str) -> Column:
    """A label given as 0/1, normal/anomaly or Normal/Anomaly, as the words ``normal``/``anomaly``
    (anything else is kept, and rejected as ``malformed_label`` by the parser)."""
    v = F.lower(F.trim(col))
    return (F.when(v.isin("0", "normal", "false"), F.lit(normal))
            .when(v.isin("1", "anomaly", "abnormal", "true"), F.lit(anomaly)).otherwise(col))


def read_sequences(spark: SparkSession, path: str) -> DataFrame:
    """The generic sequence input (any system, sessions already built) as raw Event_traces rows.

    A headered CSV (plain or .gz, file, glob or folder) with ``session_id`` and ``events``, and
    optionally ``label`` (0/1 or Normal/Anomaly). ``events`` lists event ids (``5 8 12``,
    ``[5, 8, 12]``, or keys ``E5 E8``) separated by spaces or commas; id n is the template ``En``
    of the templates file. The rows then go through the Event_traces parser, so they get its
    checks and reject reasons; a reject's ``raw`` column shows the row in Event_traces form.
    """
    raw = _read_csv_strings(spark, path, SEQUENCE_REQUIRED, SEQUENCE_OPTIONAL)
    tokens = F.filter(F.split(F.regexp_replace(F.trim(F.col("events")), r"^\[|\]$", ""), r"[\s,]+"),
                      lambda t: t != "")
    keys = F.transform(tokens, lambda t: F.when(t.rlike(r"^[0-9]+$"), F.concat(F.lit("E"), t)).otherwise(t))
    features = F.when(F.col("events").isNotNull(), F.concat(F.lit("["), F.array_join(keys, ","), F.lit("]")))
    cols = [F.col("session_id").alias("BlockId"), features.alias("Features")]
    if "label" in raw.columns:
        cols.append(_label_word(F.col("label"), "Success", "Fail").alias("Label"))
    return raw.select(*cols, CORRUPT, SOURCE_FILE)


def read_session_labels(spark: SparkSession, path: str) -> DataFrame:
    """A label file as raw ``BlockId,Label`` rows: Loghub's ``anomaly_label.csv`` (BlockId,Label with
    Normal/Anomaly) or the generic ``session_id,label`` (0/1 or Normal/Anomaly)."""
    reader = spark.read.option("header", True)
    if _is_folder(path):
        reader = reader.option("pathGlobFilter", CSV_FILES)
    try:
        header = [c.strip().lower() for c in reader.csv(path).columns]
    except Exception:  # missing path and the like: the reader below says it clearly
        header = []
    if "session_id" not in header:
        return read_anomaly_labels(spark, path)
    raw = _read_csv_strings(spark, path, SESSION_LABEL_COLUMNS)
    return raw.select(F.col("session_id").alias("BlockId"), _label_word(F.col("label"), "Normal", "Anomaly").alias("Label"),
                      CORRUPT, SOURCE_FILE)


def read_templates(spark: SparkSession, path: str) -> DataFrame:
    """``HDFS.log_templates.csv`` parsed into ``templates(event_id, event_key, template)``.

    The template file defines the vocabulary, so any bad row is an error, not a reject; so is a
    folder where the file belongs.
    """
    if _is_folder(path):
        raise InputError(f"templates={path} is a folder: pass the templates file itself (EventId,EventTemplate)")
    raw = _read_csv_strings(spark, path, TEMPLATE_COLUMNS)
    return parse_templates(raw, source=path)


# -- templates ----------------------------------------------------------------------------------


def parse_templates(raw: DataFrame, source: str = "templates") -> DataFrame:
    """Validate raw ``EventId,EventTemplate`` rows and return the ``templates`` table.

    ``event_id`` is n for key ``En`` (the Loghub numbering used by ``Event_traces.csv``).
    The table is tiny (tens of rows), so it is validated on the driver.
    """
    rows = raw.select(*TEMPLATE_COLUMNS, CORRUPT).collect()
    out, problems, seen = [], [], set()
    for i, r in enumerate(rows, start=2):  # line 1 is the header
        key = (r["EventId"] or "").strip()
        template = (r["EventTemplate"] or "").strip()
        m = _EVENT_KEY_RE.match(key)
        if r[CORRUPT] is not None or not m or not template:
            problems.append(f"line {i}: {r[CORRUPT] or (key + ',' + template)!r}")
        elif key in seen:
            problems.append(f"line {i}: duplicate EventId {key}")
        else:
            seen.add(key)
            out.append((int(m.group(1)), key, template))
    if problems:
        raise InputError(f"{source}: bad template rows (EventId must be E<n>, template non-empty): "
                         + "; ".join(problems[:5]))
    if not out:
        raise InputError(f"{source}: no templates")
    return raw.sparkSession.createDataFrame(sorted(out), TEMPLATES_SCHEMA)


def event_key_map(templates: DataFrame) -> dict[str, int]:
    """``event_key -> event_id`` from the (small) templates table."""
    return {r["event_key"]: r["event_id"] for r in templates.select("event_key", "event_id").collect()}


# -- traces -------------------------------------------------------------------------------------


def _list_tokens(col: Column) -> Column:
    """Tokens of a bracketed list ``"[a, b, c]"`` (brackets and whitespace removed)."""
    return F.split(F.regexp_replace(F.trim(col), r"[\[\]\s]", ""), ",")


def well_formed_list(col: Column) -> Column:
    """Whether ``col`` is a bracketed list of tokens without spaces or brackets: ``[a, b, c]``.

    One search for what a bad list contains (a bracket inside, an empty token, a space inside a
    token) instead of one match of the list's grammar: Java's engine recursed once per element on
    ``^\\[x(,x)*\\]$``, and a 10,000-event session overflowed the stack and killed the JVM.
    """
    s = F.trim(col)
    inner = s.substr(F.lit(2), F.length(s) - 2)
    return (s.startswith("[") & s.endswith("]") & (F.length(s) >= 2)
            & ~inner.rlike(r"[\[\]]|^\s*,|,\s*,|,\s*$|^\s*$|[^,\s]\s+[^,\s]"))


def not_utf8(columns: list[str]) -> Column:
    """Whether any of ``columns`` held bytes that are not UTF-8 (Spark decodes them as U+FFFD).

    Such a value is lossy: two different BlockIds could decode to the same string.
    """
    return F.concat_ws("", *[F.col(c) for c in columns]).contains("\ufffd")


MALFORMED_ID_DETAIL = "the id holds a quote or a control character (a line break inside a quoted field?)"


def malformed_id(col: Column) -> Column:
    """Whether a session id holds a quote or a control character (NUL, a line break, ...): such an id
    is a fragment of a broken row, not an id."""
    return col.rlike(r'["\x00-\x1f\x7f]')


def repeated_header(first_column: str) -> Column:
    """Whether a row is the header again (two files concatenated): its first field is the column name."""
    return F.lower(F.trim(F.col(first_column))) == first_column.lower()


def with_repeats(df: DataFrame, key: str) -> DataFrame:
    """``df`` plus ``_dup``: how many rows share the row's ``key`` (1 when it is unique).

    Counted on the key alone and joined back, so the rows with their event lists are not shuffled
    and sorted as a window over the key would. Repeated ids are normally few, and adaptive query
    execution broadcasts them at run time; no broadcast is forced, since hostile input (a file
    concatenated with itself) can repeat every id.
    """
    repeated = (df.groupBy(key).agg(F.count(F.lit(1)).alias("_dup")).where(F.col("_dup") > 1))
    return df.join(repeated, key, "left").withColumn("_dup", F.coalesce("_dup", F.lit(1)))


def first_reason(*pairs: tuple[Column, str]) -> Column:
    """The reason of the first condition that holds (null when none does)."""
    expr = None
    for cond, reason in pairs:
        expr = F.when(cond, F.lit(reason)) if expr is None else expr.when(cond, F.lit(reason))
    return expr


def parse_traces(raw: DataFrame, key_map: dict[str, int]) -> DataFrame:
    """Parse raw Event_traces rows; every row gets either a ``reason`` (reject) or parsed values.

    Returns the raw columns plus ``block_id, events, intervals, trace_label, trace_type,
    trace_latency, reason, detail``; rows with a null ``reason`` are accepted.
    """
    if not key_map:
        raise ValueError("key_map is empty: no templates to resolve event keys against")
    cols = set(raw.columns)
    mapping = F.create_map(*[x for k, v in sorted(key_map.items()) for x in (F.lit(k), F.lit(v))])

    block_id = F.trim(F.col("BlockId"))
    features = F.trim(F.col("Features"))
    keys = _list_tokens(features)
    features_ok = well_formed_list(features)
    features_empty = features.rlike(r"^\[\s*\]$")

    df = raw.withColumn("block_id", block_id).withColumn("_keys", keys)
    df = df.withColumn("events", F.transform("_keys", lambda k: F.try_element_at(mapping, k)))
    unknown = F.filter("_keys", lambda k: F.try_element_at(mapping, k).isNull())
    df = with_repeats(df, "block_id")

    if "TimeInterval" in cols:
        ti = F.trim(F.col("TimeInterval"))
        df = df.withColumn("intervals", F.transform(_list_tokens(ti), lambda x: x.try_cast("double")))
        ti_ok = well_formed_list(ti)
        ti_malformed = ti.isNull() | ~ti_ok | F.exists("intervals", lambda v: v.isNull())
        ti_invalid = F.exists("intervals", lambda v: F.isnan(v) | (v < 0) | (v > F.lit(MAX_INTERVAL_S)))
        ti_mismatch = F.size("intervals") != F.size("events")
    else:
        df = df.withColumn("intervals", F.lit(None).cast("array<double>"))
        ti_malformed = ti_invalid = ti_mismatch = F.lit(False)

    if "Label" in cols:
        lab = F.lower(F.trim(F.col("Label")))
        df = df.withColumn("trace_label", F.when(lab == "success", 0).when(lab == "fail", 1))
        label_bad = F.col("Label").isNotNull() & F.col("trace_label").isNull()
    else:
        df = df.withColumn("trace_label", F.lit(None).cast("int"))
        label_bad = F.lit(False)

    # Parsed columns get names that differ from the raw ones also case-insensitively
    # (Spark resolves `latency` to `Latency`), so the raw text stays available for rejects.
    df = df.withColumn("trace_type", F.trim(F.col("Type")) if "Type" in cols else F.lit(None).cast("string"))
    if "Latency" in cols:
        df = df.withColumn("trace_latency", F.trim(F.col("Latency")).try_cast("double"))
        latency_bad = (F.trim(F.col("Latency")) != "") & F.col("trace_latency").isNull()
        lat = F.col("trace_latency")
        latency_invalid = lat.isNotNull() & (F.isnan(lat) | (lat < 0) | (lat > F.lit(MAX_INTERVAL_S)))
    else:
        df = df.withColumn("trace_latency", F.lit(None).cast("double"))
        latency_bad = latency_invalid = F.lit(False)

    reason = first_reason(
        (F.col(CORRUPT).isNotNull(), Reason.MALFORMED_CSV_ROW),
        (repeated_header("BlockId"), Reason.REPEATED_HEADER),
        (not_utf8([c for c in raw.columns if c in TRACE_REQUIRED + TRACE_OPTIONAL]), Reason.INVALID_ENCODING),
        (F.col("block_id").isNull() | (F.col("block_id") == ""), Reason.MISSING_BLOCK_ID),
        (malformed_id(F.col("block_id")), Reason.MALFORMED_BLOCK_ID),
        (F.col("_dup") > 1, Reason.DUPLICATE_BLOCK_ID),
        (features.isNull() | features_empty, Reason.EMPTY_SEQUENCE),
        (~features_ok, Reason.MALFORMED_FEATURES),
        (F.exists("events", lambda e: e.isNull()), Reason.UNKNOWN_EVENT_KEY),
        (ti_malformed, Reason.MALFORMED_TIME_INTERVAL),
        (ti_invalid, Reason.INVALID_TIME_INTERVAL),
        (ti_mismatch, Reason.LENGTH_MISMATCH),
        (label_bad, Reason.MALFORMED_LABEL),
        (latency_bad, Reason.MALFORMED_LATENCY),
        (latency_invalid, Reason.INVALID_LATENCY),
    )
    detail = (
        F.when(F.col("reason") == Reason.UNKNOWN_EVENT_KEY, F.array_join(unknown, ","))
        .when(F.col("reason") == Reason.LENGTH_MISMATCH,
              F.format_string("%d events, %d intervals", F.size("events"), F.size("intervals")))
        .when(F.col("reason") == Reason.DUPLICATE_BLOCK_ID,
              F.format_string("%d rows share this BlockId", F.col("_dup")))
        .when(F.col("reason") == Reason.MALFORMED_BLOCK_ID, F.lit(MALFORMED_ID_DETAIL))
        .when(F.col("reason") == Reason.INVALID_TIME_INTERVAL,
              F.lit(f"an interval is NaN, negative or above {MAX_INTERVAL_S:g} seconds"))
        .when(F.col("reason") == Reason.REPEATED_HEADER, F.lit("a header line inside the file (files concatenated?)"))
    )
    return (df.withColumn("reason", reason).withColumn("detail", detail)
            .drop("_keys", "_dup"))


def _raw_line(df: DataFrame, columns: list[str]) -> Column:
    """The input row as text: the corrupt record when there is one, else the fields as CSV."""
    return F.coalesce(F.col(CORRUPT), F.to_csv(F.struct(*[F.col(c) for c in columns])))


def trace_rejects(parsed: DataFrame, ingested_at: dt.datetime, source: str = SOURCE_EVENT_TRACES) -> DataFrame:
    """``ingest_rejects`` rows for the rejected Event_traces rows of :func:`parse_traces`."""
    raw_cols = [c for c in parsed.columns if c in TRACE_REQUIRED + TRACE_OPTIONAL]
    return _rejects(parsed.where(F.col("reason").isNotNull()), source, raw_cols, ingested_at)


def _rejects(df: DataFrame, source: str, raw_cols: list[str], ingested_at: dt.datetime) -> DataFrame:
    return df.select(
        F.lit(source).alias("source"),
        F.col(SOURCE_FILE).alias("source_file"),
        F.col("block_id"),
        _raw_line(df, raw_cols).alias("raw"),
        F.col("reason"),
        F.col("detail"),
        F.lit(ingested_at).cast("timestamp").alias("ingested_at"),
        F.lit(None).cast("string").alias("ingest_batch"),  # set by the stage that writes the batch
    ).select(*[F.col(f.name).cast(f.dataType) for f in INGEST_REJECTS_SCHEMA.fields])


# -- labels -------------------------------------------------------------------------------------


def parse_labels(raw: DataFrame, trace_block_ids: DataFrame) -> DataFrame:
    """Parse raw anomaly_label rows against the BlockIds present in the trace input.

    ``trace_block_ids`` holds one column ``block_id``: every BlockId of the trace input, accepted
    or rejected (a label for a block whose trace was rejected is not "unknown"). Returns raw
    columns plus ``block_id, label_value, reason, detail``.
    """
    lab = F.lower(F.trim(F.col("Label")))
    known = trace_block_ids.select("block_id").distinct().withColumn("_known", F.lit(True))
    df = (
        raw.withColumn("block_id", F.trim(F.col("BlockId")))
        .withColumn("label_value", F.when(lab == "normal", 0).when(lab == "anomaly", 1))
        .transform(lambda d: with_repeats(d, "block_id"))
        .join(known, "block_id", "left")
    )
    # a block labelled both Normal and Anomaly: its rows are rejected with their own reason, and the
    # session keeps the anomalous label (build_traces), so it never trains as a normal session
    both = (df.where(F.col("_dup") > 1).groupBy("block_id")
            .agg((F.min("label_value") != F.max("label_value")).alias("_conflict")))
    df = df.join(both, "block_id", "left")
    reason = first_reason(
        (F.col(CORRUPT).isNotNull(), Reason.MALFORMED_CSV_ROW),
        (repeated_header("BlockId"), Reason.REPEATED_HEADER),
        (not_utf8(list(LABEL_COLUMNS)), Reason.INVALID_ENCODING),
        (F.col("block_id").isNull() | (F.col("block_id") == ""), Reason.MISSING_BLOCK_ID),
        (malformed_id(F.col("block_id")), Reason.MALFORMED_BLOCK_ID),
        (F.col("label_value").isNull(), Reason.MALFORMED_LABEL),
        (F.coalesce(F.col("_conflict"), F.lit(False)), Reason.CONFLICTING_LABEL),
        (F.col("_dup") > 1, Reason.DUPLICATE_LABEL),
        (F.col("_known").isNull(), Reason.LABEL_UNKNOWN_BLOCK),
    )
    detail = (F.when(F.col("reason") == Reason.DUPLICATE_LABEL,
                     F.format_string("%d label rows for this BlockId", F.col("_dup")))
              .when(F.col("reason") == Reason.CONFLICTING_LABEL,
                    F.lit("labelled both Normal and Anomaly: the session is kept as anomalous, never trained on")))
    return df.withColumn("reason", reason).withColumn("detail", detail).drop("_dup", "_known", "_conflict")


def label_rejects(parsed: DataFrame, ingested_at: dt.datetime) -> DataFrame:
    """``ingest_rejects`` rows for the rejected label rows of :func:`parse_labels`."""
    return _rejects(parsed.where(F.col("reason").isNotNull()), SOURCE_ANOMALY_LABELS,
                    list(LABEL_COLUMNS), ingested_at)


# -- traces table -------------------------------------------------------------------------------


def build_traces(parsed_traces: DataFrame, parsed_labels: DataFrame | None) -> DataFrame:
    """Accepted traces joined with accepted labels; ``label`` is 0/1, or null when unlabelled (a
    block whose label rows conflict is anomalous).

    The anomaly_label file wins; without a label row, the Event_traces ``Label`` column
    (Success=0/Fail=1) is used when present. The ``split`` column is added by
    :func:`deeplog_spark.ingest.split.assign_split`.
    """
    traces = parsed_traces.where(F.col("reason").isNull())
    if parsed_labels is not None:
        usable = F.col("reason").isNull() | (F.col("reason") == Reason.CONFLICTING_LABEL)
        labels = (parsed_labels.where(usable).groupBy("block_id")  # a conflicting block: anomalous wins
                  .agg(F.max("label_value").alias("label_value")))
        traces = traces.join(labels, "block_id", "left")
    else:
        traces = traces.withColumn("label_value", F.lit(None).cast("int"))
    return traces.select(
        "block_id",
        "events",
        "intervals",
        F.coalesce("label_value", "trace_label").cast("int").alias("label"),
        F.size("events").cast("int").alias("event_count"),
        F.col("trace_type").alias("type"),
        F.col("trace_latency").alias("latency"),
        F.col(SOURCE_FILE).alias("source_file"),
        *[(F.col(c) if c in traces.columns else F.lit(None)).cast("timestamp").alias(c)
          for c in ("session_start", "session_end")],
    )


@dataclass
class IngestResult:
    """DataFrames produced by :func:`ingest` (not yet written)."""

    traces: DataFrame  # without split
    rejects: DataFrame
    parsed_traces: DataFrame
    parsed_labels: DataFrame | None


def ingest(raw_traces: DataFrame, templates: DataFrame, raw_labels: DataFrame | None,
           ingested_at: dt.datetime, source: str = SOURCE_EVENT_TRACES) -> IngestResult:
    """Parse traces and labels into accepted traces plus one rejects DataFrame (``source``: what
    the trace rows' rejects are tagged with, Event_traces or the generic sequences)."""
    parsed = parse_traces(raw_traces, event_key_map(templates))
    parsed_labels = None
    rejects = trace_rejects(parsed, ingested_at, source)
    if raw_labels is not None:
        parsed_labels = parse_labels(raw_labels, parsed.select("block_id"))
        rejects = rejects.unionByName(label_rejects(parsed_labels, ingested_at))
    return IngestResult(build_traces(parsed, parsed_labels), rejects, parsed, parsed_labels)
