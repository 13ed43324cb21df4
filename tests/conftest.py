"""Shared fixtures: one local SparkSession with Delta for the whole run, fresh tables per test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deeplog_spark.core.config import Config

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
#: Real HDFS data beside the clone (CI has it); tests that need it skip when it is absent.
SHARED_HDFS = Path(os.environ.get("DEEPLOG_SHARED_HDFS", REPO.parent / "shared" / "data" / "hdfs"))


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from deeplog_spark.core.session import build_spark

    session = build_spark(
        "deeplog-tests",
        Config.load(),
        master="local[2]",
        extra_conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.databricks.delta.snapshotPartitions": "2",
            # the session catalog's schemas (test_readme registers its tables by name) stay out of the checkout
            "spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("spark-warehouse")),
        },
    )
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path) -> Config:
    """The default config with tables and artifacts under the test's own tmp_path."""
    return Config.load(overrides={
        "tables_root": str(tmp_path / "warehouse"),
        "artifacts_root": str(tmp_path / "artifacts"),
        "shuffle_partitions": 2,
        # MLflow logging is tested on the session's spark-submit run (test_tracking.py); the many
        # in-process trainings of the other tests skip its ~3 s per run
        "mlflow": False,
    })


@pytest.fixture
def shared_hdfs() -> Path:
    if not (SHARED_HDFS / "sample15k" / "Event_traces.csv.gz").is_file():
        pytest.skip(f"real HDFS data not found at {SHARED_HDFS} (../shared/data/hdfs beside the clone, "
                    "or set DEEPLOG_SHARED_HDFS); CI has it")
    return SHARED_HDFS


def submit(args: list[str], master: str = "local[2]", env_extra: dict | None = None,
           timeout: int = 900) -> subprocess.CompletedProcess:
    """``./spark-submit.sh ARGS`` as a user runs it (the test session's own gateway not inherited)."""
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    env.update({"SPARK_MASTER": master, "SPARK_LOCAL_IP": "127.0.0.1", **(env_extra or {})})
    return subprocess.run(["./spark-submit.sh", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def summary_of(stdout: str) -> dict:
    """The job's JSON summary: spark-submit merges the driver's logs into stdout; the summary is last."""
    return json.loads(stdout[stdout.rindex("\n{\n"):])


@pytest.fixture(scope="session")
def full_run(tmp_path_factory):
    """``--task full-pipeline`` through spark-submit (local[2], 3 epochs of 100 steps), shared by the session.

    Input: the embedded sample plus a file with one bad row (so every table has rows, rejects
    too). Returns (cfg, summary, driver output, root). The task CLI, documentation SQL, crash and
    cluster tests read its tables; a test that writes takes ``own_full_run``, a copy.
    """
    root = tmp_path_factory.mktemp("full_run")
    inputs = root / "traces"
    inputs.mkdir()
    shutil.copy(SAMPLE / "Event_traces.csv.gz", inputs / "part1.csv.gz")
    (inputs / "part2.csv").write_text('BlockId,Features\nblk_extra,"[E5,E77]"\n')
    over = {"tables_root": str(root / "wh"), "artifacts_root": str(root / "art"), "event_traces": str(inputs),
            "epochs": 3, "steps_per_epoch": 100}
    res = submit(["--task", "full-pipeline", *[x for k, v in over.items() for x in (f"--{k}", str(v))]])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cfg = Config.load(overrides={**over, "shuffle_partitions": 2})
    return cfg, summary_of(res.stdout), res.stdout + res.stderr, root


@pytest.fixture
def own_full_run(full_run, tmp_path):
    """``full_run`` with its tables and model runs copied under the test's own tmp_path: for tests
    that write (new detections, new model versions), so the shared run stays as the job left it."""
    cfg, summary, out, root = full_run
    shutil.copytree(cfg.tables_root, tmp_path / "wh")
    shutil.copytree(cfg.artifacts_root, tmp_path / "art")
    own = cfg.replace(tables_root=str(tmp_path / "wh"), artifacts_root=str(tmp_path / "art"))
    return own, summary, out, root


def copy_tables(src: Config, dst: Config, *names: str) -> None:
    """Copy Delta tables (their files and log) from one tables_root to another."""
    for name in names:
        shutil.copytree(src.table_path(name), dst.table_path(name))

