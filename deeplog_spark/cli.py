"""Command-line handling shared by every job: ``--config PATH``, ``--key value`` overrides, ``--help``.

A job may declare its own options (not config keys), such as ``--task`` or ``--model``; they are
listed by ``--help`` and checked, like the config keys, before Spark starts. Bad flags and bad
input end the job with exit code 2 and a one-line ``error:`` message.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from typing import Callable, Mapping, Sequence

from pyspark.sql import SparkSession

from deeplog_spark import config as config_mod
from deeplog_spark.config import Config, ConfigError, parse_overrides, pop_option
from deeplog_spark.errors import InputError
from deeplog_spark.logs import setup_logging
from deeplog_spark.session import build_spark

log = logging.getLogger(__name__)

#: Exit code for a usage or input error (as argparse does).
EXIT_USAGE = 2


@dataclasses.dataclass(frozen=True)
class Option:
    """A job option that is not a config key: ``--name VALUE``."""

    help: str
    default: str = ""
    choices: tuple[str, ...] = ()
    metavar: str = "VALUE"


def usage(prog: str, description: str, options: Mapping[str, Option] | None = None) -> str:
    """Help text: the job's own options, then every config key with its section and meaning."""
    opts = options or {}
    head = " ".join(f"[--{n} {o.metavar}]" for n, o in opts.items())
    lines = [f"usage: {prog} {head + ' ' if head else ''}[--config PATH] [--KEY VALUE ...]", "",
             description.strip(), ""]
    if opts:
        lines.append("options:")
        for name, o in opts.items():
            lines.append(f"  --{name + ' ' + o.metavar:<24} {o.help}"
                         + (f" (default: {o.default})" if o.default else ""))
        lines.append("")
    lines += ["config keys (defaults from conf/deeplog.toml or $DEEPLOG_CONFIG), each as --KEY VALUE:",
              "  --config PATH            config file", "  --help                   this text"]
    for section, keys in config_mod.sections().items():
        lines.append(f"  [{section}]")
        lines += [f"  --{k:<23} {config_mod.describe(k)}" for k in keys]
    return "\n".join(lines)


def parse_job_args(argv: Sequence[str], prog: str, description: str,
                   options: Mapping[str, Option] | None = None) -> tuple[Config, dict[str, str]]:
    """Resolve a job's config and options from its command line.

    Raises ConfigError for a bad flag or option value, SystemExit(0) after printing ``--help``.
    """
    args = list(argv)
    if "--help" in args or "-h" in args:
        print(usage(prog, description, options))
        raise SystemExit(0)
    values: dict[str, str] = {}
    for name, opt in (options or {}).items():
        args, values[name] = pop_option(args, name, opt.default)
        if f"--{name}" in args:
            raise ConfigError(f"option --{name} needs a value")
        if opt.choices and values[name] not in opt.choices:
            raise ConfigError(f"--{name} must be one of {', '.join(opt.choices)}, got {values[name]!r}")
    args, path = pop_option(args, "config", "")
    if "--config" in args:
        raise ConfigError("option --config needs a value")
    return Config.load(path or None, parse_overrides(args)), values


def run_job(prog: str, description: str, fn: Callable[[SparkSession, Config, dict], dict],
            argv: Sequence[str] | None = None, options: Mapping[str, Option] | None = None) -> int:
    """Parse args, build Spark, run ``fn(spark, cfg, options)``, print its summary as JSON.

    Returns the exit code: 0, or 2 for a usage or input error (one ``error:`` line on stderr).
    """
    setup_logging()
    try:
        cfg, values = parse_job_args(sys.argv[1:] if argv is None else argv, prog, description, options)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    spark = build_spark(prog, cfg)
    try:
        summary = fn(spark, cfg, values)
    except (InputError, ConfigError, FileNotFoundError) as exc:
        log.error("%s failed: %s", prog, exc)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        spark.stop()
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0
