"""The task CLI: ``deeplog --task TASK ...`` (the wheel's console command), ``python -m deeplog_spark``,
or this file as the main script of ``spark-submit --py-files deeplog_spark-*.whl``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the task CLI; a failed run raises ``SystemExit`` with its code (2: usage or input, 1: any
    other failure), so a caller that ignores the return value (a Databricks Python wheel task calls
    the entry point) still sees it fail. Returns 0."""
    # the task table and the CLI load when the CLI runs
    from deeplog_spark import tasks
    from deeplog_spark.cli import run_job

    code = run_job("deeplog", tasks.description(), tasks.run, argv=argv, options=tasks.OPTIONS)
    if code:
        raise SystemExit(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
