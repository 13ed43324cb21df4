"""Job: the task CLI, e.g. ``./spark-submit.sh --task key --epochs 30``; ``--help`` lists everything."""

import sys

from deeplog_spark.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
