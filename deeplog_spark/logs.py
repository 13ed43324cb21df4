"""Logging set-up and stage timing shared by every job."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Iterator

log = logging.getLogger("deeplog_spark")


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr with timestamps; quiet py4j's chatter."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # petastorm 0.13 runs on pyarrow's legacy dataset API (hence the pyarrow<=14 pin); its
    # deprecation warnings and per-reader INFO lines are noise, not something a user can act on.
    logging.getLogger("petastorm").setLevel(logging.WARNING)
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
    logger.info("stage %s: start", name)
    info: dict = {}
    start = time.perf_counter()
    try:
        yield info
    except Exception:
        logger.error("stage %s: failed after %.1fs", name, time.perf_counter() - start)
        raise
    info["seconds"] = round(time.perf_counter() - start, 2)
    details = " ".join(f"{k}={v}" for k, v in info.items())
    logger.info("stage %s: done %s", name, details)
