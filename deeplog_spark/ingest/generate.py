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

``gen_format = raw`` writes the same sessions as **raw HDFS log lines** instead (``raw/``, one file
per hour, ``<yyyy-MM-dd-HH>.log``, lines in time order across blocks), for the raw ingest and the
stream. Each session starts at a time drawn uniformly over ``gen_days`` days from HDFS_v1's first
line (2008-11-09 20:35:18); its events follow at the model's intervals. A line is spelled from a
real line of the same event in ``raw_logs`` (the HDFS_2k sample: pid, level, component, content
with its IPs, ports and sizes) with the block id replaced; an event the sample has no line of (16 of
the 29) is spelled from its template, the block id in its place and fixed placeholder values for
the other parameters. Every spelled line is checked to parse back to its event. A timing
anomaly's stall is capped at :data:`RAW_MAX_STALL` (12 h) in raw logs.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from deeplog_spark.core.config import Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.logs import stage
from deeplog_spark.core.runs import write_json
from deeplog_spark.ingest.raw import parse_lines, read_raw_logs
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


#: HDFS_v1's first line: generated raw logs start here.
RAW_START = dt.datetime(2008, 11, 9, 20, 35, 18, tzinfo=dt.timezone.utc)
#: In raw logs a timing anomaly's stalled interval is at most this long (s): a 1000x stall of a deletion
#: (a median hour) would otherwise put its last event weeks after the rest of the log.
RAW_MAX_STALL = 12 * 3600.0
#: Where the block id goes in a spelled line's content.
BLOCK_SLOT = "\u0000"
_BLOCK_RE = r"blk_-?\d+"


def spell_template(template: str) -> str:
    """A content for a template the real sample has no line of: the leading ``[*]`` empty, the
    block id (:data:`BLOCK_SLOT`) in the first parameter after the word block (else the first
    parameter), and fixed placeholder values elsewhere."""
    parts = template.split("[*]")
    slots = list(range(1, len(parts)))
    after_block = [i for i in slots if parts[i - 1].rstrip().lower().endswith(("block", "for", "delete:"))]
    blk = (after_block or slots or [0])[0]
    out = parts[0]
    for i in slots:
        value = BLOCK_SLOT if i == blk else ("10.250.0.1:50010" if i < len(parts) - 1 else "")
        out += (" " if not out.endswith(" ") and out else "") + value + (
            " " if parts[i] and not parts[i].startswith((" ", ":")) else "") + parts[i]
    return out.strip()


def line_examples(spark: SparkSession, cfg: Config) -> DataFrame:
    """``(e, k, n, pid, level, component, content)``: the k-th of the n line spellings of event
    e, content with :data:`BLOCK_SLOT` for the block id. Real lines of ``raw_logs`` where it has
    the event, else one line spelled from the template."""
    templates = read_templates(spark, cfg.templates)
    rows = [r.asDict() for r in templates.collect()]
    real = (parse_lines(read_raw_logs(spark, cfg.raw_logs), rows).where(F.col("reason").isNull())
            .select(F.col("event_id").alias("e"), F.regexp_extract("line", r"^\S+ \S+ (\d+) ", 1).alias("pid"),
                    "level", "component", F.regexp_replace("content", _BLOCK_RE, BLOCK_SLOT).alias("content"))
            .distinct())
    have = {r["e"] for r in real.select("e").distinct().collect()}
    made = [(r["event_id"], "1", "INFO", "dfs.DataNode", spell_template(r["template"])) for r in rows
            if r["event_id"] not in have]
    spelled = real.unionByName(spark.createDataFrame(made, "e int, pid string, level string, component string, "
                                                           "content string")) if made else real
    w = Window.partitionBy("e").orderBy("content", "component", "pid", "level")
    out = (spelled.withColumn("k", F.row_number().over(w) - 1)
           .withColumn("n", F.count(F.lit(1)).over(Window.partitionBy("e"))).cache())
    # every spelling parses back to its event, with the block id as its session
    check = out.select(F.concat(F.lit("081109 203518 "), "pid", F.lit(" "), "level", F.lit(" "), "component",
                                F.lit(": "), F.replace("content", F.lit(BLOCK_SLOT), F.lit("blk_1"))).alias("line"),
                       F.lit("check").alias("source_file"), F.lit(0).cast("long").alias("line_order"), "e")
    bad = parse_lines(check, rows).where(F.col("reason").isNotNull() | (F.col("event_id") != F.col("e"))
                                         | (F.col("block_ids") != F.array(F.lit("blk_1")))).select("e", "line").collect()
    if bad:
        raise InputError(f"generate: {len(bad)} line spelling(s) do not parse back to their event, e.g. "
                         f"E{bad[0]['e']}: {bad[0]['line']!r}")
    log.info("generate: %d line spellings, %d events spelled from real lines, %d from templates", out.count(),
             len(have), len(made))
    return out


def raw_lines(sessions: DataFrame, examples: DataFrame, seed: int, days: float) -> DataFrame:
    """One row per event of the generated ``sessions``: ``t`` (seconds), ``hour``, ``block_id``,
    ``pos``, ``line`` (an HDFS_v1 log line)."""
    start = F.lit(RAW_START.timestamp()) + F.floor(_uniform(seed, F.col("block_id"), F.lit("start"))
                                                   * F.lit(days * 86400.0))
    stalled = F.transform("intervals", lambda x: F.least(x, F.lit(RAW_MAX_STALL)))
    intervals = F.when(F.col("type") == "synthetic-timing", stalled).otherwise(F.col("intervals"))
    ev = sessions.select("block_id", start.alias("start"), intervals.alias("intervals"),
                         F.posexplode("events").alias("pos", "e"))
    t = F.col("start") + F.aggregate(F.slice("intervals", 1, F.col("pos") + 1), F.lit(0.0), lambda a, x: a + x)
    counts = F.broadcast(examples.select("e", "n").distinct())
    ev = (ev.join(counts, "e").withColumn("k", F.pmod(F.xxhash64(F.lit(seed), "block_id", "pos", F.lit("line")), "n"))
          .join(F.broadcast(examples.drop("n")), ["e", "k"]))
    ts = F.timestamp_seconds(F.col("t"))
    return ev.withColumn("t", t).select(
        "t", F.date_format(ts, "yyyy-MM-dd-HH").alias("hour"), "block_id", "pos",
        F.concat_ws(" ", F.date_format(ts, "yyMMdd"), F.date_format(ts, "HHmmss"), "pid", "level",
                    F.concat("component", F.lit(":")), F.replace("content", F.lit(BLOCK_SLOT), F.col("block_id")))
        .alias("line"))


def write_raw(lines: DataFrame, out: Path) -> int:
    """Write ``lines`` as ``out/raw/<hour>.log`` files, each in time order (then block, then
    position); returns the number of files."""
    parts = out / "raw_parts"
    (lines.repartition("hour").sortWithinPartitions("t", "block_id", "pos").select("hour", "line")
     .write.mode("overwrite").partitionBy("hour").text(str(parts)))
    raw = out / "raw"
    if raw.exists():
        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    n = 0
    for folder in sorted(parts.glob("hour=*")):
        files = sorted(folder.glob("part-*"))
        with open(raw / f"{folder.name.split('=', 1)[1]}.log", "wb") as dst:
            dst.writelines(f.read_bytes() for f in files)
        n += 1
    shutil.rmtree(parts)
    return n


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
            opts = {"header": "true", "quoteAll": "false", "escape": '"'}
            if cfg.gen_format == "raw":
                lines = raw_lines(df, line_examples(spark, cfg), cfg.seed, cfg.gen_days).cache()
                files = write_raw(lines, out)
                span = lines.agg(F.count(F.lit(1)).alias("n"), F.min("t").alias("a"), F.max("t").alias("b")).first()
                lines.unpersist()
            else:
                to_event_traces(df).write.mode("overwrite").options(**opts).csv(str(out / "Event_traces.csv"))
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
                   "source": cfg.event_traces, "format": cfg.gen_format}
        if cfg.gen_format == "raw":
            summary.update(raw_files=files, raw_lines=int(span["n"]), days=cfg.gen_days,
                           first_line=str(_utc(span["a"])), last_line=str(_utc(span["b"])))
        (out / "GENERATED.md").write_text(_readme(summary))
        write_json(out / "generated.json", {**summary, "anomaly_ratio": cfg.gen_anomaly_ratio,
                                            "timing_share": cfg.gen_timing_share, "synthetic": True})
        st.update(summary)
    return summary


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


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
            "log timestamps).\n"
            + ("\nThe sessions are written as raw HDFS log lines (`raw/<hour>.log`, in time order): real lines of the "
               "same event from the HDFS_2k sample with the block id replaced, or, for events the sample lacks, "
               "the template with placeholder values. Times are synthetic (the interval model above, session starts "
               f"spread over {s.get('days')} day(s) from 2008-11-09 20:35:18; a timing anomaly's stall at most "
               f"{RAW_MAX_STALL / 3600:g} h).\n" if s.get("format") == "raw" else ""))
