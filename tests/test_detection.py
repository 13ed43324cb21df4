"""Detection and evaluation on hand-made windows with a tiny deterministic model."""

import math

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from deeplog_spark import schemas
from deeplog_spark.runs import run_dir, write_json
from deeplog_spark.detection import run_detect
from deeplog_spark.evaluation import auroc, choose_thresholds, confusion, rates, run_evaluate
from deeplog_spark.nn.model import KeyLSTM, KeyModelConfig, ValueLSTM, ValueModelConfig, save_checkpoint
from deeplog_spark.tables import read_table, table_version, write_table

H, VOCAB = 3, 5
RUN = "handmade"


def _fake_run(artifacts_root):
    """Zero LSTM weights: h_t = 0, so the output is the final bias. Key logits rank event e at e."""
    key = KeyLSTM(KeyModelConfig(vocab_size=VOCAB, h=H, embed_dim=4, hidden=4, layers=1, dropout=0.0))
    value = ValueLSTM(ValueModelConfig(h=H, hidden=4))
    with torch.no_grad():
        for m in (key, value):
            for p in m.parameters():
                p.zero_()
        key.fc.bias.copy_(torch.tensor([-100.0] + [-float(e) for e in range(1, VOCAB + 1)]))
    d = run_dir(artifacts_root, RUN)
    save_checkpoint(d / "key_model.pt", "key", key, {"vocab_size": VOCAB, "train_vocab": [1, 2, 3, 4], "run_id": RUN})
    save_checkpoint(d / "value_model.pt", "value", value, {"run_id": RUN})
    write_json(d / "value_norm.json", {"mean": 0.0, "std": 1.0})
    write_json(d / "value_threshold.json", {"mu": 1.0, "sigma": 1.0, "k": 3.0, "threshold": 4.0})
    write_json(d.parent / "latest.json", {"run_id": RUN})


# block_id, split, label, [(window, next_event, next_interval), ...]
BLOCKS = [
    ("b_norm", "test", 0, [([1, 2, 3], 1, 0.5), ([2, 3, 1], 2, 1.0)]),
    ("b_key", "test", 1, [([1, 2, 3], 1, 0.5), ([2, 3, 1], 4, 0.5), ([3, 1, 4], 2, 0.5)]),
    ("b_val", "test", 1, [([1, 1, 1], 1, 10.0)]),
    ("b_unseen_next", "val", 1, [([1, 2, 3], 5, 0.0)]),
    ("b_unseen_win", "val", 1, [([1, 5, 2], 1, 0.0)]),
    ("b_oov", "val", 0, [([1, 2, 3], 9, 0.0)]),
    ("b_norm2", "val", 0, [([1, 2, 3], 1, 0.5), ([1, 2, 3], 1, 0.5)]),
]


@pytest.fixture
def detect_cfg(spark, cfg):
    rows = []
    for block, split, label, ws in BLOCKS:
        for pos, (w, nxt, iv) in enumerate(ws):
            rows.append((block, split, label, pos, w, nxt, [0.5] * H, iv, "day1"))
    write_table(spark.createDataFrame(rows, schemas.WINDOWS_SCHEMA), cfg.table_path(schemas.WINDOWS))
    _fake_run(cfg.artifacts_root)
    return cfg.replace(h=H, top_g=3, k_sigma=3.0)


def _preds(spark, cfg, g=3, k=3.0):
    df = read_table(spark, cfg.table_path(schemas.PREDICTIONS)).where((F.col("g") == g) & (F.col("k") == k))
    return {(r.block_id, r.position): r for r in df.collect()}


def test_top_g_value_threshold_fusion_unseen_events_and_session_verdicts(spark, detect_cfg):
    run_detect(spark, detect_cfg)
    p = _preds(spark, detect_cfg)
    assert len(p) == sum(len(ws) for *_, ws in BLOCKS)
    # rank of event e is e by construction; g = 3
    assert (p["b_key", 0].key_rank, p["b_key", 1].key_rank, p["b_key", 2].key_rank) == (1, 4, 2)
    assert [p["b_key", i].key_anomaly for i in range(3)] == [False, True, False]
    assert p["b_norm", 0].y_pred_topg == [1, 2, 3]
    assert p["b_key", 0].key_score == pytest.approx(-math.log(math.exp(-1) / sum(math.exp(-e) for e in range(1, 6))), rel=1e-4)
    # value: output 0, error |next_interval| against mu + 3 sigma = 4
    assert p["b_val", 0].value_error == pytest.approx(10.0) and p["b_val", 0].value_anomaly
    assert not p["b_val", 0].key_anomaly and p["b_val", 0].fused_anomaly
    assert not p["b_norm", 1].value_anomaly and not p["b_norm", 1].fused_anomaly
    # events never seen in training (5) or outside the vocabulary (9)
    assert p["b_unseen_next", 0].key_reason == "unseen_next_event" and p["b_unseen_next", 0].key_anomaly
    assert p["b_unseen_win", 0].key_reason == "unseen_event_in_window" and p["b_unseen_win", 0].key_anomaly
    assert p["b_oov", 0].key_reason == "unseen_next_event" and p["b_oov", 0].key_rank == VOCAB + 2

    # session verdicts of the same detection
    v = {r.block_id: r for r in read_table(spark, detect_cfg.table_path(schemas.VERDICTS)).collect()}
    assert {b for b, r in v.items() if r.anomalous} == {"b_key", "b_val", "b_unseen_next", "b_unseen_win", "b_oov"}
    assert (v["b_key"].n_windows, v["b_key"].n_anomalous_windows, v["b_key"].first_anomalous_position) == (3, 1, 1)
    assert (v["b_key"].first_anomaly_window, v["b_key"].first_anomaly_next_event) == ([2, 3, 1], 4)
    assert v["b_key"].key_anomalous and not v["b_key"].value_anomalous
    assert v["b_val"].value_anomalous and not v["b_val"].key_anomalous
    assert v["b_norm"].first_anomalous_position is None and v["b_norm"].max_key_rank == 2
    assert v["b_unseen_win"].first_anomaly_reason == "unseen_event_in_window"


def test_rerun_replaces_and_new_thresholds_add_rows(spark, detect_cfg):
    run_detect(spark, detect_cfg)
    run_detect(spark, detect_cfg)
    verdicts = lambda: read_table(spark, detect_cfg.table_path(schemas.VERDICTS))  # noqa: E731
    assert verdicts().count() == len(BLOCKS)
    run_detect(spark, detect_cfg.replace(top_g=1, k_sigma=10.0))
    assert verdicts().count() == 2 * len(BLOCKS)
    at_g1 = {r.block_id for r in verdicts().where("g = 1 AND anomalous").collect()}
    assert "b_norm" in at_g1 and "b_val" not in at_g1  # rank 2 > 1; error 10 < 1 + 10*1
    assert verdicts().where("g = 3").count() == len(BLOCKS)


def test_distinct_scoring_equals_per_window_scoring(spark, detect_cfg):
    run_detect(spark, detect_cfg.replace(distinct_scoring=False))
    per_window = read_table(spark, detect_cfg.table_path(schemas.PREDICTIONS))
    a = per_window.collect()
    run_detect(spark, detect_cfg.replace(distinct_scoring=True))
    b = read_table(spark, detect_cfg.table_path(schemas.PREDICTIONS)).collect()
    key = lambda r: (r.block_id, r.position)  # noqa: E731
    assert sorted(a, key=key) == sorted(b, key=key)


def test_metrics_match_scikit_learn(spark):
    from sklearn import metrics as skm

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    score = np.round(rng.random(300) + 0.6 * y, 1)  # rounded: many ties
    pred = score > 0.8
    df = spark.createDataFrame([(int(a), float(s), bool(p)) for a, s, p in zip(y, score, pred)], "label int, s double, p boolean")
    c = confusion(df, F.col("p"))
    r = rates(c)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert c == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert r["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert r["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert r["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert auroc(df, F.col("s")) == pytest.approx(skm.roc_auc_score(y, score))
    # continuous scores with a block of ties, ranked in 1 and 5 score ranges: exact every time
    y2 = rng.integers(0, 2, 2000)
    s2 = rng.normal(size=2000) + 0.8 * y2
    s2[:200] = 0.25
    df2 = spark.createDataFrame([(int(a), float(b)) for a, b in zip(y2, s2)], "label int, s double")
    for buckets in (1, 5):
        assert auroc(df2, F.col("s"), buckets=buckets) == pytest.approx(skm.roc_auc_score(y2, s2), abs=1e-12)
    empty = rates({"tp": 0, "fp": 0, "tn": 5, "fn": 0})
    assert empty["precision"] == 0.0 and empty["mcc"] == 0.0


def test_thresholds_are_chosen_on_validation_only(spark):
    # val: anomalies have max rank 3, normals 2 -> g = 2 separates them perfectly on val.
    rows = [("val", 1, 3, None)] * 5 + [("val", 0, 2, None)] * 20 + [("test", 1, 9, None)] * 5 + [("test", 0, 3, None)] * 20
    df = spark.createDataFrame(rows, "split string, label int, max_key_rank int, max_value_error double")
    chosen = choose_thresholds(df.where("split = 'val'"), vocab_size=9, errors=None)
    assert chosen["g"] == 2 and chosen["val_f1"] == 1.0  # test would prefer g in 3..8


def test_threshold_sweep_and_roc_points_match_brute_force(spark):
    from deeplog_spark.evaluation import K_GRID, roc_points

    rng = np.random.default_rng(3)
    n, vocab = 400, 9
    y = rng.integers(0, 2, n)
    rank = rng.integers(1, vocab + 3, n) + 2 * y
    err = np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 1.0, n) + y)
    df = spark.createDataFrame([(int(a), int(b), None if np.isnan(c) else float(c)) for a, b, c in zip(y, rank, err)],
                               "label int, max_key_rank int, max_value_error double")
    errors = {"mu": 1.0, "sigma": 0.5}
    best = None
    for g in range(1, vocab + 2):
        for k in K_GRID:
            pred = (rank > g) | (np.nan_to_num(err, nan=-1.0) > errors["mu"] + k * errors["sigma"])
            tp, fp, fn = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())
            f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            if best is None or (f1, g, k) > (best["val_f1"], best["g"], best["k"]):
                best = {"g": g, "k": k, "val_f1": f1}
    assert choose_thresholds(df, vocab, errors) == best

    s = rng.normal(size=n) + y
    sdf = spark.createDataFrame([(int(a), float(b)) for a, b in zip(y, s)], "label int, s double")
    pts = roc_points(sdf, F.col("s"), points=20)
    assert (0.0, 0.0) in pts and (1.0, 1.0) in pts and len(pts) > 10
    for fpr, tpr in pts:  # every point is the exact (FPR, TPR) of some threshold t: score >= t
        assert any(abs(fpr - ((s >= t) & (y == 0)).sum() / (y == 0).sum()) < 1e-12
                   and abs(tpr - ((s >= t) & (y == 1)).sum() / (y == 1).sum()) < 1e-12
                   for t in np.append(s, np.inf))


def test_evaluate_writes_metrics_table_and_reports(spark, detect_cfg):
    run_detect(spark, detect_cfg)
    summary = run_evaluate(spark, detect_cfg)
    m = read_table(spark, detect_cfg.table_path(schemas.METRICS))
    assert m.where("threshold_source = 'default' AND split = 'test'").count() == 3  # key, value, fused
    fused = m.where("threshold_source = 'default' AND split = 'test' AND detector = 'fused'").first()
    assert (fused.tp, fused.fp, fused.tn, fused.fn) == (2, 0, 1, 0)
    out = run_dir(detect_cfg.artifacts_root, RUN) / "eval"
    for name in ("metrics.json", "classification_report.md", "f1_latency_table.csv", "roc_curve.png",
                 "f1_comparison_bar.png"):
        assert (out / name).is_file(), name
    assert summary["chosen_on_val"]["g"] >= 1
    first = m.count()
    assert first == 2 * 3 * 3  # (default, val_chosen) x (train, val, test) x (key, value, fused)
    cols = [c for c in m.columns if c != "evaluated_at"]
    before = m.select(cols).collect()
    run_evaluate(spark, detect_cfg)  # a re-run replaces its own rows: same contents, a new version
    again = read_table(spark, detect_cfg.table_path(schemas.METRICS))
    assert sorted(again.select(cols).collect()) == sorted(before)
    assert table_version(spark, detect_cfg.table_path(schemas.METRICS)) == 1
    run_detect(spark, detect_cfg.replace(top_g=2))
    run_evaluate(spark, detect_cfg.replace(top_g=2))  # another detection's evaluation adds its rows
    assert read_table(spark, detect_cfg.table_path(schemas.METRICS)).count() == 2 * first


def test_detect_one_ingest_batch_adds_only_its_rows(spark, detect_cfg):
    """A new day appended to the windows table is scored alone; earlier days keep their rows."""
    cfg = detect_cfg
    run_detect(spark, cfg)
    before = sorted(tuple(r) for r in read_table(spark, cfg.table_path(schemas.VERDICTS)).drop("k").collect())
    day2 = [("b_day2", "test", None, 0, [1, 2, 3], 4, [0.5] * H, 0.5, "day2")]
    spark.createDataFrame(day2, schemas.WINDOWS_SCHEMA).write.format("delta").mode("append").save(
        cfg.table_path(schemas.WINDOWS))
    stats = run_detect(spark, cfg.replace(ingest_batch="day2"))
    assert (stats["sessions"], stats["windows"], stats["ingest_batch"]) == (1, 1, "day2")
    verdicts = read_table(spark, cfg.table_path(schemas.VERDICTS))
    assert sorted(tuple(r) for r in verdicts.where(F.col("ingest_batch") == "day1").drop("k").collect()) == before
    assert [r.block_id for r in verdicts.where(F.col("ingest_batch") == "day2").collect()] == ["b_day2"]
    run_detect(spark, cfg.replace(ingest_batch="day2"))  # again: replaces its own rows only
    assert read_table(spark, cfg.table_path(schemas.PREDICTIONS)).count() == sum(len(b[3]) for b in BLOCKS) + 1
    with pytest.raises(Exception, match="no windows of batch"):
        run_detect(spark, cfg.replace(ingest_batch="day3"))


def test_two_detect_runs_at_the_same_time_both_land(spark, detect_cfg):
    """Delta optimistic concurrency: two detections (different run ids) write predictions,
    verdicts and metrics at once, starting from no tables; conflicts are retried, nothing lost."""
    import shutil
    import threading

    other = "handmade2"
    shutil.copytree(run_dir(detect_cfg.artifacts_root, RUN), run_dir(detect_cfg.artifacts_root, other))
    start, errors = threading.Barrier(2), []

    def one(run_id):
        try:
            start.wait()
            run_detect(spark, detect_cfg, run_id)
            run_evaluate(spark, detect_cfg, run_id)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(r,)) for r in (RUN, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    n_windows = sum(len(ws) for *_, ws in BLOCKS)
    for table, per_run in ((schemas.PREDICTIONS, n_windows), (schemas.VERDICTS, len(BLOCKS)), (schemas.METRICS, 18)):
        got = {r.run_id: r["count"] for r in read_table(spark, detect_cfg.table_path(table)).groupBy("run_id").count().collect()}
        assert got == {RUN: per_run, other: per_run}, table
    mine = read_table(spark, detect_cfg.table_path(schemas.VERDICTS)).where(F.col("run_id") == RUN).drop("run_id")
    theirs = read_table(spark, detect_cfg.table_path(schemas.VERDICTS)).where(F.col("run_id") == other).drop("run_id")
    assert mine.exceptAll(theirs).count() == 0 and theirs.exceptAll(mine).count() == 0  # same model, same verdicts


def test_commit_retry_retries_conflicts_only(spark):
    from delta.exceptions import ConcurrentAppendException

    from deeplog_spark.tables import commit_with_retry

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrentAppendException(message="another writer added files")
        return "done"

    assert commit_with_retry(flaky, "t", base_delay_s=0.001) == "done" and len(calls) == 3
    calls.clear()
    with pytest.raises(ConcurrentAppendException):  # gives up after the last attempt
        commit_with_retry(flaky, "t", attempts=2, base_delay_s=0.001)
    assert len(calls) == 2

    def broken():
        calls.append(1)
        raise ValueError("not a conflict")

    calls.clear()
    with pytest.raises(ValueError):
        commit_with_retry(broken, "t", base_delay_s=0.001)
    assert len(calls) == 1  # other errors are not retried
