"""Raw-log ingest: HDFS log files -> the same ``traces`` table as the Event_traces ingest.

A raw HDFS_v1 line is ``<yyMMdd> <HHmmss> <pid> <level> <component>: <content>``. Each line is
parsed with one regular expression, its content is matched against the Loghub templates (the
``[*]`` parts are wildcards; when several templates match, the one with the most literal text
wins), and every block id it mentions (``blk_<n>``, possibly several per line) gets the event.
Per block, events are ordered by (timestamp, file, position in file) and the intervals are the
seconds between consecutive events of the block, the first 0: real time intervals for the value
model. Lines that do not parse, match no template or name no block go to ``ingest_rejects`` with
their reason; ``lines = accepted + rejected`` is checked. All of it is Spark SQL functions, no
Python UDF.
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.errors import InputError
from deeplog_spark.ingest import SOURCE_FILE, first_reason
from deeplog_spark.schemas import INGEST_REJECTS_SCHEMA, SOURCE_RAW_LOG, Reason

log = logging.getLogger(__name__)

#: date, time, pid, level, component, content (a trailing CR is removed before matching).
LINE_RE = r"^(\d{6}) (\d{6}) (\d+) ([A-Z]+) ([^ :]+): (.*)$"
BLOCK_RE = r"(blk_-?\d+)"


def read_raw_logs(spark: SparkSession, path: str) -> DataFrame:
    """Lines of the log files at ``path`` (file, glob or directory; plain or .gz).

    Columns: ``line`` (without a trailing CR), ``source_file``, ``line_order`` (increasing in
    file order within a file). Bytes that are not UTF-8 become U+FFFD, the line is kept.
    """
    try:
        df = spark.read.text(path)
    except Exception as exc:  # AnalysisException for missing paths
        if "PATH_NOT_FOUND" in str(exc) or "Path does not exist" in str(exc):
            raise InputError(f"input not found: {path}") from exc
        raise
    return df.select(F.regexp_replace("value", "\r$", "").alias("line"),
                     F.input_file_name().alias("source_file"),
                     F.monotonically_increasing_id().alias("line_order"))


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


def parse_lines(lines: DataFrame, templates: list[dict]) -> DataFrame:
    """Every line with its parsed fields, ``event_id``, ``block_ids`` and ``reason`` (null = accepted)."""
    g = lambda i: F.regexp_extract("line", LINE_RE, i)  # noqa: E731
    ok = F.col("line").rlike(LINE_RE)
    df = lines.select(
        "*",
        F.when(ok, g(1)).alias("date"), F.when(ok, g(2)).alias("time"), F.when(ok, g(3)).alias("pid"),
        F.when(ok, g(4)).alias("level"), F.when(ok, g(5)).alias("component"), F.when(ok, g(6)).alias("content"),
    )
    ts = F.try_to_timestamp(F.concat(F.col("date"), F.col("time")), F.lit("yyMMddHHmmss"))
    df = df.select("*", ts.alias("ts"), match_event(F.col("content"), templates).alias("event_id"),
                   F.array_distinct(F.regexp_extract_all("content", F.lit(BLOCK_RE), 1)).alias("block_ids"))
    reason = first_reason(
        (~ok, Reason.MALFORMED_LOG_LINE),
        (F.col("ts").isNull(), Reason.MALFORMED_TIMESTAMP),
        (F.col("event_id").isNull(), Reason.UNKNOWN_TEMPLATE),
        (F.size("block_ids") == 0, Reason.NO_BLOCK_ID),
    )
    return df.withColumn("reason", reason)


def raw_rejects(parsed: DataFrame, ingested_at: dt.datetime) -> DataFrame:
    """``ingest_rejects`` rows for the rejected lines."""
    bad = parsed.where(F.col("reason").isNotNull())
    return bad.select(
        F.lit(SOURCE_RAW_LOG).alias("source"), F.col("source_file"),
        F.when(F.size("block_ids") > 0, F.col("block_ids")[0]).alias("block_id"),
        F.col("line").alias("raw"), F.col("reason"),
        F.when(F.col("reason") == Reason.UNKNOWN_TEMPLATE,
               F.format_string("the content matches none of the templates; it names %d block(s)",
                               F.size("block_ids"))).alias("detail"),
        F.lit(ingested_at).cast("timestamp").alias("ingested_at"),
        F.lit(None).cast("string").alias("ingest_batch"),
    ).select(*[F.col(f.name).cast(f.dataType) for f in INGEST_REJECTS_SCHEMA.fields])


def sessions(parsed: DataFrame) -> DataFrame:
    """Accepted lines grouped per block, in log order, shaped like ``parse_traces`` output.

    Columns: block_id, events, intervals (seconds between consecutive events, first 0), and the
    trace_* columns :func:`deeplog_spark.ingest.build_traces` expects (null: raw logs carry no
    Success/Fail label, type or latency), reason (null), _source_file (the block's first file).
    """
    per_block = (parsed.where(F.col("reason").isNull())
                 .select(F.explode("block_ids").alias("block_id"), F.unix_timestamp("ts").alias("t"),
                         F.col("source_file").alias("f"), F.col("line_order").alias("o"), F.col("event_id").alias("e"))
                 .groupBy("block_id").agg(F.array_sort(F.collect_list(F.struct("t", "f", "o", "e"))).alias("xs")))
    t = F.transform("xs", lambda x: x["t"])
    n = F.size("xs")
    intervals = F.concat(F.array(F.lit(0.0)),
                         F.zip_with(F.slice(t, 2, F.greatest(n - 1, F.lit(0))), F.slice(t, 1, F.greatest(n - 1, F.lit(0))),
                                    lambda b, a: (b - a).cast("double")))
    return per_block.select(
        "block_id",
        F.transform("xs", lambda x: x["e"]).cast("array<int>").alias("events"),
        intervals.alias("intervals"),
        F.lit(None).cast("int").alias("trace_label"),
        F.lit(None).cast("string").alias("trace_type"),
        F.lit(None).cast("double").alias("trace_latency"),
        F.lit(None).cast("string").alias("reason"),
        F.col("xs")[0]["f"].alias(SOURCE_FILE),
    )


def template_counts(parsed: DataFrame, templates: DataFrame) -> DataFrame:
    """Accepted lines per template (every template, 0 when unseen) plus block mentions."""
    ok = parsed.where(F.col("reason").isNull())
    counts = ok.groupBy("event_id").agg(F.count(F.lit(1)).alias("lines"),
                                        F.sum(F.size("block_ids")).alias("block_mentions"))
    return (templates.join(counts, "event_id", "left")
            .select("event_id", "event_key", "template",
                    F.coalesce("lines", F.lit(0)).cast("long").alias("lines"),
                    F.coalesce("block_mentions", F.lit(0)).cast("long").alias("block_mentions"))
            .orderBy("event_id"))
