"""MLflow: the session's spark-submit run (mlflow = true, the default) is an MLflow run with the
resolved config, every epoch's metrics, the run folder and the evaluation; its pyfunc model scores
sessions without Spark exactly as the Spark detect did; ``--model`` takes MLflow URIs.

The tracking-server test (``extended``) starts ``mlflow server`` on 127.0.0.1 with a sqlite
backend, trains against it with the detector registered, and scores with ``models:/NAME/1``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from conftest import submit, summary_of
from deeplog_spark.core.runs import read_json, run_dir

pytestmark = pytest.mark.slow  # reads the session's spark-submit run


def _store(cfg):
    import mlflow

    from deeplog_spark.integrations.tracking import _client

    return _client(cfg.artifacts_root), mlflow.MlflowClient()


def test_training_and_evaluation_are_one_mlflow_run(full_run):
    cfg, summary, _, _ = full_run
    run_id = summary["train"]["run_id"] if "train" in summary else summary["run_id"]
    ids = read_json(run_dir(cfg.artifacts_root, run_id) / "mlflow.json")
    assert ids["tracking_uri"] == f"sqlite:///{os.path.abspath(cfg.artifacts_root)}/mlflow.db"
    _, client = _store(cfg)
    run = client.get_run(ids["mlflow_run_id"])
    assert run.data.tags["deeplog.run_id"] == run_id
    assert run.data.params["h"] == "10" and run.data.params["epochs"] == "3" and run.data.params["top_g"] == "9"
    history = client.get_metric_history(run.info.run_id, "key_val_loss")
    assert [m.step for m in history] == [1, 2, 3]
    key_hist = read_json(run_dir(cfg.artifacts_root, run_id) / "key_history.json")["history"]
    assert [m.value for m in history] == pytest.approx([e["val_loss"] for e in key_hist])
    assert "test_fused_val_chosen_f1" in run.data.metrics  # evaluation logged to the same run
    files = {f.path for f in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/key_model.pt", "run/calibration.json", "run/count_model.json", "run/key_loss_curve.png"} <= files
    assert any(f.path.endswith("roc_curve.png") for f in client.list_artifacts(run.info.run_id, "eval"))


def test_pyfunc_model_scores_as_spark_detect(spark, full_run):
    import mlflow

    cfg, summary, _, _ = full_run
    run_id = next(r for r in [summary.get("run_id"), summary.get("train", {}).get("run_id")] if r)
    ids = read_json(run_dir(cfg.artifacts_root, run_id) / "mlflow.json")
    _store(cfg)
    model = mlflow.pyfunc.load_model(ids["model_uri"])
    assert [c.name for c in model.metadata.get_input_schema().inputs] == ["events"]
    verdicts = (spark.read.format("delta").load(cfg.table_path("verdicts")).where(F.col("run_id") == run_id)
                .join(spark.read.format("delta").load(cfg.table_path("traces")).select("block_id", "events"), "block_id")
                .orderBy(F.col("deeplog_anomalous").desc(), "block_id").limit(300).toPandas())
    assert verdicts["deeplog_anomalous"].any() and not verdicts["deeplog_anomalous"].all()
    got = model.predict(pd.DataFrame({"events": [np.asarray(e, dtype=np.int64) for e in verdicts["events"]]}))
    assert got["key_rank"].tolist() == verdicts["max_key_rank"].tolist()
    assert got["deeplog_anomalous"].tolist() == verdicts["deeplog_anomalous"].tolist()
    assert np.allclose(got["key_score"], verdicts["max_key_score"], atol=1e-4)


def test_model_uri_that_names_nothing_is_a_clear_error(full_run, tmp_path):
    from deeplog_spark.core.errors import InputError
    from deeplog_spark.detect.bundle import ModelBundle

    cfg = full_run[0]
    with pytest.raises(InputError, match="no deeplog detector at that MLflow URI"):
        ModelBundle(cfg.artifacts_root, "models:/no-such-model/1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.extended
def test_tracking_server_registry_and_models_uri(spark, own_full_run, tmp_path):
    """A real tracking server: train with the detector registered, then detect with
    ``models:/NAME/1`` and with the run id: the same verdicts."""
    cfg = own_full_run[0]
    port = _free_port()
    server = subprocess.Popen([str(os.path.join(os.path.dirname(sys.executable), "mlflow")), "server",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                               "--artifacts-destination", str(tmp_path / "server-artifacts")],
                              stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if urllib.request.urlopen(url + "/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("mlflow server did not answer: " + (tmp_path / "server.log").read_text()[-2000:])
        env = {"MLFLOW_TRACKING_URI": url}
        base = ["--tables_root", cfg.tables_root, "--artifacts_root", cfg.artifacts_root]
        trained = submit(["--task", "key", "--epochs", "1", "--steps_per_epoch", "20", "--mlflow_model_name",
                          "deeplog-ci", *base], env_extra=env)
        assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
        train = summary_of(trained.stdout)
        assert train["mlflow"]["registered_version"] == "1"
        assert train["mlflow"]["tracking_uri"] == url  # the server's store, not the local default
        import mlflow

        served = mlflow.MlflowClient(tracking_uri=url).get_run(train["mlflow"]["mlflow_run_id"])
        assert served.data.tags["deeplog.run_id"] == train["run_id"] and "key_val_loss" in served.data.metrics
        verdicts = {}
        for model in ("models:/deeplog-ci/1", train["run_id"]):
            res = submit(["--task", "detect", "--model", model, *base], env_extra=env)
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
            assert summary_of(res.stdout)["run_id"] == train["run_id"]
            verdicts[model] = sorted(tuple(r) for r in spark.read.format("delta").load(cfg.table_path("verdicts"))
                                     .where(F.col("run_id") == train["run_id"])
                                     .select("block_id", "anomalous", "detectors", "max_key_rank").collect())
        assert verdicts["models:/deeplog-ci/1"] == verdicts[train["run_id"]] and len(verdicts[train["run_id"]]) == 3000
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


@pytest.mark.extended  # Spark jobs of 10-60 s: `make test-extended`, so that `make test` stays under 15 minutes
def test_a_broken_or_locked_store_fails_before_training(spark, cfg, tmp_path):
    """Issue 40, case 12: a truncated store fails `key` in one line before any training (and says
    that --mlflow false skips tracking); a locked store is reported as locked, by training and by
    --model, not as "no deeplog detector"."""
    import sqlite3

    from deeplog_spark.core.errors import InputError
    from deeplog_spark.ingest.runner import run_ingest
    from deeplog_spark.integrations.tracking import check_store, resolve_model
    from deeplog_spark.train.runner import run_train

    run_ingest(spark, cfg)
    art = tmp_path / "art"
    art.mkdir()
    (art / "mlflow.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 40)  # a store cut short
    with pytest.raises(InputError, match=r"cannot be read.*--mlflow false"):
        run_train(spark, cfg.replace(mlflow=True, artifacts_root=str(art)), "key")
    assert not list(art.glob("runs/*/key_model.pt"))  # nothing was trained

    good = tmp_path / "good"
    assert check_store(str(good)).startswith("sqlite:")  # a new store is created and readable
    holder = sqlite3.connect(good / "mlflow.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(InputError, match="is locked"):
            check_store(str(good))
        with pytest.raises(InputError, match="is locked"):
            resolve_model("models:/deeplog/1", str(good))
    finally:
        holder.rollback()
        holder.close()
