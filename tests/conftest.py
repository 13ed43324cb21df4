"""Shared fixtures: one local SparkSession with Delta for the whole run, fresh tables per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deeplog_spark.config import Config

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
#: Real HDFS data beside the clone (CI has it); tests that need it skip when it is absent.
SHARED_HDFS = Path(os.environ.get("DEEPLOG_SHARED_HDFS", REPO.parent / "shared" / "data" / "hdfs"))


@pytest.fixture(scope="session")
def spark():
    from deeplog_spark.session import build_spark

    session = build_spark(
        "deeplog-tests",
        Config.load(),
        master="local[2]",
        extra_conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.databricks.delta.snapshotPartitions": "2",
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
    })


@pytest.fixture
def shared_hdfs() -> Path:
    if not (SHARED_HDFS / "sample15k" / "Event_traces.csv.gz").is_file():
        pytest.skip(f"real HDFS data not found at {SHARED_HDFS} (../shared/data/hdfs beside the clone, "
                    "or set DEEPLOG_SHARED_HDFS); CI has it")
    return SHARED_HDFS
