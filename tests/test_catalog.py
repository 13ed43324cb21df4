"""Catalog tables, as a SQL user and a BI tool see them: jobs run with ``--catalog_schema deeplog``
on a real Hive metastore (embedded Derby, both ship with pyspark) register and write their tables by
name; a second process sees the same tables and their history and runs the documentation's SQL by name;
Spark's Thrift JDBC server on that metastore answers beeline with the rows the Delta tables hold.

Embedded Derby admits one JVM at a time, so the processes run one after another. Runs with
``make test-extended`` (several JVMs, a server).
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from conftest import REPO, submit, summary_of
from test_readme import SQL_BLOCKS

pytestmark = [pytest.mark.slow, pytest.mark.extended]

TABLES = ("traces", "templates", "ingest_rejects", "predictions", "verdicts", "metrics", "count_patterns")

SECOND_PROCESS = r"""
import json, sys
from deeplog_spark.core.config import Config
from deeplog_spark.core.session import build_spark
cfg = Config.load(overrides=json.loads(sys.argv[1]))
spark = build_spark("catalog-reader", cfg, master="local[1]", extra_conf={"spark.ui.enabled": "false"})
out = {"tables": sorted(r.tableName for r in spark.sql("SHOW TABLES IN deeplog").collect()),
       "verdicts": spark.sql("SELECT count(*) n, sum(CAST(anomalous AS INT)) a FROM deeplog.verdicts").first().asDict(),
       "history": [r.operation for r in spark.sql("DESCRIBE HISTORY deeplog.verdicts").collect()],
       "location": spark.sql("DESCRIBE DETAIL deeplog.verdicts").first()["location"],
       "readme": [len(spark.sql("\n".join(l for l in q.splitlines() if not l.strip().startswith("--"))).collect())
                  for q in json.loads(sys.argv[2])]}
spark.stop()
print("RESULT " + json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_catalog_tables_in_a_second_process_and_over_jdbc(spark, own_full_run, tmp_path):
    cfg = own_full_run[0]
    meta = tmp_path / "meta"
    over = {"tables_root": cfg.tables_root, "artifacts_root": cfg.artifacts_root, "catalog_schema": "deeplog",
            "metastore_dir": str(meta)}
    flags = [x for k, v in over.items() for x in (f"--{k}", v)]
    # windows (the documentation queries it), then jobs that write by name; register names the rest (ingest_rejects)
    for task in ("windows", "detect", "eval", "register"):
        res = submit(["--task", task, *flags])
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert {f"deeplog.{t}" for t in TABLES} <= set(summary_of(res.stdout)["registered"])
    assert (meta / "metastore_db").is_dir()

    reader = subprocess.run([sys.executable, "-c", SECOND_PROCESS, json.dumps(over), json.dumps(SQL_BLOCKS)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"})
    assert reader.returncode == 0, reader.stderr[-3000:]
    seen = json.loads(reader.stdout.split("RESULT ", 1)[1])
    assert set(TABLES) <= set(seen["tables"])
    vpath = cfg.table_path("verdicts")
    stored = spark.read.format("delta").load(vpath)
    assert seen["verdicts"] == {"n": stored.count(), "a": stored.where(F.col("anomalous")).count()}
    assert seen["location"].removeprefix("file:").rstrip("/") == vpath  # an external table at tables_root
    history = spark.sql(f"DESCRIBE HISTORY delta.`{vpath}`").collect()
    assert len(seen["history"]) == len(history) >= 2  # the job's write by name is a new version of the same table
    assert all(n > 0 for n in seen["readme"]), seen["readme"]

    port = str(_free_port())
    env = {**os.environ, "METASTORE_DIR": str(meta), "PORT": port, "PYTHON": sys.executable}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    started = subprocess.run([str(REPO / "scripts" / "thriftserver.sh"), "start"], env=env, capture_output=True,
                             text=True, timeout=400)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        assert started.stdout.strip() == f"jdbc:hive2://127.0.0.1:{port}"
        query = "; ".join(JDBC_QUERIES.values())
        got = subprocess.run([str(REPO / "scripts" / "thriftserver.sh"), "beeline", "-e", query], env=env,
                             capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr[-3000:]
    finally:
        subprocess.run([str(REPO / "scripts" / "thriftserver.sh"), "stop"], env=env, timeout=120, check=True)
    assert not (meta / "thriftserver" / "thriftserver.pid").exists()
    with socket.socket() as s:  # stopped: the port is free again
        s.bind(("127.0.0.1", int(port)))

    out = {header: _section(got.stdout, header) for header in JDBC_QUERIES}
    rows = out["block_id,anomalous,count_score"]
    want = stored.select("block_id", "anomalous", "count_score").orderBy("block_id").collect()
    assert len(rows) == len(want) > 0
    assert [(r["block_id"], r["anomalous"] == "true") for r in rows] == [(w.block_id, w.anomalous) for w in want]
    metrics = out["detector,split,f1"]
    stored_m = spark.read.format("delta").load(cfg.table_path("metrics")).where("split = 'test'")
    assert len(metrics) == stored_m.count() > 0
    assert {m["detector"] for m in metrics} == {r.detector for r in stored_m.select("detector").collect()}
    # the analysts' queries: what is anomalous now, and the detections an alert watches
    latest = [r["latest_block"] for r in out["latest_block"]]
    assert latest == sorted(w.block_id for w in want if w.anomalous) and latest
    runs = spark.read.format("delta").load(cfg.table_path("detection_runs")).orderBy("detected_at").collect()
    assert [(r["detection_id"], int(r["anomalies"])) for r in out["detection_id,anomalies,new_anomalies"]] == \
        [(r.detection_id, r.anomalies) for r in runs] and runs


#: The queries beeline runs over JDBC, by the header of their result.
JDBC_QUERIES = {
    "block_id,anomalous,count_score": "SELECT block_id, anomalous, count_score FROM deeplog.verdicts ORDER BY block_id",
    "detector,split,f1": "SELECT detector, split, f1 FROM deeplog.metrics WHERE split = 'test' ORDER BY detector",
    "latest_block": "SELECT block_id AS latest_block FROM deeplog.latest_verdicts WHERE anomalous ORDER BY latest_block",
    "detection_id,anomalies,new_anomalies": "SELECT detection_id, anomalies, new_anomalies FROM deeplog.detection_runs "
                                            "ORDER BY detected_at",
}


def _section(stdout: str, header: str) -> list[dict]:
    """The CSV rows beeline printed under ``header``, up to the next query's header."""
    lines = [line.rstrip("\r") for line in stdout.split("\n")]
    start = next((i for i, line in enumerate(lines) if line.endswith(header)), None)
    assert start is not None, f"no result headed {header!r} in beeline's output:\n{stdout[:3000]}"
    end = next((i for i in range(start + 1, len(lines)) if any(lines[i].endswith(h) for h in JDBC_QUERIES)
                or not lines[i].strip()), len(lines))
    return list(csv.DictReader(io.StringIO("\n".join([header, *lines[start + 1:end]]))))
