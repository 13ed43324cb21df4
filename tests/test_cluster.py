"""Real multi-JVM clusters: ``local-cluster[2,1,1024]`` and a standalone master + worker.

The main pipeline runs through ``spark-submit.sh`` on a local-cluster master: every task in one
of two executor JVMs, training as TorchDistributor barrier tasks on the executors
(``local_mode=false``, two ranks). Its tables must be those of the session's local[2] run
(``full_run``, same input). These start several JVMs on two cores (~5 minutes), so they run
with ``make test-extended``, which CI runs after ``make test``.
"""

import os
import socket
import subprocess

import pytest
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.runs import read_json
from deeplog_spark.core.config import Config
from deeplog_spark.detect.verdicts import run_detect
from deeplog_spark.core.tables import read_table

from conftest import REPO, copy_tables, submit, summary_of

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # several JVMs at once: `make test-extended`

#: Columns that record when a row was written (and so which detection wrote it), not what it says.
WHEN = ("ingested_at", "evaluated_at", "detected_at", "detection_id", "seconds")


def _same(spark, a: str, b: str, where=None) -> None:
    x, y = read_table(spark, a), read_table(spark, b)
    if where is not None:
        x, y = x.where(where), y.where(where)
    cols = [c for c in x.columns if c not in WHEN]
    assert sorted(cols) == sorted(c for c in y.columns if c not in WHEN)
    x, y = x.select(cols), y.select(cols)

    def digest(df):  # row count and an order-free sum of row hashes: one job per table
        return tuple(df.agg(F.count(F.lit(1)), F.sum(F.xxhash64(*cols).cast("decimal(38,0)"))).first())

    dx = digest(x)
    assert dx[0] > 0, a
    if dx != digest(y):
        pytest.fail(f"{a}: {x.exceptAll(y).limit(3).collect()} / {y.exceptAll(x).limit(3).collect()}")


def test_pipeline_on_local_cluster_matches_local_and_trains_on_executors(spark, cfg, full_run, tmp_path):
    local, _, _, _ = full_run
    wh, art = str(tmp_path / "wh"), str(tmp_path / "art")
    res = submit(["--task", "full-pipeline", "--tables_root", wh, "--artifacts_root", art, "--epochs", "1",
                  "--event_traces", local.event_traces, "--local_mode", "false", "--num_processes", "2",
                  "--shuffle_partitions", "4"],
                 "local-cluster[2,1,1024]")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = summary_of(res.stdout)
    cluster = Config.load(overrides={"tables_root": wh, "artifacts_root": art})

    # the same input gives the same tables as the local[2] run (the main job writes no windows table)
    for t in (schemas.TRACES, schemas.TEMPLATES, schemas.INGEST_REJECTS):
        _same(spark, local.table_path(t), cluster.table_path(t))

    # training ran as two ranks on the executors, which ended with the same weights
    run = summary["train"]["run_id"]
    for task in summary["train"]["tasks"]:  # (the embedded sample has no intervals: key alone)
        hist = read_json(os.path.join(art, "runs", run, f"{task}_history.json"))
        assert hist["world_size"] == 2 and len(set(hist["rank_digests"])) == 1, task

    # detection with that model on local[2] gives the predictions and verdicts the cluster wrote
    mine = cfg.replace(artifacts_root=art)
    copy_tables(local, mine, schemas.TRACES, schemas.TEMPLATES)
    copy_tables(cluster, mine, schemas.COUNT_PATTERNS)
    run_detect(spark, mine, run)
    rows = (F.col("run_id") == run) & (F.col("g") == cluster.top_g) & (F.col("k") == cluster.k_sigma)
    for t in (schemas.PREDICTIONS, schemas.VERDICTS):
        _same(spark, mine.table_path(t), cluster.table_path(t), rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_standalone_master_and_worker_on_127_0_0_1(spark, full_run, tmp_path):
    state = tmp_path / "standalone"
    env = {**os.environ, "PORT": str(_free_port()), "STATE_DIR": str(state), "WORKER_CORES": "2",
           "WORKER_MEMORY": "2g"}
    script = str(REPO / "scripts" / "standalone.sh")
    start = subprocess.run([script, "start"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stderr + (state / "master.log").read_text()[-2000:]
        master = start.stdout.strip().splitlines()[-1]
        assert master == f"spark://127.0.0.1:{env['PORT']}"
        wh = str(tmp_path / "wh")
        res = submit(["--task", "ingest", "--tables_root", wh, "--artifacts_root", str(tmp_path / "art"),
                      "--event_traces", full_run[0].event_traces], master, {"SPARK_DRIVER_MEMORY": "1g"})
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert f"master={master}" in res.stdout + res.stderr
        standalone = Config.load(overrides={"tables_root": wh})
        for t in (schemas.TRACES, schemas.TEMPLATES, schemas.INGEST_REJECTS):  # what local-cluster wrote
            _same(spark, full_run[0].table_path(t), standalone.table_path(t))
        assert any((state / "work").iterdir())  # the executor ran in the worker, not in the driver
    finally:
        stop = subprocess.run([script, "stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
    for p in ("master", "worker"):
        assert not (state / f"{p}.pid").exists()
