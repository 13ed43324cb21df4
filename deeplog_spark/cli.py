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

from deeplog_spark.core import config as config_mod
from deeplog_spark.core import logs
from deeplog_spark.core.config import Config, ConfigError, parse_overrides, pop_option
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.logs import setup_logging
from deeplog_spark.core.session import build_spark

log = logging.getLogger(__name__)

#: Exit code for a usage or input error (as argparse does).
EXIT_USAGE = 2
#: Exit code for any other failure.
EXIT_FAILURE = 1


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
            argv: Sequence[str] | None = None, options: Mapping[str, Option] | None = None,
            spark: SparkSession | None = None) -> int:
    """Parse args, take Spark (a session handed in, else the active one, else a new one), run
    ``fn(spark, cfg, options)``, print its summary as JSON.

    Returns the exit code: 0; 2 for a usage or input error; 1 for any other failure. Either way one
    ``error:`` line on stderr says what failed and, when known, what to do; the traceback goes to
    the debug log file (:mod:`deeplog_spark.core.logs`), never to the terminal. Only a session this
    function built is stopped: one handed in or already active (a notebook's, a Databricks job's,
    Spark Connect's) belongs to its runtime and is left running.
    """
    setup_logging()
    try:
        cfg, values = parse_job_args(sys.argv[1:] if argv is None else argv, prog, description, options)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if spark is None:
        spark = SparkSession.getActiveSession()  # a runtime's session (Databricks, a notebook): not ours to stop
        if spark is not None:
            log.info("using the active Spark session (%s); it is left running", spark.version)
    own = spark is None
    try:
        if own:
            spark = build_spark(prog, cfg)
        check_storage(cfg, spark.conf.get("spark.master", "local[*]"))
        summary = fn(spark, cfg, values)
    except (InputError, ConfigError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        log.debug("%s failed", prog, exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, the trace in the log
        log.debug("%s failed", prog, exc_info=True)
        cause, fix = logs.describe_failure(exc)
        where = f"stage {logs.failed_stage}" if logs.failed_stage else prog
        print(f"error: {where} failed: {cause}" + (f"; {fix}" if fix else "")
              + f" (full trace in {logs.log_dir() / 'deeplog.log'})", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if own and spark is not None:
            spark.stop()
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


def check_storage(cfg: Config, master: str) -> None:
    """On a multi-node cluster with training on the executors (``local_mode = false``), the run
    folders and the training feed under ``artifacts_root`` must be on storage every node sees.

    Raises ConfigError naming the key unless ``shared_storage = true`` declares ``artifacts_root``
    a mount every node sees (NFS, Databricks' ``/dbfs/...``). ``local[...]`` and
    ``local-cluster[...]`` masters share the local disk. (``artifacts_root`` is always a path:
    :mod:`deeplog_spark.core.config` refuses URLs, which Python's file APIs would write as local folders.)
    """
    if cfg.local_mode or master.startswith("local") or cfg.shared_storage:
        return
    raise ConfigError(
        f"artifacts_root={cfg.artifacts_root!r} is a path on the driver's disk, but with master {master} and "
        "local_mode=false the training ranks run on the executors and read and write there: put artifacts_root "
        "on a mount every node sees (NFS, /dbfs/... on Databricks) and set shared_storage=true")
