"""The main job: ingest, train, detect, evaluate and the workflow graph, one stage after the other."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from deeplog_spark.core.config import Config
from deeplog_spark.detect.verdicts import run_detect
from deeplog_spark.evaluate.metrics import run_evaluate, test_table
from deeplog_spark.evaluate.report import write_report
from deeplog_spark.evaluate.workflow import run_visual
from deeplog_spark.ingest.runner import run_ingest, run_ingest_raw
from deeplog_spark.train.runner import run_train


def run_pipeline(spark: SparkSession, cfg: Config) -> dict:
    """The main job: ingest -> train -> detect -> evaluate -> visual.

    The models read the traces (their windows are built on the fly from the distinct sequences),
    so the windows table is not part of the job; ``--task windows`` writes it for SQL. Returns each
    stage's summary; the test-split metrics table (Markdown) is under ``summary["test_metrics_table"]``.
    """
    out = {"ingest": run_ingest_raw(spark, cfg) if cfg.input == "raw_logs" else run_ingest(spark, cfg)}
    out["train"] = run_train(spark, cfg, "both")
    run_id = out["train"]["run_id"]
    out["detect"] = run_detect(spark, cfg, run_id)
    evaluation = run_evaluate(spark, cfg, run_id)
    out["evaluate"] = {"fused_rule": evaluation["fused_rule"], "ms_per_window": evaluation["ms_per_window"],
                       "reports": str(Path(out["train"]["run_dir"]) / "eval")}
    out["visual"] = run_visual(spark, cfg, run_id)
    # again, with the workflow graph that visual drew
    out["evaluate"]["report"] = str(write_report(Path(out["train"]["run_dir"]), evaluation, evaluation["top_sessions"]))
    out["test_metrics_table"] = test_table(evaluation)
    return out
