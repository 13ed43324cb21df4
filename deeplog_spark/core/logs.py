"""Logging set-up, stage timing and failure descriptions shared by every job.

The terminal gets INFO lines (stage start and end with counts and timings, training epochs) and,
when a job fails, one ``error:`` line (:func:`describe_failure`). The full story, tracebacks included,
goes to a log file at DEBUG level: ``$DEEPLOG_LOG_DIR/deeplog.log`` (default ``logs/`` in the working
directory), and Spark's own log to ``spark.log`` beside it (``conf/log4j2.properties``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Iterator

from deeplog_spark.core.progress import SparkProgress

log = logging.getLogger("deeplog_spark")
#: Where the full logs go (environment variable, default ``logs`` in the working directory).
LOG_DIR_ENV = "DEEPLOG_LOG_DIR"
#: The innermost stage that failed last (read by the CLI for its error line).
failed_stage: str | None = None


def log_dir() -> Path:
    return Path(os.environ.get(LOG_DIR_ENV, "logs")).resolve()


def setup_logging(level: int = logging.INFO, log_file: bool = True) -> None:
    """INFO lines on stderr; everything at DEBUG (tracebacks too) in ``<log dir>/deeplog.log``."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    if log_file and not any(getattr(h, "_deeplog", False) for h in root.handlers):
        try:
            log_dir().mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_dir() / "deeplog.log")
        except OSError:  # a read-only working directory: the terminal lines remain
            handler = None
        if handler is not None:
            handler._deeplog = True  # type: ignore[attr-defined]
            handler.setLevel(logging.DEBUG)
            handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
            root.addHandler(handler)
            for h in root.handlers:  # the terminal keeps its level; the file gets DEBUG
                if not getattr(h, "_deeplog", False):
                    h.setLevel(level)
            root.setLevel(logging.DEBUG)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # petastorm 0.13 runs on pyarrow's legacy dataset API (hence the pyarrow<=14 pin); its
    # deprecation warnings and per-reader INFO lines are noise, not something a user can act on.
    logging.getLogger("petastorm").setLevel(logging.WARNING)
    for noisy in ("matplotlib", "PIL", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\..*)?")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"pyarrow(\..*)?")


@contextlib.contextmanager
def stage(name: str, logger: logging.Logger = log) -> Iterator[dict]:
    """Log the start and end of a pipeline stage with its wall time.

    The yielded dict collects figures (row counts...) that are logged at the end.

    Example::

        with stage("ingest") as st:
            st["rows"] = df.count()
    """
    global failed_stage

    logger.info("stage %s: start", name)
    info: dict = {}
    start = time.perf_counter()
    failed_stage = None
    try:
        with SparkProgress(name):  # tasks done, rate and ETA while the stage runs
            yield info
    except Exception:
        logger.error("stage %s: failed after %.1fs", name, time.perf_counter() - start)
        failed_stage = failed_stage or name  # the innermost stage is the one to name
        raise
    info["seconds"] = round(time.perf_counter() - start, 2)
    details = " ".join(f"{k}={v}" for k, v in info.items())
    logger.info("stage %s: done %s", name, details)


#: (pattern in the error text, what happened, what to do): the failures a user can fix.
KNOWN_FAILURES = [
    (r"java\.io\.EOFException|Unexpected end of input stream|Corrupt GZIP|Not in GZIP format",
     "an input file is truncated or is not valid gzip", "check the file (gzip -t FILE) and fetch it again"),
    (r"CSV header does not conform to the schema",
     "the input files do not all have the same header", "give one folder files of one layout"),
    (r"is not a Parquet file|Could not read footer|ParquetDecodingException|FAILED_READ_FILE|magic number",
     "a data file of a table is damaged", "restore the table's previous version (RESTORE ... TO VERSION AS OF) "
                                          "or run the stage that writes it again"),
    (r"FileNotFoundException|DELTA_FILE_NOT_FOUND|does not exist.*parquet",
     "a data file of a table is missing (deleted by hand, or VACUUM ran while this job read it)",
     "run the stage that writes the table again"),
    (r"No space left on device", "the disk is full", "free space where the tables, artifacts and /tmp live"),
    (r"out of memory|OutOfMemoryError|CUDA out of memory|MemoryError",
     "ran out of memory", "lower batch_size, detect_batch_size or max_train_rows, or give the job more memory"),
    (r"Permission denied", "a file or folder may not be written or read", "check the permissions of the paths"),
    (r"Is a directory", "a path names a folder where a file is expected", "pass the file itself"),
    (r"DELTA_[A-Z_]+", "Delta refused the operation", None),
]


def describe_failure(exc: BaseException) -> tuple[str, str | None]:
    """(cause, fix or None) of a failure, in one line each: the known ones in words, others by
    exception class and the first line of their message (without Java or Python stack traces)."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    while cause is not None:  # the chain often names the real culprit
        text += f"\n{type(cause).__name__}: {cause}"
        cause = cause.__cause__
    for pattern, what, fix in KNOWN_FAILURES:
        m = re.search(pattern, text)
        if m:
            return f"{what} ({_first_line(text[max(0, m.start() - 0):])})", fix
    return _first_line(text), None


def _first_line(text: str, limit: int = 300) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("at ")), text)
    line = re.sub(r"\s*JVM stacktrace:.*", "", line)
    return line if len(line) <= limit else line[:limit] + "..."
