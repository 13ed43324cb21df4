"""``--task stream``: raw log files landing in a folder, ingested and scored in one Spark job.

Structured Streaming's file source reads the new files of ``landing`` (its checkpoint records which
files it has read, so a file is read once). Each micro-batch runs, in ``foreachBatch``, what the
batch path runs: :func:`deeplog_spark.ingest.runner.ingest_lines` (parse, the session rule across
batches, ``traces`` for the sessions that close, ``ingest_rejects``) and then
:func:`deeplog_spark.detect.verdicts.run_detect` for those sessions (verdicts, predictions,
``detection_runs``, the alert). The micro-batch is the ingest batch ``<prefix>-<batch id>``.

- ``trigger = available-now``: process what has landed, in micro-batches of at most
  ``max_files_per_trigger`` files, and stop (a scheduled job: hourly, daily). ``'<n> seconds'``:
  keep running, a micro-batch every n seconds.
- ``flush = true``: once the available files are processed, close every open session (the end of a
  backfill) as one more batch, ``<last batch>-flush``.
- **Exactly once.** A micro-batch that failed or was killed is run again by Spark with the same
  files and batch id. Every Delta write of a micro-batch carries ``txnAppId`` (the query's id, kept
  in the checkpoint) and ``txnVersion`` (the batch id), so a table that already took it skips it
  (:func:`deeplog_spark.core.tables.idempotent`); and what the batch
  writes is recomputed from the state it started from (``session_state`` records it), so the
  writes that were not done yet write what the first attempt would have.

The session state lives in Delta tables (``open_sessions``, ``session_state``), not in Spark's
state store; docs/scheduled-scoring.md says why.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.config import Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.logs import stage
from deeplog_spark.core.tables import idempotent, read_table, table_exists
from deeplog_spark.detect.bundle import ModelBundle
from deeplog_spark.detect.verdicts import run_detect
from deeplog_spark.ingest.runner import ingest_lines

log = logging.getLogger(__name__)

#: The suffix of the batch that closes every open session after the last micro-batch (``flush``).
FLUSH = "-flush"


def checkpoint_of(cfg: Config) -> str:
    """The query's checkpoint folder: ``checkpoint``, else ``<tables_root>/_checkpoints/stream``."""
    return cfg.checkpoint or cfg.tables_root.rstrip("/") + "/_checkpoints/stream"


def _refuse_new_checkpoint(spark: SparkSession, cfg: Config, checkpoint: str, prefix: str) -> None:
    """A new checkpoint numbers its micro-batches from 0 again: refuse it while the tables hold
    batches of a stream with the same prefix (their names would come back)."""
    local = checkpoint if "://" not in checkpoint else (checkpoint[7:] if checkpoint.startswith("file://") else None)
    if local is None or os.path.exists(os.path.join(local, "metadata")):
        return
    path = cfg.table(schemas.SESSION_STATE)
    if table_exists(spark, path) and read_table(spark, path).where(
            F.col("ingest_batch").startswith(prefix + "-")).limit(1).count():
        raise InputError(f"the tables at {cfg.tables_root} hold batches of a stream named {prefix!r}, but the "
                         f"checkpoint {checkpoint} is new: pass the stream's checkpoint (--checkpoint), or name this "
                         "stream's batches otherwise (--ingest_batch PREFIX)")


def landing_lines(spark: SparkSession, cfg: Config) -> DataFrame:
    """The streaming DataFrame of the landing folder's lines: ``line``, ``source_file``."""
    reader = spark.readStream.format("text")
    if cfg.max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", cfg.max_files_per_trigger)
    return reader.load(cfg.landing).select(F.col("value").alias("line"), F.col("_metadata.file_path").alias("source_file"))


def score_batch(spark: SparkSession, cfg: Config, batch: str, run_id: str, lines: DataFrame) -> dict:
    """Ingest ``lines`` as batch ``batch`` and score the sessions it closes with run ``run_id``."""
    t0 = time.perf_counter()
    ingested = ingest_lines(spark, cfg.replace(ingest_batch=batch), lines, batch)
    t1 = time.perf_counter()
    out = {"ingest_batch": batch, "lines": ingested["lines"], "sessions_closed": ingested.get("sessions_closed", 0),
           "sessions_open": ingested.get("sessions_open", 0), "late_events": ingested.get("late_events", 0),
           "watermark": ingested.get("watermark"), "ingest_seconds": round(t1 - t0, 2)}
    if ingested["blocks"]:
        detected = run_detect(spark, cfg.replace(ingest_batch=batch), run_id)
        out.update(sessions_scored=detected["sessions"], anomalies=detected["anomalous_sessions"],
                   new_anomalies=detected["new_anomalies"], detection_id=detected["detection_id"])
    else:
        out.update(sessions_scored=0, anomalies=0, new_anomalies=0, detection_id=None)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("stream: batch %s: %d lines, %d sessions closed and scored (%d anomalous), %d open, in %.1f s "
             "(ingest %.1f s)", batch, out["lines"], out["sessions_scored"], out["anomalies"], out["sessions_open"],
             out["seconds"], out["ingest_seconds"])
    return out


def _flush_name(spark: SparkSession, cfg: Config) -> str | None:
    """The flush batch after the newest batch (of this stream or of the batch path): ``<it>-flush``,
    or its own name when it was a flush itself, so flushing again re-runs it; None before any batch."""
    path = cfg.table(schemas.SESSION_STATE)
    if not table_exists(spark, path):
        return None
    name = read_table(spark, path).orderBy(F.col("seq").desc()).first()["ingest_batch"]
    return name if name.endswith(FLUSH) else f"{name}{FLUSH}"


def run_stream(spark: SparkSession, cfg: Config, model: str | None = None) -> dict:
    """Run the stream over ``landing`` until it stops (available-now) or is stopped; returns what
    each micro-batch did."""
    if not cfg.landing:
        raise InputError("--task stream needs --landing FOLDER: the folder raw log files land in")
    if "://" not in cfg.landing and not os.path.isdir(cfg.landing):
        raise InputError(f"--landing {cfg.landing}: no such folder (the stream reads the files that land in it)")
    if cfg.segment != "id":
        raise InputError("--task stream cuts sessions by id (segment = id): the session rule across batches is "
                         "defined for session ids")
    with stage("stream") as st:
        bundle = ModelBundle(cfg.artifacts_root, model)  # fails before the query starts when there is no model
        run_id = bundle.run_id  # one model for the whole stream, even when a training ends meanwhile
        checkpoint = checkpoint_of(cfg)
        prefix = cfg.ingest_batch or "stream"
        _refuse_new_checkpoint(spark, cfg, checkpoint, prefix)
        base = cfg.replace(append=True, flush=False)
        done: list[dict] = []
        query_id: dict[str, str] = {}
        started = threading.Event()

        def process(df: DataFrame, batch_id: int) -> None:
            started.wait()  # the query's id is known once start() has returned
            batch = f"{prefix}-{batch_id:06d}"
            lines = df.withColumn("line_order", F.monotonically_increasing_id())
            with idempotent(query_id["app"], batch_id):
                done.append({"batch_id": batch_id, **score_batch(spark, base, batch, run_id, lines)})

        writer = (landing_lines(spark, cfg).writeStream.foreachBatch(process)
                  .option("checkpointLocation", checkpoint).queryName(f"deeplog-{prefix}"))
        if cfg.trigger == "available-now":
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=cfg.trigger)
        t0 = time.perf_counter()
        query = writer.start()
        # the transaction app id: the query's id, kept in the checkpoint (the same after a restart; a new
        # checkpoint is a new query, whose batch ids start at 0 again)
        query_id["app"] = f"deeplog-stream-{query.id}"
        started.set()
        log.info("stream: reading %s (checkpoint %s, trigger %s, model %s)", cfg.landing, checkpoint, cfg.trigger,
                 run_id)
        query.awaitTermination()
        seconds = time.perf_counter() - t0
        flushed = None
        if cfg.flush:
            name = _flush_name(spark, cfg)
            if name:
                empty = spark.createDataFrame([], "line string, source_file string, line_order long")
                flushed = score_batch(spark, base.replace(flush=True), name, run_id, empty)
        lines = sum(b["lines"] for b in done)
        st.update(landing=cfg.landing, checkpoint=checkpoint, run_id=run_id, micro_batches=len(done), lines=lines,
                  sessions_scored=sum(b["sessions_scored"] for b in done) + (flushed or {}).get("sessions_scored", 0),
                  anomalies=sum(b["anomalies"] for b in done) + (flushed or {}).get("anomalies", 0),
                  query_seconds=round(seconds, 2), lines_per_second=round(lines / seconds, 1) if seconds else None,
                  batches=done, flush=flushed)
    return dict(st)
