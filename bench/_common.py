"""The benchmarks' one harness: options (``--name`` and config overrides, or the tables of a kept
pipeline run), a fresh work directory and Spark session, the record of the command and the machine,
and the result files (``bench/results/<stem>.json`` and ``.md``).

Run a benchmark as ``.venv/bin/python bench/<script>.py ...``: Python puts ``bench/`` on the path, so
``import _common`` works, and ``deeplog_spark`` comes from the venv's editable install.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from deeplog_spark.core.config import Config, parse_overrides, pop_option
from deeplog_spark.core.logs import setup_logging
from deeplog_spark.core.session import build_spark

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent


def command(script: str, argv: list[str] | None = None) -> str:
    """The command line as a result records it: ``bench/<script>.py`` and its arguments."""
    return " ".join([f"bench/{Path(script).name}", *(sys.argv[1:] if argv is None else argv)])


def started() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def machine(spark=None, cfg: Config | None = None) -> dict:
    """What a timing depends on: the CPU, cores, memory, Python, Java, torch, and with a session the
    Spark version and master (and the driver's settings with ``cfg``)."""
    import psutil
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), None) if cpuinfo.is_file() else None
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    out = {"cpu": cpu or platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "os": platform.platform(),
           "python": platform.python_version(), "java": java[0] if java else None, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else False}
    if spark is not None:
        from importlib.metadata import version

        out.update(spark=spark.version, master=spark.sparkContext.master, delta=version("delta-spark"))
    if cfg is not None:
        out.update(driver_memory=cfg.driver_memory, shuffle_partitions=cfg.shuffle_partitions)
    return out


def machine_line(m) -> str:
    """A result's machine in words (older results recorded a plain string)."""
    if not isinstance(m, dict):
        return str(m)
    return ", ".join(str(x) for x in (m.get("cpu"), f"{m.get('cores', m.get('cpus'))} cores",
                                      m.get("master") and f"master {m['master']}") if x)


def options(defaults: dict[str, str], argv: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """(the script's own options ``--key value`` with their ``defaults``, the arguments left over:
    config overrides for the scripts that take them)."""
    args = list(sys.argv[1:] if argv is None else argv)
    values = {}
    for key, default in defaults.items():
        args, values[key] = pop_option(args, key, default)
    return values, args


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


def write_results(stem: str, out: dict | None, markdown: str, into: Path | None = None) -> None:
    """``<into>/<stem>.json`` (``out``, with the machine's record when it has none; none when ``out`` is
    None) and ``<stem>.md`` (``markdown``), the report printed too. ``into`` defaults to bench/results."""
    into = RESULTS if into is None else into
    into.mkdir(exist_ok=True)
    if out is not None:
        out.setdefault("machine", machine())
        (into / f"{stem}.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    (into / f"{stem}.md").write_text(markdown)
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
