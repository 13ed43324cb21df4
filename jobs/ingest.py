"""Job: ingest Loghub Event_traces.csv, anomaly_label.csv and templates into Delta tables."""

import sys

from deeplog_spark.cli import run_job
from deeplog_spark.pipeline import run_ingest

if __name__ == "__main__":
    sys.exit(run_job("ingest", __doc__, run_ingest))
