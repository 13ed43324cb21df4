"""Shared set-up of the benchmarks: a fresh work directory, the config with flag overrides, Spark."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from deeplog_spark.config import Config, parse_overrides, pop_option
from deeplog_spark.logs import setup_logging
from deeplog_spark.session import build_spark

RESULTS = Path(__file__).parent / "results"


def bench_setup(app: str):
    """(name, cfg, spark) for a benchmark run: tables and artifacts in a new temporary directory.

    ``--name NAME`` labels the result files; every other ``--key value`` overrides the config.
    """
    setup_logging()
    args, name = pop_option(sys.argv[1:], "name", "sample")
    work = Path(tempfile.mkdtemp(prefix=f"{app}_"))
    cfg = Config.load(overrides={"tables_root": str(work / "warehouse"), "artifacts_root": str(work / "artifacts"),
                                 **parse_overrides(args)})
    RESULTS.mkdir(exist_ok=True)
    return name, cfg, build_spark(app, cfg)
