"""Ingest runners: read the inputs, call the pure parsers, split, write the Delta tables, check that
every input row is accepted or rejected, and log the counts.

The task CLI calls these; tests and notebooks call them directly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Callable
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.config import Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.logs import stage
from deeplog_spark.core.schemas import Reason
from deeplog_spark.core.tables import (
    commit_note,
    read_table,
    replace_where,
    sql_str,
    table_exists,
    table_version,
    version_before,
    write_batches,
    write_table,
)
from deeplog_spark.ingest import session_rule
from deeplog_spark.ingest.formats import preset
from deeplog_spark.ingest.mining import Miner
from deeplog_spark.ingest.raw import (
    mined_fields,
    mined_templates,
    parse_lines,
    parse_mined,
    raw_rejects,
    read_raw_logs,
    segment,
    sessions,
    template_counts,
)
from deeplog_spark.ingest.split import assign_split
from deeplog_spark.ingest.traces import (
    build_traces,
    ingest,
    label_rejects,
    parse_labels,
    read_event_traces,
    read_sequences,
    read_session_labels,
    read_templates,
)

log = logging.getLogger(__name__)


class ConservationError(RuntimeError):
    """Input rows != accepted + rejected: a bug, never an input problem."""


def _strict_check(cfg: Config, total: int, rejected: dict[str, int], what: str) -> None:
    """``strict``: any reject fails the job with a one-line summary (tables are already written)."""
    n = sum(rejected.values())
    if cfg.strict and n:
        reasons = ", ".join(f"{r}={c}" for r, c in sorted(rejected.items()))
        raise InputError(f"strict: {n} of {total} {what} rejected ({reasons}); "
                         f"see {cfg.table(schemas.INGEST_REJECTS)}")


def batch_name(cfg: Config, input_path: str) -> str:
    """The ingest batch: ``ingest_batch`` when set, else the input's file or folder name (sanitised)."""
    if cfg.ingest_batch:
        return cfg.ingest_batch
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(input_path.rstrip("/")).name).lstrip("._-")[:64]
    return re.sub(r"\.\.+", ".", name) or "batch"


def drop_already_ingested(spark: SparkSession, cfg: Config, traces: DataFrame, batch: str, source: str,
                          ingested_at: dt.datetime) -> tuple[DataFrame, DataFrame]:
    """Append mode: (traces of blocks not yet in another batch, reject rows for the others)."""
    path = cfg.table(schemas.TRACES)
    if not table_exists(spark, path):
        return traces, spark.createDataFrame([], schemas.INGEST_REJECTS_SCHEMA)
    other = (read_table(spark, path).where(F.coalesce(F.col("ingest_batch"), F.lit("")) != batch)
             .select("block_id", F.col("ingest_batch").alias("_prev")))
    rejects = _already_ingested(traces.join(other, "block_id"), source, ingested_at, batch,
                                "already ingested in batch %s (a block's events must arrive in one batch)")
    return traces.join(other.select("block_id"), "block_id", "left_anti"), rejects


def _already_ingested(dup: DataFrame, source: str, ingested_at: dt.datetime, batch: str, detail: str) -> DataFrame:
    """``block_already_ingested`` reject rows for trace rows ``dup`` (with ``_prev``, the batch that
    holds the block; ``detail`` formats it)."""
    return dup.select(
        F.lit(source).alias("source"), F.col("source_file"), F.col("block_id"),
        F.to_json(F.struct("events", "intervals")).alias("raw"), F.lit(Reason.BLOCK_ALREADY_INGESTED).alias("reason"),
        F.format_string(detail, F.col("_prev")).alias("detail"),
        F.lit(ingested_at).cast("timestamp").alias("ingested_at"), F.lit(batch).alias("ingest_batch"),
    ).select(*[F.col(f.name).cast(f.dataType) for f in schemas.INGEST_REJECTS_SCHEMA.fields])


def write_ingest(spark: SparkSession, cfg: Config, templates: DataFrame, traces: DataFrame, rejects: DataFrame,
                 batch: str, source: str, ingested_at: dt.datetime, dedupe: bool = True) -> None:
    """Split, tag with the batch, drop already-ingested blocks (append, with ``dedupe``), and write
    the ingest tables.

    ``traces`` are accepted sessions without split; ``rejects`` every reject row of the batch.
    ``dedupe=False``: the session rule has already kept closed sessions from coming back.
    """
    traces = (assign_split(traces, cfg.seed, cfg.train_ratio, cfg.val_ratio).withColumn("ingest_batch", F.lit(batch))
              .withColumn("ingested_at", F.lit(ingested_at).cast("timestamp")))
    rejects = rejects.withColumn("ingest_batch", F.lit(batch))
    if cfg.append and dedupe:
        traces, dup = drop_already_ingested(spark, cfg, traces, batch, source, ingested_at)
        rejects = rejects.unionByName(dup)
    _write_templates(spark, cfg, templates)
    with commit_note(spark, _note(batch)):
        write_batches(traces, cfg.table(schemas.TRACES), [batch], cfg.append)
    write_batches(rejects, cfg.table(schemas.INGEST_REJECTS), [batch], cfg.append)
    if cfg.append and dedupe:
        settle_shared_blocks(spark, cfg, batch, source, ingested_at)


def settle_shared_blocks(spark: SparkSession, cfg: Config, batch: str, source: str, ingested_at: dt.datetime) -> int:
    """After ``batch`` wrote its traces, the blocks it shares with another batch: the copy of the batch
    whose traces commit came first stays, the later batch's copy moves to its rejects
    (``block_already_ingested``). Returns how many of this batch's blocks moved.

    Two batches ingested at the same moment (the first two appends of a schedule, or two files
    started together) each check for blocks already ingested before the other has written, so both
    can find a block new. Each looks again after its write; both order the batches by their commits
    to ``traces`` (``DESCRIBE HISTORY``, the batch in each commit's user metadata), so they agree
    which copy stays, whichever looks first. Rows written before commits carried the batch count as
    the earliest."""
    path = cfg.table(schemas.TRACES)
    traces = read_table(spark, path)
    mine = traces.where(F.col("ingest_batch") == batch)
    others = traces.where(F.col("ingest_batch") != batch).select("block_id", F.col("ingest_batch").alias("_prev"))
    shared = [(r["block_id"], r["_prev"]) for r in mine.select("block_id").join(others, "block_id").collect()]
    if not shared:
        return 0
    written = {}
    for row in spark.sql(f"DESCRIBE HISTORY {path.sql}").select("version", "userMetadata").collect():
        note = row["userMetadata"] or ""
        if note.startswith(_NOTE) and note[len(_NOTE):] not in written:  # newest first: its current rows
            written[note[len(_NOTE):]] = int(row["version"])
    own = written.get(batch, -1)
    later = sorted({block for block, prev in shared if written.get(prev, -1) < own})
    if not later:
        return 0
    first = {block: prev for block, prev in sorted(shared, key=lambda bp: written.get(bp[1], -1), reverse=True)}
    moved = spark.createDataFrame([(b, first[b]) for b in later], "block_id string, _prev string")
    rejects = _already_ingested(mine.join(moved, "block_id"), source, ingested_at, batch,
                                "already ingested in batch %s, which was written first (the two batches ran at "
                                "the same time)").localCheckpoint()
    kept = mine.join(moved.select("block_id"), "block_id", "left_anti").localCheckpoint()
    earlier = _in_batch(read_table(spark, cfg.table(schemas.INGEST_REJECTS)), batch).localCheckpoint()
    write_batches(kept, path, [batch], True)  # no note: the batch's order stays that of its ingest commit
    write_batches(earlier.unionByName(rejects), cfg.table(schemas.INGEST_REJECTS), [batch], True)
    log.warning("ingest: %d block(s) of batch %s were also in a batch written first (%s), ingested at the same "
                "time; they are rejected here as %s", len(later), batch, ", ".join(sorted({first[b] for b in later})),
                Reason.BLOCK_ALREADY_INGESTED)
    return len(later)


def _write_templates(spark: SparkSession, cfg: Config, templates: DataFrame) -> None:
    """Write the templates table, but not when an appended batch brings the same templates (the
    usual case: a commit saved on every batch of a schedule or a stream)."""
    path = cfg.table(schemas.TEMPLATES)
    if cfg.append and table_exists(spark, path):
        rows = sorted(tuple(r) for r in templates.collect())
        if rows == sorted(tuple(r) for r in read_table(spark, path).select(*templates.columns).collect()):
            return
    write_table(templates, path)


def _in_batch(df: DataFrame, batch: str) -> DataFrame:
    return df.where(F.col("ingest_batch") == batch)


def run_ingest(spark: SparkSession, cfg: Config, ingested_at: dt.datetime | None = None) -> dict:
    """Ingest sessions + labels + templates into the templates, traces and rejects tables: Loghub
    Event_traces, or with ``input = sequences`` the generic ``session_id,events[,label]`` rows.

    With ``append`` the batch is added to (or replaced in) existing tables. Returns the row
    counts it logged.
    """
    ingested_at = ingested_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    sequences = cfg.input == "sequences"
    source = schemas.SOURCE_SEQUENCES if sequences else schemas.SOURCE_EVENT_TRACES
    path = cfg.sequences if sequences else cfg.event_traces
    if not path:
        raise InputError("input = sequences needs --sequences PATH (a CSV of session_id,events[,label])")
    with stage("ingest") as st:
        batch = batch_name(cfg, path)
        templates = read_templates(spark, cfg.templates)
        raw_traces = read_sequences(spark, path) if sequences else read_event_traces(spark, path)
        raw_labels = read_session_labels(spark, cfg.anomaly_labels) if cfg.anomaly_labels else None
        res = ingest(raw_traces, templates, raw_labels, ingested_at, source)
        # traces, rejects and label matching all derive from these: parse each input once
        res.parsed_traces.persist(StorageLevel.MEMORY_AND_DISK)
        if res.parsed_labels is not None:
            res.parsed_labels.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            write_ingest(spark, cfg, templates, res.traces, res.rejects, batch, source, ingested_at)
            counts = _ingest_counts(spark, cfg, res, batch, source)
        finally:
            res.parsed_traces.unpersist()
            if res.parsed_labels is not None:
                res.parsed_labels.unpersist()
        st.update(counts)
    _strict_check(cfg, counts["trace_rows"] + counts.get("label_rows", 0), counts["rejects_by_reason"],
                  "input rows")
    return counts


def _ingest_counts(spark: SparkSession, cfg: Config, res, batch: str, source: str) -> dict:
    by_reason = {
        (r["source"], r["reason"]): r["n"]
        for r in _in_batch(read_table(spark, cfg.table(schemas.INGEST_REJECTS)), batch)
        .groupBy("source", "reason").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    traces = _in_batch(read_table(spark, cfg.table(schemas.TRACES)), batch)
    agg = traces.agg(
        F.count(F.lit(1)).alias("traces"),
        F.sum(F.when(F.col("label") == 1, 1).otherwise(0)).alias("anomalies"),
        F.sum(F.when(F.col("label").isNull(), 1).otherwise(0)).alias("unlabelled"),
        F.sum("event_count").alias("events"),
    ).first().asDict()
    splits = {r["split"]: r["n"] for r in traces.groupBy("split").agg(F.count(F.lit(1)).alias("n")).collect()}
    trace_rows = res.parsed_traces.count()
    trace_rejected = sum(n for (src, _), n in by_reason.items() if src == source)
    counts = {
        "ingest_batch": batch,
        "trace_rows": trace_rows,
        "traces": agg["traces"],
        "trace_rejects": trace_rejected,
        "anomalies": agg["anomalies"] or 0,
        "unlabelled": agg["unlabelled"] or 0,
        "events": agg["events"] or 0,
        "anomaly_ratio": round((agg["anomalies"] or 0) / max(agg["traces"], 1), 4),
        "splits": splits,
        "rejects_by_reason": {f"{s}:{r}": n for (s, r), n in sorted(by_reason.items())},
    }
    if trace_rows != agg["traces"] + trace_rejected:
        raise ConservationError(f"trace rows {trace_rows} != accepted {agg['traces']} + rejected {trace_rejected}")
    if res.parsed_labels is not None:
        label_rows = res.parsed_labels.count()
        label_ok = res.parsed_labels.where(F.col("reason").isNull()).count()
        label_rejected = sum(n for (src, _), n in by_reason.items() if src == schemas.SOURCE_ANOMALY_LABELS)
        counts.update(label_rows=label_rows, labels=label_ok, label_rejects=label_rejected)
        if label_rows != label_ok + label_rejected:
            raise ConservationError(f"label rows {label_rows} != matched {label_ok} + rejected {label_rejected}")
    return counts


def log_format(cfg: Config):
    """The configured :class:`~deeplog_spark.ingest.formats.LogFormat`: the preset with the overrides."""
    try:
        return preset(cfg.log_format).with_overrides(cfg.line_regex, cfg.timestamp_format, cfg.session_regex,
                                                     cfg.session_field)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def templates_mode(spark: SparkSession, cfg: Config) -> str:
    """``file``, ``mine`` or ``state``: ``auto`` is the templates file for HDFS; for other logs a
    new miner, or with ``append`` the saved one when there is one (so a batch keeps the ids)."""
    saved = table_exists(spark, cfg.table(schemas.MINER_STATE))
    mode = cfg.templates_from
    if mode == "auto":
        mode = "file" if cfg.log_format == "hdfs" else ("state" if cfg.append and saved else "mine")
    if mode == "state" and not saved:
        raise InputError(f"templates_from = state: no saved miner at {cfg.table(schemas.MINER_STATE)} "
                         "(ingest a first batch with templates_from = mine)")
    if mode == "mine" and cfg.append and saved:
        raise InputError("templates_from = mine with --append would renumber the templates of the batches already "
                         "ingested: use templates_from = state (the default with --append), or rebuild without --append")
    return mode


def load_miner(spark: SparkSession, cfg: Config):
    return Miner.from_state(read_table(spark, cfg.table(schemas.MINER_STATE)).first()["state"])


def _save_miner(spark: SparkSession, cfg: Config, miner, batch: str, ingested_at: dt.datetime) -> None:
    row = [(miner.state(), len(miner.templates()), float(miner.sim_th), int(miner.depth), ingested_at, batch)]
    df = spark.createDataFrame(row, "state string, templates int, sim_th double, depth int, mined_at timestamp, "
                                    "ingest_batch string")
    write_table(df, cfg.table(schemas.MINER_STATE))


def run_ingest_raw(spark: SparkSession, cfg: Config, ingested_at: dt.datetime | None = None) -> dict:
    """Ingest raw log files (``raw_logs``, format ``log_format``) into the templates, traces, rejects
    and template_counts tables (and ``miner_state`` when templates are mined), cut into sessions
    by ``segment``; labels come from ``anomaly_labels`` when set, else from per-line labels rolled
    up. Returns the counts (:func:`ingest_lines`).
    """
    if not cfg.raw_logs:
        raise InputError("no raw logs configured: pass --raw_logs PATH")
    lines = read_raw_logs(spark, cfg.raw_logs)
    if lines.limit(1).count() == 0:  # as the Event_traces path: nothing to ingest is an error, not 0 blocks
        raise InputError(f"{cfg.raw_logs}: no log lines (an empty input); nothing was written")
    return ingest_lines(spark, cfg, lines, batch_name(cfg, cfg.raw_logs), ingested_at)


@dataclasses.dataclass(frozen=True)
class Prior:
    """The session state a batch starts from (:mod:`deeplog_spark.ingest.session_rule`)."""

    seq: int
    open_rows: DataFrame
    open_version: int | None
    max_event_time: float | None
    closed: DataFrame


def prior_state(spark: SparkSession, cfg: Config, batch: str) -> Prior:
    """The state before ``batch``: after the newest batch, or, when ``batch`` is the newest batch
    itself (a re-run), the state it started from. Re-running an older batch is refused: the batches
    after it continued its open sessions. Without ``append`` the batch starts from nothing."""
    state, open_path, traces = (cfg.table(schemas.SESSION_STATE), cfg.table(schemas.OPEN_SESSIONS),
                                cfg.table(schemas.TRACES))
    none = spark.createDataFrame([], "block_id string, ingest_batch string")
    if not cfg.append or not table_exists(spark, state):
        closed = (read_table(spark, traces).where(F.col("ingest_batch") != batch).select("block_id", "ingest_batch")
                  if cfg.append and table_exists(spark, traces) else none)
        return Prior(1, session_rule.empty_open(spark), None, None, closed)
    rows = read_table(spark, state).orderBy("seq").collect()
    names = [r["ingest_batch"] for r in rows]
    if batch in names and batch != names[-1]:
        after = names[names.index(batch) + 1:]
        raise InputError(f"batch {batch!r} was followed by {', '.join(after[:3])}{' ...' if len(after) > 3 else ''}: "
                         "those batches continued the sessions it left open, so re-running it alone would lose or "
                         "double their events. Re-run the newest batch, or rebuild the tables without --append")
    rerun = bool(names) and batch == names[-1]
    before = rows[-2] if rerun and len(rows) > 1 else (None if rerun else rows[-1])
    if rerun:
        version = rows[-1]["open_version"]
    else:
        # the newest version, unless an attempt of this batch that never wrote its state wrote it
        version = version_before(spark, open_path, _note(batch)) if table_exists(spark, open_path) else None
    open_rows = (read_table(spark, open_path, version=version) if version is not None
                 else session_rule.empty_open(spark))
    ts = before["max_event_time"] if before is not None else None
    closed = (read_table(spark, traces, version=table_version(spark, traces)).where(F.col("ingest_batch") != batch)
              .select("block_id", "ingest_batch") if table_exists(spark, traces) else none)
    return Prior(rows[-1]["seq"] if rerun else rows[-1]["seq"] + 1, open_rows, version,
                 ts.replace(tzinfo=dt.timezone.utc).timestamp() if ts is not None else None, closed)


def _utc(seconds: float | None) -> dt.datetime | None:
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


#: At most this many sessions closing in one batch are deleted from ``open_sessions`` by their ids;
#: a batch that closes more rewrites the table.
MAX_CLOSING_IDS = 20_000


#: The user metadata of a batch's commits to ``traces`` and ``open_sessions`` (:func:`_note`).
_NOTE = "deeplog ingest_batch="


def _note(batch: str) -> str:
    """The user metadata of a batch's commit to ``traces`` and ``open_sessions``."""
    return _NOTE + batch


def apply_session_rule(spark: SparkSession, cfg: Config, rows: DataFrame, batch: str, ingested_at: dt.datetime,
                       lines: int) -> tuple[DataFrame, DataFrame, Callable[[], dict]]:
    """The session rule for a batch's session rows: (the session rows of the sessions it closes, the
    ``session_closed`` rejects, a function that writes the new state once traces are written and
    returns the rule's counts).

    ``open_sessions`` is changed in place: the rows of the sessions the batch closes are deleted and
    the batch's rows of the sessions still open are added, in one commit, so a batch's cost grows
    with its own lines and the sessions it closes, not with the open state (a pass over the open
    rows' ``block_id`` and ``t`` finds the closing sessions). The table is rewritten whole on a
    flush, a re-run, or a batch that closes more than :data:`MAX_CLOSING_IDS` sessions.
    """
    prior = prior_state(spark, cfg, batch)
    newest = rows.agg(F.max("t")).first()[0]
    seen = [x for x in (prior.max_event_time, newest) if x is not None]
    max_t = max(seen) if seen else None
    flush = cfg.flush or not cfg.append
    watermark = max_t - cfg.session_timeout if max_t is not None else None
    # the per-session summary is materialised once: the closing sessions and the counts read it
    st = session_rule.step(prior.open_rows, rows, prior.closed, watermark, flush, batch,
                           keep=lambda df: df.localCheckpoint())
    before = prior.max_event_time - cfg.session_timeout if prior.max_event_time is not None else None
    open_path = cfg.table(schemas.OPEN_SESSIONS)
    shut = st.closing.agg(F.count(F.lit(1)).alias("s"), F.sum("events").alias("e"),
                          F.count(F.when(~F.col("earlier") & (F.col("last_t") < F.lit(before)), 1)).alias("late")
                          if before is not None else F.lit(0).alias("late")).first()
    total = st.sessions.agg(F.count(F.lit(1)).alias("s"), F.sum("events").alias("e")).first()
    in_place = (cfg.append and not flush and prior.open_version is not None and shut["s"] <= MAX_CLOSING_IDS
                and table_version(spark, open_path) == prior.open_version)
    ids = [r["block_id"] for r in st.closing.select("block_id").collect()] if in_place else []
    # materialised once: traces, the counts and the open state all read them
    closed = st.closed.localCheckpoint()
    late = st.late.localCheckpoint()
    written = (st.added if in_place else st.open).localCheckpoint()

    def commit() -> dict:
        counts = {"sessions_closed": shut["s"], "sessions_open": total["s"] - shut["s"],
                  "events_open": (total["e"] or 0) - (shut["e"] or 0), "late_events": late.count(),
                  "late_sessions": shut["late"]}
        with commit_note(spark, _note(batch)):
            if in_place:
                cond = "block_id IN ({})".format(", ".join(f"'{sql_str(i)}'" for i in ids)) if ids else "false"
                replace_where(session_rule.open_table_rows(written), open_path, cond, anywhere=True)
            else:
                write_table(session_rule.open_table_rows(written), open_path)
        row = [(prior.seq, batch, ingested_at, _utc(max_t), _utc(watermark if not flush else max_t),
                float(cfg.session_timeout), flush, prior.open_version, int(lines), *[int(counts[k]) for k in (
                    "sessions_closed", "sessions_open", "events_open", "late_events", "late_sessions")])]
        state = spark.createDataFrame(row, schemas.SESSION_STATE_SCHEMA)
        if cfg.append:
            replace_where(state, cfg.table(schemas.SESSION_STATE), f"seq >= {prior.seq}")
        else:
            write_table(state, cfg.table(schemas.SESSION_STATE))
        log.info("session rule: batch %s closed %d sessions (%d late: quiet before the watermark already), %d stay "
                 "open (%d events; open_sessions %s); %d events of closed sessions rejected; watermark %s%s", batch,
                 counts["sessions_closed"], counts["late_sessions"], counts["sessions_open"], counts["events_open"],
                 "changed in place" if in_place else "rewritten", counts["late_events"], _utc(watermark),
                 " (flushed)" if flush else "")
        return {**counts, "watermark": str(_utc(watermark)) if watermark is not None else None, "flushed": flush}

    return closed, session_rule.late_rejects(late, batch, ingested_at, cfg.session_timeout), commit


def ingest_lines(spark: SparkSession, cfg: Config, lines: DataFrame, batch: str,
                 ingested_at: dt.datetime | None = None) -> dict:
    """Ingest log ``lines`` (:func:`~deeplog_spark.ingest.raw.read_raw_logs` columns) as batch
    ``batch``: the body of ``ingest-raw``, and of each trigger of ``--task stream``.

    With ``segment = id`` sessions follow the session rule across batches
    (:mod:`deeplog_spark.ingest.session_rule`): ``traces`` receives the sessions this batch closes.
    A label row for a session that is not in these logs is not a reject here (a label file covers
    the whole dataset, a day of logs only some of it).
    """
    ingested_at = ingested_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with stage("ingest-raw") as st:
        fmt = log_format(cfg)
        by_id = cfg.segment == "id"
        mode = templates_mode(spark, cfg)
        miner = None
        if mode == "file":
            templates = read_templates(spark, cfg.templates)
            parsed = cached = parse_lines(lines, [r.asDict() for r in templates.collect()], fmt, by_id).persist(
                StorageLevel.MEMORY_AND_DISK)
        else:
            # the lines are parsed once: their ids are joined back to the cached fields (a broadcast)
            cached = mined_fields(lines, fmt, by_id).persist(StorageLevel.MEMORY_AND_DISK)
        rule = {}
        try:
            if mode != "file":
                parsed, miner = parse_mined(cached, fmt, load_miner(spark, cfg) if mode == "state" else None,
                                            cfg.drain_sim_th, cfg.drain_depth, by_id, keep_unknown=mode == "state")
                templates = mined_templates(spark, miner)
            by_reason = {r["reason"]: r["n"] for r in parsed.groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()}
            rows = segment(parsed, cfg.segment, cfg.segment_lines, cfg.window_seconds, cfg.window_step_seconds)
            rejects = raw_rejects(parsed, ingested_at)
            commit_rule = None
            if by_id:
                rows, late, commit_rule = apply_session_rule(spark, cfg, rows, batch, ingested_at,
                                                             sum(by_reason.values()))
                rejects = rejects.unionByName(late)
            sess = sessions(rows)
            labels = None
            if cfg.anomaly_labels:
                labels = parse_labels(read_session_labels(spark, cfg.anomaly_labels), sess.select("block_id"))
                labels = labels.where(F.col("reason").isNull() | (F.col("reason") != Reason.LABEL_UNKNOWN_BLOCK))
                rejects = rejects.unionByName(label_rejects(labels, ingested_at))
            write_ingest(spark, cfg, templates, build_traces(sess, labels), rejects, batch, schemas.SOURCE_RAW_LOG,
                         ingested_at, dedupe=not by_id)
            if mode == "mine":
                _save_miner(spark, cfg, miner, batch, ingested_at)
            write_batches(template_counts(parsed, templates).withColumn("ingest_batch", F.lit(batch)),
                          cfg.table(schemas.TEMPLATE_COUNTS), [batch], cfg.append)
            if commit_rule is not None:
                rule = commit_rule()  # the state last: a batch whose state is written has written everything
        finally:
            cached.unpersist()
        lines_n = sum(by_reason.values())
        accepted = by_reason.pop(None, 0)
        raw_rejected = _in_batch(read_table(spark, cfg.table(schemas.INGEST_REJECTS)), batch).where(
            F.col("source") == schemas.SOURCE_RAW_LOG)
        per_session = (Reason.BLOCK_ALREADY_INGESTED, Reason.SESSION_CLOSED)  # session rows, not lines
        stored = raw_rejected.where(~F.col("reason").isin(*per_session)).count()
        if lines_n != accepted + stored:
            raise ConservationError(f"log lines {lines_n} != accepted {accepted} + rejected {stored}")
        already = raw_rejected.where(F.col("reason") == Reason.BLOCK_ALREADY_INGESTED).count()
        agg = _in_batch(read_table(spark, cfg.table(schemas.TRACES)), batch).agg(
            F.count(F.lit(1)).alias("blocks"), F.sum("event_count").alias("events"),
            F.sum(F.when(F.col("label") == 1, 1).otherwise(0)).alias("anomalies"),
            F.sum(F.when(F.col("label").isNull(), 1).otherwise(0)).alias("unlabelled")).first()
        per_template = {r["event_key"]: r["lines"] for r in
                        _in_batch(read_table(spark, cfg.table(schemas.TEMPLATE_COUNTS)), batch).collect()
                        if r["lines"]}
        log.info("ingest-raw: lines per template %s", dict(list(per_template.items())[:50]))
        st.update(ingest_batch=batch, log_format=fmt.name, segment=cfg.segment, templates_from=mode,
                  templates=templates.count(), lines=lines_n, accepted_lines=accepted, rejected_lines=stored,
                  blocks_already_ingested=already,
                  rejects_by_reason=dict(sorted(by_reason.items())), blocks=agg["blocks"],
                  events=int(agg["events"] or 0), anomalies=int(agg["anomalies"] or 0),
                  unlabelled=int(agg["unlabelled"] or 0),
                  unknown_template_lines=int(per_template.get("E0", 0)), **rule)
    rejected = {**by_reason, **({Reason.BLOCK_ALREADY_INGESTED: already} if already else {}),
                **({Reason.SESSION_CLOSED: rule["late_events"]} if rule.get("late_events") else {})}
    _strict_check(cfg, lines_n, rejected, "log lines")
    return {**dict(st), "lines_per_template": per_template}
