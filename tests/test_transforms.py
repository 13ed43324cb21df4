"""The pure DataFrame -> DataFrame transforms on tiny hand-made inputs, compared whole with
``assertDataFrameEqual`` (no table is written)."""

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from deeplog_spark.detect.scores import model_ids
from deeplog_spark.ingest.traces import CORRUPT, SOURCE_FILE, build_traces, parse_labels, parse_traces, trace_rejects
from deeplog_spark.core.schemas import Reason
from deeplog_spark.ingest.split import assign_split, fold_split

KEYS = {"E5": 5, "E22": 22, "E11": 11}


def _raw(spark, rows, cols=("BlockId", "Features", "TimeInterval")):
    schema = ", ".join(f"{c} string" for c in cols) + f", {CORRUPT} string, {SOURCE_FILE} string"
    return spark.createDataFrame([(*r, None, "f.csv") for r in rows], schema)


def test_parse_traces_accepts_good_rows_and_gives_every_bad_one_its_reason(spark):
    raw = _raw(spark, [("blk_1", "[E5, E22]", "[0.0, 1.5]"), ("blk_2", "[E5,E99]", "[0,1]"), ("blk_3", "[]", "[]"),
                       ("blk_4", "[E5,E22]", "[0.0]"), ("blk_1", "[E11]", "[0.0]"), ("blk_5", "[E11]", "[-1]")])
    got = parse_traces(raw, KEYS).select("block_id", "events", "intervals", "reason", "detail")
    expected = spark.createDataFrame([
        ("blk_1", [5, 22], [0.0, 1.5], Reason.DUPLICATE_BLOCK_ID, "2 rows share this BlockId"),
        ("blk_1", [11], [0.0], Reason.DUPLICATE_BLOCK_ID, "2 rows share this BlockId"),
        ("blk_2", [5, None], [0.0, 1.0], Reason.UNKNOWN_EVENT_KEY, "E99"),
        ("blk_3", [None], [None], Reason.EMPTY_SEQUENCE, None),
        ("blk_4", [5, 22], [0.0], Reason.LENGTH_MISMATCH, "2 events, 1 intervals"),
        ("blk_5", [11], [-1.0], Reason.INVALID_TIME_INTERVAL, "an interval is NaN, negative or above 1e+09 seconds"),
    ], "block_id string, events array<int>, intervals array<double>, reason string, detail string")
    assertDataFrameEqual(got, expected)


def test_build_traces_takes_the_label_file_first_and_leaves_the_rest_unlabelled(spark):
    raw = _raw(spark, [("a", "[E5]", "Success"), ("b", "[E22]", "Fail"), ("c", "[E11]", None)],
               ("BlockId", "Features", "Label"))
    parsed = parse_traces(raw, KEYS)
    labels = parse_labels(_raw(spark, [("a", "Anomaly"), ("zzz", "Normal")], ("BlockId", "Label")), parsed.select("block_id"))
    got = build_traces(parsed, labels).select("block_id", "events", "label", "event_count")
    expected = spark.createDataFrame([("a", [5], 1, 1), ("b", [22], 1, 1), ("c", [11], None, 1)],
                                     "block_id string, events array<int>, label int, event_count int")
    assertDataFrameEqual(got, expected)
    rejects = trace_rejects(parsed, dt.datetime(2026, 1, 1))
    assert rejects.count() == 0
    assert {r.block_id: r.reason for r in labels.collect()} == {"a": None, "zzz": Reason.LABEL_UNKNOWN_BLOCK}


def test_split_and_folds_are_functions_of_the_block_id_alone(spark):
    ids = spark.createDataFrame([(f"blk_{i}",) for i in range(2000)], "block_id string")
    a = assign_split(ids, 1337, 0.8, 0.1)
    assertDataFrameEqual(a, assign_split(ids.repartition(7).orderBy(F.rand(3)), 1337, 0.8, 0.1))
    shares = {r.split: r["count"] / 2000 for r in a.groupBy("split").count().collect()}
    assert shares["train"] == pytest.approx(0.8, abs=0.03) and shares["test"] == pytest.approx(0.1, abs=0.02)
    tested = None
    for fold in range(5):  # every block is tested exactly once over the folds; val is the next fold
        f = fold_split(ids, 7, 5, fold)
        test = {r.block_id for r in f.where("split = 'test'").collect()}
        tested = test if tested is None else tested | test
        nxt = {r.block_id for r in fold_split(ids, 7, 5, (fold + 1) % 5).where("split = 'test'").collect()}
        assert {r.block_id for r in f.where("split = 'val'").collect()} == nxt
    assert len(tested) == 2000


def test_model_ids(spark):
    got = spark.createDataFrame([([1, 30, 2, -4],)], "e array<int>").select(model_ids(F.col("e"), 29).alias("m"))
    assert got.first().m == [1, -1, 2, -1]
