"""Job: session-level metrics per split (key, value, fused) into the Delta `metrics` table and reports.

Extra option: --model RUN_ID (default: the latest trained run). Evaluates the verdicts of
(run, top_g, k_sigma) and of thresholds chosen on the val split."""

import sys

from deeplog_spark.cli import run_job
from deeplog_spark.config import pop_option
from deeplog_spark.evaluation import run_evaluate

if __name__ == "__main__":
    argv, model = pop_option(sys.argv[1:], "model", "")
    sys.exit(run_job("evaluate", __doc__, lambda spark, cfg: run_evaluate(spark, cfg, model or None), argv))
