"""Ingest: parsing, every reject reason, row conservation, labels, re-runs as Delta versions."""

import datetime as dt
import gzip

import pytest
from pyspark.sql import functions as F

from deeplog_spark.core.errors import InputError
from deeplog_spark.ingest.traces import read_templates
from deeplog_spark.ingest.runner import run_ingest
from deeplog_spark.core.schemas import Reason
from deeplog_spark.core.tables import read_table, table_version

from conftest import SAMPLE

HEADER = "BlockId,Label,Type,Features,TimeInterval,Latency\n"
# BlockId -> (CSV line, the reason it must get or None when accepted)
ROWS = {
    "blk_ok1": ('blk_ok1,Success,1,"[E5,E22,E5]","[0.0, 1.0, 2.5]",3.5', None),
    "blk_ok2": ('blk_ok2,Fail,2,"[E5, E11 ,E9]","[0,0.5,1e1]",', None),
    "blk_dup": ('blk_dup,Success,1,"[E5]","[0.0]",1', Reason.DUPLICATE_BLOCK_ID),
    "blk_badfeat": ('blk_badfeat,Success,1,"[E5,E22","[0.0,1.0]",1', Reason.MALFORMED_FEATURES),
    "blk_badfeat2": ('blk_badfeat2,Success,1,"E5 E22","[0.0,1.0]",1', Reason.MALFORMED_FEATURES),
    "blk_empty": ('blk_empty,Success,1,"[]","[]",1', Reason.EMPTY_SEQUENCE),
    "blk_unknown": ('blk_unknown,Success,1,"[E5,E99,X3]","[0.0,1.0,2.0]",1', Reason.UNKNOWN_EVENT_KEY),
    "blk_badti": ('blk_badti,Success,1,"[E5,E22]","[0.0,abc]",1', Reason.MALFORMED_TIME_INTERVAL),
    "blk_negti": ('blk_negti,Success,1,"[E5,E22]","[0.0,-1.0]",1', Reason.INVALID_TIME_INTERVAL),
    "blk_nanti": ('blk_nanti,Success,1,"[E5,E22]","[0.0,NaN]",1', Reason.INVALID_TIME_INTERVAL),
    "blk_infti": ('blk_infti,Success,1,"[E5,E22]","[0.0,Infinity]",1', Reason.INVALID_TIME_INTERVAL),
    "blk_len": ('blk_len,Success,1,"[E5,E22,E5]","[0.0,1.0]",1', Reason.LENGTH_MISMATCH),
    "blk_badlabel": ('blk_badlabel,Maybe,1,"[E5,E22]","[0.0,1.0]",1', Reason.MALFORMED_LABEL),
    "blk_badlat": ('blk_badlat,Success,1,"[E5,E22]","[0.0,1.0]",fast', Reason.MALFORMED_LATENCY),
    "blk_short": ('blk_short,Success,1,"[E5,E22]"', Reason.MALFORMED_CSV_ROW),
    "": (',Success,1,"[E5,E22]","[0.0,1.0]",1', Reason.MISSING_BLOCK_ID),
}
LABELS = {  # BlockId -> (line, reason)
    "blk_ok1": ("blk_ok1,Normal", None),
    "blk_ok2": ("blk_ok2,Anomaly", None),
    "blk_badfeat": ("blk_badfeat,Normal", None),  # its trace is rejected, but the block is known
    "blk_nobody": ("blk_nobody,Anomaly", Reason.LABEL_UNKNOWN_BLOCK),
    "blk_twice": ("blk_twice,Normal\nblk_twice,Anomaly", Reason.CONFLICTING_LABEL),
    "blk_same": ("blk_same,Normal\nblk_same,Normal", Reason.DUPLICATE_LABEL),
    "blk_weird": ("blk_weird,Unknown", Reason.MALFORMED_LABEL),
}


def _write(path, text, gz=False):
    if gz:
        with gzip.open(path, "wt", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return str(path)


def _bad_inputs(tmp_path):
    lines = [line for line, _ in ROWS.values()] + [ROWS["blk_dup"][0]]  # blk_dup twice
    traces = _write(tmp_path / "Event_traces.csv.gz", HEADER + "\n".join(lines) + "\n", gz=True)
    labels = _write(tmp_path / "anomaly_label.csv",
                    "BlockId,Label\n" + "\n".join(line for line, _ in LABELS.values()) + "\n")
    return traces, labels


def test_every_reject_reason_and_row_conservation(spark, cfg, tmp_path):
    traces, labels = _bad_inputs(tmp_path)
    counts = run_ingest(spark, cfg.replace(event_traces=traces, anomaly_labels=labels))

    rejects = read_table(spark, cfg.table_path("ingest_rejects"))
    trace_rej = rejects.where("source = 'event_traces'")
    got = {r.raw.split(",", 1)[0]: r.reason for r in trace_rej.collect() if r.reason != Reason.DUPLICATE_BLOCK_ID}
    want = {b: reason for b, (_, reason) in ROWS.items() if reason and reason != Reason.DUPLICATE_BLOCK_ID}
    assert got == want
    assert trace_rej.where(F.col("reason") == Reason.DUPLICATE_BLOCK_ID).count() == 2
    unknown = trace_rej.where(F.col("reason") == Reason.UNKNOWN_EVENT_KEY).first()
    assert unknown.detail == "E99,X3" and unknown.block_id == "blk_unknown"
    assert trace_rej.where("raw IS NULL OR source_file IS NULL OR ingested_at IS NULL").count() == 0

    label_rej = {(r.block_id, r.reason) for r in rejects.where("source = 'anomaly_labels'").collect()}
    assert label_rej == {("blk_nobody", Reason.LABEL_UNKNOWN_BLOCK), ("blk_twice", Reason.CONFLICTING_LABEL),
                         ("blk_same", Reason.DUPLICATE_LABEL), ("blk_weird", Reason.MALFORMED_LABEL)}

    # input rows = accepted + rejected, for each input
    n_trace_rows = len(ROWS) + 1
    assert counts["trace_rows"] == n_trace_rows
    assert counts["traces"] == 2 and counts["traces"] + counts["trace_rejects"] == n_trace_rows
    assert counts["label_rows"] == 9 and counts["labels"] + counts["label_rejects"] == 9

    ok = {r.block_id: r for r in read_table(spark, cfg.table_path("traces")).collect()}
    assert set(ok) == {"blk_ok1", "blk_ok2"}
    assert ok["blk_ok1"].events == [5, 22, 5] and ok["blk_ok1"].intervals == [0.0, 1.0, 2.5]
    assert ok["blk_ok2"].events == [5, 11, 9] and ok["blk_ok2"].intervals == [0.0, 0.5, 10.0]
    assert (ok["blk_ok1"].label, ok["blk_ok2"].label) == (0, 1)
    assert (ok["blk_ok1"].latency, ok["blk_ok2"].latency) == (3.5, None)
    assert ok["blk_ok1"].event_count == 3 and ok["blk_ok1"].split in {"train", "val", "test"}


def test_a_block_labelled_both_ways_is_rejected_and_never_trains_as_normal(spark, cfg, tmp_path):
    """Its label rows go to the rejects with their own reason, and the session keeps the anomalous
    label: unlabelled, it would count as normal and be trained on."""
    traces = _write(tmp_path / "t.csv", 'BlockId,Features\nb1,"[E5,E22]"\nb2,"[E5]"\n')
    labels = _write(tmp_path / "l.csv", "BlockId,Label\nb1,Normal\nb1,Anomaly\nb2,Normal\n")
    run_ingest(spark, cfg.replace(event_traces=traces, anomaly_labels=labels))
    got = {r.block_id: r.label for r in read_table(spark, cfg.table_path("traces")).collect()}
    assert got == {"b1": 1, "b2": 0}
    rejects = read_table(spark, cfg.table_path("ingest_rejects")).collect()
    assert sorted((r.block_id, r.reason) for r in rejects) == [("b1", Reason.CONFLICTING_LABEL)] * 2
    assert "never trained on" in rejects[0].detail


def test_labels_fall_back_to_success_fail_and_unlabelled_is_null(spark, cfg, tmp_path):
    traces = _write(tmp_path / "t.csv", "BlockId,Label,Features\n"
                    'b1,Success,"[E5]"\nb2,Fail,"[E5]"\nb3,,"[E5]"\n')
    labels = _write(tmp_path / "l.csv", "BlockId,Label\nb1,Anomaly\n")
    run_ingest(spark, cfg.replace(event_traces=traces, anomaly_labels=labels))
    got = {r.block_id: (r.label, r.intervals) for r in read_table(spark, cfg.table_path("traces")).collect()}
    assert got == {"b1": (1, None), "b2": (1, None), "b3": (None, None)}


def test_embedded_sample_ingests_cleanly(spark, cfg):
    counts = run_ingest(spark, cfg)
    assert (counts["traces"], counts["anomalies"], counts["trace_rejects"], counts["label_rejects"]) == (3000, 98, 0, 0)
    assert counts["events"] == sum(_lengths(SAMPLE / "Event_traces.csv.gz"))


def test_sample15k_gives_15000_traces_445_anomalies_no_rejects(spark, cfg, shared_hdfs):
    from deeplog_spark.features.runner import run_windows

    cfg = cfg.replace(event_traces=str(shared_hdfs / "sample15k" / "Event_traces.csv.gz"),
                      anomaly_labels=str(shared_hdfs / "sample15k" / "anomaly_label.csv.gz"),
                      templates=str(shared_hdfs / "HDFS.log_templates.csv"))
    counts = run_ingest(spark, cfg)
    assert (counts["traces"], counts["anomalies"], counts["trace_rejects"], counts["label_rejects"]) == (15000, 445, 0, 0)
    assert counts["events"] == 291_391  # SOURCES.md
    lengths = _lengths(shared_hdfs / "sample15k" / "Event_traces.csv.gz")
    assert run_windows(spark, cfg)["windows"] == sum(n + 1 for n in lengths)  # session markers: L + 1 each


def test_rerun_is_a_new_version_with_the_same_contents(spark, cfg):
    run_ingest(spark, cfg, ingested_at=dt.datetime(2026, 1, 1))
    run_ingest(spark, cfg, ingested_at=dt.datetime(2026, 1, 2))
    path = cfg.table_path("traces")
    assert table_version(spark, path) == 1
    v0, v1 = (read_table(spark, path, version=v).drop("ingested_at") for v in (0, 1))
    assert v1.count() == 3000
    assert v0.exceptAll(v1).count() == 0 and v1.exceptAll(v0).count() == 0
    stamps = {r[0] for r in read_table(spark, path).select("ingested_at").distinct().collect()}
    assert stamps == {dt.datetime(2026, 1, 2)}  # every row says when its batch was ingested


def test_templates_crlf_and_bad_rows(spark, tmp_path):
    crlf = _write(tmp_path / "t.csv", "EventId,EventTemplate\r\nE2,[*]Verification succeeded for[*]\r\n"
                  "E1,[*]Adding an already existing block[*]\r\n")
    rows = [tuple(r) for r in read_templates(spark, crlf).collect()]
    assert rows == [(1, "E1", "[*]Adding an already existing block[*]"),
                    (2, "E2", "[*]Verification succeeded for[*]")]
    bad = _write(tmp_path / "bad.csv", "EventId,EventTemplate\nE1,x\nX2,y\nE1,z\n")
    with pytest.raises(InputError, match=r"line 3: 'X2,y'; line 4: duplicate EventId E1$"):
        read_templates(spark, bad)  # every bad row named, by its line


def _lengths(path):
    import csv

    with gzip.open(path, "rt", newline="") as fh:
        return [len(r["Features"].strip("[]").split(",")) for r in csv.DictReader(fh)]


def test_strict_fails_on_any_rejected_trace_row(spark, cfg, tmp_path):
    bad = tmp_path / "Event_traces.csv"
    bad.write_text('BlockId,Features\nblk_1,"[E5,E22]"\nblk_2,"[E5,E99]"\n')
    with pytest.raises(InputError, match=r"^strict: 1 of 2 input rows rejected \(event_traces:unknown_event_key=1\)"):
        run_ingest(spark, cfg.replace(event_traces=str(bad), anomaly_labels="", strict=True))
