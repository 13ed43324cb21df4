"""Sliding windows: the spec's example, short-session padding, counts, intervals, re-runs."""

import gzip
import csv

import pytest

from deeplog_spark.schemas import WINDOWS_SCHEMA
from deeplog_spark.windows import sliding_windows

from conftest import SAMPLE

TRACE_SCHEMA = "block_id string, split string, label int, events array<int>, intervals array<double>"


def _windows(spark, sessions, h=10):
    """sessions: block_id -> (events, intervals or None). Returns {block_id: [Row, ...]} by position."""
    traces = spark.createDataFrame(
        [(b, "train", 0, ev, iv) for b, (ev, iv) in sessions.items()], TRACE_SCHEMA)
    out = {}
    for r in sliding_windows(traces, h).orderBy("block_id", "position").collect():
        out.setdefault(r.block_id, []).append(r)
    return out


def test_spec_example_gives_two_windows(spark):
    w = _windows(spark, {"b": (list(range(1, 13)), None)})["b"]
    assert [(r.position, r.window, r.next_event) for r in w] == [
        (0, list(range(1, 11)), 11),
        (1, list(range(2, 12)), 12),
    ]
    assert all(r.window_intervals is None and r.next_interval is None for r in w)


def test_short_sessions_give_one_left_padded_window(spark):
    w = _windows(spark, {
        "len1": ([7], None),
        "len3": ([5, 6, 7], None),
        "len10": (list(range(1, 11)), None),
        "len11": (list(range(1, 12)), None),
    })
    assert [(r.window, r.next_event) for r in w["len1"]] == [([0] * 10, 7)]
    assert [(r.window, r.next_event) for r in w["len3"]] == [([0] * 8 + [5, 6], 7)]
    assert [(r.window, r.next_event) for r in w["len10"]] == [([0] + list(range(1, 10)), 10)]
    assert [(r.window, r.next_event) for r in w["len11"]] == [(list(range(1, 11)), 11)]


def test_intervals_are_sliced_and_padded_like_events(spark):
    ev = [1, 2, 3, 4]
    iv = [0.0, 0.5, 1.5, 2.5]
    w = _windows(spark, {"b": (ev, iv)}, h=2)["b"]
    assert [(r.window, r.next_event, r.window_intervals, r.next_interval) for r in w] == [
        ([1, 2], 3, [0.0, 0.5], 1.5),
        ([2, 3], 4, [0.5, 1.5], 2.5),
    ]
    short = _windows(spark, {"s": ([4, 5], [0.0, 3.0])}, h=3)["s"]
    assert [(r.window, r.window_intervals, r.next_interval) for r in short] == [([0, 0, 4], [0.0, 0.0, 0.0], 3.0)]


def test_output_schema_is_the_declared_one(spark):
    traces = spark.createDataFrame([("b", "val", None, [1, 2], None)], TRACE_SCHEMA)
    out = sliding_windows(traces, 3)
    assert [(f.name, f.dataType) for f in out.schema] == [(f.name, f.dataType) for f in WINDOWS_SCHEMA]


@pytest.mark.parametrize("h", [0, -1, 2.5, True])
def test_bad_window_size_is_refused(spark, h):
    traces = spark.createDataFrame([("b", "val", None, [1, 2], None)], TRACE_SCHEMA)
    with pytest.raises(ValueError, match="window size h"):
        sliding_windows(traces, h)


def _lengths(path):
    with gzip.open(path, "rt", newline="") as fh:
        return [len(r["Features"].strip("[]").split(",")) for r in csv.DictReader(fh)]


def test_window_count_is_sum_of_max_l_minus_h_1_on_the_sample(spark, cfg):
    from deeplog_spark.pipeline import run_ingest, run_windows

    run_ingest(spark, cfg)
    got = run_windows(spark, cfg)
    expected = sum(max(n - cfg.h, 1) for n in _lengths(SAMPLE / "Event_traces.csv.gz"))
    assert got["windows"] == expected
    assert sum(got["splits"].values()) == expected


def test_rerun_replaces_windows_and_keeps_history(spark, cfg):
    from deeplog_spark.pipeline import run_ingest, run_windows
    from deeplog_spark.tables import read_table

    run_ingest(spark, cfg)
    first = run_windows(spark, cfg)["windows"]
    second = run_windows(spark, cfg)["windows"]
    assert first == second
    path = cfg.table_path("windows")
    v0, v1 = read_table(spark, path, version=0), read_table(spark, path, version=1)
    assert v1.count() == first
    assert v0.exceptAll(v1).count() == 0 and v1.exceptAll(v0).count() == 0
