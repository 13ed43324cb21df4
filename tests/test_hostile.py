"""The hostile probe's cases: each gave a wrong result with exit 0 or a stack trace before its fix.

Silent wrong results, crashes turned into rejects or one-line errors, weak spots, the multi-node
storage check, and the last line of defence (one ``error:`` line, no Python traceback, for
failures nobody listed).
"""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deeplog_spark.core import schemas
from deeplog_spark.cli import check_storage
from deeplog_spark.core.config import Config, ConfigError
from deeplog_spark.core.errors import InputError
from deeplog_spark.features.runner import run_windows
from deeplog_spark.ingest.runner import run_ingest
from deeplog_spark.core.schemas import Reason
from deeplog_spark.core.tables import read_table

from conftest import REPO, SAMPLE


def _traces(path, rows, header="BlockId,Features"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def _rejects(spark, cfg):
    return {r.block_id: r for r in read_table(spark, cfg.table_path(schemas.INGEST_REJECTS)).collect()}


def test_a_batch_ingested_again_is_windowed_again(spark, cfg, tmp_path):
    day2a = _traces(tmp_path / "a.csv", [f'blk_a{i},"[E5,E22,E5]"' for i in range(4)])
    day2b = _traces(tmp_path / "b.csv", [f'blk_b{i},"[E5,E22]"' for i in range(2)])
    c = cfg.replace(append=True, ingest_batch="day2", anomaly_labels="")
    run_ingest(spark, c.replace(event_traces=day2a))
    run_windows(spark, c.replace(ingest_batch=""))
    run_ingest(spark, c.replace(event_traces=day2b))  # the same batch, another file
    got = run_windows(spark, c.replace(ingest_batch=""))
    assert got["batches"] == "day2"
    blocks = {r.block_id for r in read_table(spark, cfg.table_path(schemas.WINDOWS)).collect()}
    assert blocks == {"blk_b0", "blk_b1"}  # the old 100 blocks' windows are gone
    assert run_windows(spark, c.replace(ingest_batch=""))["windows"] == 0  # and now nothing is stale


def test_a_replacing_ingest_then_windows_append_keeps_no_stale_windows(spark, cfg, tmp_path):
    """The windows of batches a replacing ingest removed from ``traces`` are dropped, not kept."""
    old = _traces(tmp_path / "old.csv", [f'blk_o{i},"[E5,E22,E5]"' for i in range(3)])
    new = _traces(tmp_path / "new.csv", [f'blk_n{i},"[E5,E22]"' for i in range(2)])
    c = cfg.replace(anomaly_labels="")
    run_ingest(spark, c.replace(event_traces=old, ingest_batch="day1"))
    run_windows(spark, c)
    run_ingest(spark, c.replace(event_traces=new, ingest_batch="day2"))  # replaces the tables: day1 is gone
    got = run_windows(spark, c.replace(append=True))
    assert got["batches"] == "day1,day2"
    windows = read_table(spark, cfg.table_path(schemas.WINDOWS))
    assert {r.block_id for r in windows.collect()} == {"blk_n0", "blk_n1"}
    assert run_windows(spark, c.replace(append=True))["windows"] == 0  # and now nothing is stale


def test_windows_of_another_length_are_refused_in_one_table(spark, cfg):
    run_ingest(spark, cfg)
    run_windows(spark, cfg.replace(h=5))
    with pytest.raises(InputError, match="holds windows of h=5, not h=10"):
        run_windows(spark, cfg.replace(append=True, ingest_batch="Event_traces.csv.gz"))


def test_a_huge_interval_is_rejected_and_never_reaches_the_value_model(spark, cfg, tmp_path):
    path = _traces(tmp_path / "t.csv", ['blk_huge,"[E5,E22]","[0.0,1e39]"', 'blk_ok,"[E5,E22]","[0.0,3.0]"'],
                   "BlockId,Features,TimeInterval")
    run_ingest(spark, cfg.replace(event_traces=path, anomaly_labels=""))
    rej = _rejects(spark, cfg)
    assert rej["blk_huge"].reason == Reason.INVALID_TIME_INTERVAL and "1e+09" in rej["blk_huge"].detail
    from deeplog_spark.features.train_rows import interval_stats

    inf = spark.createDataFrame([([5, 22], [0.0, float("inf")])], "events array<int>, intervals array<double>")
    with pytest.raises(ValueError, match="not finite"):
        interval_stats(inf)


def _ingest_bytes(spark, cfg, tmp_path, raw: bytes):
    """Ingest ``raw`` as an Event_traces file: (the ingest's counts, the accepted block ids)."""
    path = tmp_path / "t.csv"
    path.write_bytes(raw)
    counts = run_ingest(spark, cfg.replace(event_traces=str(path), anomaly_labels=""))
    return counts, {r.block_id for r in read_table(spark, cfg.table_path(schemas.TRACES)).collect()}


def test_broken_rows_are_rejected_not_accepted_as_fragments(spark, cfg, tmp_path):
    raw = (b'BlockId, Features, Latency\n'  # spaces after the commas in the header
           b'"blk_first\nsecond","[E5,E22]",1\n'  # a line break inside a quoted BlockId
           b'blk_nul\x00,"[E5]",1\n'
           b'"blk_q""uote","[E5]",1\n'  # an RFC 4180 doubled quote: decoded, then refused as an id
           b'BlockId,Features,Latency\n'  # a second file's header, concatenated
           b'blk_nan,"[E5]",NaN\n'
           b'blk_neg,"[E5]",-3\n'
           b'blk_fine,"[E5,E22]",2.5\n')
    counts, accepted = _ingest_bytes(spark, cfg, tmp_path, raw)
    assert accepted == {"blk_fine"}
    rejects = read_table(spark, cfg.table_path(schemas.INGEST_REJECTS)).collect()
    by_id = {r.block_id: r.reason for r in rejects}
    assert all(r.reason for r in rejects) and len(rejects) == 6
    assert by_id["blk_nul\x00"] == by_id['blk_q"uote'] == Reason.MALFORMED_BLOCK_ID
    assert by_id["BlockId"] == Reason.REPEATED_HEADER and by_id["blk_nan"] == by_id["blk_neg"] == Reason.INVALID_LATENCY
    # the record with a line break inside its quoted BlockId is one record, refused for its id
    assert by_id["blk_first\nsecond"] == Reason.MALFORMED_BLOCK_ID
    assert counts["trace_rows"] == counts["traces"] + counts["trace_rejects"] == 7


@pytest.mark.extended  # Spark jobs of 10-60 s: `make test-extended`, so that `make test` stays under 15 minutes
def test_quoted_line_breaks_never_make_rows_of_their_own(spark, cfg, tmp_path):
    """Issue 40, case 3: fragments of a quoted field that look like rows (`blk_777,[E5]` inside a
    quoted BlockId, `blk_888,[E22]` inside quoted Features) are parsed as CSV does, inside their
    record, and never accepted as blocks; the file's records are counted as records."""
    raw = (b'BlockId,Features\n'
           b'"blk_1\nblk_777,[E5]\nx","[E22]"\n'
           b'blk_9,"[E5]\nblk_888,[E22]\n"\n'
           b'blk_fine,"[E5,E22]"\n')
    counts, accepted = _ingest_bytes(spark, cfg, tmp_path, raw)
    assert accepted == {"blk_fine"}
    assert counts["trace_rows"] == 3 and counts["trace_rejects"] == 2
    ids = {r.block_id for r in read_table(spark, cfg.table_path(schemas.INGEST_REJECTS)).collect()}
    assert not ids & {"blk_777", "blk_888"}


def test_a_folder_input_skips_files_that_are_not_csv(spark, cfg, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _traces(folder / "part-1.csv", ['blk_1,"[E5,E22]"'])
    (folder / "README.md").write_text("# notes about this day\nnot a trace file\n")
    with gzip.open(folder / "part-2.csv.gz", "wt") as fh:
        fh.write('BlockId,Features\nblk_2,"[E5]"\n')
    counts = run_ingest(spark, cfg.replace(event_traces=str(folder), anomaly_labels=""))
    assert counts["traces"] == 2 and counts["trace_rejects"] == 0


def test_a_repeated_column_is_a_clear_error(spark, cfg, tmp_path):
    path = _traces(tmp_path / "l.csv", ["blk_1,Normal,Anomaly"], "BlockId,Label,Label")
    with pytest.raises(InputError, match="names column.*Label.*more than once"):
        run_ingest(spark, cfg.replace(anomaly_labels=path))


def test_a_template_with_regex_escapes_matches_literally(spark, cfg, tmp_path):
    from deeplog_spark.ingest.runner import run_ingest_raw

    templates = tmp_path / "t.csv"
    templates.write_text('EventId,EventTemplate\nE1,[*]C:\\Edge\\dir [*] (copy) blk_[*]\nE2,[*]Receiving block[*]\n')
    log = tmp_path / "x.log"
    log.write_text("081109 203518 143 INFO dfs.X: C:\\Edge\\dir 3 (copy) blk_1\n"
                   "081109 203519 143 INFO dfs.X: Receiving block blk_1\n")
    got = run_ingest_raw(spark, cfg.replace(templates=str(templates), raw_logs=str(log), anomaly_labels=""))
    assert got["accepted_lines"] == 2 and got["lines_per_template"] == {"E1": 1, "E2": 1}


@pytest.mark.extended  # Spark jobs of 10-60 s: `make test-extended`, so that `make test` stays under 15 minutes
def test_two_first_appends_at_once_keep_a_shared_block_in_one_batch(spark, cfg, tmp_path, monkeypatch):
    """Issue 40, case 4: two appends with no tables yet each check for blocks already ingested before
    the other has written (simulated: the check finds nothing for either). After its write each
    batch looks again; the block stays with the batch written first, the other rejects its copy."""
    from deeplog_spark.ingest import runner

    a = _traces(tmp_path / "a.csv", ['blk_shared,"[E5,E22]"', 'blk_a,"[E5]"'])
    b = _traces(tmp_path / "b.csv", ['blk_shared,"[E5,E22]"', 'blk_b,"[E22]"'])
    c = cfg.replace(append=True, anomaly_labels="")
    monkeypatch.setattr(runner, "drop_already_ingested",  # each "checked before the other wrote"
                        lambda spark, cfg, traces, *rest: (traces, spark.createDataFrame([], schemas.INGEST_REJECTS_SCHEMA)))
    got_a = run_ingest(spark, c.replace(event_traces=a, ingest_batch="a"))
    got_b = run_ingest(spark, c.replace(event_traces=b, ingest_batch="b"))
    assert runner.settle_shared_blocks(spark, c, "a", schemas.SOURCE_EVENT_TRACES, None) == 0  # a looks last: keeps it
    traces = sorted((r.block_id, r.ingest_batch) for r in read_table(spark, c.table_path(schemas.TRACES)).collect())
    assert traces == [("blk_a", "a"), ("blk_b", "b"), ("blk_shared", "a")]
    assert (got_a["traces"], got_b["traces"], got_b["trace_rejects"]) == (2, 1, 1)
    reject = _rejects(spark, c)["blk_shared"]
    assert (reject.reason, reject.ingest_batch) == (Reason.BLOCK_ALREADY_INGESTED, "b")
    assert "batch a, which was written first" in reject.detail


@pytest.mark.extended  # Spark jobs of 10-60 s: `make test-extended`, so that `make test` stays under 15 minutes
def test_more_events_than_the_pca_limit_stop_training_before_it_starts(spark, cfg, tmp_path):
    """Issue 40, case 9: a vocabulary the PCA baseline's d x d matrices cannot hold is refused before
    any training, in one error that names the limit and its key (here 12 events over a limit of 6)."""
    from deeplog_spark.train.runner import run_train

    rows = [f'blk_{i},"[{",".join(f"E{e}" for e in range(1 + i % 3, 13, 1))}]"' for i in range(60)]
    c = cfg.replace(event_traces=_traces(tmp_path / "wide.csv", rows), anomaly_labels="", pca_max_events=6)
    run_ingest(spark, c)
    with pytest.raises(InputError, match=r"hold 12 distinct events, over pca_max_events = 6"):
        run_train(spark, c, "key")
    assert not list(Path(c.artifacts_root).glob("runs/*/key_model.pt"))


@pytest.mark.extended  # Spark jobs of 10-60 s: `make test-extended`, so that `make test` stays under 15 minutes
def test_impossible_times_in_raw_logs_are_rejected_with_a_reason(spark, cfg, tmp_path):
    """Issue 40, case 8: an HDFS line dated 691231 (read as 2069) or 700101 (2070), and a Thunderbird
    epoch of nines (year 2286), are rejected as timestamp_out_of_range, so no session gets an
    interval of 1.9e9 s or is reordered by them; the other lines of those sessions stay."""
    from deeplog_spark.ingest.runner import run_ingest_raw

    templates = tmp_path / "t.csv"
    templates.write_text("EventId,EventTemplate\nE5,Receiving block [*] src: [*] dest: [*]\n")
    log = tmp_path / "hdfs.log"
    line = "{} 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_{} src: /10.0.0.1:1 dest: /10.0.0.2:2\n"
    log.write_text(line.format("081109 203518", 1) + line.format("691231 235959", 1) + line.format("700101 000001", 1)
                   + line.format("081109 203520", 1) + line.format("081109 203521", 2))
    got = run_ingest_raw(spark, cfg.replace(templates=str(templates), raw_logs=str(log), anomaly_labels=""))
    assert got["rejects_by_reason"] == {"timestamp_out_of_range": 2} and got["blocks"] == 2
    traces = {r.block_id: list(r.intervals) for r in read_table(spark, cfg.table_path(schemas.TRACES)).collect()}
    assert traces == {"blk_1": [0.0, 2.0], "blk_2": [0.0]}
    detail = read_table(spark, cfg.table_path(schemas.INGEST_REJECTS)).first().detail
    assert "2069-12-31" in detail or "2070-01-01" in detail

    tb = tmp_path / "tb.log"
    tb_line = "- {} 2005.11.09 tbird-admin1 Nov 9 12:01:{:02d} local@tbird-admin1 kernel: message {}\n"
    tb.write_text(tb_line.format(1131566461, 1, 1) + tb_line.format(9999999999, 2, 2) + tb_line.format(1131566470, 3, 3))
    got = run_ingest_raw(spark, cfg.replace(raw_logs=str(tb), log_format="thunderbird", templates_from="mine",
                                            tables_root=str(tmp_path / "tb"), anomaly_labels=""))
    assert got["rejects_by_reason"] == {"timestamp_out_of_range": 1} and got["accepted_lines"] == 2


@pytest.mark.parametrize("over, message", [
    ({"ingest_batch": "a..b"}, "ingest_batch='a..b' is out of range"),
    ({"h": 100_000}, "h=100000 is out of range: must be <= 1000"),
    ({"artifacts_root": "s3a://bucket/deeplog"}, "artifacts_root='s3a://bucket/deeplog'.*not a URL.*/dbfs"),
])
def test_names_and_sizes_are_checked_at_the_boundary(over, message):
    with pytest.raises(ConfigError, match=message):
        Config.load(overrides=over)


def test_a_plain_parquet_folder_is_not_taken_for_a_table(spark, cfg):
    spark.range(3).write.parquet(cfg.table_path(schemas.TRACES))
    with pytest.raises(InputError, match="not a Delta table"):
        run_ingest(spark, cfg)
    with pytest.raises(InputError, match="not a Delta table"):
        run_windows(spark, cfg)


def test_multi_node_runs_need_shared_storage_for_artifacts():
    cfg = Config.load(overrides={"local_mode": False, "artifacts_root": "/tmp/artifacts"})
    with pytest.raises(ConfigError, match="artifacts_root='/tmp/artifacts'.*mount every node sees.*shared_storage=true"):
        check_storage(cfg, "spark://10.0.0.5:7077")
    with pytest.raises(ConfigError, match="artifacts_root"):
        check_storage(cfg, "yarn")
    check_storage(cfg, "local[4]")  # one machine: fine
    check_storage(cfg, "local-cluster[2,1,1024]")
    check_storage(cfg.replace(shared_storage=True), "spark://10.0.0.5:7077")  # an NFS or /dbfs mount, declared
    check_storage(cfg.replace(local_mode=True), "spark://10.0.0.5:7077")  # ranks on the driver


def _run(args, tmp_path, env_extra=None):
    env = {**os.environ, "DEEPLOG_LOG_DIR": str(tmp_path / "logs"), **(env_extra or {})}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.extended
def test_unusual_failures_end_in_one_error_line_without_a_traceback(tmp_path):
    """Failures nobody listed: a truncated .gz, a templates path that is a folder, a table's data
    file overwritten with junk. Each: exit code != 0, one `error:` line naming the cause, no Python
    traceback on the terminal, the trace in the log file."""
    wh = tmp_path / "wh"
    base = [sys.executable, "jobs/run.py", "--tables_root", str(wh), "--artifacts_root", str(tmp_path / "art"),
            "--master", "local[1]"]
    truncated = tmp_path / "t.csv.gz"
    truncated.write_bytes((SAMPLE / "Event_traces.csv.gz").read_bytes()[:5000])
    cases = [(["--task", "ingest", "--event_traces", str(truncated)], "truncated"),
             (["--task", "ingest", "--templates", str(tmp_path)], "folder")]
    ok = _run(base + ["--task", "ingest"], tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    data = next(p for p in (wh / "traces").rglob("*.parquet"))
    data.write_bytes(b"junk" * 100)
    cases.append((["--task", "windows"], "damaged"))
    for args, word in cases:
        res = _run(base + args, tmp_path)
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.returncode != 0 and len(errors) == 1 and word in errors[0], (args, res.stderr[-3000:])
        assert "Traceback" not in res.stderr + res.stdout, (args, res.stderr[-3000:])
    assert "Traceback" in (tmp_path / "logs" / "deeplog.log").read_text()  # the full story is in the log


@pytest.mark.slow
@pytest.mark.extended
def test_under_spark_submit_the_error_line_is_on_stderr(tmp_path):
    res = _run(["./spark-submit.sh", "--task", "detect", "--model", "nosuch", "--artifacts_root", str(tmp_path)],
               tmp_path, {"SPARK_MASTER": "local[1]", "SPARK_LOCAL_IP": "127.0.0.1"})
    assert res.returncode == 2
    assert [line for line in res.stderr.splitlines() if line.startswith("error:")] == [
        f"error: no model run 'nosuch' under {tmp_path / 'runs'}"]
    assert "error:" not in res.stdout
