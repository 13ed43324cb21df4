"""The session rule of scheduled and streaming scoring: a session is keyed by its id across batches.

A continuous log arrives in pieces (a file an hour, a day, a micro-batch of a stream), and a
session (an HDFS block: written, served and verified, deleted hours later) crosses them. The rule,
the same for ``ingest-raw --append`` and for ``--task stream``:

- the events of a batch extend the **open** sessions of the batches before it (kept in the
  ``open_sessions`` table, one row per event); a session's events are ordered by event time, then
  file name, then position in the file, whatever batch brought them;
- the **watermark** is the newest event time seen so far (every batch, every session) minus
  ``session_timeout``; a session is **closed** when its newest event is older than the watermark
  (no event for ``session_timeout`` of event time), or when the batch flushes (``--flush true``:
  the end of a backfill; a batch without ``--append`` is a whole log and always flushes);
- a closed session goes to ``traces`` under the batch that closed it and is scored with a final
  verdict; it is never reopened: a later event of a closed session is rejected with reason
  ``session_closed`` (counted in ``ingest_rejects``, never dropped silently). An event older than
  the watermark for a session that is *not* closed (a late file, disorder across files) is
  accepted and takes its place in the session by its time;
- so scoring a log cut into files anywhere gives the verdicts of scoring it whole, as long as no
  session goes quiet for longer than ``session_timeout`` and comes back (those later events are
  the ``session_closed`` rejects). ``tests/test_streaming.py`` checks it.

This module holds the pure transforms; :mod:`deeplog_spark.ingest.runner` reads and writes the
state (``open_sessions`` and one ``session_state`` row per batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core.schemas import INGEST_REJECTS_SCHEMA, OPEN_SESSIONS_SCHEMA, SOURCE_RAW_LOG, Reason

#: The session rows of :func:`deeplog_spark.ingest.raw.segment`: session id, event time (seconds),
#: file, position in the file, event id, line label.
ROW_COLUMNS = ("block_id", "t", "f", "o", "e", "lab")


@dataclasses.dataclass(frozen=True)
class Step:
    """What one batch does to the sessions."""

    #: session rows (:data:`ROW_COLUMNS`) of the sessions this batch closes (every event, from every batch)
    closed: DataFrame
    #: ``open_sessions`` rows of the sessions still open after it (:data:`ROW_COLUMNS` and
    #: ``ingest_batch``, the batch that brought the event)
    open: DataFrame
    #: the rows of ``open`` that this batch brought (what an incremental write adds)
    added: DataFrame
    #: one row per session open before the batch or seen in it: ``block_id``, ``last_t`` (its
    #: newest event time), ``earlier`` (open before this batch), ``events``
    sessions: DataFrame
    #: the rows of ``sessions`` this batch closes
    closing: DataFrame
    #: rows of this batch for sessions an earlier batch closed (``session_closed`` rejects), with
    #: ``closed_in`` (that batch)
    late: DataFrame


def empty_open(spark: SparkSession) -> DataFrame:
    """No open session (the state before the first batch)."""
    return spark.createDataFrame([], OPEN_SESSIONS_SCHEMA)


def step(open_rows: DataFrame, new_rows: DataFrame, closed: DataFrame, watermark: float | None,
         flush: bool, batch: str | None = None, keep: Callable[[DataFrame], DataFrame] = lambda df: df) -> Step:
    """Apply a batch's session rows to the open sessions.

    ``open_rows``: the ``open_sessions`` rows before the batch; ``closed``: ``(block_id,
    ingest_batch)`` of the sessions earlier batches closed (their ``traces`` rows); ``watermark``:
    the newest event time seen including this batch, minus ``session_timeout`` (None: no event
    time yet, nothing closes but by ``flush``); ``batch``: the name the batch's open rows carry.
    ``keep`` materialises the per-session summary (one pass over the open rows; the caller passes
    ``localCheckpoint``), from which the closing sessions are found.
    """
    closed = closed.select("block_id", F.col("ingest_batch").alias("closed_in"))
    late = new_rows.join(closed, "block_id")
    tag = F.col("ingest_batch") if "ingest_batch" in open_rows.columns else F.lit(None).cast("string")
    earlier = open_rows.select(*ROW_COLUMNS, tag.alias("ingest_batch"))
    fresh = (new_rows.join(closed, "block_id", "left_anti")
             .select(*ROW_COLUMNS, F.lit(batch).cast("string").alias("ingest_batch")))
    rows = earlier.unionByName(fresh)
    sessions = keep(earlier.select("block_id", "t", F.lit(True).alias("_earlier"))
                    .unionByName(fresh.select("block_id", "t", F.lit(False).alias("_earlier")))
                    .groupBy("block_id").agg(F.max("t").alias("last_t"), F.max("_earlier").alias("earlier"),
                                             F.count(F.lit(1)).alias("events")))
    if flush:
        return Step(rows.select(*ROW_COLUMNS), rows.limit(0), fresh.limit(0), sessions, sessions, late)
    if watermark is None:
        return Step(rows.select(*ROW_COLUMNS).limit(0), rows, fresh, sessions, sessions.limit(0), late)
    closing = sessions.where(F.col("last_t") < F.lit(float(watermark)))
    ids = F.broadcast(closing.select("block_id"))  # a batch closes few of the open sessions
    return Step(rows.join(ids, "block_id", "left_semi").select(*ROW_COLUMNS), rows.join(ids, "block_id", "left_anti"),
                fresh.join(ids, "block_id", "left_anti"), sessions, closing, late)


def late_rejects(late: DataFrame, batch: str, ingested_at, timeout: float) -> DataFrame:
    """``ingest_rejects`` rows (reason ``session_closed``) for the late rows of :func:`step`."""
    return late.select(
        F.lit(SOURCE_RAW_LOG).alias("source"), F.col("f").alias("source_file"), "block_id",
        F.to_json(F.struct(F.timestamp_seconds("t").cast("string").alias("time"), F.col("e").alias("event"),
                           F.col("o").alias("line_order"))).alias("raw"),
        F.lit(Reason.SESSION_CLOSED).alias("reason"),
        F.format_string("the session was closed in batch %s (no event for session_timeout = %s s before the "
                        "watermark); a later event is not scored. Raise session_timeout if sessions go quiet "
                        "for longer", F.col("closed_in"), F.lit(f"{timeout:g}")).alias("detail"),
        F.lit(ingested_at).cast("timestamp").alias("ingested_at"), F.lit(batch).alias("ingest_batch"),
    ).select(*[F.col(f.name).cast(f.dataType) for f in INGEST_REJECTS_SCHEMA.fields])


def open_table_rows(open_rows: DataFrame) -> DataFrame:
    """The ``open_sessions`` table's rows (:attr:`Step.open` or :attr:`Step.added`), in its schema."""
    return open_rows.select(*[F.col(f.name).cast(f.dataType) for f in OPEN_SESSIONS_SCHEMA.fields])
