"""Calibration on the val split: every detector scores the val sessions as detect does, then the
thresholds, the count model's knobs and the fused rule are chosen (:mod:`deeplog_spark.detect.thresholds`)
and written to the run's ``calibration.json``. The test split is never read."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.config import Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.logs import stage
from deeplog_spark.core.runs import write_json
from deeplog_spark.core.tables import read_table
from deeplog_spark.detect import thresholds as C
from deeplog_spark.detect.bundle import ModelBundle
from deeplog_spark.detect.scores import with_counts
from deeplog_spark.detect.verdicts import count_patterns, score_sessions
from deeplog_spark.models import count as Q
from deeplog_spark.models.fit import fit_quantitative

log = logging.getLogger(__name__)


def calibrate_run(spark: SparkSession, cfg: Config, run_id: str) -> dict:
    """Choose every threshold, the count model's knobs and the fused rule on the val split.

    Every detector scores the val sessions (as detect does); the driver gets one record per
    distinct (val sequence, value-score level) with its normal and anomalous session counts, a
    bounded aggregate. Writes ``calibration.json`` (and the knobs into ``count_model.json``).
    """
    t0 = time.perf_counter()
    bundle = ModelBundle(cfg.artifacts_root, run_id)
    traces = read_table(spark, cfg.table(schemas.TRACES)).where(F.col("split") == "val") \
        .select("block_id", "split", "label", "ingest_batch", "events", "intervals")
    sessions, cached = score_sessions(spark, cfg, bundle, traces, cfg.top_g, cfg.k_sigma, count=False)
    value_level = F.least(F.round(F.col("max_value_error") * 20) / 20, F.lit(1000.0))  # 0.05 sd steps
    grouped = (sessions.where(F.col("label").isNotNull())
               .groupBy("events", value_level.alias("value"), F.col("max_key_rank").cast("double").alias("key"),
                        F.col("max_key_score").cast("double").alias("key_nll"), F.col("pca_spe").alias("pca"))
               .agg(F.sum((F.col("label") == 0).cast("long")).alias("normal"),
                    F.sum((F.col("label") == 1).cast("long")).alias("anomalous")))
    records = [dict(r.asDict(), row=i) for i, r in enumerate(grouped.collect())]
    for df in cached:
        df.unpersist()
    if not records:
        raise InputError("no labelled val sessions to calibrate on (the val split is empty or unlabelled); "
                         "check the split ratios and the labels")
    fixed: dict[str, np.ndarray] = {}
    count_info = None
    if bundle.count is not None:
        by_seq: dict[tuple, list[dict]] = {}
        for r in records:
            by_seq.setdefault(tuple(r["events"]), []).append(r)
        patterns = count_patterns(spark, cfg, bundle)
        seqs = with_counts(spark.createDataFrame([(list(e),) for e in by_seq], "events array<int>"))
        feats = Q.features(seqs, patterns, bundle.count, Q.FREE_SHARES).select(
            "events", "free_share", "unseen", "support", "d_free", "cap_ratio").collect()  # distinct seqs x shares
        count_records = [
            {"row": r["row"], "free_share": f["free_share"], "normal": r["normal"], "anomalous": r["anomalous"],
             "unseen": len(f["unseen"]) > 0, "support": f["support"], "d_free": f["d_free"], "cap_ratio": f["cap_ratio"]}
            for f in feats for r in by_seq[tuple(f["events"])]]
        grid = {"min_support": Q.MIN_SUPPORTS, "slack": Q.SLACKS, "cap_factor": Q.CAP_FACTORS}
        knobs, f1, decision = C.choose_count_knobs(count_records, grid)
        model = bundle.count.with_knobs(**knobs)
        write_json(bundle.dir / "count_model.json", model.to_json())
        fixed["count"] = decision
        count_info = {**model.to_json(), "val_f1": f1, "free_events": model.free()}
        for k in ("variability", "caps", "normal_sessions"):
            count_info.pop(k)
    dets = ["key", "key_nll", "pca"] + (["value"] if bundle.value_bytes is not None else [])
    result = C.choose_rules(C.ValTable.from_records(records, dets), fixed, cfg.calibration_fpr)
    for where in (result["detectors"], result["fused"]["members"]):  # a rank threshold is a whole g
        if "key" in where:
            info = where["key"]
            if isinstance(info, dict):
                info["threshold"] = float(math.floor(info["threshold"]))
            else:
                where["key"] = float(math.floor(info))
    result["detectors"] = {d: v for d, v in result["detectors"].items() if math.isfinite(v["threshold"])}
    result["fused"]["members"] = {d: t for d, t in result["fused"]["members"].items() if math.isfinite(t)} \
        or {"key": float(cfg.top_g)}
    if count_info is not None:
        result["count_knobs"] = count_info
    result["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(bundle.dir / "calibration.json", result)
    log.info("calibration on val (%d sessions, %d anomalies): fused = %s (val F1 %s)", result["val_sessions"],
             result["val_anomalies"], " OR ".join(f"{d} > {t:.4g}" for d, t in result["fused"]["members"].items()),
             "n/a" if result["fused"].get("val_f1") is None else f"{result['fused']['val_f1']:.4f}")
    if result["fused"].get("no_signal"):
        log.warning("calibration: the best rule on val (F1 %.4f) is no better than flagging every val session "
                    "(F1 %.4f): the detectors find no signal that separates these anomalies from normal sessions; "
                    "do not use its verdicts as alerts", result["fused"]["val_f1"], result["fused"]["val_f1_flag_all"])
    return result


def run_calibrate(spark: SparkSession, cfg: Config, model: str | None = None) -> dict:
    """Fit the count and PCA models and calibrate an existing run (for example one trained on a GPU
    machine by ``deeplog_spark.nn.local``, then copied under ``<artifacts_root>/runs/``)."""
    with stage("calibrate") as st:
        bundle = ModelBundle(cfg.artifacts_root, model)
        traces = read_table(spark, cfg.table(schemas.TRACES))
        quantitative = fit_quantitative(spark, cfg, traces, bundle.run_id, bundle.dir)
        cal = calibrate_run(spark, cfg, bundle.run_id)
        st.update(run_id=bundle.run_id, fused=",".join(cal["fused"]["members"]))
    return {"run_id": bundle.run_id, "quantitative": quantitative, "calibration": cal}
