"""Sliding windows: session markers, the spec's example, short-session padding, counts, intervals, re-runs."""

import gzip
import csv

import pytest

from deeplog_spark.core.schemas import WINDOWS_SCHEMA
from deeplog_spark.features.windows import sliding_windows

from conftest import SAMPLE

TRACE_SCHEMA = "block_id string, split string, label int, events array<int>, intervals array<double>"


def _windows(spark, sessions, h=10, markers=None):
    """sessions: block_id -> (events, intervals or None). Returns {block_id: [Row, ...]} by position."""
    traces = spark.createDataFrame(
        [(b, "train", 0, ev, iv) for b, (ev, iv) in sessions.items()], TRACE_SCHEMA)
    out = {}
    for r in sliding_windows(traces, h, markers).orderBy("block_id", "position").collect():
        out.setdefault(r.block_id, []).append(r)
    return out


def test_markers_frame_the_session_and_every_event_and_the_end_is_predicted(spark):
    w = _windows(spark, {"b": ([5, 22], [0.0, 2.0])}, h=3, markers=(30, 31))["b"]
    assert [(r.position, r.window, r.next_event, r.window_intervals, r.next_interval) for r in w] == [
        (0, [0, 0, 30], 5, [0.0, 0.0, 0.0], 0.0),
        (1, [0, 30, 5], 22, [0.0, 0.0, 0.0], 2.0),
        (2, [30, 5, 22], 31, [0.0, 0.0, 2.0], None),  # the end marker has no interval
    ]
    long = _windows(spark, {"b": (list(range(1, 13)), None)}, h=10, markers=(30, 31))["b"]
    assert len(long) == 13 and long[0].window == [0] * 9 + [30] and long[-1].next_event == 31
    assert long[-1].window == list(range(3, 13))


def test_window_rows_keep_columns_and_give_the_predicted_events_index(spark):
    from deeplog_spark.features.windows import event_index, window_rows
    from pyspark.sql import functions as F
    from pyspark.testing import assertDataFrameEqual

    df = spark.createDataFrame([("a", [4, 5, 6])], "id string, events array<int>")
    for markers, expected in (((8, 9), [(0, [0, 8], 4, 0), (1, [8, 4], 5, 1), (2, [4, 5], 6, 2), (3, [5, 6], 9, 3)]),
                              (None, [(0, [4, 5], 6, 2)])):
        got = window_rows(df, 2, markers, ["id"]).select(
            "position", "window", "next_event", event_index(F.col("position"), F.lit(3), 2, markers is not None).alias("i"))
        want = spark.createDataFrame(expected, "position int, window array<int>, next_event int, i int")
        assertDataFrameEqual(got, want)


def test_window_at_cuts_the_same_window_as_window_rows_at_every_position(spark):
    """Detect cuts DeepLog's first anomalous window from the session (no join with the windows)."""
    from deeplog_spark.features.windows import window_at, window_rows
    from pyspark.sql import functions as F

    df = spark.createDataFrame([("a", [4, 5, 6]), ("b", [7]), ("c", list(range(1, 15)))], "id string, events array<int>")
    for markers in ((20, 21), None):
        rows = window_rows(df, 3, markers, ["id", "events"])
        window, nxt = window_at(F.col("events"), F.col("position"), 3, markers)
        got = rows.select("id", "position", "window", "next_event", window.alias("w2"), nxt.alias("n2")).collect()
        assert len(got) == (4 + 2 + 15 if markers else 1 + 1 + 11)
        assert all(r.window == r.w2 and r.next_event == r.n2 for r in got)
    nothing = df.select(window_at(F.col("events"), F.lit(None).cast("int"), 3, (20, 21))[0].alias("w")).collect()
    assert all(r.w is None for r in nothing)


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


@pytest.mark.parametrize("h", [0, -1, 2.5, True, 100_000])
def test_bad_window_size_is_refused(spark, h):
    traces = spark.createDataFrame([("b", "val", None, [1, 2], None)], TRACE_SCHEMA)
    with pytest.raises(ValueError, match="window size h"):
        sliding_windows(traces, h)


def _lengths(path):
    with gzip.open(path, "rt", newline="") as fh:
        return [len(r["Features"].strip("[]").split(",")) for r in csv.DictReader(fh)]


def test_window_count_is_sum_of_l_plus_1_with_markers_and_max_l_minus_h_1_without(spark, cfg):
    from deeplog_spark.features.runner import run_windows
    from deeplog_spark.ingest.runner import run_ingest

    run_ingest(spark, cfg)
    got = run_windows(spark, cfg)
    expected = sum(n + 1 for n in _lengths(SAMPLE / "Event_traces.csv.gz"))
    assert got["windows"] == expected
    got = run_windows(spark, cfg.replace(session_markers=False))
    expected = sum(max(n - cfg.h, 1) for n in _lengths(SAMPLE / "Event_traces.csv.gz"))
    assert got["windows"] == expected
    assert sum(got["splits"].values()) == expected


def test_rerun_replaces_windows_and_keeps_history(spark, cfg):
    from deeplog_spark.features.runner import run_windows
    from deeplog_spark.ingest.runner import run_ingest
    from deeplog_spark.core.tables import read_table

    run_ingest(spark, cfg)
    first = run_windows(spark, cfg)["windows"]
    second = run_windows(spark, cfg)["windows"]
    assert first == second
    path = cfg.table_path("windows")
    v0, v1 = read_table(spark, path, version=0), read_table(spark, path, version=1)
    assert v1.count() == first
    assert v0.exceptAll(v1).count() == 0 and v1.exceptAll(v0).count() == 0


@pytest.mark.parametrize("h", [1, 3, 10])
def test_one_window_rule_in_numpy_and_spark_sql_on_random_sessions(spark, h):
    """The window rule's two implementations agree on random sessions of 0 to 3h events, with and
    without session markers: the numpy one (detection, the Spark-free trainer, the served model:
    ``flat_windows``, ``session_windows``, ``distinct_windows``, ``event_index``) and the Spark SQL
    one (the ``windows`` export: ``window_rows``, ``event_index``, ``window_at``; the Spark job's
    training rows: ``key_dataset``)."""
    import numpy as np
    from pyspark.sql import functions as F

    from deeplog_spark.features import window_rule as rule
    from deeplog_spark.features.train_rows import key_dataset
    from deeplog_spark.features.windows import event_index, window_at, window_rows

    rng = np.random.default_rng(h)
    sessions = [[int(x) for x in rng.integers(1, 8, rng.integers(0, 3 * h + 1))] for _ in range(60)]
    sessions += [[], [3] * (h + 1), [4] * h]  # the edges: empty, exactly h + 1, exactly h
    df = spark.createDataFrame([(i, s) for i, s in enumerate(sessions)], "id int, events array<int>")
    for markers in (None, (8, 9)):
        m = markers is not None
        rows, seq, pos = rule.flat_windows(*rule.offsets_of(sessions), h, markers)
        n = np.array([len(s) for s in sessions])[seq]
        numpy_side = sorted(zip(seq.tolist(), pos.tolist(), map(tuple, rows.tolist()),
                                rule.event_index(pos, n, h, m).tolist()))
        sql = window_rows(df, h, markers, ["id", "events"])
        window, nxt = window_at(F.col("events"), F.col("position"), h, markers)
        got = sql.select("id", "position", "window", "next_event", window.alias("w2"), nxt.alias("n2"),
                         event_index(F.col("position"), F.size("events"), h, m).alias("i")).collect()
        assert all(r.window == r.w2 and r.next_event == r.n2 for r in got)
        spark_side = sorted((r.id, r.position, (*r.window, r.next_event), r.i) for r in got)
        assert spark_side == numpy_side, (h, markers)
        per_session = sorted((i, p, (*w, y), 0) for i, s in enumerate(sessions)
                             for p, (w, y) in enumerate(rule.session_windows(s, h, markers)))
        assert [x[:3] for x in per_session] == [x[:3] for x in numpy_side]
        # the training rows: distinct (window, next) with the number of sessions' windows behind each
        weights = rng.integers(1, 5, len(sessions))
        w, y, c = rule.distinct_windows(sessions, weights, h, markers)
        weighted = spark.createDataFrame([(s, int(k)) for s, k in zip(sessions, weights) for _ in range(k)],
                                         "events array<int>, k int")
        spark_rows = sorted((tuple(r.window), r.target, r.weight) for r in key_dataset(weighted, h, markers).collect())
        assert spark_rows == sorted((tuple(a), int(b), float(x)) for a, b, x in zip(w.tolist(), y.tolist(), c))
