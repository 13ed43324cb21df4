"""Job: score the windows table with a trained run and write predictions and per-BlockId verdicts.

Extra option: --model RUN_ID (default: the latest trained run). --top_g and --k_sigma choose the
thresholds without retraining; re-running the same (run, g, k) replaces its rows."""

import sys

from deeplog_spark.cli import run_job
from deeplog_spark.config import pop_option
from deeplog_spark.detection import run_detect

if __name__ == "__main__":
    argv, model = pop_option(sys.argv[1:], "model", "")
    sys.exit(run_job("detect", __doc__, lambda spark, cfg: run_detect(spark, cfg, model or None), argv))
