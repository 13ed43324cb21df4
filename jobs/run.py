"""Job: the task CLI, e.g. ``./spark-submit.sh --task key --epochs 30``; ``--help`` lists everything."""

import sys

from deeplog_spark import tasks
from deeplog_spark.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("run", tasks.description(), tasks.run, options=tasks.OPTIONS))
