"""Detection, calibration and evaluation on hand-made sessions with a small trained key model, and the
distinct-sequence path against a per-window reference on the embedded sample."""

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.detect.verdicts import run_detect
from deeplog_spark.core.errors import InputError
from deeplog_spark.evaluate.metrics import auroc_from_histogram, rates, run_evaluate
from deeplog_spark.nn.model import KeyLSTM, KeyModelConfig, save_checkpoint
from deeplog_spark.nn.scoring import KeyScorer
from deeplog_spark.nn.sources import CountSampledSource, key_columns
from deeplog_spark.nn.trainer import TrainJob, fit, seed_everything
from deeplog_spark.core.runs import read_json, run_dir, write_json
from deeplog_spark.core.tables import read_table, table_version, write_table
from deeplog_spark.detect.calibration import run_calibrate

VOCAB, H, END = 6, 3, 8  # events E1..E6; markers 7 (start) and 8 (end)
RUN = "handmade"
W = [1, 2, 2, 2, 2, 3, 4]  # a workflow with four E2 (more than the model's h=3 can count)
NORMAL = [W + [5] * r for r in range(5)]  # read 0..4 times (E5)
# each anomaly kind: what each detector can see. `order` has normal counts (only the key model sees
# it); `extra` (five E2) has only windows seen in normal sessions (only the count model sees it)
ANOMALIES = {"trunc": [1, 2], "unseen": [1, 2, 2, 2, 2, 6, 3, 4], "order": [1, 2, 2, 2, 2, 4, 3],
             "extra": [1, 2, 2, 2, 2, 2, 3, 4]}


def _sessions():
    rows = [(f"n{s}_{i}_{r}", ev, 0, s) for s in ("train", "val", "test") for i in range(20 if s == "train" else 5)
            for r, ev in enumerate(NORMAL)]
    rows += [(f"n{s}_read5", W + [5] * 5, 0, s) for s in ("val", "test")]  # more reads than training had
    rows += [(f"{name}_{s}_{i}", ev, 1, s) for name, ev in ANOMALIES.items() for s in ("val", "test") for i in range(2)]
    return rows


def _train_key(markers: bool, sessions) -> KeyLSTM:
    from deeplog_spark.features.window_rule import session_windows

    counts: dict = {}
    for ev in sessions:
        for w in session_windows(ev, H, (VOCAB + 1, VOCAB + 2) if markers else None):
            counts[w] = counts.get(w, 0) + 1
    x = np.array([w for w, _ in counts]), np.array([y for _, y in counts])
    seed_everything(0)
    model = KeyLSTM(KeyModelConfig(vocab_size=VOCAB, h=H, embed_dim=8, hidden=16, layers=1, dropout=0.0, markers=markers))
    src = CountSampledSource(key_columns(*x, np.array(list(counts.values()), np.float32)), 100, batch_size=64)
    fit(model, TrainJob(task="key", model_config={}, epochs=4, lr=0.02, schedule="onecycle", patience=9), src, None,
        torch.device("cpu"))
    return model.eval()


@pytest.fixture(scope="module")
def handmade(spark, tmp_path_factory):
    """Traces, templates and a run (trained key model, count and PCA models, calibration on val)."""
    from deeplog_spark.core.config import Config

    root = tmp_path_factory.mktemp("handmade")
    cfg = Config.load(overrides={"tables_root": str(root / "wh"), "artifacts_root": str(root / "art"), "h": H,
                                 "top_g": 2, "shuffle_partitions": 2})
    rows = [(b, ev, None, label, split, len(ev), None, None, None, "day1", None, None, None)
            for b, ev, label, split in _sessions()]
    write_table(spark.createDataFrame(rows, schemas.TRACES_SCHEMA), cfg.table_path(schemas.TRACES))
    write_table(spark.createDataFrame([(e, f"E{e}", f"template {e}") for e in range(1, VOCAB + 1)], schemas.TEMPLATES_SCHEMA),
                cfg.table_path(schemas.TEMPLATES))
    model = _train_key(True, [ev for _, ev, label, split in _sessions() if split == "train"])
    d = run_dir(cfg.artifacts_root, RUN)
    save_checkpoint(d / "key_model.pt", "key", model, {"vocab_size": VOCAB, "train_vocab": [1, 2, 3, 4, 5], "run_id": RUN})
    write_json(d.parent / "latest.json", {"run_id": RUN})
    run_calibrate(spark, cfg, RUN)
    return cfg, root


def _copied(cfg, root: Path, dst: Path):
    """``cfg`` on a copy of the tables and runs under ``root`` (its ``wh`` and ``art``) at ``dst``."""
    shutil.copytree(root, dst)
    return cfg.replace(tables_root=str(dst / "wh"), artifacts_root=str(dst / "art"))


@pytest.fixture
def detect_cfg(handmade, tmp_path):
    """The handmade tables and run, copied: each test writes its own."""
    cfg, root = handmade
    return _copied(cfg, root, tmp_path / "h")


@pytest.fixture(scope="module")
def detected(spark, handmade, tmp_path_factory):
    """The handmade run's detection (default settings), run once: (cfg, its stats). The tests that
    only read its verdicts and predictions share it; one that writes takes ``detected_copy``."""
    cfg, root = handmade
    cfg = _copied(cfg, root, tmp_path_factory.mktemp("detected") / "h")
    return cfg, run_detect(spark, cfg)


@pytest.fixture
def detected_copy(detected, tmp_path):
    cfg, _ = detected
    return _copied(cfg, Path(cfg.tables_root).parent, tmp_path / "h")


def _verdicts(spark, cfg, **where):
    df = read_table(spark, cfg.table_path(schemas.VERDICTS))
    for k, v in where.items():
        df = df.where(F.col(k) == v)
    return {r.block_id: r for r in df.collect()}


def test_calibration_fuses_count_and_key_on_val(detect_cfg):
    cal = read_json(run_dir(detect_cfg.artifacts_root, RUN) / "calibration.json")
    # `order` needs the key model, `extra` the count model: neither alone reaches val F1 1
    assert cal["detectors"]["count"]["val_f1"] < 1.0 and cal["detectors"]["key"]["val_f1"] < 1.0
    assert "count" in cal["fused"]["members"] and cal["fused"]["val_f1"] == 1.0
    assert any(d.startswith("key") for d in cal["fused"]["members"])
    assert cal["val_anomalies"] == 8 and cal["count_knobs"]["free_events"] == [5]


def test_every_anomaly_kind_is_flagged_with_its_reason_and_normals_are_not(spark, detected):
    v = _verdicts(spark, detected[0], split="test")
    flagged = {b for b, r in v.items() if r.anomalous}
    assert flagged == {b for b in v if not b.startswith("n")}  # every anomaly, no normal (read4 too)
    unseen = v["unseen_test_0"].reason  # every detector that fired says why: the count, then where it broke
    assert unseen.startswith("count: never in normal sessions: E6 (template 6); key: at step 5 the model did not "
                             "expect E6"), unseen
    extra = v["extra_test_0"]
    assert extra.reason.startswith("count: no normal session has these counts") and "E2 5 (normal 4)" in extra.reason
    assert "key" not in extra.reason  # every window of it is one the model expects
    assert extra.detectors == ["count"]
    order = v["order_test_0"]
    assert not order.count_anomalous and order.reason.startswith("key: at step 5 the model did not expect E4")
    assert [d for d in order.detectors if d.startswith("key")] and "count" not in order.detectors
    assert v["ntest_0_0"].reason is None and v["ntest_0_0"].detectors == []


def test_a_truncated_session_is_flagged_through_the_end_marker(spark, detect_cfg):
    run_detect(spark, detect_cfg.replace(predictions="all"))
    p = {(r.block_id, r.position): r for r in read_table(spark, detect_cfg.table_path(schemas.PREDICTIONS)).collect()}
    end = p[("trunc_test_0", 2)]  # [start, E1, E2] -> the end: the model expected E2
    assert end.window == [VOCAB + 1, 1, 2] and end.y_true == END and end.key_anomaly and end.key_rank > 2
    assert end.y_pred_topg[0] == 2
    assert not any(p[("trunc_test_0", i)].key_anomaly for i in (0, 1))  # its events themselves were expected
    normal_end = p[("ntest_0_0", 7)]
    assert normal_end.y_true == END and not normal_end.key_anomaly
    # without the end marker (the spec's windows) the same session is one unremarkable window
    model = _train_key(False, [ev for _, ev, _, split in _sessions() if split == "train"])
    scorer = KeyScorer(model, [1, 2, 3, 4, 5], top_g=2)
    assert scorer.score(np.array([[0, 0, 1]]), np.array([2]))["key_rank"][0] <= 2


def test_predictions_hold_the_anomalous_sessions_by_default(spark, detected):
    detect_cfg, stats = detected
    preds = read_table(spark, detect_cfg.table_path(schemas.PREDICTIONS))
    v = read_table(spark, detect_cfg.table_path(schemas.VERDICTS))
    flagged = {r.block_id for r in v.where("anomalous").collect()}
    assert {r.block_id for r in preds.select("block_id").distinct().collect()} == flagged
    n = {r.block_id: r.n_windows for r in v.collect()}
    assert preds.count() == sum(n[b] for b in flagged) and stats["sessions"] == v.count() == len(_sessions())


def test_rerun_replaces_and_new_thresholds_add_rows(spark, detected_copy):
    detect_cfg = detected_copy  # detected once already: this run replaces its rows
    run_detect(spark, detect_cfg)
    verdicts = lambda: read_table(spark, detect_cfg.table_path(schemas.VERDICTS))  # noqa: E731
    assert verdicts().count() == len(_sessions())
    run_detect(spark, detect_cfg.replace(top_g=1))
    assert verdicts().count() == 2 * len(_sessions()) and verdicts().where("g = 2").count() == len(_sessions())
    # the fused verdict does not depend on g; DeepLog's rule does
    a = {r.block_id: r for r in verdicts().where("g = 1").collect()}
    b = {r.block_id: r for r in verdicts().where("g = 2").collect()}
    assert all(a[x].anomalous == b[x].anomalous for x in a)
    assert sum(r.deeplog_anomalous for r in a.values()) >= sum(r.deeplog_anomalous for r in b.values())


def test_evaluate_writes_a_row_per_detector_and_reports(spark, detected_copy):
    detect_cfg = detected_copy
    summary = run_evaluate(spark, detect_cfg)
    m = read_table(spark, detect_cfg.table_path(schemas.METRICS))
    test = {(r.detector, r.threshold_source): r for r in m.where("split = 'test'").collect()}
    assert {("fused", "val_chosen"), ("count", "val_chosen"), ("key", "val_chosen"), ("key_nll", "val_chosen"),
            ("pca", "val_chosen"), ("deeplog", "spec"), ("key", "spec"), ("exact", "baseline"),
            ("pca_q", "baseline")} <= set(test)
    fused = test[("fused", "val_chosen")]
    assert (fused.tp, fused.fp, fused.fn) == (8, 0, 0) and fused.tn == 5 * 5 + 1
    assert test[("key", "spec")].threshold == 2.0
    out = run_dir(detect_cfg.artifacts_root, RUN) / "eval"
    for name in ("metrics.json", "classification_report.md", "f1_latency_table.csv", "roc_curve.png",
                 "f1_comparison_bar.png"):
        assert (out / name).is_file(), name
    assert "| fused | val_chosen |" in (out / "classification_report.md").read_text()
    cols = [c for c in m.columns if c != "evaluated_at"]
    before = sorted(m.select(cols).collect())
    run_evaluate(spark, detect_cfg)  # a re-run replaces its own rows: same contents, a new version
    assert sorted(read_table(spark, detect_cfg.table_path(schemas.METRICS)).select(cols).collect()) == before
    assert table_version(spark, detect_cfg.table_path(schemas.METRICS)) == 1
    assert summary["fused_rule"] == read_json(run_dir(detect_cfg.artifacts_root, RUN) / "calibration.json")["fused"]["members"]


def test_calibration_reads_val_rows_only(spark, detect_cfg):
    """Changing the test split's labels changes nothing that calibration chose; changing val's does."""
    cal_path = run_dir(detect_cfg.artifacts_root, RUN) / "calibration.json"
    strip = lambda c: {k: v for k, v in c.items() if k != "seconds"}  # noqa: E731
    before = strip(read_json(cal_path))
    traces = read_table(spark, detect_cfg.table_path(schemas.TRACES)).cache()
    flipped = traces.withColumn("label", F.when(F.col("split") == "test", 1 - F.col("label")).otherwise(F.col("label")))
    write_table(flipped, detect_cfg.table_path(schemas.TRACES))
    run_calibrate(spark, detect_cfg, RUN)
    assert strip(read_json(cal_path)) == before
    val_flipped = traces.withColumn("label", F.when(F.col("split") == "val", 1 - F.col("label")).otherwise(F.col("label")))
    write_table(val_flipped, detect_cfg.table_path(schemas.TRACES))
    run_calibrate(spark, detect_cfg, RUN)
    assert strip(read_json(cal_path)) != before
    traces.unpersist()


def test_distinct_sequence_scoring_equals_a_per_window_reference(spark, cfg):
    """Verdicts and the predictions of flagged sessions match every window of the windows table scored
    one by one, for a model with session markers and for one with the spec's windows (an older run)."""
    from deeplog_spark.features.runner import run_windows
    from deeplog_spark.ingest.runner import run_ingest

    run_ingest(spark, cfg)
    torch.manual_seed(5)
    for markers in (True, False):
        c = cfg.replace(session_markers=markers, top_g=3)
        run_windows(spark, c)
        model = KeyLSTM(KeyModelConfig(vocab_size=29, h=c.h, embed_dim=8, hidden=8, layers=1, dropout=0.0, markers=markers))
        run = f"random{int(markers)}"
        vocab = list(range(1, 29))  # E29 counts as never seen in training
        save_checkpoint(run_dir(c.artifacts_root, run) / "key_model.pt", "key", model,
                        {"vocab_size": 29, "train_vocab": vocab, "run_id": run})
        run_detect(spark, c, run)
        windows = read_table(spark, c.table_path(schemas.WINDOWS)).orderBy("block_id", "position").collect()
        out = KeyScorer(model, vocab, top_g=3).score(np.stack([w.window for w in windows]),
                                                    np.array([w.next_event for w in windows]))
        ref: dict = {}
        for w, rank, score in zip(windows, out["key_rank"], out["key_score"]):
            r = ref.setdefault(w.block_id, {"n": 0, "max": 0, "first": None, "over": 0, "windows": {}})
            r["n"] += 1
            r["max"] = max(r["max"], int(rank))
            if rank > 3:
                r["over"] += 1
                r["first"] = w.position if r["first"] is None else r["first"]
            r["windows"][w.position] = (list(w.window), w.next_event, int(rank), float(score))
        v = _verdicts(spark, c, run_id=run)
        assert len(v) == len(ref) == 3000
        for b, r in ref.items():
            got = v[b]
            assert (got.n_windows, got.max_key_rank, got.n_anomalous_windows, got.first_anomalous_position) == \
                (r["n"], r["max"], r["over"], r["first"]), b
            assert got.deeplog_anomalous == (r["max"] > 3)
            if r["first"] is not None:  # DeepLog's first anomalous window, as the windows table has it
                window, nxt, _, _ = r["windows"][r["first"]]
                assert (got.first_anomaly_window, got.first_anomaly_next_event) == (window, nxt), b
        preds = read_table(spark, c.table_path(schemas.PREDICTIONS)).where(F.col("run_id") == run).collect()
        # this run has no calibration: its fused rule is DeepLog's key rule at g, so it flags what the reference does
        assert {p.block_id for p in preds} == {b for b, r in ref.items() if r["max"] > 3}
        for p in preds:
            window, nxt, rank, score = ref[p.block_id]["windows"][p.position]
            assert (p.window, p.y_true, p.key_rank) == (window, nxt, rank) and p.key_score == pytest.approx(score, rel=1e-5)


def test_a_model_is_refused_for_data_it_cannot_score(spark, detect_cfg):
    with pytest.raises(InputError, match="exceeds the model's"):
        run_detect(spark, detect_cfg.replace(top_g=50))
    with pytest.raises(InputError, match="no sessions to score in batch 'day3': ingest it first"):
        run_detect(spark, detect_cfg.replace(ingest_batch="day3"))


def test_a_batch_whose_every_row_was_rejected_is_an_error_not_zero_verdicts(spark, detect_cfg):
    from deeplog_spark.core.schemas import INGEST_REJECTS_SCHEMA

    rejected = [("event_traces", "f.csv", "b9", "b9,x", "malformed_features", None, dt.datetime(2026, 1, 1), "day9")] * 3
    write_table(spark.createDataFrame(rejected, INGEST_REJECTS_SCHEMA), detect_cfg.table_path(schemas.INGEST_REJECTS))
    with pytest.raises(InputError, match="all 3 of its input rows were rejected"):
        run_detect(spark, detect_cfg.replace(ingest_batch="day9"))


def test_metrics_match_scikit_learn():
    from sklearn import metrics as skm

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    score = np.round(rng.random(300) + 0.6 * y, 1)  # rounded: many ties
    pred = score > 0.8
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    r = rates({"tp": tp, "fp": fp, "tn": tn, "fn": fn})
    assert r["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert r["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert r["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    hist: dict = {}
    for a, s in zip(y, score):
        n, p = hist.get(s, (0, 0))
        hist[s] = (n + (a == 0), p + (a == 1))
    assert auroc_from_histogram([(s, n, p) for s, (n, p) in hist.items()]) == pytest.approx(skm.roc_auc_score(y, score))
    assert rates({"tp": 0, "fp": 0, "tn": 5, "fn": 0})["precision"] == 0.0


@pytest.mark.extended  # two detections at once
def test_two_detect_runs_at_the_same_time_both_land(spark, detect_cfg):
    """Delta optimistic concurrency: two detections (different run ids) write predictions,
    verdicts and metrics at once, starting from no tables; conflicts are retried, nothing lost."""
    import threading

    other = "handmade2"
    src, dst = run_dir(detect_cfg.artifacts_root, RUN), run_dir(detect_cfg.artifacts_root, other)
    shutil.copytree(src, dst)
    from deeplog_spark.nn.model import load_checkpoint

    model, payload = load_checkpoint(dst / "key_model.pt")  # the copy is a run of its own
    save_checkpoint(dst / "key_model.pt", "key", model, {**payload["extra"], "run_id": other})
    patterns = read_table(spark, detect_cfg.table_path(schemas.COUNT_PATTERNS)).where(F.col("run_id") == RUN)
    patterns.withColumn("run_id", F.lit(other)).write.format("delta").mode("append").save(
        detect_cfg.table_path(schemas.COUNT_PATTERNS))
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
    for table in (schemas.VERDICTS, schemas.METRICS):
        got = {r.run_id: r["count"] for r in read_table(spark, detect_cfg.table_path(table)).groupBy("run_id").count().collect()}
        assert set(got) == {RUN, other} and got[RUN] == got[other], table
    from deeplog_spark.detect.verdicts import DETECTION_COLUMNS

    # the rows say which detection wrote them (and when): the rest is the verdict
    mine = read_table(spark, detect_cfg.table_path(schemas.VERDICTS)).where(F.col("run_id") == RUN).drop(
        "run_id", *DETECTION_COLUMNS)
    theirs = read_table(spark, detect_cfg.table_path(schemas.VERDICTS)).where(F.col("run_id") == other).drop(
        "run_id", *DETECTION_COLUMNS)
    assert mine.exceptAll(theirs).count() == 0 and theirs.exceptAll(mine).count() == 0  # same model, same verdicts


def test_commit_retry_retries_conflicts_only(spark):
    from delta.exceptions import ConcurrentAppendException

    from deeplog_spark.core.tables import commit_with_retry

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


def _bundle_stub():
    from types import SimpleNamespace

    return SimpleNamespace(run_id="r", markers=True, start_end=(6, 7), vocab_size=5, h=3,
                           calibration={"fused": {"members": {"count": 0.5, "key_nll": 4.0, "value": 6.5}}},
                           value_threshold=lambda k: 2.0)


def test_sequence_columns_give_the_key_reason_and_the_model_ids_once_per_sequence(spark):
    from deeplog_spark.detect.verdicts import sequence_columns

    df = spark.createDataFrame(
        [([1, 2, 3], 1, 7, 0.001, 12, [7, 2, 1], [6, 1, 2]), ([1, 9, 0], 2, 4, 0.5, 1, [4], [0, 1, 9, 2])],
        "events array<int>, key_position int, key_next_event int, key_p double, max_key_rank int, "
        "key_expected array<int>, key_window array<int>")
    got = {tuple(r.events): r for r in sequence_columns(df, _bundle_stub()).collect()}
    assert got[(1, 2, 3)].model_events is None  # every id known: the events themselves
    assert got[(1, 9, 0)].model_events == [1, -1, -1]  # outside 1..vocab_size: UNKNOWN_ID
    # Java's %.2g keeps two significant digits: 0.0010
    assert got[(1, 2, 3)].key_text == ("key: at step 1 the model did not expect the end of the session "
                                       "(p=0.0010, rank 12; expected end, E2, E1) after start E1 E2")
    assert got[(1, 9, 0)].key_text == "key: at step 2 the model did not expect E4 (p=0.50, rank 1; expected E4) after E1 E9 E2"


def test_the_verdict_columns_of_every_session_use_no_lambda(spark):
    """A lambda (an array function such as transform or filter) is evaluated row by row and keeps
    Spark from compiling the session-level projection into one loop; what needs one is built per
    sequence (sequence_columns)."""
    from deeplog_spark.detect.verdicts import _deeplog_evidence, decide

    sessions = spark.createDataFrame([], (
        "block_id string, split string, label int, ingest_batch string, session_start timestamp, "
        "session_end timestamp, events array<int>, model_events array<int>, "
        "key_text string, key_p double, key_position int, n_windows int, n_anomalous_windows int, max_key_rank int, "
        "max_key_score double, max_value_error float, value_position int, value_interval double, value_expected double, "
        "value_first_over int, count_anomalous boolean, count_score double, count_reason string, "
        "exact_anomalous boolean, pca_spe double, first_key_position int, first_key_window array<int>, "
        "first_key_next_event int, first_key_reason string"))
    verdicts = _deeplog_evidence(decide(sessions, _bundle_stub(), 9, 3.0), _bundle_stub())
    plan = verdicts._jdf.queryExecution().analyzed().toString()
    assert "first_anomaly_window" in plan and "reason" in plan
    assert "lambdafunction" not in plan.lower(), plan


def test_a_run_scores_the_same_from_another_tables_folder(spark, detect_cfg, tmp_path):
    """The documented way to score new data with an existing model: the run carries its count
    patterns, so a tables folder without them (or with another run's) scores as the training one;
    a run that lacks them is refused, not scored with none."""
    here = run_detect(spark, detect_cfg)
    fresh = detect_cfg.replace(tables_root=str(tmp_path / "fresh"))
    for name in (schemas.TRACES, schemas.TEMPLATES):
        shutil.copytree(detect_cfg.table_path(name), fresh.table_path(name))
    there = run_detect(spark, fresh)
    flagged = lambda c: sorted(r.block_id for r in read_table(spark, c.table_path(schemas.VERDICTS)).where("anomalous").collect())  # noqa: E731
    assert there["anomalous_sessions"] == here["anomalous_sessions"] > 0 and flagged(fresh) == flagged(detect_cfg)
    (run_dir(detect_cfg.artifacts_root, RUN) / "count_patterns.json").unlink()  # a run trained before it was kept
    with pytest.raises(InputError, match="normal patterns are neither in its folder"):
        run_detect(spark, fresh)
    assert run_detect(spark, detect_cfg)["anomalous_sessions"] == here["anomalous_sessions"]  # the table still has them
