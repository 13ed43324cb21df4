"""Detect stage: per-session verdicts of every detector and the fused one, with the reason.

The scores come from :mod:`deeplog_spark.detect.scores` (distinct sequences for the key, count and PCA
detectors; whole sessions for the value detector). The decisions apply the run's calibration,
chosen on the val split when the run was trained (:mod:`deeplog_spark.detect.calibration`):

- ``anomalous``: the fused verdict, any member of the run's fused rule firing at its threshold;
  ``detectors`` lists the members that fired and ``reason`` says why, in words, for the first
  of them (count, then key, value, PCA): the event never seen, the count outside what normal
  sessions show, the step of the workflow the key model did not expect, the interval.
- ``deeplog_anomalous``: the DeepLog spec's rule at the detection's (g, k): a window whose next
  event is not among the key model's top g, or an interval whose standardized residual exceeds
  mu + k*sigma. Its first such window is ``first_anomalous_position`` and what follows it.

Tables: ``verdicts`` (one row per session) and ``predictions`` (one row per window, for the
sessions the fused verdict flags; every window with ``predictions = "all"``). Both are keyed by
(run_id, g, k[, ingest_batch]); a re-run replaces exactly its rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import time

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas, table_docs
from deeplog_spark.core.config import Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.logs import stage
from deeplog_spark.core.runs import detection_rows, detection_stats_path, read_json, write_json
from deeplog_spark.core.tables import current_txn, read_table, replace_where, sql_str, table_exists, table_version
from deeplog_spark.detect.bundle import ModelBundle
from deeplog_spark.detect.scores import key_window_rows, model_ids, sequence_scores, sequences, value_per_session
from deeplog_spark.features.windows import event_index, window_at
from deeplog_spark.integrations.alerts import post_alert
from deeplog_spark.models.fit import PATTERNS_FILE

log = logging.getLogger(__name__)

#: The columns of the verdicts table, in order.
VERDICT_COLUMNS = ("run_id", "g", "k", "block_id", "split", "label", "ingest_batch", "session_start", "session_end",
                   "anomalous", "detectors", "reason",
                   "deeplog_anomalous", "count_anomalous", "n_windows", "n_anomalous_windows", "max_key_rank",
                   "max_key_score", "max_value_error", "count_score", "exact_anomalous", "pca_spe",
                   "first_anomalous_position", "first_anomaly_window", "first_anomaly_next_event",
                   "first_anomaly_reason")
#: What each verdict row adds about the detection that wrote it (:func:`run_detect`).
DETECTION_COLUMNS = ("detection_id", "detected_at", "verdict_status", "registered_version")
#: A verdict of a complete session: it will not change (the session rule of scheduled scoring adds
#: provisional verdicts of sessions still open).
FINAL = "final"
#: New anomalies listed in an alert's JSON, at most.
ALERT_SESSIONS = 20
#: A verdict's reason adds the key model's most surprising step when its probability is below this.
WHERE_P = 0.01
#: The order in which the fused members' reasons are told.
REASON_ORDER = ("count", "key", "key_nll", "value", "pca")
#: Joins broadcast their small side (distinct sequences' scores, flagged block ids) up to this many rows.
BROADCAST_ROWS = 500_000
#: Distinct sequences scored per task (the first detectors' jobs run on this many per partition).
SEQUENCES_PER_TASK = 50_000
#: Bytes per Arrow batch of the scoring passes at most, whatever ``detect_batch_size`` says: long
#: sessions (logs beyond HDFS) come in fewer rows per batch. 32,768 HDFS sessions take ~10 MB.
ARROW_BATCH_BYTES = 16 << 20
#: Delta statistics (min, max, nulls per file) only for the columns whose min and max can skip a
#: file: a detection writes one (g, k) and one ingest batch, so those columns are constant per file
#: and a re-run's replaceWhere or a query for one detection reads only its files. Block ids, splits,
#: labels, positions and ranks are spread over every file as detection writes them, so their min/max
#: skip nothing and only cost write time (bench/results/delta_stats_2.9M.md). Set when the table is
#: created.
STATS_COLUMNS = {schemas.VERDICTS: "g,k,ingest_batch", schemas.PREDICTIONS: "g,k,ingest_batch"}


def table_properties(table: str) -> dict[str, str]:
    """The Delta properties detection creates ``table`` (verdicts or predictions) with."""
    return {"delta.dataSkippingStatsColumns": STATS_COLUMNS[table]}


def arrow_batches(spark: SparkSession, cfg: Config) -> None:
    """Size the Arrow batches of the scoring passes (rows by ``detect_batch_size``, bytes capped)."""
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.detect_batch_size))
    spark.conf.set("spark.sql.execution.arrow.maxBytesPerBatch", str(ARROW_BATCH_BYTES))


def score_columns() -> dict[str, Column]:
    """The session score of each detector (a session fires when it exceeds the detector's threshold)."""
    return {"key": F.col("max_key_rank").cast("double"), "key_nll": F.col("max_key_score").cast("double"),
            "value": F.col("max_value_error").cast("double"), "pca": F.col("pca_spe"),
            "count": F.col("count_anomalous").cast("double"), "exact": F.col("exact_anomalous").cast("double")}


def fires(detector: str, threshold: float) -> Column:
    """Whether ``detector`` fires at ``threshold`` (false where it has no score)."""
    return F.coalesce(score_columns()[detector] > F.lit(float(threshold)), F.lit(False))


def fused_members(bundle: ModelBundle, g: int) -> dict[str, float]:
    """The run's fused rule: member -> threshold. A run trained before calibration existed uses
    DeepLog's key rule at g."""
    if bundle.calibration:
        return {d: float(t) for d, t in bundle.calibration["fused"]["members"].items()}
    return {"key": float(g)}


def sequence_columns(per_seq: DataFrame, bundle: ModelBundle) -> DataFrame:
    """``per_seq`` (the scores of the distinct sequences) plus the verdict columns that depend on the
    sequence alone, built here once per sequence rather than per session:

    - ``key_text``: the key model's reason, its most surprising step in words;
    - ``model_events``: the events as the key model sees them (unknown ids replaced), null where
      they are the events themselves.

    Both take array functions with lambdas, which Spark evaluates row by row and which keep it
    from compiling the whole projection they appear in into one loop: in the session-level
    projection of ``decide`` and ``_deeplog_evidence`` they would be evaluated once per session
    instead of once per distinct sequence.
    ``test_the_verdict_columns_of_every_session_use_no_lambda`` keeps them out.
    """
    end = bundle.start_end[1] if bundle.markers else -999
    what = F.when(F.col("key_next_event") == F.lit(end), F.lit("the end of the session")) \
        .otherwise(F.format_string("E%d", F.col("key_next_event")))
    key_text = F.format_string(
        "key: at step %d the model did not expect %s (p=%.2g, rank %d; expected %s) after %s",
        F.col("key_position"), what, F.col("key_p"), F.col("max_key_rank"),
        F.array_join(F.transform(F.slice("key_expected", 1, 3), lambda e: F.when(
            e == F.lit(end), F.lit("end")).otherwise(F.concat(F.lit("E"), e.cast("string")))), ", "),
        F.array_join(F.transform(F.slice(F.filter("key_window", lambda e: e > 0), -3, 3), lambda e: F.when(
            e == F.lit(end - 1), F.lit("start")).when(e < 0, F.lit("?")).otherwise(F.concat(F.lit("E"), e.cast("string")))), " "))
    ids = model_ids(F.col("events"), bundle.vocab_size)
    return per_seq.withColumn("key_text", key_text).withColumn("model_events", F.when(ids != F.col("events"), ids))


def _reason(detector: str, bundle: ModelBundle, threshold: float) -> Column:
    if detector == "count":
        return F.col("count_reason")
    if detector in ("key", "key_nll"):
        return F.col("key_text")
    if detector == "value":
        return F.format_string("value: the interval before event %d was %.0f s where about %.0f s was expected "
                               "(%.1f sd, threshold %.1f)", F.col("value_position"), F.col("value_interval"),
                               F.col("value_expected"), F.col("max_value_error"), F.lit(threshold))
    if detector == "pca":
        return F.format_string("pca: the event counts lie off the normal subspace (SPE %.3g > %.3g)",
                               F.col("pca_spe"), F.lit(threshold))
    raise ValueError(detector)


def decide(sessions: DataFrame, bundle: ModelBundle, g: int, k: float) -> DataFrame:
    """The ``verdicts`` columns of scored sessions (see the module docstring)."""
    members = fused_members(bundle, g)
    fired = {d: fires(d, t) for d, t in members.items()}
    anomalous = F.lit(False)
    for c in fired.values():
        anomalous = anomalous | c
    # the fired members' names, in the rule's order (no lambda: see sequence_columns)
    names = F.when(anomalous, F.split(F.concat_ws(",", *[F.when(c, F.lit(d)) for d, c in fired.items()]), ",")) \
        .otherwise(F.array().cast("array<string>"))
    # every fired member's reason, in order (count, key, value, PCA); and where the workflow broke by
    # the key model when no key detector fired but it found a step improbable
    told = [F.when(fired[d], _reason(d, bundle, members[d])) for d in REASON_ORDER if d in members and d != "key_nll"]
    if "key_nll" in members and "key" not in members:
        told.append(F.when(fired["key_nll"], _reason("key_nll", bundle, members["key_nll"])))
    key_fired = F.lit(False)
    for d, c in fired.items():
        if d.startswith("key"):
            key_fired = key_fired | c
    told.append(F.when(~key_fired & (F.col("key_p") < F.lit(WHERE_P)),
                       F.regexp_replace(_reason("key", bundle, 0.0), "^key: at step", "key model: most surprising at step")))
    reason = F.concat_ws("; ", *told)
    spec_value = bundle.value_threshold(k)
    value_over = (F.col("max_value_error") > F.lit(spec_value)) if spec_value is not None else F.lit(False)
    deeplog = (F.col("max_key_rank") > F.lit(g)) | F.coalesce(value_over, F.lit(False))
    return sessions.select(
        F.lit(bundle.run_id).alias("run_id"), F.lit(g).alias("g"), F.lit(float(k)).alias("k"),
        "block_id", "split", "label", "ingest_batch", "session_start", "session_end",
        anomalous.alias("anomalous"), names.alias("detectors"), F.when(anomalous, reason).alias("reason"),
        deeplog.alias("deeplog_anomalous"),
        "n_windows", "n_anomalous_windows", "max_key_rank", "max_key_score", "max_value_error",
        "count_anomalous", "count_score", "exact_anomalous", "pca_spe",
        "first_key_position", "first_key_window", "first_key_next_event", "first_key_reason", "value_first_over",
        "events", "model_events")


def _deeplog_evidence(v: DataFrame, bundle: ModelBundle) -> DataFrame:
    """DeepLog's first anomalous window at (g, k): the key rule's, or the value rule's when earlier
    (its window cut from the session's events, as the key model saw them)."""
    n = F.size("events")
    # the window position whose target is the value model's first step over the threshold
    value_pos = F.when(F.col("value_first_over").isNotNull(),
                       F.col("value_first_over") - (event_index(F.lit(0), n, bundle.h, bundle.markers)))
    value_pos = F.when(value_pos >= 0, value_pos)
    first = F.least(F.col("first_key_position"), value_pos)
    v = v.withColumn("first_anomalous_position", F.when(F.col("deeplog_anomalous"), first))
    from_value = F.col("first_anomalous_position").isNotNull() & (
        F.col("first_key_position").isNull() | (F.col("first_anomalous_position") < F.col("first_key_position")))
    vw, vn = window_at(F.coalesce(F.col("model_events"), F.col("events")),
                       F.when(from_value, F.col("first_anomalous_position")), bundle.h, bundle.start_end)
    return (v.withColumn("first_anomaly_window", F.when(from_value, vw).otherwise(F.col("first_key_window")))
            .withColumn("first_anomaly_next_event", F.when(from_value, vn).otherwise(F.col("first_key_next_event")))
            .withColumn("first_anomaly_reason", F.when(from_value, F.lit("value_error"))
                        .otherwise(F.coalesce(F.col("first_key_reason"),
                                              F.when(F.col("first_key_position").isNotNull(), F.lit("not_in_top_g")))))
            .select(*VERDICT_COLUMNS, "events"))


def predictions(anomalous: DataFrame, bundle: ModelBundle, g: int, k: float, batch_size: int) -> DataFrame:
    """Per-window rows of the given sessions (``block_id, split, label, ingest_batch, events, intervals``)."""
    spec_value = bundle.value_threshold(k)
    scored = value_per_session(anomalous, bundle, spec_value if spec_value is not None else float("inf"),
                               batch_size, full=True)
    rows = key_window_rows(scored, bundle, g, batch_size, ["block_id", "split", "label", "ingest_batch"],
                           step_values="value_errors")
    value_error = F.col("step_value")  # the residual of the window's next event; null at the end marker
    key_anomaly = F.col("key_rank") > F.lit(g)
    value_anomaly = (value_error > F.lit(spec_value)) if spec_value is not None else F.lit(None).cast("boolean")
    window_score = F.col("key_rank") / F.lit(g)
    if spec_value is not None:
        window_score = F.greatest(window_score, value_error / F.lit(spec_value))
    return rows.select(
        F.lit(bundle.run_id).alias("run_id"), F.lit(g).alias("g"), F.lit(float(k)).alias("k"),
        "block_id", "split", "label", "position", "window", F.col("next_event").alias("y_true"),
        F.slice("top_g", 1, g).alias("y_pred_topg"), "key_rank", "key_score", key_anomaly.alias("key_anomaly"),
        "key_reason", value_error.cast("float").alias("value_error"), value_anomaly.alias("value_anomaly"),
        (key_anomaly | F.coalesce(value_anomaly, F.lit(False))).alias("fused_anomaly"),
        window_score.cast("double").alias("window_score"), "ingest_batch")


def templates_map(spark: SparkSession, cfg: Config) -> dict[int, str]:
    """event id -> template text (the templates table is small)."""
    return {r["event_id"]: r["template"] for r in read_table(spark, cfg.table(schemas.TEMPLATES))
            .select("event_id", "template").collect()}


def count_patterns(spark: SparkSession, cfg: Config, bundle: ModelBundle) -> DataFrame | None:
    """The run's normal count patterns (a few hundred rows: read once, then a local relation that
    every join of the count detector reuses). From the run folder, where training leaves them; a run
    trained before that reads them from the ``count_patterns`` table of this tables folder. A run
    with a count model but no patterns is refused: scoring without them would flag nothing, or, with
    another run's, everything."""
    schema = "counts array<struct<event:int,count:int>>, sessions long"
    saved = bundle.dir / PATTERNS_FILE
    if saved.is_file():
        rows = [([(int(e), int(c)) for e, c in r["counts"]], int(r["sessions"])) for r in read_json(saved)]
        return spark.createDataFrame(rows, schema)
    if bundle.count is None:
        return None
    path = cfg.table(schemas.COUNT_PATTERNS)
    rows = (read_table(spark, path).where(F.col("run_id") == bundle.run_id).select("counts", "sessions").collect()
            if table_exists(spark, path) else [])
    if not rows:
        raise InputError(f"run {bundle.run_id} has a count model, but its normal patterns are neither in its folder "
                         f"({saved.name}) nor in {path}: detect in the tables folder it was trained with, or run "
                         f"--task calibrate --model {bundle.run_id} here to fit them again")
    return spark.createDataFrame(rows, schema)


def score_sessions(spark: SparkSession, cfg: Config, bundle: ModelBundle, traces: DataFrame,
                   g: int, k: float, count: bool = True) -> tuple[DataFrame, list[DataFrame]]:
    """(every session of ``traces`` with the scores of every detector; the cached DataFrames, for
    the caller to unpersist when done). ``count=False`` leaves the count detector's columns null
    (calibration computes its features for every candidate knob itself)."""
    arrow_batches(spark, cfg)
    # cached and counted before anything reads them: the detectors' jobs would otherwise each
    # compute the distinct sequences from the traces at once (adaptive execution runs them together)
    seqs = sequences(traces).select("events").persist(StorageLevel.MEMORY_AND_DISK)
    n_seq = seqs.count()
    # a few thousand sequences in one task, not one per shuffle partition: each task of the
    # detectors' small jobs costs more to schedule (and to load the model) than its rows to score
    parts = max(1, min(cfg.shuffle_partitions, math.ceil(n_seq / SEQUENCES_PER_TASK)))
    patterns = count_patterns(spark, cfg, bundle) if count and bundle.count is not None else None
    per_seq = sequence_columns(sequence_scores(spark, seqs.coalesce(parts), bundle, patterns, templates_map(spark, cfg),
                                               g, cfg.detect_batch_size), bundle).persist(StorageLevel.MEMORY_AND_DISK)
    per_seq.count()
    log.info("detect: %d distinct event sequences scored by the key%s model(s)", n_seq,
             "".join(f", {d}" for d, m in (("count", patterns), ("pca", bundle.pca)) if m is not None))
    spec_value = bundle.value_threshold(k)
    # the value model reads each session's intervals (and only it does); then the distinct
    # sequences' scores, small next to the sessions, are broadcast to them: no shuffle of sessions
    sessions = value_per_session(traces, bundle, spec_value if spec_value is not None else float("inf"),
                                 cfg.detect_batch_size)
    sessions = sessions.join(F.broadcast(per_seq) if n_seq <= BROADCAST_ROWS else per_seq, "events")
    return sessions, [seqs, per_seq]


def run_detect(spark: SparkSession, cfg: Config, model: str | None = None) -> dict:
    """Score the traces with run ``model`` (default: latest); verdicts at the run's calibration and
    DeepLog's rule at (top_g, k_sigma). With ``ingest_batch`` only that batch is scored and replaced."""
    with stage("detect") as st:
        bundle = ModelBundle(cfg.artifacts_root, model)
        g, k, batch = cfg.top_g, cfg.k_sigma, cfg.ingest_batch
        if g > bundle.classes:
            raise InputError(f"--top_g {g} exceeds the model's {bundle.classes} outputs")
        traces = read_table(spark, cfg.table(schemas.TRACES))
        if batch:
            traces = traces.where(F.col("ingest_batch") == batch)
        if traces.limit(1).count() == 0:  # 0 verdicts and exit 0 would read as "nothing anomalous"
            rejected = read_table(spark, cfg.table(schemas.INGEST_REJECTS)) if table_exists(
                spark, cfg.table(schemas.INGEST_REJECTS)) else None
            if rejected is not None and batch:
                rejected = rejected.where(F.col("ingest_batch") == batch)
            n = rejected.count() if rejected is not None else 0
            raise InputError(f"no sessions to score{f' in batch {batch!r}' if batch else ''}"
                             + (f": all {n} of its input rows were rejected (see {cfg.table(schemas.INGEST_REJECTS)})"
                                if n else ": ingest it first"))
        # the session's event times (raw logs); null for inputs without times and tables from before them
        times = [F.col(c) if c in traces.columns else F.lit(None).cast("timestamp").alias(c)
                 for c in ("session_start", "session_end")]
        traces = traces.select("block_id", "split", "label", "ingest_batch", *times, "events", "intervals")
        t0 = time.perf_counter()
        detected_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        # a stream's micro-batch names its detection by its transaction (query, batch id), so a retried
        # trigger replaces its detection_runs row; any other detection is a new one
        txn = current_txn()
        detection_id = hashlib.sha256(f"{bundle.run_id}|{g}|{k}|{batch}|{txn if txn else detected_at.isoformat()}"
                                      .encode()).hexdigest()[:16]
        version = registered_version(bundle)
        sessions, cached = score_sessions(spark, cfg, bundle, traces, g, k)
        verdicts = _deeplog_evidence(decide(sessions, bundle, g, k), bundle).select(
            *VERDICT_COLUMNS, F.lit(detection_id).alias("detection_id"), F.lit(detected_at).cast("timestamp").alias("detected_at"),
            F.lit(FINAL).alias("verdict_status"), F.lit(version).cast("string").alias("registered_version"))
        vpath = cfg.table(schemas.VERDICTS)
        before = table_version(spark, vpath) if table_exists(spark, vpath) else None
        replace_where(verdicts, vpath, detection_rows(bundle.run_id, g, k, batch), partition_by=["run_id"],
                      properties=table_properties(schemas.VERDICTS))
        mine = read_table(spark, vpath).where(detection_rows(bundle.run_id, g, k, batch))
        counts = mine.agg(F.count(F.lit(1)).alias("sessions"), F.sum(F.col("anomalous").cast("int")).alias("anomalous"),
                          F.sum(F.col("deeplog_anomalous").cast("int")).alias("deeplog"),
                          F.sum("n_windows").alias("windows")).first()
        verdict_s = time.perf_counter() - t0
        log.info("detect: %d verdicts written in %.1f s", counts["sessions"] or 0, verdict_s)
        chosen = mine if cfg.predictions == "all" else mine.where(F.col("anomalous"))
        flagged = chosen.select("block_id")
        if cfg.predictions != "all" and (counts["anomalous"] or 0) <= BROADCAST_ROWS:
            flagged = F.broadcast(flagged)  # the flagged ids are few: the traces are not shuffled
        selected = traces.join(flagged, "block_id", "left_semi")
        preds = predictions(selected, bundle, g, k, cfg.detect_batch_size)
        replace_where(preds, cfg.table(schemas.PREDICTIONS), detection_rows(bundle.run_id, g, k, batch),
                      partition_by=["run_id"], properties=table_properties(schemas.PREDICTIONS))
        for df in cached:
            df.unpersist()
        score_s = time.perf_counter() - t0
        stats = {"run_id": bundle.run_id, "g": g, "k": k, "value_threshold": bundle.value_threshold(k),
                 "ingest_batch": batch or None, "fused_rule": fused_members(bundle, g),
                 "windows": int(counts["windows"] or 0), "sessions": int(counts["sessions"] or 0),
                 "anomalous_sessions": int(counts["anomalous"] or 0),
                 "deeplog_anomalous_sessions": int(counts["deeplog"] or 0), "predictions": cfg.predictions,
                 "verdict_seconds": round(verdict_s, 2), "scoring_seconds": round(score_s, 2),
                 "windows_per_s": round((counts["windows"] or 0) / max(score_s, 1e-9), 1)}
        stats.update(record_detection(spark, cfg, bundle, stats, mine, before, detection_id, detected_at, version,
                                      model, time.perf_counter() - t0))
        write_json(detection_stats_path(bundle.dir, g, k, batch), stats)
        if cfg.catalog_schema:
            create_latest_view(spark, cfg, bundle.run_id, g, k)
        st.update(stats)
    return stats


def registered_version(bundle: ModelBundle) -> str | None:
    """The MLflow registered model version of the run (recorded when training registered it)."""
    ids = bundle.dir / "mlflow.json"
    return read_json(ids).get("registered_version") if ids.is_file() else None


def record_detection(spark: SparkSession, cfg: Config, bundle: ModelBundle, stats: dict, mine: DataFrame,
                     before: int | None, detection_id: str, detected_at: dt.datetime, version: str | None,
                     model: str | None, seconds: float) -> dict:
    """Count the anomalies the previous detection of this model and (g, k) did not flag (the
    verdicts table's version ``before`` this detection wrote), alert on them when
    ``alert_webhook`` is set, and write the detection's row of ``detection_runs``."""
    g, k = stats["g"], stats["k"]
    flagged = mine.where(F.col("anomalous"))
    if before is None:
        new = flagged
    else:
        earlier = (read_table(spark, cfg.table(schemas.VERDICTS), version=before)
                   .where(detection_rows(bundle.run_id, g, k)).where(F.col("anomalous")))
        if current_txn() and stats["ingest_batch"]:  # a retried trigger: its first attempt's rows are not "before"
            earlier = earlier.where(F.col("ingest_batch") != stats["ingest_batch"])
        earlier = earlier.select("block_id")
        new = flagged.join(earlier, "block_id", "left_anti")
    n_new = new.count()
    alert = None
    if cfg.alert_webhook and n_new:
        listed = [r.asDict() for r in new.select("block_id", "split", "detectors", "reason")
                  .orderBy(F.col("count_score").desc_nulls_last(), F.col("max_key_score").desc_nulls_last(), "block_id")
                  .limit(ALERT_SESSIONS).collect()]
        payload = {"detection_id": detection_id, "detected_at": detected_at.isoformat() + "Z", "run_id": bundle.run_id,
                   "registered_version": version, "g": g, "k": k, "ingest_batch": stats["ingest_batch"],
                   "sessions": stats["sessions"], "anomalies": stats["anomalous_sessions"], "new_anomalies": n_new,
                   "new_sessions": listed}
        alert = post_alert(cfg.alert_webhook, payload)["status"]
    row = (detection_id, detected_at, bundle.run_id, int(g), float(k), model or "latest", version, stats["ingest_batch"],
           stats["sessions"], stats["anomalous_sessions"], stats["deeplog_anomalous_sessions"], n_new, round(seconds, 2),
           alert)
    replace_where(spark.createDataFrame([row], schemas.DETECTION_RUNS_SCHEMA), cfg.table(schemas.DETECTION_RUNS),
                  f"detection_id = '{detection_id}'")
    log.info("detect: %d anomalous sessions, %d new since the previous detection of run %s at g=%d k=%s%s",
             stats["anomalous_sessions"], n_new, bundle.run_id, g, k, f"; alert {alert}" if alert else "")
    return {"detection_id": detection_id, "new_anomalies": n_new, "alert": alert}


def create_latest_view(spark: SparkSession, cfg: Config, run_id: str, g: int, k: float) -> None:
    """``<catalog_schema>.latest_verdicts``: one row per session, the newest final verdict of the model
    and (g, k) of the newest detection (so an analyst's "what is anomalous now" reads one view)."""
    view, verdicts = cfg.table(schemas.LATEST_VERDICTS).name, cfg.table(schemas.VERDICTS).name
    spark.sql(f"""CREATE OR REPLACE VIEW {view}
        COMMENT '{sql_str(table_docs.table_comment(schemas.LATEST_VERDICTS))}'
        AS SELECT * EXCEPT (_newest) FROM (
            SELECT *, row_number() OVER (PARTITION BY block_id ORDER BY detected_at DESC) AS _newest
            FROM {verdicts} WHERE {detection_rows(run_id, g, k)} AND verdict_status = '{FINAL}')
        WHERE _newest = 1""")
