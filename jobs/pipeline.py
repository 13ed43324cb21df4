"""Job: the main pipeline: ingest -> split -> windows -> train -> detect -> evaluate.

Prints the test-split session metrics (default and val-chosen thresholds) and a JSON summary."""

import sys

from deeplog_spark.cli import run_job
from deeplog_spark.pipeline import run_pipeline


def main(spark, cfg):
    summary = run_pipeline(spark, cfg)
    print("\nTest split, session level (BlockId):\n" + summary["test_metrics_table"] + "\n")
    return summary


if __name__ == "__main__":
    sys.exit(run_job("pipeline", __doc__, main))
