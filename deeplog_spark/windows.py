"""Windows stage: every session exploded into sliding windows of length h (Spark SQL only).

A session of length L > h gives L - h windows: window i is events[i : i+h] and its label is
``next_event = events[i+h]``. A session with L <= h gives exactly one window: the first L-1
events left-padded with the padding id 0 to length h, and ``next_event`` = its last event. Both
cases are one rule: left-pad the session with zeros to length max(L, h+1) and slide over it, so
a session gives max(L - h, 1) windows. Time intervals are padded and sliced the same way (0.0).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from deeplog_spark.schemas import PADDING_ID, WINDOWS_SCHEMA


def _left_pad(arr: Column, length: Column, h: int, pad: Column) -> Column:
    return F.concat(F.array_repeat(pad, F.greatest(F.lit(h + 1) - length, F.lit(0))), arr)


def sliding_windows(traces: DataFrame, h: int) -> DataFrame:
    """Explode ``traces(block_id, split, label, events, intervals)`` into the ``windows`` schema.

    Example::

        sliding_windows(traces, h=10)  # [1..12] -> windows [1..10]->11 and [2..11]->12
    """
    if not isinstance(h, int) or isinstance(h, bool) or h < 1:
        raise ValueError(f"window size h must be an integer >= 1, got {h!r}")
    missing = {"block_id", "split", "label", "events", "intervals"} - set(traces.columns)
    if missing:
        raise ValueError(f"sliding_windows: traces lack column(s) {sorted(missing)}")

    n = F.size("events")
    padded = (
        traces.select(
            "block_id", "split", "label",
            (F.col("ingest_batch") if "ingest_batch" in traces.columns else F.lit(None)).alias("ingest_batch"),
            _left_pad(F.col("events"), n, h, F.lit(PADDING_ID)).alias("_ev"),
            _left_pad(F.col("intervals").cast("array<float>"), n, h, F.lit(0.0).cast("float")).alias("_iv"),
        )
    )
    # position i = 0 .. len(_ev) - h - 1 (always at least one window)
    exploded = padded.select(
        "*", F.explode(F.sequence(F.lit(0), F.size("_ev") - h - 1)).alias("position"))
    pos = F.col("position")
    out = exploded.select(
        "block_id",
        "split",
        F.col("label").cast("int").alias("label"),
        pos.cast("int").alias("position"),
        F.slice("_ev", pos + 1, h).alias("window"),
        F.element_at("_ev", pos + h + 1).alias("next_event"),
        F.slice("_iv", pos + 1, h).alias("window_intervals"),
        F.element_at("_iv", pos + h + 1).alias("next_interval"),
        "ingest_batch",
    )
    return out.select(*[F.col(f.name).cast(f.dataType) for f in WINDOWS_SCHEMA.fields])
