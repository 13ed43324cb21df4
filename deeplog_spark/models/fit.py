"""Fit the count model and the PCA baseline of a run on its train-normal sessions (Spark jobs of a
few seconds: the patterns table, and the models' JSON in the run folder)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.config import Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.runs import write_json
from deeplog_spark.core.tables import replace_where
from deeplog_spark.features.train_rows import normal_sessions
from deeplog_spark.models import count as Q
from deeplog_spark.models import pca

log = logging.getLogger(__name__)

#: The run's normal count patterns, in its folder (the count_patterns table holds them too, for SQL).
PATTERNS_FILE = "count_patterns.json"


def check_vocabulary(traces: DataFrame, vocab_size: int, limit: int) -> None:
    """Refuse a training whose train-normal sessions hold more than ``limit`` distinct events
    (config ``pca_max_events``) before any work: the PCA baseline's d x d matrices would not fit the
    driver (50,000 events: tens of GB). ``vocab_size`` (the templates) bounds them, so the count
    runs only when it could be over."""
    if vocab_size <= limit:
        return
    d = normal_sessions(traces, "train").select(F.explode("events").alias("e")).distinct().count()
    if d > limit:
        raise InputError(f"the training sessions hold {d:,} distinct events, over pca_max_events = {limit:,}: the PCA "
                         f"baseline's {d:,} x {d:,} matrices would need about {40 * d * d / 2**30:,.0f} GiB on the "
                         "driver. Merge templates (a lower drain_sim_th for mined ones), or raise pca_max_events when "
                         "the driver has the memory")


def fit_quantitative(spark: SparkSession, cfg: Config, traces: DataFrame, run_id: str, out_dir: Path) -> dict:
    """The count model (its patterns in the run folder and the patterns table, its statistics) and the
    PCA baseline of the train-normal sessions."""
    t0 = time.perf_counter()
    train_n = normal_sessions(traces, "train")
    patterns = Q.fit_patterns(train_n).persist()
    try:
        replace_where(patterns.select(F.lit(run_id).alias("run_id"), "counts", "sessions"),
                      cfg.table(schemas.COUNT_PATTERNS), f"run_id = '{run_id}'", partition_by=["run_id"])
        model = Q.fit_model(patterns)
        write_json(out_dir / "count_model.json", model.to_json())
        # the run carries its patterns, so it scores the same from any tables folder (a few hundred rows)
        write_json(out_dir / PATTERNS_FILE, [{"counts": [[c["event"], c["count"]] for c in r["counts"]],
                                              "sessions": r["sessions"]} for r in patterns.collect()])
        pca_model = pca.fit(patterns)
        write_json(out_dir / "pca_model.json", pca_model.to_json())
        n_patterns = patterns.count()
    finally:
        patterns.unpersist()
    log.info("count model: %d normal sessions, %d patterns, %d events; PCA: %d of %d components, Q %.4g",
             model.normal_sessions, n_patterns, len(model.vocab), pca_model.k, len(pca_model.events),
             pca_model.q_threshold)
    return {"normal_sessions": model.normal_sessions, "patterns": n_patterns, "pca_components": pca_model.k,
            "pca_q_threshold": pca_model.q_threshold, "seconds": round(time.perf_counter() - t0, 2)}
