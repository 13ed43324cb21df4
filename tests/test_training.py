"""Train stage on Spark (a Parquet or Petastorm feed + TorchDistributor), its rows, and the Spark-free trainer."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from deeplog_spark import tasks
from deeplog_spark.core import schemas
from deeplog_spark.core.errors import InputError
from deeplog_spark.nn.model import load_checkpoint
from deeplog_spark.ingest.runner import run_ingest
from deeplog_spark.core.tables import read_table, table_id, write_table
from deeplog_spark.features.train_rows import interval_stats, key_dataset, normal_sessions, value_chunks
from deeplog_spark.train.job import run_id as run_id_for
from deeplog_spark.train.runner import run_train

from conftest import REPO

QUICK = {"epochs": 1, "steps_per_epoch": 20}


@pytest.fixture(scope="module")
def sample_tables(spark, tmp_path_factory):
    """The embedded sample ingested once for this module (tests copy or only read it)."""
    from deeplog_spark.core.config import Config

    root = tmp_path_factory.mktemp("train")
    cfg = Config.load(overrides={"tables_root": str(root / "warehouse"), "artifacts_root": str(root / "artifacts"),
                                 "shuffle_partitions": 2})
    run_ingest(spark, cfg)
    return cfg


@pytest.mark.extended  # two torch ranks at once
def test_two_ranks_in_local_mode_end_with_identical_weights(spark, sample_tables, tmp_path):
    cfg = sample_tables.replace(num_processes=2, artifacts_root=str(tmp_path / "art"), **QUICK)
    summary = run_train(spark, cfg, "key")
    history = json.load(open(os.path.join(summary["run_dir"], "key_history.json")))
    assert history["world_size"] == 2 and len(history["rank_digests"]) == 2  # (unequal digests raise in run_task)
    # the checkpoint holds the weights the ranks ended with, not a rank's stale copy
    from deeplog_spark.nn.trainer import state_digest

    model, _ = load_checkpoint(os.path.join(summary["run_dir"], "key_model.pt"), expect_task="key")
    assert state_digest(model.state_dict()) == history["rank_digests"][0]
    # both ranks drew their own rows: the epoch's draws are the two ranks' together
    assert history["history"][0]["train_windows"] == 2 * cfg.batch_size * cfg.steps_per_epoch
    # every training task ends with the count and PCA models and the calibration on val
    for name in ("count_model.json", "pca_model.json", "calibration.json"):
        assert os.path.isfile(os.path.join(summary["run_dir"], name)), name
    assert summary["calibration"]["fused"]["members"]


def test_run_id_is_keyed_by_config_and_traces_version(sample_tables):
    """Same config and data -> same run id; another setting, a new traces version or another traces
    table at the same place (deleted and ingested again, issue 40 case 6: a crashed run's resume
    file must not be picked up on other data) -> another."""
    cfg, path = sample_tables.replace(epochs=3), sample_tables.table_path(schemas.TRACES)
    assert run_id_for(cfg, path, 0, "t1") == run_id_for(cfg.replace(shuffle_partitions=7), path, 0, "t1")
    for change in ({"epochs": 1}, {"lr_schedule": "plateau"}, {"session_markers": False}, {"value_chunk": 64},
                   {"train_precision": "fp32"}):
        assert run_id_for(cfg.replace(**change), path, 0, "t1") != run_id_for(cfg, path, 0, "t1"), change
    assert run_id_for(cfg, path, 1, "t1") != run_id_for(cfg, path, 0, "t1")
    assert run_id_for(cfg, path, 0, "t2") != run_id_for(cfg, path, 0, "t1")


@pytest.mark.extended  # Spark jobs of 10-60 s: `make test-extended`, so that `make test` stays under 15 minutes
def test_a_traces_table_ingested_again_is_a_new_run_not_a_resume(spark, cfg):
    """Issue 40, case 6: the tables wiped and other blocks ingested at the same place give the same
    version (0) but a new table id, so the run id changes and the crashed run's resume file, in the
    old run's folder, is never read."""
    import shutil

    run_ingest(spark, cfg)
    path = cfg.table_path(schemas.TRACES)
    first = run_id_for(cfg, path, 0, table_id(spark, path))
    shutil.rmtree(cfg.tables_root)
    run_ingest(spark, cfg)
    again = run_id_for(cfg, path, 0, table_id(spark, path))
    assert again != first  # the Spark job and the Spark-free trainer both key their run by it (test_layout)


class _Reads:
    """A config that records which keys are read."""

    def __init__(self, cfg):
        self._cfg, self.keys = cfg, set()

    def __getattr__(self, name):
        value = getattr(self._cfg, name)
        if not callable(value):
            self.keys.add(name)
        return value


def test_run_keys_cover_every_key_a_training_reads(tmp_path):
    """``RUN_KEYS`` is the list the run id hashes: every config key that building the training jobs,
    their rows and their files reads is in it, or in ``NOT_RUN_KEYS`` with its reason."""
    from deeplog_spark.core.config import Config, sections
    from deeplog_spark.train import job

    keys = {k for ks in sections().values() for k in ks}
    assert set(job.RUN_KEYS) <= keys and set(job.NOT_RUN_KEYS) <= keys
    assert not set(job.RUN_KEYS) & set(job.NOT_RUN_KEYS)
    cfg = _Reads(Config.load())
    for task in ("key", "value"):
        job.train_job(cfg, task, 29, tmp_path)
    job.markers(cfg, 29)
    result = {"state_dict": None, "history": [], "best_epoch": 0, "early_stopped": False,
              "train_errors": {"mu": 0.0, "sigma": 1.0, "steps": 1}}
    with pytest.raises(Exception):  # no weights to save: only the keys it read matter here
        job.save_trained(tmp_path, job.train_job(cfg, "value", 29), result, {}, cfg)
    assert cfg.keys and cfg.keys <= set(job.RUN_KEYS) | set(job.NOT_RUN_KEYS), cfg.keys - set(job.RUN_KEYS)
    # and the check can fail: a key read by training but listed nowhere is reported
    cfg.keys.add("ingest_batch")
    assert not cfg.keys <= set(job.RUN_KEYS) | set(job.NOT_RUN_KEYS)


def test_value_task_without_intervals_is_a_clear_error(spark, sample_tables):
    with pytest.raises(InputError, match="no time intervals"):
        run_train(spark, sample_tables, "value")
    with pytest.raises(InputError, match="--task must be one of"):
        run_train(spark, sample_tables, "keys")


def _interval_traces(spark, cfg, rng):
    """Hand-made sessions: train-normal ones regular; train anomalies and test sessions stretched."""
    rows = []
    for i in range(60):
        for split, label, scale in (("train", 0, 1.0), ("train", 1, 1000.0), ("val", 0, 1.0), ("test", 0, 500.0)):
            n = 14
            iv = [0.0] + [float(abs(v)) for v in np.round(scale * (1.0 + 0.1 * rng.standard_normal(n - 1)), 3)]
            rows.append((f"blk_{split}_{label}_{i}", [5, 22] * (n // 2), iv, label, split, n, None, None, None, None, None,
                         None, None))
    write_table(spark.createDataFrame(rows, schemas.TRACES_SCHEMA), cfg.table_path(schemas.TRACES))
    write_table(spark.createDataFrame([(5, "E5", "t5"), (22, "E22", "t22")], schemas.TEMPLATES_SCHEMA),
                cfg.table_path(schemas.TEMPLATES))
    return rows


def test_value_model_is_fitted_on_train_normal_sessions_only(spark, cfg):
    rows = _interval_traces(spark, cfg, np.random.default_rng(0))
    summary = tasks.run(spark, cfg.replace(epochs=3), {"task": "value"})  # the task CLI's value task
    run_dir = summary["run_dir"]
    norm = json.load(open(os.path.join(run_dir, "value_norm.json")))
    thr = json.load(open(os.path.join(run_dir, "value_threshold.json")))
    steps = np.log1p([x for r in rows if r[4] == "train" and r[3] == 0 for x in r[2][1:]])
    assert norm["mean"] == pytest.approx(steps.mean(), rel=1e-6) and norm["std"] == pytest.approx(steps.std(), rel=1e-6)
    assert norm["steps"] == len(steps) == thr["steps"]
    assert thr["threshold"] == pytest.approx(thr["mu"] + 3.0 * thr["sigma"])
    assert thr["mu"] < 3  # residuals of regular intervals; leaked anomalies (x1000) would blow this up
    _, payload = load_checkpoint(os.path.join(run_dir, "value_model.pt"), expect_task="value")
    assert payload["model_config"]["vocab_size"] == 22 and payload["extra"]["train_vocab"] == [5, 22]


def test_row_caps_are_uniform_hashed_samples_independent_of_partitioning(spark, sample_tables):
    train = normal_sessions(read_table(spark, sample_tables.table_path(schemas.TRACES)), "train").cache()
    rows = lambda df: sorted((tuple(r.window), r.target, r.weight) for r in df.collect())  # noqa: E731
    full = rows(key_dataset(train, 10, (30, 31)))
    n = len(full)
    assert rows(key_dataset(train, 10, (30, 31), cap=n)) == full  # a cap at or above the size keeps all
    capped = rows(key_dataset(train, 10, (30, 31), cap=n // 4, seed=7))
    assert capped == rows(key_dataset(train.repartition(5), 10, (30, 31), cap=n // 4, seed=7))  # any partitioning
    assert len(capped) == n // 4 and set(capped) <= set(full)  # exactly the cap, weights kept
    assert rows(key_dataset(train, 10, (30, 31), cap=n // 4, seed=8)) != capped  # the seed matters
    # the weights are the windows' counts: they add up to sessions + events (markers: L + 1 windows each)
    totals = train.agg(F.count(F.lit(1)).alias("s"), F.sum("event_count").alias("e")).first()
    assert sum(w for *_, w in full) == totals["s"] + totals["e"]
    train.unpersist()


def test_spark_free_trainer_prepares_the_same_rows_and_trains(spark, cfg, tmp_path):
    from deeplog_spark.nn.local import key_rows, read_delta, value_rows

    rows = _interval_traces(spark, cfg, np.random.default_rng(1))
    traces, version = read_delta(cfg.table_path(schemas.TRACES), ["block_id", "split", "label", "events", "intervals"])
    assert version == 0 and traces.num_rows == len(rows)
    spark_traces = read_table(spark, cfg.table_path(schemas.TRACES))
    for markers in ((23, 24), None):
        x, y, w = key_rows(traces, "train", cfg.h, markers)
        local = {(tuple(a), int(b)): float(c) for a, b, c in zip(x.tolist(), y.tolist(), w.tolist())}
        via_spark = {(tuple(r.window), r.target): r.weight
                     for r in key_dataset(normal_sessions(spark_traces, "train"), cfg.h, markers).collect()}
        assert local == via_spark
    stats = interval_stats(normal_sessions(spark_traces, "train"))
    local = value_rows(traces, "train", 22, 8, 3, (stats.mean, stats.std))
    via_spark = value_chunks(normal_sessions(spark_traces, "train"), stats, 22, 8, 3).collect()
    key = lambda e, v, f, n: (tuple(e), int(f), int(n), tuple(float(x) for x in v))  # noqa: E731
    a = sorted(key(*r) for r in zip(local["events"], local["values"], local["first"], local["length"]))
    b = sorted(key(r.events, r.values, r.first, r.length) for r in via_spark)
    assert [x[:3] for x in a] == [x[:3] for x in b]
    assert np.allclose([x[3] for x in a], [x[3] for x in b], atol=1e-5)

    code = ("import sys, runpy; sys.modules['pyspark'] = None; "  # any pyspark import would fail
            "sys.argv = ['local'] + sys.argv[1:]; runpy.run_module('deeplog_spark.nn.local', run_name='__main__')")
    res = subprocess.run([sys.executable, "-c", code, "--tables_root", cfg.tables_root, "--artifacts_root",
                          cfg.artifacts_root, "--task", "key", "--epochs", "1", "--steps_per_epoch", "10"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout[res.stdout.index("{"):])
    # the same run id as the Spark job for this config and table version, so detect finds it
    assert out["run_id"] == run_id_for(cfg.replace(epochs=1, steps_per_epoch=10), cfg.table_path(schemas.TRACES), 0,
                                       table_id(spark, cfg.table_path(schemas.TRACES)))
    _, payload = load_checkpoint(os.path.join(out["out"], "key_model.pt"), expect_task="key", expect_run=out["run_id"])
    assert payload["extra"]["trained_by"] == "nn.local" and payload["model_config"]["markers"]


@pytest.mark.extended  # trains on 15,000 real blocks, ~75 s
def test_key_model_reaches_top9_recall_099_on_sample15k(spark, cfg, shared_hdfs):
    cfg = cfg.replace(event_traces=str(shared_hdfs / "sample15k" / "Event_traces.csv.gz"),
                      anomaly_labels=str(shared_hdfs / "sample15k" / "anomaly_label.csv.gz"), epochs=4)
    run_ingest(spark, cfg)
    key = run_train(spark, cfg, "key")["tasks"]["key"]
    assert key["val_top_g_recall"] >= 0.99, key


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="side-by-side training needs two cores")
def test_key_and_value_trained_side_by_side_equal_one_after_the_other(spark, cfg, tmp_path):
    """The value model trains in a process of its own beside the key model (one CPU rank); each
    keeps its own random generator, so both end with the weights of training one after the other."""
    from deeplog_spark.train.runner import _train_with_quantitative, set_petastorm_cache

    _interval_traces(spark, cfg, np.random.default_rng(2))
    traces = read_table(spark, cfg.table_path(schemas.TRACES))
    weights, flags = {}, {}
    for together in (False, True):
        run_cfg = cfg.replace(side_by_side=together, artifacts_root=str(tmp_path / f"art_{together}"),
                              value_epochs=2, **QUICK)
        set_petastorm_cache(spark, run_cfg)
        out = tmp_path / f"run_{together}"
        out.mkdir()
        # the count and PCA models are fitted in a driver thread, during the training when side by side
        summaries, quantitative = _train_with_quantitative(spark, run_cfg, ["key", "value"], traces, 22, out, "r", 0)
        assert quantitative["patterns"] >= 1 and (out / "count_model.json").is_file() and (out / "pca_model.json").is_file()
        flags[together] = {t: s["side_by_side"] for t, s in summaries.items()}
        for task in ("key", "value"):
            model, _ = load_checkpoint(str(out / f"{task}_model.pt"), expect_task=task)
            weights[together, task] = model.state_dict()
    assert flags == {False: {"key": False, "value": False}, True: {"key": True, "value": True}}
    for task in ("key", "value"):
        one, other = weights[False, task], weights[True, task]
        assert one.keys() == other.keys()
        # equal up to float rounding (the two ways run on different thread counts); the key model's
        # dropout masks drawn from a shared or disturbed generator would move it far more than this
        for name in one:
            np.testing.assert_allclose(one[name].numpy(), other[name].numpy(), rtol=0, atol=1e-6,
                                       err_msg=f"{task}.{name}")


@pytest.mark.extended  # trains both models twice; make test-petastorm selects it by its marker
@pytest.mark.petastorm
def test_the_parquet_feed_and_the_petastorm_feed_train_the_same_weights(spark, cfg, tmp_path):
    """The maintained feed (Spark writes Parquet, each rank reads it with pyarrow) and the optional
    Petastorm feed give the same rows in the same order, so the same weights for the same seed."""
    from deeplog_spark.train.runner import _train_with_quantitative, set_petastorm_cache

    _interval_traces(spark, cfg, np.random.default_rng(3))
    traces = read_table(spark, cfg.table_path(schemas.TRACES))
    feeds = ["parquet"] + (["petastorm"] if importlib.util.find_spec("petastorm") else [])
    weights = {}
    for feed in feeds:
        run_cfg = cfg.replace(feed=feed, side_by_side=False, artifacts_root=str(tmp_path / f"art_{feed}"),
                              value_epochs=2, **QUICK)
        set_petastorm_cache(spark, run_cfg)
        out = tmp_path / f"run_{feed}"
        out.mkdir()
        _train_with_quantitative(spark, run_cfg, ["key", "value"], traces, 22, out, "r", 0)
        for task in ("key", "value"):
            model, _ = load_checkpoint(str(out / f"{task}_model.pt"), expect_task=task)
            weights[feed, task] = model.state_dict()
        assert not any((tmp_path / f"art_{feed}" / "train_feed").glob("*")), "the feed's files are left behind"
    if len(feeds) == 1:
        pytest.skip("petastorm is not installed (the current dependency set): the Parquet feed trained; "
                    "the comparison runs in the Petastorm set (.ci/run)")
    for task in ("key", "value"):
        for name, value in weights["parquet", task].items():
            assert torch.equal(value, weights["petastorm", task][name]), f"{task}.{name}"


def test_a_parquet_source_shards_files_by_rank_with_equal_steps(tmp_path):
    """Streamed (over IN_MEMORY_ROWS) rows: each rank reads its own files, every rank takes the same
    steps an epoch, and a pass over the stream serves each row of the shard before any again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deeplog_spark.nn.sources import ParquetFeed, ParquetSource

    sizes = [7, 5, 9, 4]
    start = 0
    for i, n in enumerate(sizes):
        ids = np.arange(start, start + n)
        pq.write_table(pa.table({"window": pa.array([[int(v), int(v) + 1] for v in ids], pa.list_(pa.int32())),
                                 "target": pa.array(ids, pa.int64())}), tmp_path / f"part-{i}.parquet")
        start += n
    feed = ParquetFeed(str(tmp_path), sum(sizes))
    ranks = [ParquetSource(feed, 3, rank, 2, seed=1) for rank in range(2)]
    assert [r.steps_per_epoch for r in ranks] == [5, 5]  # ceil(25 / (3 * 2)), the same on each rank
    full = [np.concatenate([b["target"].numpy() for b in r.full()]) for r in ranks]
    assert sorted(full[0]) == list(range(7)) + list(range(12, 21))  # files 0 and 2
    assert sorted(full[1]) == list(range(7, 12)) + list(range(21, 25))  # files 1 and 3
    first = ranks[0]
    seen = [b for e in range(3) for b in first.epoch(e)]  # 15 batches of 3: 45 rows, about three passes
    assert all(b["window"].shape == (3, 2) for b in seen)
    rows = np.concatenate([b["target"].numpy() for b in seen])
    assert len(set(rows[:15])) == 15 and set(rows) == set(full[0])  # a pass serves a row once; every row comes
    assert np.array_equal(rows[:, None] + np.array([0, 1]), np.concatenate([b["window"].numpy() for b in seen]))
    again = [b["target"].numpy() for b in ParquetSource(feed, 3, 0, 2, seed=1).epoch(0)]
    assert np.array_equal(np.concatenate(again), rows[:15])  # seeded: the same order again
    empty = tmp_path / "empty"
    empty.mkdir()
    for i, n in enumerate([3, 0]):
        pq.write_table(pa.table({"target": pa.array(range(n), pa.int64())}), empty / f"part-{i}.parquet")
    with pytest.raises(ValueError, match="hold no rows"):  # never an endless wait for a batch
        next(iter(ParquetSource(ParquetFeed(str(empty), 3), 2, 1, 2).epoch(0)))
