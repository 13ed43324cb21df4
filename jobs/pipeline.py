"""Job: the main pipeline on the configured inputs: ingest -> split -> windows."""

import sys

from deeplog_spark.cli import run_job
from deeplog_spark.pipeline import run_pipeline

if __name__ == "__main__":
    sys.exit(run_job("pipeline", __doc__, run_pipeline))
