"""Progress of the Spark work inside a stage, for a person watching a long run.

While a stage runs, a daemon thread polls the SparkContext's status tracker: tasks done of the
active Spark stages, the task rate and an ETA for them. On a terminal (stderr is a TTY) it keeps one
line up to date in place and clears it when the stage ends; otherwise (a scheduler's log file, CI)
it logs a plain line every ``DEEPLOG_PROGRESS_EVERY`` seconds (default 30), never control
characters. ``DEEPLOG_PROGRESS=0`` turns it off. Over Spark Connect there is no status tracker in
the client, and nothing is shown. Training reports its own progress per epoch (rate and ETA).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

log = logging.getLogger("deeplog_spark.core.progress")
_active = threading.Lock()  # one reporter at a time (stages nest: full-pipeline > train)


class SparkProgress:
    """``with SparkProgress("detect"):`` reports the Spark tasks of the block while it runs."""

    def __init__(self, name: str, poll_s: float = 0.5):
        self.name, self.poll_s = name, poll_s
        self.tty = sys.stderr.isatty()
        self.every = float(os.environ.get("DEEPLOG_PROGRESS_EVERY", "30"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner = False

    def __enter__(self) -> "SparkProgress":
        tracker = _tracker()
        if tracker is None or os.environ.get("DEEPLOG_PROGRESS", "1") == "0" or not _active.acquire(blocking=False):
            return self
        self._owner = True
        self._thread = threading.Thread(target=self._run, args=(tracker,), name=f"progress-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self._owner:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        _active.release()

    def _run(self, tracker) -> None:
        start = last_log = time.monotonic()
        seen: dict[int, float] = {}  # Spark stage id -> when first seen
        while not self._stop.wait(self.poll_s):
            try:
                line = self.line(tracker, seen, time.monotonic() - start)
            except Exception:  # noqa: BLE001 - the context is stopping; progress is best effort
                return
            if line is None:
                continue
            if self.tty:
                sys.stderr.write("\r\033[K" + line[:max(20, _width() - 1)])
                sys.stderr.flush()
            elif time.monotonic() - last_log >= self.every:
                log.info(line)
                last_log = time.monotonic()

    def line(self, tracker, seen: dict[int, float], elapsed: float) -> str | None:
        """The progress text now, or None while no Spark stage runs."""
        now = time.monotonic()
        stages = [s for s in (tracker.getStageInfo(i) for i in tracker.getActiveStageIds()) if s is not None]
        if not stages:
            return None
        done = sum(s.numCompletedTasks for s in stages)
        total = sum(s.numTasks for s in stages)
        for s in stages:
            seen.setdefault(s.stageId, now)
        running = now - min(seen[s.stageId] for s in stages)
        rate = done / running if running > 0 else 0.0
        eta = f"eta {(total - done) / rate:.0f}s" if rate > 0 and done < total else "eta -"
        return (f"stage {self.name}: {elapsed:.0f}s, Spark tasks {done}/{total} of {len(stages)} active stage(s), "
                f"{rate:.1f} tasks/s, {eta}")


def _tracker():
    try:
        # this module stays importable without pyspark (the Spark-free side uses it)
        from pyspark import SparkContext

        sc = SparkContext._active_spark_context  # classic sessions only; None over Spark Connect
        return sc.statusTracker() if sc is not None else None
    except Exception:  # noqa: BLE001 - no pyspark JVM side here
        return None


def _width() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        return 120
