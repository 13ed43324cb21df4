"""Scheduled and streaming scoring of a continuous log: the session rule across batches, the
stream task, and the generator's raw logs (docs/scheduled-scoring.md).

The log is a small generated (SYNTHETIC) raw HDFS log: 120 resampled real sessions over a day and a
half, one file per hour. ``session_timeout`` is set above the longest gap inside a session of it (so
sessions close mid-stream, and none is cut) and the model is ``full_run``'s.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from deeplog_spark import tasks
from deeplog_spark.core import schemas
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.tables import read_table
from deeplog_spark.detect.verdicts import run_detect
from deeplog_spark.ingest.generate import generate, run_generate
from deeplog_spark.ingest.runner import ingest_lines, run_ingest_raw
from deeplog_spark.ingest.traces import ingest, read_anomaly_labels, read_event_traces, read_templates
from deeplog_spark.streaming import run_stream
from tests.conftest import REPO, SAMPLE

BLOCKS, DAYS = 120, 1.5
#: The verdict columns two scorings of the same sessions must agree on.
SAME = ("block_id", "split", "label", "session_start", "session_end", "anomalous", "detectors", "reason",
        "deeplog_anomalous", "n_windows", "max_key_rank", "max_key_score", "count_score", "max_value_error",
        "first_anomalous_position")


@pytest.fixture(scope="module")
def raw_log(spark, full_run, tmp_path_factory):
    """(cfg for the generated log and full_run's model copied, the hourly files in time order, the
    generated sessions as (block_id, events, intervals) rows)."""
    run_cfg = full_run[0]
    root = tmp_path_factory.mktemp("stream")
    shutil.copytree(run_cfg.artifacts_root, root / "art")
    cfg = run_cfg.replace(
        gen_format="raw", gen_blocks=BLOCKS, gen_days=DAYS, gen_timing_share=0.0, gen_out=str(root / "gen"),
        event_traces=str(SAMPLE / "Event_traces.csv.gz"), anomaly_labels=str(SAMPLE / "anomaly_label.csv.gz"),
        templates=str(SAMPLE / "HDFS.log_templates.csv"), raw_logs=str(SAMPLE / "HDFS_2k.log.gz"),
        artifacts_root=str(root / "art"), tables_root=str(root / "unused"), mlflow=False)
    run_generate(spark, cfg)
    templates = read_templates(spark, cfg.templates)
    real = ingest(read_event_traces(spark, cfg.event_traces), templates,
                  read_anomaly_labels(spark, cfg.anomaly_labels), None).traces
    sessions = {r.block_id: (list(r.events), list(r.intervals))
                for r in generate(spark, real, BLOCKS, cfg.gen_anomaly_ratio, 0.0, cfg.seed).collect()}
    longest_gap = max(max(iv) for _, iv in sessions.values())
    files = sorted((root / "gen" / "raw").glob("*.log"))
    cfg = cfg.replace(anomaly_labels=str(root / "gen" / "anomaly_label.csv"), session_timeout=longest_gap + 1.0)
    return cfg, files, sessions


def _verdicts(spark, cfg):
    return sorted(tuple(r) for r in read_table(spark, cfg.table_path(schemas.VERDICTS)).select(*SAME).collect())


@pytest.fixture(scope="module")
def one_shot_ingest(spark, raw_log, tmp_path_factory):
    """The whole log ingested at once (a batch without --append closes every session)."""
    cfg, files, _ = raw_log
    cfg = cfg.replace(tables_root=str(tmp_path_factory.mktemp("one") / "wh"), raw_logs=str(files[0].parent))
    return cfg, run_ingest_raw(spark, cfg)


@pytest.fixture(scope="module")
def one_shot(spark, one_shot_ingest):
    """... and scored: (cfg, the ingest's counts, the verdicts)."""
    cfg, out = one_shot_ingest
    run_detect(spark, cfg)
    return cfg, out, _verdicts(spark, cfg)


# the tests over the generated log need full_run's model and a generated log (~1.5 min before the first):
# they run in the extended suite; the rule itself is tested on hand-made rows in make test
@pytest.mark.extended
def test_generated_raw_log_is_time_ordered_and_parses_back_to_its_sessions(spark, raw_log, one_shot_ingest):
    cfg, files, sessions = raw_log
    assert len(files) > 24  # a file per hour over a day and a half
    last = ""
    for f in files:
        stamps = [line[:13] for line in f.read_text().splitlines()]
        assert stamps == sorted(stamps) and stamps[0] >= last, f.name  # time order within and across files
        last = stamps[-1]
    one_cfg, out = one_shot_ingest
    assert out["rejected_lines"] == 0 and out["blocks"] == BLOCKS and out["sessions_open"] == 0
    traces = {r.block_id: (list(r.events), list(r.intervals))
              for r in read_table(spark, one_cfg.table_path(schemas.TRACES)).collect()}
    assert traces == sessions  # the events of every session, and its intervals to the second
    assert "SYNTHETIC" in (Path(cfg.gen_out) / "GENERATED.md").read_text()


def _land(files, landing: Path, start: float = 1_000_000.0) -> None:
    """Copy ``files`` into ``landing`` in this order, modification times increasing (the order the
    file source reads them in)."""
    landing.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        dst = landing / f.name
        shutil.copy(f, dst)
        os.utime(dst, (start + i, start + i))


def _random_cuts(files, out: Path, pieces: int, seed: int) -> list[Path]:
    """The log (the files in order, concatenated) cut at random line positions into ``pieces`` files."""
    lines = [line for f in files for line in f.read_text().splitlines()]
    cuts = sorted(random.Random(seed).sample(range(1, len(lines)), pieces - 1))
    out.mkdir(parents=True)
    paths = []
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(lines)])):
        p = out / f"cut-{i:03d}.log"
        p.write_text("\n".join(lines[a:b]) + "\n")
        paths.append(p)
    return paths


# a stream of 5 triggers and a flush, ~2 min; with the two below, the equivalence, late-input and
# exactly-once proofs of docs/scheduled-scoring.md (the session rule itself is tested in make test)
@pytest.mark.extended
def test_a_log_cut_anywhere_and_streamed_gives_the_verdicts_of_the_whole_log(spark, raw_log, one_shot, tmp_path):
    """Random cut positions (a session's lines split between files, a second split between files),
    one trigger per file, then a later run that flushes: the final verdicts are those of the whole
    log at once."""
    cfg, files, _ = raw_log
    _, _, whole = one_shot
    pieces = _random_cuts(files, tmp_path / "cuts", 5, seed=7)
    _land(pieces, tmp_path / "landing")
    scfg = cfg.replace(tables_root=str(tmp_path / "wh"), landing=str(tmp_path / "landing"), max_files_per_trigger=1)
    out = run_stream(spark, scfg)
    assert out["micro_batches"] == 5 and out["lines"] == sum(len(p.read_text().splitlines()) for p in pieces)
    closed_early = sum(b["sessions_closed"] for b in out["batches"])
    assert 0 < closed_early < BLOCKS  # sessions closed mid-stream; the others stay open
    # the queries of docs/scheduled-scoring.md, on these tables registered in the catalog
    spark.sql("DROP SCHEMA IF EXISTS stream_docs CASCADE")
    tasks.run(spark, scfg.replace(catalog_schema="stream_docs"), {"task": "register"})
    doc = (REPO / "docs" / "scheduled-scoring.md").read_text()
    queries = [q.strip() for b in re.findall(r"```sql stream\n(.*?)```", doc, re.DOTALL) for q in b.split(";") if q.strip()]
    assert len(queries) == 4
    for q in queries:
        sql = "\n".join(line for line in q.splitlines() if not line.strip().startswith("--"))
        assert spark.sql(sql.replace("deeplog.", "stream_docs.")).collect(), q
    spark.sql("DROP SCHEMA IF EXISTS stream_docs CASCADE")
    # the end of the backfill: a later run with nothing new closes the rest
    flushed = run_stream(spark, scfg.replace(flush=True))
    assert flushed["micro_batches"] == 0 and flushed["flush"]["sessions_closed"] == BLOCKS - closed_early
    assert _verdicts(spark, scfg) == whole
    traces = read_table(spark, scfg.table_path(schemas.TRACES))
    assert traces.count() == traces.select("block_id").distinct().count() == BLOCKS
    runs = read_table(spark, scfg.table_path(schemas.DETECTION_RUNS)).collect()
    assert sum(r.sessions for r in runs) == BLOCKS and len({r.ingest_batch for r in runs}) == len(runs)
    # verdicts carry the batch that closed the session and when it was detected
    v = read_table(spark, scfg.table_path(schemas.VERDICTS))
    assert v.where(F.col("detected_at").isNull() | (F.col("verdict_status") != "final")).count() == 0
    assert v.where(F.col("session_start").isNull() | (F.col("session_end") < F.col("session_start"))).count() == 0


@pytest.mark.extended  # two stream runs of 12 hourly files and two late files, ~2.5 min
def test_late_disordered_and_repeated_input(spark, raw_log, one_shot, tmp_path):
    """Lines out of order inside a file, two files delivered in swapped order: the same verdicts. A
    file under a new name holding lines of sessions already closed: each line rejected as
    session_closed, nothing re-scored. The same file name again: not read twice."""
    cfg, files, _ = raw_log
    _, _, whole = one_shot
    work = tmp_path / "files"
    work.mkdir()
    order = list(files)
    order[3], order[4] = order[4], order[3]  # an hour delivered after the next one
    disordered = []
    for f in order:
        lines = f.read_text().splitlines()
        if f is files[6]:  # newest second first; lines of the same second keep their order
            by_second: dict[str, list[str]] = {}
            for line in lines:
                by_second.setdefault(line[:13], []).append(line)
            lines = [x for s in sorted(by_second, reverse=True) for x in by_second[s]]
        p = work / f.name
        p.write_text("\n".join(lines) + "\n")
        disordered.append(p)
    landing = tmp_path / "landing"
    _land(disordered, landing)
    scfg = cfg.replace(tables_root=str(tmp_path / "wh"), landing=str(landing), max_files_per_trigger=12)
    first = run_stream(spark, scfg)
    assert first["lines"] == sum(len(p.read_text().splitlines()) for p in disordered)
    closed = {r.block_id for r in read_table(spark, scfg.table_path(schemas.TRACES)).collect()}
    assert 0 < len(closed) < BLOCKS
    # a copy of the first hour's lines of closed sessions, under a new name, after the watermark passed
    late = [line for line in files[0].read_text().splitlines() if line.split("blk_")[1].split()[0] and
            "blk_" + line.split("blk_")[1].split()[0].rstrip(".") in closed]
    assert late
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "late-copy.log").write_text("\n".join(late) + "\n")
    _land([tmp_path / "late" / "late-copy.log", disordered[0]], landing, start=1_000_100.0)  # + the same name again
    second = run_stream(spark, scfg.replace(flush=True))
    assert second["lines"] == len(late)  # the re-delivered name was not read again
    rejects = read_table(spark, scfg.table_path(schemas.INGEST_REJECTS)).where(F.col("reason") == "session_closed")
    assert rejects.count() == len(late)
    assert rejects.where(~F.col("detail").contains("closed in batch")).count() == 0
    assert _verdicts(spark, scfg) == whole


@pytest.mark.extended  # two batches of 14 hourly files and a re-run, ~40 s
def test_rerunning_an_older_batch_is_refused_and_the_newest_is_replaced(spark, raw_log, tmp_path):
    """The batch path: ingest-raw --append of two batches; the newest again gives the same tables
    (it starts from the state it started from); the older one is refused, so no batch's events are
    lost (issue 40, case 7, under the session rule)."""
    cfg, files, _ = raw_log
    bcfg = cfg.replace(tables_root=str(tmp_path / "wh"), append=True)
    spark_lines = lambda fs, batch: ingest_lines(
        spark, bcfg.replace(ingest_batch=batch), spark.read.text([str(f) for f in fs]).select(
            F.col("value").alias("line"), F.col("_metadata.file_path").alias("source_file"),
            F.monotonically_increasing_id().alias("line_order")), batch)
    a = spark_lines(files[:14], "a")
    b = spark_lines(files[14:28], "b")
    state = lambda: sorted(tuple(r) for r in read_table(spark, bcfg.table_path(schemas.OPEN_SESSIONS)).collect())
    traces = lambda: sorted((r.block_id, tuple(r.events), r.ingest_batch) for r in
                            read_table(spark, bcfg.table_path(schemas.TRACES)).collect())
    before = (state(), traces())
    again = spark_lines(files[14:28], "b")
    assert (state(), traces()) == before
    assert again["sessions_closed"] == b["sessions_closed"] and a["sessions_open"] > 0
    with pytest.raises(InputError, match="was followed by b"):
        spark_lines(files[:14], "a")
    assert (state(), traces()) == before


@pytest.mark.extended  # two spark-submit JVMs, one killed mid-trigger, ~3 min
def test_a_stream_killed_mid_trigger_and_rerun_writes_everything_once(spark, raw_log, one_shot, tmp_path):
    cfg, files, _ = raw_log
    _, _, whole = one_shot
    pieces = _random_cuts(files, tmp_path / "cuts", 4, seed=11)
    landing, wh = tmp_path / "landing", tmp_path / "wh"
    _land(pieces, landing)
    args = ["--task", "stream", "--landing", str(landing), "--tables_root", str(wh), "--artifacts_root",
            cfg.artifacts_root, "--anomaly_labels", cfg.anomaly_labels, "--session_timeout", str(cfg.session_timeout),
            "--max_files_per_trigger", "1", "--mlflow", "false"]
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    env.update(SPARK_MASTER="local[2]", SPARK_LOCAL_IP="127.0.0.1")
    proc = subprocess.Popen(["./spark-submit.sh", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    offsets, commits = wh / "_checkpoints" / "stream" / "offsets", wh / "_checkpoints" / "stream" / "commits"
    deadline = time.time() + 400
    while time.time() < deadline and not (offsets / "2").exists():  # the third trigger has started
        time.sleep(0.2)
    assert (offsets / "2").exists() and not (commits / "2").exists(), "the stream did not reach its third trigger"
    time.sleep(4)  # inside it: its writes are under way
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (commits / "2").exists()
    res = subprocess.run(["./spark-submit.sh", *args, "--flush", "true"], check=False, cwd=REPO, env=env,
                         capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    scfg = cfg.replace(tables_root=str(wh))
    assert _verdicts(spark, scfg) == whole  # nothing missing, nothing twice
    traces = read_table(spark, scfg.table_path(schemas.TRACES))
    assert traces.count() == traces.select("block_id").distinct().count() == BLOCKS
    runs = read_table(spark, scfg.table_path(schemas.DETECTION_RUNS))
    assert runs.count() == runs.select("ingest_batch").distinct().count()
    assert runs.agg(F.sum("sessions")).first()[0] == BLOCKS
    state = read_table(spark, scfg.table_path(schemas.SESSION_STATE))
    assert state.count() == state.select("seq").distinct().count() == 5  # 4 triggers and the flush


def test_the_session_rule_on_hand_made_rows(spark):
    """Open sessions extend; the watermark closes the quiet ones; a closed session's event is late."""
    from deeplog_spark.ingest import session_rule

    cols = "block_id string, t double, f string, o long, e int, lab int"
    open_rows = spark.createDataFrame([("a", 100.0, "f1", 1, 5, None), ("b", 900.0, "f1", 2, 5, None)], cols)
    new = spark.createDataFrame([("b", 950.0, "f2", 1, 22, None), ("c", 990.0, "f2", 2, 5, None),
                                 ("x", 960.0, "f2", 3, 9, None)], cols)
    closed = spark.createDataFrame([("x", "day0")], "block_id string, ingest_batch string")
    st = session_rule.step(open_rows, new, closed, watermark=990.0 - 500.0, flush=False)
    assert sorted((r.block_id, r.t) for r in st.closed.collect()) == [("a", 100.0)]  # quiet since before 490
    assert sorted((r.block_id, r.t) for r in st.open.collect()) == [("b", 900.0), ("b", 950.0), ("c", 990.0)]
    assert [(r.block_id, r.closed_in) for r in st.late.collect()] == [("x", "day0")]
    flushed = session_rule.step(open_rows, new, closed, watermark=None, flush=True)
    assert flushed.open.count() == 0 and flushed.closed.count() == 4
    waiting = session_rule.step(open_rows, new, closed, watermark=None, flush=False)  # no time yet: nothing closes
    assert waiting.closed.count() == 0 and waiting.open.count() == 4
    rejects = session_rule.late_rejects(st.late, "day1", None, 500.0).collect()
    assert [(r.reason, r.block_id, r.ingest_batch) for r in rejects] == [("session_closed", "x", "day1")]
    assert "closed in batch day0" in rejects[0].detail


@pytest.mark.extended  # Spark jobs of 10-60 s: `make test-extended`, so that `make test` stays under 15 minutes
def test_open_sessions_changed_in_place_equal_a_rewrite(spark, cfg, monkeypatch):
    """Four batches (the second and third close a session, the fourth none): the open state changed
    in place (one commit a batch: closing sessions' rows out, the batch's open rows in) is the
    state rewritten whole, with the same counts; a batch's commit is found by its note."""
    from deeplog_spark.ingest import runner

    cols = "block_id string, t double, f string, o long, e int, lab int"
    batches = [("d1", [("a", 100.0, "f1", 1, 5, None), ("b", 150.0, "f1", 2, 5, None), ("c", 160.0, "f1", 3, 5, None)]),
               ("d2", [("b", 700.0, "f2", 1, 22, None), ("d", 720.0, "f2", 2, 5, None)]),  # a closes (quiet since 100)
               ("d3", [("d", 800.0, "f3", 1, 11, None), ("e", 810.0, "f3", 2, 5, None)]),  # c closes
               ("d4", [("e", 820.0, "f4", 1, 22, None)])]  # none closes
    results = {}
    for mode, limit in (("in place", runner.MAX_CLOSING_IDS), ("rewrite", -1)):
        monkeypatch.setattr(runner, "MAX_CLOSING_IDS", limit)
        bcfg = cfg.replace(tables_root=f"{cfg.tables_root}/{mode.replace(' ', '_')}", append=True,
                           session_timeout=600.0)
        counts = []
        for batch, rows in batches:
            closed, _, commit = runner.apply_session_rule(spark, bcfg, spark.createDataFrame(rows, cols), batch,
                                                          dt.datetime(2026, 1, 1), len(rows))
            counts.append((sorted({r.block_id for r in closed.collect()}), commit()))
        table = read_table(spark, bcfg.table_path(schemas.OPEN_SESSIONS))
        history = spark.sql(f"DESCRIBE HISTORY delta.`{bcfg.table_path(schemas.OPEN_SESSIONS)}`").collect()
        results[mode] = (counts, sorted(tuple(r) for r in table.collect()))
        assert {r.userMetadata for r in history} == {f"deeplog ingest_batch={b}" for b, _ in batches}
        ops = [r.operationParameters.get("predicate") for r in sorted(history, key=lambda r: r.version)]
        assert ops == ([None] * 4 if mode == "rewrite" else [None, "block_id IN ('a')", "block_id IN ('c')", "false"])
    assert results["in place"] == results["rewrite"]
    counts, table = results["in place"]
    assert [c[0] for c in counts] == [[], ["a"], ["c"], []]
    assert [(c[1]["sessions_open"], c[1]["events_open"]) for c in counts] == [(3, 3), (3, 4), (3, 5), (3, 6)]
    assert sorted((r[0], r[1], r[6]) for r in table) == [("b", 150.0, "d1"), ("b", 700.0, "d2"), ("d", 720.0, "d2"),
                                                          ("d", 800.0, "d3"), ("e", 810.0, "d3"), ("e", 820.0, "d4")]


def test_a_missing_landing_folder_is_a_clear_error(spark, cfg, tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        run_stream(spark, cfg.replace(landing=str(tmp_path / "nope")))
    with pytest.raises(InputError, match="needs --landing"):
        run_stream(spark, cfg)
