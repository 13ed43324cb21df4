"""The bad-input catalogue: every entry point fed damaged input ends in a reject row with a
reason or in a clear error, never in a silent drop. Ingest's finer reasons are in test_ingest
(ROWS, LABELS); this adds damage they do not cover and checks accepted + rejected = input.
"""

import gzip

import pytest
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.detect.verdicts import run_detect
from deeplog_spark.evaluate.metrics import run_evaluate
from deeplog_spark.core.errors import InputError
from deeplog_spark.train.online import run_online
from deeplog_spark.features.runner import run_windows
from deeplog_spark.ingest.runner import run_ingest
from deeplog_spark.core.schemas import Reason
from deeplog_spark.core.tables import read_table
from deeplog_spark.train.runner import run_train

LONG = 10_000
# BlockId -> (raw CSV line, reason or None when accepted)
TRACES = {
    # an unclosed quote shifts the CSV fields: the row still has six, and Features is no list
    "blk_quote": (b'blk_quote,Success,1,"[E5,E22],"[0.0,1.0]",1', Reason.MALFORMED_FEATURES),
    "blk_fields": (b'blk_fields,Success,1,"[E5]","[0.0]",1,surplus', Reason.MALFORMED_CSV_ROW),
    "blk_bracket": (b'blk_bracket,Success,1,"E5,E22]","[0.0,1.0]",1', Reason.MALFORMED_FEATURES),
    "blk_nested": (b'blk_nested,Success,1,"[[E5],E22]","[0.0,1.0]",1', Reason.MALFORMED_FEATURES),
    "blk_digits": (b'blk_digits,Success,1,"[5,22]","[0.0,1.0]",1', Reason.UNKNOWN_EVENT_KEY),
    "blk_word": (b'blk_word,Success,1,"[E5,Efive]","[0.0,1.0]",1', Reason.UNKNOWN_EVENT_KEY),
    "blk_zero": (b'blk_zero,Success,1,"[E0,E5]","[0.0,1.0]",1', Reason.UNKNOWN_EVENT_KEY),
    "blk_negzero": (b'blk_negzero,Success,1,"[E5,E22]","[0.0,-0.5]",1', Reason.INVALID_TIME_INTERVAL),
    "blk_ninf": (b'blk_ninf,Success,1,"[E5,E22]","[0.0,-Infinity]",1', Reason.INVALID_TIME_INTERVAL),
    "blk_utf8": (b'blk_\xff\xfe1,Success,1,"[E5,E22]","[0.0,1.0]",1', Reason.INVALID_ENCODING),
    "blk_utf8b": (b'blk_utf8b,Success,1,"[E5,E2\xe9]","[0.0,1.0]",1', Reason.INVALID_ENCODING),
    "blk_long": (b'blk_long,Success,1,"[' + b",".join([b"E5"] * LONG) + b']","['
                 + b",".join([b"1.0"] * LONG) + b']",1', None),
    "blk_one": (b'blk_one,Success,1,"[E5]","[0.0]",1', None),
    "blk_fine": (b'blk_fine,Fail,1,"[E5,E22,E11]","[0.0,1.0,2.0]",1', None),
}
LABELS = {  # the anomaly_label file: BlockId -> (raw line, reason)
    "blk_fine": (b"blk_fine,Anomaly", None),
    "blk_ghost": (b"blk_ghost,Anomaly", Reason.LABEL_UNKNOWN_BLOCK),
    "blk_bin": (b"blk_b\xffn,Normal", Reason.INVALID_ENCODING),
    "blk_extra": (b"blk_one,Normal,extra", Reason.MALFORMED_CSV_ROW),
}


@pytest.fixture
def bad_inputs(tmp_path):
    traces = tmp_path / "Event_traces.csv.gz"
    with gzip.open(traces, "wb") as fh:
        fh.write(b"BlockId,Label,Type,Features,TimeInterval,Latency\n"
                 + b"\n".join(line for line, _ in TRACES.values()) + b"\n")
    labels = tmp_path / "anomaly_label.csv"
    labels.write_bytes(b"BlockId,Label\n" + b"\n".join(line for line, _ in LABELS.values()) + b"\n")
    return str(traces), str(labels)


def test_damaged_trace_and_label_rows_are_rejected_with_reasons(spark, cfg, bad_inputs):
    traces, labels = bad_inputs
    cfg = cfg.replace(event_traces=traces, anomaly_labels=labels)
    counts = run_ingest(spark, cfg)
    rejects = read_table(spark, cfg.table_path(schemas.INGEST_REJECTS))

    got = sorted((r.source, r.reason) for r in rejects.collect())
    want = sorted([("event_traces", reason) for _, reason in TRACES.values() if reason]
                  + [("anomaly_labels", reason) for _, reason in LABELS.values() if reason])
    assert got == want
    assert rejects.where("raw IS NULL OR raw = ''").count() == 0  # every reject keeps its input text
    # accepted + rejected = input, per input file
    assert counts["trace_rows"] == len(TRACES) == counts["traces"] + counts["trace_rejects"]
    assert counts["label_rows"] == len(LABELS) == counts["labels"] + counts["label_rejects"]

    accepted = {r.block_id: r for r in read_table(spark, cfg.table_path(schemas.TRACES)).collect()}
    assert set(accepted) == {b for b, (_, reason) in TRACES.items() if reason is None}
    assert accepted["blk_long"].event_count == LONG and accepted["blk_fine"].label == 1
    # a 10,000-event session is windowed like any other: L + 1 windows (every event and the end)
    run_windows(spark, cfg)
    w = read_table(spark, cfg.table_path(schemas.WINDOWS)).groupBy("block_id").count()
    assert {r.block_id: r["count"] for r in w.collect()} == {"blk_long": LONG + 1, "blk_one": 2, "blk_fine": 4}


def test_strict_ingest_of_damaged_input_fails_with_a_one_line_summary(spark, cfg, bad_inputs):
    traces, labels = bad_inputs
    with pytest.raises(InputError, match=r"^strict: \d+ of \d+ input rows rejected \(.*invalid_encoding=") as err:
        run_ingest(spark, cfg.replace(event_traces=traces, anomaly_labels=labels, strict=True))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content, match", [
    (None, "input not found"),
    (b"", "empty file"),
    (b"BlockId,Label\nblk_1,Normal\n", "missing column.*Features"),  # a label file given as traces
    (b"\xff\xfe\x00B\x00l\x00o\x00c\x00k", "missing column"),  # UTF-16 or binary junk: no usable header
])
def test_unusable_label_and_trace_files_are_clear_errors(spark, cfg, tmp_path, content, match):
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        run_ingest(spark, cfg.replace(event_traces=str(path)))
    if content is None:  # a missing label file is as clear
        with pytest.raises(InputError, match="input not found"):
            run_ingest(spark, cfg.replace(anomaly_labels=str(path)))


def test_stages_run_out_of_order_or_on_missing_inputs_are_clear_errors(spark, cfg, tmp_path):
    """Each later entry point, started before the stage it needs, names what to run first."""
    with pytest.raises(FileNotFoundError, match="no Delta table at .*traces.*run the stage"):
        run_windows(spark, cfg)
    with pytest.raises(FileNotFoundError, match="no Delta table at .*traces"):
        run_train(spark, cfg, "key")
    with pytest.raises(FileNotFoundError, match="no trained model"):
        run_detect(spark, cfg)
    with pytest.raises(InputError, match="no model run 'nosuch'"):
        run_detect(spark, cfg, "nosuch")
    with pytest.raises(FileNotFoundError, match="no trained model"):
        run_evaluate(spark, cfg)
    with pytest.raises(FileNotFoundError, match="no trained model"):
        run_online(spark, cfg)


@pytest.mark.parametrize("run_id", ["../../etc", "a/b", "x' OR '1'='1", "", "a" * 65, "..", "run id"])
def test_hostile_run_ids_are_refused_before_any_path_or_sql_is_built(spark, cfg, run_id):
    with pytest.raises(InputError, match="invalid run id"):
        run_detect(spark, cfg, run_id)
    with pytest.raises(InputError, match="invalid run id"):
        run_evaluate(spark, cfg, run_id)


def test_windows_of_an_empty_traces_table_and_training_without_rows(spark, cfg, tmp_path):
    """Every trace rejected: the tables are written empty, and training says why it cannot run."""
    bad = tmp_path / "all_bad.csv"
    bad.write_text('BlockId,Features\nblk_1,"[E99]"\nblk_2,"[]"\n')
    counts = run_ingest(spark, cfg.replace(event_traces=str(bad), anomaly_labels=""))
    assert (counts["traces"], counts["trace_rejects"]) == (0, 2)
    cfg = cfg.replace(event_traces=str(bad), anomaly_labels="")
    assert run_windows(spark, cfg)["windows"] == 0
    assert read_table(spark, cfg.table_path(schemas.WINDOWS)).where(F.lit(True)).count() == 0
    with pytest.raises(InputError, match="no training rows|no normal|empty"):
        run_train(spark, cfg, "key")
