"""Raw-log ingest: log files of any system -> the same ``traces`` table as the Event_traces ingest.

Each line is parsed with its system's :class:`~deeplog_spark.ingest.formats.LogFormat` (one regular
expression with named fields; presets for HDFS, BGL, Thunderbird, Spirit, Hadoop, OpenStack,
Spark and ZooKeeper). Its content then gets an event id in one of two ways:

- **known templates** (HDFS, ``templates_from = file``): the content is matched against the
  Loghub templates (``[*]`` parts are wildcards; when several match, the one with the most
  literal text wins), all in Spark SQL;
- **mined templates** (any log, ``templates_from = mine``): Drain3 (:mod:`deeplog_spark.ingest.mining`).
  The numbers, hex values and IP addresses of the content are masked in Spark SQL, and the
  *distinct* masked messages (with their counts) are mined per partition, most frequent first.
  Only each partition's templates reach the driver, where they are merged into one miner (ids by
  frequency, so they do not depend on the partitioning). The distinct messages are then matched
  to the merged templates in parallel and joined back to the lines. The log itself is never
  collected. The miner's state is saved in the ``miner_state`` table; a later batch
  (``templates_from = state``) is matched against it with the same ids, and a message no saved
  template matches keeps its place in the session as the reserved event id
  :data:`~deeplog_spark.ingest.mining.UNKNOWN_TEMPLATE` (0), counted in ``template_counts`` (the
  detectors see it as an event outside their vocabulary).

Lines are then cut into sessions (``segment``):

- ``id``: every session id the line names (``session_regex`` over the content, for example HDFS
  ``blk_`` ids, several per line, or OpenStack instance ids; or a field such as a node);
- ``lines``: fixed windows of ``segment_lines`` consecutive accepted lines of a file;
- ``time``: sliding time windows of ``window_seconds``, one starting every ``window_step_seconds``
  (a line belongs to every window that covers its time; windows with a step below their size
  overlap, so the hash split puts lines of one window into several splits).

Per session, events are ordered by (timestamp, file, position in file) and the intervals are the
seconds between consecutive events, the first 0. A format with a per-line ``label`` field (BGL,
Thunderbird: ``-`` is normal) labels a session anomalous when any of its lines is. Lines that do
not parse, have no valid timestamp, match no template or name no session go to
``ingest_rejects`` with their reason; ``lines = accepted + rejected`` is checked.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Iterator

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from deeplog_spark.core.errors import InputError
from deeplog_spark.core.schemas import INGEST_REJECTS_SCHEMA, SOURCE_RAW_LOG, TEMPLATES_SCHEMA, Reason
from deeplog_spark.ingest.formats import EPOCH, NORMAL_LABEL, PRESETS, LogFormat
from deeplog_spark.ingest.mining import MASK_NEEDS, MASKS, UNKNOWN_TEMPLATE, Miner, merge, partition_templates
from deeplog_spark.ingest.traces import SOURCE_FILE, first_reason

log = logging.getLogger(__name__)

HDFS = PRESETS["hdfs"]
#: the HDFS line layout (kept for callers of the first raw ingest)
LINE_RE = HDFS.java_regex()
BLOCK_RE = HDFS.session_regex
#: Distinct messages per Python task when mining and matching.
MESSAGES_PER_TASK = 50_000
#: The ids of the distinct messages are broadcast to the lines up to this many messages.
BROADCAST_MESSAGES = 500_000
#: Template text of the reserved unknown id in ``template_counts``.
UNKNOWN_TEMPLATE_TEXT = "<unknown: no saved template matches>"


def read_raw_logs(spark: SparkSession, path: str) -> DataFrame:
    """Lines of the log files at ``path`` (file, glob or directory; plain or .gz).

    Columns: ``line``, ``source_file``, ``line_order`` (increasing in file order within a file).
    Bytes that are not UTF-8 become U+FFFD, the line is kept. No line holds a CR: Spark's text
    reader ends a line at LF, CR or CRLF (``tests/test_raw_ingest.py`` reads a CRLF log).
    """
    try:
        df = spark.read.text(path)
    except Exception as exc:  # AnalysisException for missing paths
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            raise InputError(f"input not found: {path}") from exc
        raise
    return df.select(F.col("value").alias("line"),
                     F.input_file_name().alias("source_file"),
                     F.monotonically_increasing_id().alias("line_order"))


# -- known templates ------------------------------------------------------------------------------


def _literal(text: str) -> str:
    """``text`` as a Java regex that matches it literally: every ASCII character that is not a letter or
    digit is escaped with a backslash (valid in Java for any non-letter), so no quoting construct such
    as ``\\Q..\\E`` can be broken by the text itself (``C:\\Edge\\dir``)."""
    return "".join("\\" + c if (c.isascii() and not c.isalnum()) else c for c in text)


def template_regex(template: str) -> str:
    """Java regex for a Loghub template: literal parts escaped, ``[*]`` -> ``.*``, anchored."""
    return "^" + ".*".join(_literal(p) for p in template.split("[*]")) + "$"


def match_event(content: Column, templates: list[dict]) -> Column:
    """Event id of the most specific template (longest literal text) matching ``content``, or null.

    Each regex runs only on contents that contain the template's longest literal part (a plain
    substring test), so a line costs one regex match for its own template, not 29.
    """
    ordered = sorted(templates, key=lambda t: (-len(t["template"].replace("[*]", "")), t["event_id"]))
    cases = []
    for t in ordered:
        longest = max(t["template"].split("[*]"), key=len)
        cases.append(F.when(content.contains(longest) & content.rlike(template_regex(t["template"])),
                            F.lit(t["event_id"])))
    return F.coalesce(*cases, F.lit(None).cast("int"))


# -- parsing ----------------------------------------------------------------------------------------


def parse_fields(lines: DataFrame, fmt: LogFormat, sessions_by_id: bool = True) -> DataFrame:
    """Every line plus ``_ok`` (the line regex matched), ``ts``, ``level``, ``component``,
    ``content``, ``line_label`` (1 = alert line, 0 = normal, null = the format has no label) and
    ``block_ids`` (the session ids the line names; empty unless ``sessions_by_id``)."""
    jre = fmt.java_regex()
    ok = F.col("line").rlike(jre)

    def field(name: str) -> Column:
        if not fmt.has(name):
            return F.lit(None).cast("string")
        return F.when(ok, F.regexp_extract("line", jre, fmt.group(name)))

    stamp = F.concat_ws(" ", *[field(g) for g in fmt.timestamp])
    if fmt.timestamp_format == EPOCH:
        ts = F.timestamp_seconds(stamp.try_cast("double"))
    else:
        ts = F.try_to_timestamp(stamp, F.lit(fmt.timestamp_format))
    if not sessions_by_id:
        ids = F.array().cast("array<string>")
    elif fmt.session_field:
        sid = field(fmt.session_field)
        ids = F.when(sid.isNotNull() & (sid != ""), F.array(sid)).otherwise(F.array().cast("array<string>"))
    elif fmt.session_regex:
        ids = F.array_distinct(F.regexp_extract_all(field("content"), F.lit(fmt.session_regex), 1))
    else:
        raise InputError(f"log format {fmt.name} names no session id (session_regex or session_field): "
                         "segment by lines or time instead")
    label = field("label")
    return lines.select(
        "*", ok.alias("_ok"), F.when(ok, ts).alias("ts"), field("level").alias("level"),
        field("component").alias("component"), field("content").alias("content"),
        (F.when(label.isNotNull(), (label != F.lit(NORMAL_LABEL)).cast("int")) if fmt.has("label")
         else F.lit(None).cast("int")).alias("line_label"),
        F.coalesce(ids, F.array().cast("array<string>")).alias("block_ids"),
    )


#: A log line's time must lie between this and a day after the ingest (``timestamp_out_of_range``).
#: A two-digit year (``yy``) is read as 2000-2099, Spark's rule, so ``691231`` is 2069-12-31 and is
#: rejected, not read as 1969; an epoch of nines (year 2286) is rejected the same way.
EARLIEST_EVENT_TIME = "1970-01-01 00:00:00"


def in_time_range(ts: Column) -> Column:
    """Whether ``ts`` lies in [:data:`EARLIEST_EVENT_TIME`, now + 1 day]."""
    return (ts >= F.lit(EARLIEST_EVENT_TIME).cast("timestamp")) & (ts <= F.current_timestamp() + F.expr("INTERVAL 1 DAY"))


def with_reason(df: DataFrame, fmt: LogFormat, sessions_by_id: bool = True) -> DataFrame:
    """``df`` (fields and ``event_id``) plus ``reason``: null for an accepted line."""
    no_session = Reason.NO_BLOCK_ID if fmt.name == "hdfs" else Reason.NO_SESSION_ID
    checks = [(~F.col("_ok"), Reason.MALFORMED_LOG_LINE),
              (F.col("ts").isNull(), Reason.MALFORMED_TIMESTAMP),
              (~in_time_range(F.col("ts")), Reason.TIMESTAMP_OUT_OF_RANGE),
              (F.col("event_id").isNull(), Reason.UNKNOWN_TEMPLATE)]
    if sessions_by_id:
        checks.append((F.size("block_ids") == 0, no_session))
    return df.withColumn("reason", first_reason(*checks))


def parse_lines(lines: DataFrame, templates: list[dict], fmt: LogFormat = HDFS,
                sessions_by_id: bool = True) -> DataFrame:
    """Every line with its parsed fields, ``event_id`` (known templates), ``block_ids`` and
    ``reason`` (null = accepted)."""
    df = parse_fields(lines, fmt, sessions_by_id)
    return with_reason(df.withColumn("event_id", match_event(F.col("content"), templates)), fmt, sessions_by_id)


# -- mined templates ----------------------------------------------------------------------------------


def masked(content: Column) -> Column:
    """The content as Drain3 sees it after masking: trimmed, IPs, hex and numbers as ``<*>``
    (the same patterns as :data:`deeplog_spark.ingest.mining.MASKS`, applied in order, in the JVM)."""
    out = F.trim(content)
    for pattern, name in MASKS:
        replaced = F.regexp_replace(out, pattern, f"<{name}>")
        # a mask whose pattern needs a literal (an IP's dots, hex's 0x) runs only on text holding it:
        # the same output, without running the regex on the contents that cannot match
        needs = MASK_NEEDS.get(pattern)
        out = F.when(out.contains(needs), replaced).otherwise(out) if needs else replaced
    return out


def _mine_partition(sim_th: float, depth: int):
    def run(batches: Iterator) -> Iterator:
        messages, counts = [], []
        for b in batches:
            messages.extend(b["masked"].tolist())
            counts.extend(int(n) for n in b["n"])
        parts = partition_templates(messages, sim_th, depth, counts)
        yield pd.DataFrame({"template": [t for t, _ in parts], "n": [n for _, n in parts]})
    return run


def _match_partition(state: str):
    def run(batches: Iterator) -> Iterator:
        miner = Miner.from_state(state)
        for b in batches:
            b = b[["masked"]].copy()
            b["event_id"] = [miner.match(m) for m in b["masked"]]
            yield b
    return run


def distinct_messages(parsed: DataFrame) -> DataFrame:
    """``(masked, n)``: every distinct masked message of the parseable lines with its line count."""
    return (parsed.where(F.col("_ok") & F.col("masked").isNotNull())
            .groupBy("masked").agg(F.count(F.lit(1)).alias("n")))


def mine_templates(messages: DataFrame, sim_th: float, depth: int) -> Miner:
    """Drain3 over the distinct messages, per partition (each sorted most frequent first), then
    the partitions' templates merged on the driver: only templates are collected."""
    parts = (messages.sortWithinPartitions(F.desc("n"), "masked")
             .mapInPandas(_mine_partition(sim_th, depth), "template string, n long").collect())
    miner = merge([[(r["template"], int(r["n"])) for r in parts]], sim_th, depth)
    log.info("mining: %d templates from %d partition templates", len(miner.templates()), len(parts))
    return miner


def match_messages(messages: DataFrame, miner: Miner) -> DataFrame:
    """``(masked, event_id)`` for the distinct messages; :data:`UNKNOWN_TEMPLATE` when none matches."""
    return messages.select("masked").mapInPandas(_match_partition(miner.state()), "masked string, event_id int")


#: The columns of :func:`mined_fields`: what the later stages of the raw ingest read.
MINED_COLUMNS = ("line", "source_file", "line_order", "_ok", "ts", "line_label", "block_ids", "masked")


def mined_fields(lines: DataFrame, fmt: LogFormat, sessions_by_id: bool = True) -> DataFrame:
    """The lines parsed for mining: :data:`MINED_COLUMNS`, ``masked`` being the content as the
    miner sees it (null when the line does not parse). The input of :func:`parse_mined`, which reads
    it twice: persist it. (Level, component and the content itself are not kept: nothing after the
    mask reads them, and leaving them out makes the cache about a fifth cheaper to build.)"""
    parsed = parse_fields(lines, fmt, sessions_by_id)
    return parsed.withColumn("masked", F.when(F.col("_ok"), masked(F.col("content")))).select(*MINED_COLUMNS)


def parse_mined(fields: DataFrame, fmt: LogFormat, miner: Miner | None, sim_th: float = 0.4, depth: int = 4,
                sessions_by_id: bool = True, keep_unknown: bool = False) -> tuple[DataFrame, Miner]:
    """Parsed lines (:func:`mined_fields`) with their event ids from Drain3: mined from these lines
    when ``miner`` is None, else matched against it. Returns (the lines with ``event_id`` and
    ``reason``, the miner).

    ``fields`` is read twice, for its distinct messages and for the join of their ids back: the
    caller persists it, so the log is parsed once. The ids of the distinct messages are
    materialised here and broadcast to the join when they are few (they nearly always are).

    ``keep_unknown``: a message no template matches keeps :data:`UNKNOWN_TEMPLATE` as its event
    (scoring a new batch against a saved state); otherwise its line is rejected as
    ``unknown_template`` (only possible when templates merged from partitions miss a message).
    """
    messages = distinct_messages(fields).persist()
    # a log holds few distinct masked messages (3,188 in 200,000 BGL lines): mine and match them in
    # about one partition per MESSAGES_PER_TASK, not in one Python task per shuffle partition
    n = messages.count()
    parts = max(1, min(fields.sparkSession.sparkContext.defaultParallelism, math.ceil(n / MESSAGES_PER_TASK)))
    messages = messages.coalesce(parts)
    try:
        if miner is None:
            miner = mine_templates(messages, sim_th, depth)
        ids = match_messages(messages, miner)
        if not keep_unknown:
            ids = ids.withColumn("event_id", F.when(F.col("event_id") != UNKNOWN_TEMPLATE, F.col("event_id")))
        ids = ids.localCheckpoint()  # materialise before the messages are unpersisted
    finally:
        messages.unpersist()
    out = fields.join(F.broadcast(ids) if n <= BROADCAST_MESSAGES else ids, "masked", "left")
    return with_reason(out, fmt, sessions_by_id), miner


def mined_templates(spark: SparkSession, miner: Miner) -> DataFrame:
    """The ``templates`` table of a miner: ``event_id`` = its template id, key ``E<id>``."""
    rows = [(cid, f"E{cid}", text) for cid, text in sorted(miner.templates().items())]
    return spark.createDataFrame(rows, TEMPLATES_SCHEMA)


# -- rejects, segments, sessions ----------------------------------------------------------------------


def raw_rejects(parsed: DataFrame, ingested_at: dt.datetime) -> DataFrame:
    """``ingest_rejects`` rows for the rejected lines."""
    bad = parsed.where(F.col("reason").isNotNull())
    return bad.select(
        F.lit(SOURCE_RAW_LOG).alias("source"), F.col("source_file"),
        F.when(F.size("block_ids") > 0, F.col("block_ids")[0]).alias("block_id"),
        F.col("line").alias("raw"), F.col("reason"),
        F.when(F.col("reason") == Reason.UNKNOWN_TEMPLATE,
               F.format_string("the content matches none of the templates; it names %d session(s)",
                               F.size("block_ids")))
        .when(F.col("reason") == Reason.TIMESTAMP_OUT_OF_RANGE,
              F.format_string("the line's time %s is before %s or more than a day after the ingest (a two-digit "
                              "year is read as 20yy)", F.col("ts").cast("string"), F.lit(EARLIEST_EVENT_TIME)))
        .alias("detail"),
        F.lit(ingested_at).cast("timestamp").alias("ingested_at"),
        F.lit(None).cast("string").alias("ingest_batch"),
    ).select(*[F.col(f.name).cast(f.dataType) for f in INGEST_REJECTS_SCHEMA.fields])


def _line(df: DataFrame) -> DataFrame:
    """Accepted lines as (t seconds, f file, o order, e event, lab line label)."""
    return df.where(F.col("reason").isNull()).select(
        "block_ids", (F.unix_micros("ts") / F.lit(1e6)).alias("t"), F.col("source_file").alias("f"),
        F.col("line_order").alias("o"), F.col("event_id").alias("e"), F.col("line_label").alias("lab"))


def segment(parsed: DataFrame, how: str = "id", segment_lines: int = 20, window_seconds: float = 3600.0,
            window_step_seconds: float = 3600.0) -> DataFrame:
    """The accepted lines as session rows ``(block_id, t, f, o, e, lab)``, by ``how``:

    - ``id``: one row per session id the line names;
    - ``lines``: ``<file name>:<k>`` for the k-th run of ``segment_lines`` accepted lines of a file
      (k from 0, in file order);
    - ``time``: ``<window start>`` (``yyyy-MM-dd HH:mm:ss`` in the session time zone) for every window
      [k * step, k * step + size) covering the line's time.
    """
    lines = _line(parsed)
    cols = ["t", "f", "o", "e", "lab"]
    if how == "id":
        return lines.select(F.explode("block_ids").alias("block_id"), *cols)
    if how == "lines":
        idx = F.row_number().over(Window.partitionBy("f").orderBy("o")) - 1
        name = F.regexp_extract("f", r"([^/]*)$", 1)
        return (lines.withColumn("_i", idx)
                .select(F.format_string("%s:%06d", name, F.floor(F.col("_i") / segment_lines).cast("long"))
                        .alias("block_id"), *cols))
    if how == "time":
        if window_step_seconds > window_seconds:
            raise InputError("window_step_seconds must not exceed window_seconds (lines between windows would be lost)")
        size, step = F.lit(float(window_seconds)), F.lit(float(window_step_seconds))
        k_max = F.floor(F.col("t") / step)
        k_min = F.floor((F.col("t") - size) / step) + 1
        ks = F.sequence(k_min, F.greatest(k_min, k_max))  # k_min <= k_max whenever step <= size
        return (lines.select(F.explode(ks).alias("_k"), *cols)
                .select(F.date_format(F.timestamp_seconds(F.col("_k") * step), "yyyy-MM-dd HH:mm:ss").alias("block_id"),
                        *cols))
    raise InputError(f"unknown segment {how!r}: id, lines or time")


def sessions(rows: DataFrame) -> DataFrame:
    """Session rows (:func:`segment`) grouped per session, in log order, shaped like
    ``parse_traces`` output.

    Columns: block_id, events, intervals (seconds between consecutive events, first 0),
    trace_label (1 when any line of the session is an alert line, null without line labels),
    session_start and session_end (the first and last event times), the trace_* columns
    :func:`deeplog_spark.ingest.traces.build_traces` expects (null: raw logs carry no type or
    latency), reason (null), _source_file (the session's first file).
    """
    if "block_id" not in rows.columns:
        raise TypeError("sessions() takes the session rows of segment(), not parsed lines")
    per = (rows.groupBy("block_id")
           .agg(F.array_sort(F.collect_list(F.struct("t", "f", "o", "e"))).alias("xs"), F.max("lab").alias("lab")))
    t = F.transform("xs", lambda x: x["t"])
    n = F.size("xs")
    intervals = F.concat(F.array(F.lit(0.0)),
                         F.zip_with(F.slice(t, 2, F.greatest(n - 1, F.lit(0))), F.slice(t, 1, F.greatest(n - 1, F.lit(0))),
                                    lambda b, a: (b - a).cast("double")))
    return per.select(
        "block_id",
        F.transform("xs", lambda x: x["e"]).cast("array<int>").alias("events"),
        intervals.alias("intervals"),
        F.col("lab").cast("int").alias("trace_label"),
        F.lit(None).cast("string").alias("trace_type"),
        F.lit(None).cast("double").alias("trace_latency"),
        F.lit(None).cast("string").alias("reason"),
        F.col("xs")[0]["f"].alias(SOURCE_FILE),
        F.timestamp_seconds(F.col("xs")[0]["t"]).alias("session_start"),
        F.timestamp_seconds(F.element_at("xs", -1)["t"]).alias("session_end"),
    )


def template_counts(parsed: DataFrame, templates: DataFrame) -> DataFrame:
    """Accepted lines per template (every template, 0 when unseen) plus session-id mentions; the
    reserved unknown id 0 gets a row when a batch holds messages no saved template matches."""
    ok = parsed.where(F.col("reason").isNull())
    counts = ok.groupBy("event_id").agg(F.count(F.lit(1)).alias("lines"),
                                        F.sum(F.size("block_ids")).alias("block_mentions"))
    unknown = counts.where(F.col("event_id") == UNKNOWN_TEMPLATE).select(
        "event_id", F.lit(f"E{UNKNOWN_TEMPLATE}").alias("event_key"), F.lit(UNKNOWN_TEMPLATE_TEXT).alias("template"),
        "lines", "block_mentions")
    return (templates.join(counts, "event_id", "left")
            .select("event_id", "event_key", "template",
                    F.coalesce("lines", F.lit(0)).cast("long").alias("lines"),
                    F.coalesce("block_mentions", F.lit(0)).cast("long").alias("block_mentions"))
            .unionByName(unknown.select("event_id", "event_key", "template", F.col("lines").cast("long"),
                                        F.col("block_mentions").cast("long")))
            .orderBy("event_id"))
