"""Job: train the Key and/or Value LSTM on the windows table (Petastorm + TorchDistributor).

Extra option: --task key|value|both (default both)."""

import sys

from deeplog_spark.cli import run_job
from deeplog_spark.config import pop_option
from deeplog_spark.training import run_train

if __name__ == "__main__":
    argv, task = pop_option(sys.argv[1:], "task", "both")
    sys.exit(run_job("train", __doc__, lambda spark, cfg: run_train(spark, cfg, task), argv))
