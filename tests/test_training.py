"""Train stage on Spark: Petastorm + TorchDistributor, artifacts, value threshold, Spark-free path."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deeplog_spark import schemas, tasks
from deeplog_spark.errors import InputError
from deeplog_spark.nn.model import load_checkpoint
from deeplog_spark.pipeline import run_ingest, run_windows
from deeplog_spark.tables import read_table, write_table
from deeplog_spark.train_data import key_dataset, normal_windows
from deeplog_spark.training import run_id_for, run_train

from conftest import REPO


@pytest.fixture(scope="module")
def sample_tables(spark, tmp_path_factory):
    """The embedded sample ingested and windowed once for this module."""
    from deeplog_spark.config import Config

    root = tmp_path_factory.mktemp("train")
    cfg = Config.load(overrides={"tables_root": str(root / "warehouse"), "artifacts_root": str(root / "artifacts"),
                                 "shuffle_partitions": 2})
    run_ingest(spark, cfg)
    run_windows(spark, cfg)
    return cfg


def test_two_ranks_in_local_mode_end_with_identical_weights(spark, sample_tables):
    cfg = sample_tables.replace(num_processes=2, epochs=1, artifacts_root=sample_tables.artifacts_root + "_ddp")
    summary = run_train(spark, cfg, "key")
    history = json.load(open(os.path.join(summary["run_dir"], "key_history.json")))
    assert history["world_size"] == 2
    assert len(history["rank_digests"]) == 2 and len(set(history["rank_digests"])) == 1


def test_run_id_is_keyed_by_config_and_windows_version(sample_tables):
    """Same config and data -> same run id; another setting or a new windows version -> another.
    (Training itself, and every artifact it writes, is checked on the session's full run: test_tasks.)"""
    cfg, path = sample_tables.replace(epochs=3), sample_tables.table_path(schemas.WINDOWS)
    assert run_id_for(cfg, path, 0) == run_id_for(cfg.replace(shuffle_partitions=7), path, 0)
    assert run_id_for(cfg.replace(epochs=1), path, 0) != run_id_for(cfg, path, 0)
    assert run_id_for(cfg.replace(lr_decay=0.5), path, 0) != run_id_for(cfg, path, 0)
    assert run_id_for(cfg, path, 1) != run_id_for(cfg, path, 0)


def test_value_task_without_intervals_is_a_clear_error(spark, sample_tables):
    with pytest.raises(InputError, match="no time intervals"):
        run_train(spark, sample_tables, "value")
    with pytest.raises(InputError, match="--task must be one of"):
        run_train(spark, sample_tables, "keys")


def test_value_threshold_is_fitted_on_train_normal_windows_only(spark, cfg):
    """Hand-made sessions with intervals: only train-split normal ones are small and regular."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        for split, label, scale in (("train", 0, 1.0), ("train", 1, 1000.0), ("val", 0, 1.0), ("test", 0, 500.0)):
            n = 14
            iv = [0.0] + list(np.round(scale * (1.0 + 0.1 * rng.standard_normal(n - 1)), 3))
            rows.append((f"blk_{split}_{label}_{i}", [5] * n, [float(abs(v)) for v in iv], label, split, n,
                         None, None, None, None))
    traces = spark.createDataFrame(rows, schemas.TRACES_SCHEMA)
    write_table(traces, cfg.table_path(schemas.TRACES))
    write_table(spark.createDataFrame([(5, "E5", "t")], schemas.TEMPLATES_SCHEMA), cfg.table_path(schemas.TEMPLATES))
    run_windows(spark, cfg)
    summary = tasks.run(spark, cfg.replace(epochs=3), {"task": "value"})  # the task CLI's value task
    run_dir = summary["run_dir"]
    norm = json.load(open(os.path.join(run_dir, "value_norm.json")))
    thr = json.load(open(os.path.join(run_dir, "value_threshold.json")))

    train_normal = [r for r in rows if r[4] == "train" and r[3] == 0]
    targets = np.array([iv[j] for r in train_normal for iv in [r[2]] for j in range(cfg.h, len(iv))])
    assert norm["mean"] == pytest.approx(targets.mean(), rel=1e-4)
    assert norm["std"] == pytest.approx(targets.std(), rel=1e-3)
    assert thr["windows"] == len(targets) == norm["windows"]
    assert thr["threshold"] == pytest.approx(thr["mu"] + 3.0 * thr["sigma"])
    assert thr["mu"] < 5  # errors of regular intervals in z units; leaked anomalies (x1000) would blow this up
    load_checkpoint(os.path.join(run_dir, "value_model.pt"), expect_task="value")


def test_row_cap_is_a_uniform_hashed_sample_independent_of_partitioning(spark, sample_tables):
    windows = normal_windows(read_table(spark, sample_tables.table_path("windows")), "train").cache()
    n = windows.count()
    rows = lambda df: sorted((tuple(r.window), r.target, r.weight) for r in df.collect())  # noqa: E731
    assert len(rows(key_dataset(windows, False, cap=n))) == n  # a cap at or above the size keeps all
    capped = rows(key_dataset(windows, False, cap=n // 4, seed=7))
    assert capped == rows(key_dataset(windows.repartition(5), False, cap=n // 4, seed=7))  # any partitioning
    assert abs(len(capped) - n // 4) < 0.15 * n / 4 + 10  # about the cap
    assert rows(key_dataset(windows, False, cap=n // 4, seed=8)) != capped  # the seed matters
    distinct = rows(key_dataset(windows, True))
    sample = rows(key_dataset(windows, True, cap=len(distinct) // 2, seed=7))
    # distinct rows keep their full weights (unbiased weighted loss) and are a subset of all rows
    assert 0 < len(sample) < len(distinct) and set(sample) <= set(distinct)
    windows.unpersist()


def test_spark_free_trainer_prepares_the_same_rows_and_trains(spark, sample_tables, tmp_path):
    from deeplog_spark.nn.local import prepare, read_delta

    windows = read_delta(sample_tables.table_path("windows"),
                         ["split", "label", "window", "next_event", "window_intervals", "next_interval"])
    x, y, w = prepare(windows, "train", "key", 10, distinct=True)
    local = {(tuple(a), int(b)): float(c) for a, b, c in zip(x.tolist(), y.tolist(), w.tolist())}
    spark_rows = key_dataset(normal_windows(read_table(spark, sample_tables.table_path("windows")), "train"), True)
    via_spark = {(tuple(r.window), r.target): r.weight for r in spark_rows.collect()}
    assert local == via_spark

    code = ("import sys, runpy; sys.modules['pyspark'] = None; "  # any pyspark import would fail
            "sys.argv = ['train_local'] + sys.argv[1:]; runpy.run_module('deeplog_spark.nn.local', run_name='__main__')")
    res = subprocess.run([sys.executable, "-c", code, "--tables_root", sample_tables.tables_root, "--out",
                          str(tmp_path / "gpu_run"), "--task", "key", "--epochs", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    model, payload = load_checkpoint(tmp_path / "gpu_run" / "key_model.pt", expect_task="key")
    assert payload["extra"]["trained_by"] == "train_local"


def test_key_model_reaches_top9_recall_099_on_sample15k(spark, cfg, shared_hdfs):
    """The issue's quality bar. Distinct windows drawn by count, 12k draws an epoch, keep CI fast
    (8 epochs of 12k windows instead of 20 of 111k); bench/train_distinct.py compares the modes."""
    cfg = cfg.replace(event_traces=str(shared_hdfs / "sample15k" / "Event_traces.csv.gz"),
                      anomaly_labels=str(shared_hdfs / "sample15k" / "anomaly_label.csv.gz"),
                      distinct_windows=True, max_train_rows=12000, epochs=8)
    run_ingest(spark, cfg)
    run_windows(spark, cfg)
    key = run_train(spark, cfg, "key")["tasks"]["key"]
    assert key["val_top_g_recall"] >= 0.99, key
