"""The task CLI: ``deeplog --task TASK ...`` (the wheel's console command), ``python -m deeplog_spark``,
or this file as the main script of ``spark-submit --py-files deeplog_spark-*.whl``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    # the task table loads when the CLI runs
    from deeplog_spark import tasks

    # the task table loads when the CLI runs
    from deeplog_spark.cli import run_job

    return run_job("deeplog", tasks.description(), tasks.run, argv=argv, options=tasks.OPTIONS)


if __name__ == "__main__":
    sys.exit(main())
