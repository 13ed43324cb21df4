"""Job: explode the traces table into sliding windows of length h (Delta table `windows`)."""

import sys

from deeplog_spark.cli import run_job
from deeplog_spark.pipeline import run_windows

if __name__ == "__main__":
    sys.exit(run_job("windows", __doc__, run_windows))
