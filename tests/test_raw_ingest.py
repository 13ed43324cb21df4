"""Raw HDFS log ingest: line parsing, template matching, rejects, sessions with real intervals."""

import csv
import datetime as dt
import gzip
import io

import pytest
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.ingest.traces import read_templates
from deeplog_spark.features.runner import run_windows
from deeplog_spark.ingest.runner import run_ingest, run_ingest_raw
from deeplog_spark.ingest.raw import match_event, parse_lines, read_raw_logs
from deeplog_spark.core.tables import read_table

from conftest import SAMPLE

LINES = [
    # E5 then E22 then E11 for blk_1, one second apart and then 10 s later
    "081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:5 dest: /10.0.0.2:50010",
    "081109 203519 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /user/x/part-0. blk_1",
    "081109 203529 145 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_1 terminating",
    # a multi-block line (E23 names one block per line in HDFS_v1; E25 ask-to-replicate names one too):
    # two blocks in one E21 line count for both
    "081109 203530 19 INFO dfs.FSDataset: Deleting block blk_1 file /d/blk_1 and blk_-2",
    "081109 203531 19 INFO dfs.FSDataset: Deleting block blk_-2 file /d/blk_-2",
    "this is not a log line",
    "081109 203532 19 INFO dfs.FSNamesystem: BLOCK* ask 10.0.0.1:50010 to delete  blk_1 blk_-2",  # E30: no template
    "081109 203533 19 INFO dfs.DataNode: Receiving empty packet for block (none)",  # E13 text, no block id
    "081399 203533 19 INFO dfs.FSDataset: Deleting block blk_3 file /d/blk_3",  # month 13
]


def _write(path, lines, crlf=False, extra_bytes=b""):
    sep = b"\r\n" if crlf else b"\n"
    path.write_bytes(sep.join(line.encode() for line in lines) + sep + extra_bytes)
    return path


@pytest.fixture(scope="module")
def templates(spark):
    return read_templates(spark, str(SAMPLE / "HDFS.log_templates.csv"))


def test_hand_made_lines_multi_block_crlf_garbage_and_non_utf8(spark, cfg, tmp_path):
    log = _write(tmp_path / "day1.log", LINES, crlf=True,
                 extra_bytes=b"081109 203540 19 INFO dfs.FSDataset: Deleting block blk_4 file /d/\xff\xfe\n")
    cfg = cfg.replace(raw_logs=str(log), anomaly_labels="")
    out = run_ingest_raw(spark, cfg)
    assert out["lines"] == len(LINES) + 1 == out["accepted_lines"] + out["rejected_lines"]
    assert out["rejects_by_reason"] == {"malformed_log_line": 1, "unknown_template": 1, "no_block_id": 1,
                                        "malformed_timestamp": 1}
    traces = {r["block_id"]: r for r in read_table(spark, cfg.table_path(schemas.TRACES)).collect()}
    assert traces["blk_1"]["events"] == [5, 22, 11, 21]
    assert traces["blk_1"]["intervals"] == [0.0, 1.0, 10.0, 1.0]
    assert traces["blk_-2"]["events"] == [21, 21] and traces["blk_-2"]["intervals"] == [0.0, 1.0]
    assert traces["blk_4"]["events"] == [21]  # non-UTF-8 bytes in the content: the line is kept
    assert set(traces) == {"blk_1", "blk_-2", "blk_4"} and all(t["label"] is None for t in traces.values())
    rejects = read_table(spark, cfg.table_path(schemas.INGEST_REJECTS)).collect()
    assert {r["reason"] for r in rejects} == set(out["rejects_by_reason"])
    assert all(r["source"] == "raw_log" and r["raw"] and not r["raw"].endswith("\r") for r in rejects)
    counts = {r["event_key"]: r["lines"] for r in read_table(spark, cfg.table_path(schemas.TEMPLATE_COUNTS)).collect()}
    assert len(counts) == 29 and counts["E21"] == 3 and counts["E5"] == 1 and counts["E1"] == 0


@pytest.mark.extended  # a failure at the last line of defence; ~17 s
def test_strict_turns_any_reject_into_a_failure_after_writing(spark, cfg, tmp_path):
    from deeplog_spark.core.errors import InputError

    log = _write(tmp_path / "day1.log", LINES[:3] + ["not a log line"])
    with pytest.raises(InputError, match=r"^strict: 1 of 4 log lines rejected \(malformed_log_line=1\); see "):
        run_ingest_raw(spark, cfg.replace(raw_logs=str(log), anomaly_labels="", strict=True))
    assert read_table(spark, cfg.table_path(schemas.INGEST_REJECTS)).count() == 1  # written for inspection
    clean = _write(tmp_path / "clean.log", LINES[:3])
    assert run_ingest_raw(spark, cfg.replace(raw_logs=str(clean), anomaly_labels="", strict=True))["lines"] == 3


def test_raw_lines_and_event_traces_rows_give_identical_traces(spark, cfg, tmp_path):
    log = _write(tmp_path / "a.log", LINES[:5])
    csv_path = tmp_path / "Event_traces.csv"
    csv_path.write_text('BlockId,Features,TimeInterval\n'
                        'blk_1,"[E5,E22,E11,E21]","[0.0, 1.0, 10.0, 1.0]"\n'
                        'blk_-2,"[E21,E21]","[0.0, 1.0]"\n')
    cols = ["block_id", "events", "intervals", "split", "event_count"]
    run_ingest_raw(spark, cfg.replace(raw_logs=str(log), anomaly_labels=""))
    raw = sorted(tuple(r) for r in read_table(spark, cfg.table_path(schemas.TRACES)).select(*cols).collect())
    run_ingest(spark, cfg.replace(event_traces=str(csv_path), anomaly_labels=""))
    from_csv = sorted(tuple(r) for r in read_table(spark, cfg.table_path(schemas.TRACES)).select(*cols).collect())
    assert raw == from_csv and len(raw) == 2


def test_hdfs_2k_log_every_line_accounted_for_and_counts_match_loghub(spark, cfg, templates, shared_hdfs):
    """The real 2,000-line sample: matched + rejected = 2,000; per-template counts agree with
    Loghub's own structured parse of the same file (its 14 ids mapped to E1..E29 by template text)."""
    cfg = cfg.replace(raw_logs=str(SAMPLE / "HDFS_2k.log.gz"), anomaly_labels="")
    out = run_ingest_raw(spark, cfg)
    assert out["lines"] == 2000 == out["accepted_lines"] + out["rejected_lines"]

    rows = list(csv.DictReader(io.open(shared_hdfs / "HDFS_2k.log_structured.csv", encoding="utf-8")))
    assert len(rows) == 2000
    # map each of Loghub's 2k template ids to ours by matching its template text (<*> -> x)
    loghub_templates = sorted({(r["EventId"], r["EventTemplate"]) for r in rows})
    tpl = [r.asDict() for r in templates.collect()]
    df = spark.createDataFrame([(k, t.replace("<*>", "x")) for k, t in loghub_templates], "key string, text string")
    mapping = {r["key"]: r["e"] for r in df.select("key", match_event(F.col("text"), tpl).alias("e")).collect()}
    expected: dict = {}
    for r in rows:
        e = mapping[r["EventId"]]
        key = f"E{e}" if e is not None else None
        expected[key] = expected.get(key, 0) + 1
    unmatched = expected.pop(None, 0)
    assert out["lines_per_template"] == expected
    assert out["rejects_by_reason"] == {"unknown_template": unmatched}  # Loghub's E30-like "ask to delete"


def test_log_header_fields_are_parsed(spark):
    df = spark.createDataFrame([(LINES[0], "f", 0)], "line string, source_file string, line_order long")
    tpl = [{"event_id": 5, "event_key": "E5", "template": "[*]Receiving block[*]src:[*]dest:[*]"}]
    r = parse_lines(df, tpl).first()
    assert (r["ts"], r["level"], r["component"]) == (
        dt.datetime(2008, 11, 9, 20, 35, 18), "INFO", "dfs.DataNode$DataXceiver")
    assert r["event_id"] == 5 and r["block_ids"] == ["blk_1"] and r["reason"] is None


def test_gzip_input_and_missing_path(spark, cfg, tmp_path):
    from deeplog_spark.core.errors import InputError

    gz = tmp_path / "day.log.gz"
    gz.write_bytes(gzip.compress(("\n".join(LINES[:3]) + "\n").encode()))
    assert read_raw_logs(spark, str(gz)).count() == 3
    with pytest.raises(InputError, match="input not found"):
        read_raw_logs(spark, str(tmp_path / "nope.log")).count()


def test_an_empty_raw_log_is_refused_and_replaces_nothing(spark, cfg, tmp_path):
    """As the Event_traces path does: without --append an empty input would otherwise replace the
    tables with nothing, and with it write an empty batch that scores nothing."""
    from deeplog_spark.core.errors import InputError

    first = run_ingest_raw(spark, cfg.replace(raw_logs=str(_write(tmp_path / "day1.log", LINES[:3]))))
    (tmp_path / "empty.log").write_bytes(b"")
    for append in (False, True):
        with pytest.raises(InputError, match="no log lines"):
            run_ingest_raw(spark, cfg.replace(raw_logs=str(tmp_path / "empty.log"), append=append))
    assert read_table(spark, cfg.table_path(schemas.TRACES)).count() == first["blocks"] > 0


@pytest.mark.extended  # two batches ingested and windowed, ~32 s (tests/test_hostile.py windows a re-ingested batch in make test)
def test_append_a_new_day_then_window_only_it(spark, cfg, tmp_path):
    day1 = _write(tmp_path / "2008-11-09.log", LINES[:3])
    day2 = _write(tmp_path / "2008-11-10.log", [
        "081110 101010 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_7 src: /10.0.0.1:5 dest: /10.0.0.2:50010",
        "081110 101012 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_7 src: /10.0.0.3:5 dest: /10.0.0.2:50010",
        "081110 101013 145 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_1 terminating",
    ])
    base = cfg.replace(anomaly_labels="", h=2)
    first = run_ingest_raw(spark, base.replace(raw_logs=str(day1)))
    assert first["ingest_batch"] == "2008-11-09.log"
    run_windows(spark, base)
    labels = tmp_path / "labels.csv"
    labels.write_text("BlockId,Label\nblk_7,Anomaly\nblk_7x,Bogus\nblk_elsewhere,Normal\n")
    appended = base.replace(raw_logs=str(day2), append=True, anomaly_labels=str(labels))
    out = run_ingest_raw(spark, appended)
    # day 1 was ingested whole (no --append), so it closed blk_1: its day-2 event is late
    assert out["blocks"] == 0 and out["late_events"] == 1 and out["sessions_open"] == 1
    traces = lambda: sorted(tuple(r) for r in read_table(spark, cfg.table_path(schemas.TRACES))  # noqa: E731
                            .select("block_id", "events", "intervals", "ingest_batch").collect())
    out = run_ingest_raw(spark, appended.replace(flush=True))  # the same day again, closing what is open
    assert out["blocks"] == 1 and out["sessions_open"] == 0
    once = traces()
    assert once == [("blk_1", [5, 22, 11], [0.0, 1.0, 10.0], "2008-11-09.log"),
                    ("blk_7", [5, 5], [0.0, 2.0], "2008-11-10.log")]
    run_ingest_raw(spark, appended.replace(flush=True))  # again: same contents, no duplicates
    assert traces() == once
    rejects = read_table(spark, cfg.table_path(schemas.INGEST_REJECTS)).where(
        F.col("reason") == "session_closed").collect()
    assert [(r.block_id, r.ingest_batch) for r in rejects] == [("blk_1", "2008-11-10.log")]
    assert "closed in batch 2008-11-09.log" in rejects[0].detail
    bad_label = read_table(spark, cfg.table_path(schemas.INGEST_REJECTS)).where(F.col("reason") == "malformed_label")
    assert [(r.block_id, r.ingest_batch) for r in bad_label.collect()] == [("blk_7x", "2008-11-10.log")]  # once
    assert read_table(spark, cfg.table_path(schemas.TRACES)).where(F.col("block_id") == "blk_7").first().label == 1
    day1_windows = read_table(spark, cfg.table_path(schemas.WINDOWS)).collect()
    w = run_windows(spark, appended)
    assert w["batches"] == "2008-11-10.log"
    windows = read_table(spark, cfg.table_path(schemas.WINDOWS))
    assert sorted(map(tuple, windows.where(F.col("ingest_batch") == "2008-11-09.log").collect())) == \
        sorted(map(tuple, day1_windows))
    assert windows.where(F.col("block_id") == "blk_7").count() == 3  # its 2 events and the end
    assert run_windows(spark, appended)["batches"] == "none"  # nothing new: a no-op, not an error
    assert read_table(spark, cfg.table_path(schemas.WINDOWS)).count() == windows.count()
