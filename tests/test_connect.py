"""Spark Connect (Databricks serverless and shared clusters): detect with an existing model,
evaluate, register the tables and run the documentation's SQL, all through a Spark Connect session,
whose client has no SparkContext, RDDs or broadcasts. The session is handed to the jobs, which
leave it running. The verdicts equal those of the classic session on the same model.

The Connect client runs in a subprocess: ``SparkSession.builder.remote("local[2]")`` starts a
local Spark Connect server (its jars ship with pyspark), which cannot share a JVM with the test
session. Runs with ``make test-extended``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from test_readme import SQL_BLOCKS

pytestmark = [pytest.mark.slow, pytest.mark.extended]

COLUMNS = ("block_id", "split", "label", "anomalous", "detectors", "reason", "deeplog_anomalous", "count_anomalous",
           "n_windows", "max_key_rank", "first_anomalous_position", "first_anomaly_next_event")

CLIENT = r"""
import json, sys
from pyspark.sql import SparkSession
from deeplog_spark import tasks
from deeplog_spark.cli import run_job
from deeplog_spark.core.session import DELTA_CONF, delta_package
from deeplog_spark.core.tables import is_connect

flags, sql_blocks = json.loads(sys.argv[1]), json.loads(sys.argv[2])
builder = SparkSession.builder.remote("local[2]").config("spark.jars.packages", delta_package())
for k, v in {**DELTA_CONF, "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"}.items():
    builder = builder.config(k, v)
spark = builder.getOrCreate()
assert is_connect(spark), type(spark)
codes = [run_job("deeplog", tasks.description(), tasks.run, argv=["--task", t, *flags], options=tasks.OPTIONS,
                 spark=spark) for t in ("detect", "eval", "register")]
fresh = ["--tables_root", sys.argv[3] + "/fresh/wh", "--artifacts_root", sys.argv[3] + "/fresh/art", "--mlflow", "false"]
codes += [run_job("deeplog", tasks.description(), tasks.run, argv=["--task", t, *fresh], options=tasks.OPTIONS,
                  spark=spark) for t in ("ingest", "key")]
rows = [len(spark.sql("\n".join(l for l in q.splitlines() if not l.strip().startswith("--"))).collect())
        for q in sql_blocks if "deeplog.windows" not in q]
alive = spark.range(3).count()  # the jobs left the handed-in session running
spark.stop()
print("RESULT " + json.dumps({"codes": codes, "readme": rows, "alive": alive}))
"""


def _verdicts(spark, path):
    return sorted(tuple(r) for r in spark.read.format("delta").load(path).select(*COLUMNS).collect())


def test_ingest_detect_and_evaluate_over_spark_connect_and_training_refused(spark, own_full_run, tmp_path):
    cfg = own_full_run[0]
    vpath, mpath = cfg.table_path("verdicts"), cfg.table_path("metrics")
    before = _verdicts(spark, vpath)
    metrics_version = spark.sql(f"DESCRIBE HISTORY delta.`{mpath}` LIMIT 1").first()["version"]
    flags = ["--tables_root", cfg.tables_root, "--artifacts_root", cfg.artifacts_root, "--catalog_schema", "deeplog"]
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    env.update(PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    res = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(flags), json.dumps(SQL_BLOCKS), str(tmp_path)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=900)
    assert "RESULT " in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    got = json.loads(res.stdout.split("RESULT ", 1)[1])
    # detect, eval, register, then an ingest of the embedded sample into fresh tables; training is refused
    assert got["codes"] == [0, 0, 0, 0, 2], res.stderr[-3000:]
    assert "training needs a classic Spark session" in res.stderr
    assert spark.read.format("delta").load(str(tmp_path / "fresh" / "wh" / "traces")).count() == 3000
    assert got["alive"] == 3
    assert got["readme"] and all(n > 0 for n in got["readme"]), got["readme"]
    assert spark.sql(f"DESCRIBE HISTORY delta.`{vpath}` LIMIT 1").first()["operation"] == "WRITE"
    assert _verdicts(spark, vpath) == before  # the same verdicts as the classic session's detect
    assert spark.sql(f"DESCRIBE HISTORY delta.`{mpath}` LIMIT 1").first()["version"] > metrics_version
