"""Crash safety: jobs killed with SIGKILL mid-write or mid-training, then run again.

The job runs as its own process group (``python jobs/run.py``, its JVM and its training
processes), which the test kills at a chosen moment, as a node failure or an OOM killer would.
"""

import csv
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from deeplog_spark.core import schemas
from deeplog_spark.core.runs import read_json
from deeplog_spark.ingest.runner import run_ingest
from deeplog_spark.core.tables import read_table, table_version
from deeplog_spark.train.runner import run_train

from conftest import REPO, SAMPLE, copy_tables

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # jobs/run.py JVMs, killed: `make test-extended`


def _start(args: list[str], log_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "jobs/run.py", *args, "--master", "local[2]"], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, log_path: Path, timeout_s: float = 300) -> None:
    """SIGKILL the job's whole process group as soon as ``ready()`` holds."""
    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the job ended (rc {proc.returncode}) before the moment to kill it:\n"
                            + log_path.read_text()[-3000:])
            if time.monotonic() > deadline:
                pytest.fail("the moment to kill the job never came:\n" + log_path.read_text()[-3000:])
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def _bigger_sample(path: Path, copies: int) -> str:
    """The embedded sample's rows ``copies`` times, under new BlockIds (a longer write)."""
    with gzip.open(SAMPLE / "Event_traces.csv.gz", "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with gzip.open(path, "wt", newline="") as out:
        w = csv.DictWriter(out, fieldnames=list(rows[0]))
        w.writeheader()
        for c in range(copies):
            for r in rows:
                w.writerow({**r, "BlockId": f"{r['BlockId']}{c}"})
    return str(path)


def _parquet(table: str) -> set[str]:
    return {str(p) for p in Path(table).rglob("*.parquet") if "_delta_log" not in p.parts}


def test_ingest_killed_mid_write_keeps_the_previous_version_and_reruns(spark, cfg, full_run, tmp_path):
    copy_tables(full_run[0], cfg, schemas.TEMPLATES, schemas.TRACES, schemas.INGEST_REJECTS)  # version 0
    path = cfg.table_path(schemas.TRACES)
    assert table_version(spark, path) == 0
    before = sorted(read_table(spark, path).collect())
    files = _parquet(path)
    big = _bigger_sample(tmp_path / "big.csv.gz", copies=10)
    args = ["--task", "ingest", "--event_traces", big, "--anomaly_labels", "",
            "--tables_root", cfg.tables_root, "--artifacts_root", cfg.artifacts_root, "--shuffle_partitions", "2"]

    log_path = tmp_path / "ingest.log"
    proc = _start(args, log_path)
    _kill_when(proc, lambda: bool(_parquet(path) - files), log_path)  # its first data file is being written

    assert proc.returncode == -signal.SIGKILL
    assert _parquet(path) - files, "the killed run wrote no data file: the test killed it too early"
    assert table_version(spark, path) == 0  # the killed write never committed
    assert sorted(read_table(spark, path).collect()) == before  # readable and intact

    counts = run_ingest(spark, cfg.replace(event_traces=big, anomaly_labels=""))  # the next run completes
    assert counts["traces"] == 30_000 and counts["trace_rejects"] == 0
    assert table_version(spark, path) == 1 and read_table(spark, path).count() == 30_000  # orphan files unread


def test_training_killed_after_an_epoch_resumes_from_its_checkpoint(spark, cfg, full_run, tmp_path):
    copy_tables(full_run[0], cfg, schemas.TEMPLATES, schemas.TRACES)
    # small epochs (40 steps each) keep the test short
    small = {"epochs": 3, "patience": 3, "steps_per_epoch": 40}
    cfg = cfg.replace(**small)
    args = ["--task", "key", "--tables_root", cfg.tables_root, "--artifacts_root", cfg.artifacts_root,
            "--shuffle_partitions", "2", *[x for k, v in small.items() for x in (f"--{k}", str(v).lower())]]
    runs = Path(cfg.artifacts_root) / "runs"
    log_path = tmp_path / "train.log"
    proc = _start(args, log_path)
    _kill_when(proc, lambda: any(runs.glob("*/key_resume.pt")), log_path)  # an epoch has finished

    resume = next(runs.glob("*/key_resume.pt"))
    done = torch.load(resume, map_location="cpu", weights_only=True)["history"]
    assert 1 <= len(done) < 3, "killed after training ended: nothing to resume"
    assert not (resume.parent / "key_model.pt").exists()

    summary = run_train(spark, cfg, "key")  # same config and tables: the same run id, so it resumes
    assert Path(summary["run_dir"]) == resume.parent
    records = read_json(resume.parent / "key_history.json")["history"]
    assert summary["tasks"]["key"]["epochs"] == len(records) == 3
    assert records[:len(done)] == done  # the finished epochs were kept, not trained again
    assert not resume.exists()  # a finished run removes its resume state
