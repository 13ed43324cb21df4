"""Command-line handling shared by every job: ``--config PATH``, ``--key value`` overrides, ``--help``.

Bad flags and bad input end the job with exit code 2 and a one-line ``error:`` message.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Callable, Sequence

from pyspark.sql import SparkSession

from deeplog_spark import config as config_mod
from deeplog_spark.config import Config, ConfigError, parse_overrides, pop_option
from deeplog_spark.ingest import InputError
from deeplog_spark.logs import setup_logging
from deeplog_spark.session import build_spark

log = logging.getLogger(__name__)

#: Exit code for a usage or input error (as argparse does).
EXIT_USAGE = 2


def usage(prog: str, description: str) -> str:
    """Help text listing every config key with its section and meaning."""
    lines = [f"usage: {prog} [--config PATH] [--KEY VALUE ...]", "", description, "",
             "options (defaults from conf/deeplog.toml or $DEEPLOG_CONFIG):",
             "  --config PATH        config file", "  --help               this text"]
    for section, keys in config_mod.sections().items():
        lines.append(f"  [{section}]")
        lines += [f"  --{k:<19} {config_mod.describe(k)}" for k in keys]
    return "\n".join(lines)


def parse_job_args(argv: Sequence[str], prog: str, description: str) -> Config:
    """Resolve the config of a job from its command line (raises ConfigError, SystemExit on --help)."""
    args = list(argv)
    if "--help" in args or "-h" in args:
        print(usage(prog, description))
        raise SystemExit(0)
    args, path = pop_option(args, "config", "")
    if "--config" in args:
        raise ConfigError("option --config needs a value")
    return Config.load(path or None, parse_overrides(args))


def run_job(prog: str, description: str, fn: Callable[[SparkSession, Config], dict],
            argv: Sequence[str] | None = None) -> int:
    """Parse args, build Spark, run ``fn(spark, cfg)``, print its summary as JSON; return the exit code."""
    setup_logging()
    try:
        cfg = parse_job_args(sys.argv[1:] if argv is None else argv, prog, description)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    spark = build_spark(prog, cfg)
    try:
        summary = fn(spark, cfg)
    except (InputError, ConfigError, FileNotFoundError) as exc:
        log.error("%s failed: %s", prog, exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        spark.stop()
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0
