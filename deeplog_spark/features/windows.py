"""The window rule in Spark SQL: the ``windows`` export, the key model's training rows and the
columns of detection that name a window (no Python UDF).

The rule itself, with and without session markers, is written down (and implemented in numpy for
every Python-side user) in :mod:`deeplog_spark.features.window_rule`; ``tests/test_windows.py``
checks that the two give identical windows on random sessions.
"""

from __future__ import annotations

from typing import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from deeplog_spark.core.config import MAX_H
from deeplog_spark.core.names import PADDING_ID
from deeplog_spark.core.schemas import WINDOWS_SCHEMA


def check_h(h: int) -> None:
    if not isinstance(h, int) or isinstance(h, bool) or not 1 <= h <= MAX_H:
        raise ValueError(f"window size h must be an integer in [1, {MAX_H}], got {h!r}")


def _framed(col: Column, first: Column | None, last: Column | None) -> Column:
    parts = ([F.array(first)] if first is not None else []) + [col] + ([F.array(last)] if last is not None else [])
    return F.concat(*parts) if len(parts) > 1 else col


def _pad_length(n: Column, h: int, markers: bool) -> Column:
    # markers: h-1 zeros, so every id after the start marker is the target of one window;
    # spec: enough zeros for one window when the session has at most h+1 ids
    return F.lit(h - 1) if markers else F.greatest(F.lit(h + 1) - n, F.lit(0))


def event_index(position: Column, n: Column, h: int, markers: bool) -> Column:
    """Index in the session (0-based, of ``n`` events) of the event window ``position`` predicts
    (``n`` for the end marker)."""
    return position if markers else position + F.lit(h) - F.greatest(F.lit(h + 1) - n, F.lit(0))


def _marker_lits(markers: tuple[int, int] | None) -> tuple[Column | None, Column | None]:
    return (F.lit(markers[0]), F.lit(markers[1])) if markers else (None, None)


def _padded(events: Column, h: int, markers: tuple[int, int] | None) -> Column:
    """The (framed) session left-padded with the padding id: window p is its slice [p, p+h)."""
    ev = _framed(events, *_marker_lits(markers))
    return F.concat(F.array_repeat(F.lit(PADDING_ID), _pad_length(F.size(ev), h, markers is not None)), ev)


def _slide(padded: Column, position: Column, h: int) -> tuple[Column, Column]:
    return F.slice(padded, position + 1, h), F.element_at(padded, position + h + 1)


def window_at(events: Column, position: Column, h: int, markers: tuple[int, int] | None) -> tuple[Column, Column]:
    """(window, next event) of window ``position`` of a session, as :func:`window_rows` makes it,
    without exploding the session (null where ``position`` is null)."""
    check_h(h)
    # window and next event cut as one slice of h + 1 ids, so the padded session is built once,
    # and only where ``position`` is set
    both = F.when(position.isNotNull(), F.slice(_padded(events, h, markers), position + 1, h + 1))
    return F.slice(both, 1, h), F.element_at(both, h + 1)


def window_rows(df: DataFrame, h: int, markers: tuple[int, int] | None, keep: Sequence[str],
                intervals: bool = False) -> DataFrame:
    """``keep`` columns + ``position, window, next_event`` (+ ``window_intervals, next_interval``)
    for every window of ``df.events`` (and ``df.intervals``), by the rule of the module docstring.

    ``position`` counts the windows of a session from 0; with markers, window ``position`` predicts
    event ``position`` of the session (the last one predicts the end marker).
    """
    check_h(h)
    ev = _framed(F.col("events"), *_marker_lits(markers))
    pad = _pad_length(F.size(ev), h, markers is not None)
    cols = [*keep, _padded(F.col("events"), h, markers).alias("_ev")]
    if intervals:
        iv = F.col("intervals").cast("array<double>")
        iv = _framed(iv, F.lit(0.0), F.lit(None).cast("double")) if markers else iv
        cols.append(F.when(F.col("intervals").isNotNull(),
                           F.concat(F.array_repeat(F.lit(0.0), pad), iv)).alias("_iv"))
    padded = df.select(*cols)

    def one(pos: Column) -> Column:
        window, nxt = _slide(F.col("_ev"), pos, h)
        fields = [pos.cast("int").alias("position"), window.alias("window"), nxt.alias("next_event")]
        if intervals:
            fields += [F.slice("_iv", pos + 1, h).alias("window_intervals"),
                       F.element_at("_iv", pos + h + 1).alias("next_interval")]
        return F.struct(*fields)

    # the windows are built inside the row (O(L * h)) and only they are exploded: exploding the
    # positions next to the session would copy the whole session into each of its L rows, O(L^2)
    # memory (a 99,001-event Hadoop container ran the JVM out of heap)
    windows = F.transform(F.sequence(F.lit(0), F.size("_ev") - h - 1), one)
    names = ["position", "window", "next_event"] + (["window_intervals", "next_interval"] if intervals else [])
    return padded.select(*keep, F.explode(windows).alias("_w")).select(*keep, *[F.col("_w." + n).alias(n) for n in names])


def sliding_windows(traces: DataFrame, h: int, markers: tuple[int, int] | None = None) -> DataFrame:
    """Explode ``traces(block_id, split, label, events, intervals[, ingest_batch])`` into the
    ``windows`` schema; ``markers`` = (start id, end id) frames every session (None: the spec's windows).

    Example::

        sliding_windows(traces, h=10)                     # [1..12] -> [1..10]->11, [2..11]->12
        sliding_windows(traces, h=10, markers=(30, 31))   # [5,22] -> [0..0,30]->5, [..,30,5]->22, [..,5,22]->31
    """
    missing = {"block_id", "split", "label", "events", "intervals"} - set(traces.columns)
    if missing:
        raise ValueError(f"sliding_windows: traces lack column(s) {sorted(missing)}")
    batch = F.col("ingest_batch") if "ingest_batch" in traces.columns else F.lit(None).cast("string")
    at = F.col("ingested_at") if "ingested_at" in traces.columns else F.lit(None).cast("timestamp")
    df = traces.select("block_id", "split", F.col("label").cast("int").alias("label"), "events", "intervals",
                       batch.alias("ingest_batch"), at.alias("ingested_at"))
    out = window_rows(df, h, markers, ["block_id", "split", "label", "ingest_batch", "ingested_at"], intervals=True)
    return out.select(*[F.col(f.name).cast(f.dataType) for f in WINDOWS_SCHEMA.fields])
