"""Shared set-up of the benchmarks: a fresh work directory, the config with flag overrides, Spark."""

from __future__ import annotations

import json
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


def write_results(stem: str, out: dict, markdown: str) -> None:
    """``bench/results/<stem>.json`` (``out``) and ``<stem>.md`` (``markdown``), the table printed too."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown)
    print(markdown)


def tables_bench_args(script: str) -> tuple[str, str, int, Path]:
    """(name, tables root, repeats, a new scratch directory) of a benchmark over a kept pipeline's
    tables: ``--tables_root DIR [--name NAME] [--repeats N]`` (2 rounds by default)."""
    args, name = pop_option(sys.argv[1:], "name", "bench")
    args, tables = pop_option(args, "tables_root", "")
    args, repeats = pop_option(args, "repeats", "2")
    if not tables or args:
        raise SystemExit(f"usage: {script} --tables_root DIR [--name NAME] [--repeats N]")
    return name, str(Path(tables).resolve()), int(repeats), Path(tempfile.mkdtemp(prefix=script.removesuffix(".py") + "_"))
