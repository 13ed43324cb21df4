"""Thresholds, count knobs and the fused rule chosen on val (pure Python: no Spark)."""

import math

import numpy as np
import pytest

from deeplog_spark.detect import thresholds as C


def _table(rows, dets=("key", "key_nll", "value", "pca")):
    """rows: (normal, anomalous, {detector: score})."""
    return C.ValTable.from_records([{"normal": n, "anomalous": a, **{d: s.get(d) for d in dets}} for n, a, s in rows], dets)


def test_best_threshold_maximises_f1_and_prefers_the_larger_threshold_on_ties():
    score = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    normal = np.array([50, 20, 1, 0, 0], float)
    anomalous = np.array([0, 0, 0, 3, 2], float)
    t, f1 = C.best_threshold(score, normal, anomalous)
    assert f1 == 1.0 and 3.0 < t < 4.0  # the midpoint between the last normal and the first anomaly
    # no anomaly separable: the best is still the F1 maximum, a missing score never fires
    t2, _ = C.best_threshold(np.array([1.0, np.nan]), np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert not C.fires(np.array([np.nan]), t2)[0]


def test_fusion_picks_the_detector_that_separates_and_adds_one_that_catches_the_rest():
    rows = [(1000, 0, {"key": 2, "key_nll": 1.0, "value": 0.5, "pca": 1.0}),
            (0, 30, {"key": 9, "key_nll": 9.0, "value": 0.5, "pca": 1.2}),   # a sequence anomaly
            (0, 10, {"key": 2, "key_nll": 1.0, "value": 8.0, "pca": 1.0}),   # a timing anomaly
            (5, 0, {"key": 2, "key_nll": 1.0, "value": 0.5, "pca": 9.0})]    # normals PCA dislikes
    out = C.choose_rules(_table(rows))
    assert set(out["fused"]["members"]) == {"key", "value"} and out["fused"]["val_f1"] == 1.0
    assert out["detectors"]["pca"]["val_f1"] < out["detectors"]["key"]["val_f1"]
    assert out["fused"]["val_tp"] == 40 and out["fused"]["val_fp"] == 0


def test_fusion_never_adds_a_detector_that_lowers_val_f1():
    rows = [(1000, 0, {"key": 2, "key_nll": 1.0, "value": 0.5, "pca": 1.0}),
            (0, 40, {"key": 9, "key_nll": 9.0, "value": 0.5, "pca": 1.0}),
            (30, 0, {"key": 2, "key_nll": 1.0, "value": 7.0, "pca": 5.0})]   # only false alarms beyond key
    out = C.choose_rules(_table(rows))
    assert list(out["fused"]["members"]) in (["key"], ["key_nll"])
    assert out["fused"]["val_f1"] == 1.0


def test_a_fixed_decision_joins_like_any_detector():
    rows = [(1000, 0, {"key": 2}), (0, 30, {"key": 2}), (0, 10, {"key": 9})]
    count = np.array([False, True, False])
    out = C.choose_rules(_table(rows, ("key",)), {"count": count})
    assert out["fused"]["members"] == {"count": 0.5, "key": pytest.approx(out["fused"]["members"]["key"])}
    assert out["fused"]["val_f1"] == 1.0


def test_without_labelled_anomalies_thresholds_bound_the_val_false_alarms():
    rng = np.random.default_rng(0)
    rows = [(1, 0, {"key": float(k), "key_nll": float(v), "value": None, "pca": 0.0})
            for k, v in zip(rng.integers(1, 10, 2000), rng.random(2000))]
    out = C.choose_rules(_table(rows), fpr=0.01)
    t = out["detectors"]["key_nll"]["threshold"]
    assert 15 <= sum(1 for _, _, s in rows if s["key_nll"] > t) <= 25  # about 1 % of 2000
    assert out["fused"]["val_f1"] is None and set(out["fused"]["members"]) <= {"count", "key"}


def test_count_knobs_are_chosen_on_the_grid_by_val_f1():
    # record 0: a common structure; 1: a rare structure far from its normals (an anomaly);
    # 2: a rare structure close to its normals (normal); 3: a capped free count (normal)
    rec = [dict(row=0, normal=900, anomalous=0, unseen=False, support=800, d_free=None, cap_ratio=0.5),
           dict(row=1, normal=0, anomalous=20, unseen=False, support=4, d_free=9, cap_ratio=0.1),
           dict(row=2, normal=5, anomalous=0, unseen=False, support=4, d_free=1, cap_ratio=0.1),
           dict(row=3, normal=3, anomalous=0, unseen=False, support=800, d_free=None, cap_ratio=3.0)]
    records = [dict(r, free_share=0.3) for r in rec]
    grid = {"min_support": (1, 10), "slack": (0, 2), "cap_factor": (2.0, math.inf)}
    knobs, f1, decision = C.choose_count_knobs(records, grid)
    assert f1 == 1.0 and knobs["min_support"] == 10 and knobs["slack"] == 2 and math.isinf(knobs["cap_factor"])
    assert decision.tolist() == [False, True, False, False]


def test_a_rule_no_better_than_flagging_everything_is_marked_no_signal():
    # anomalies share the normals' scores (OpenStack's ait sequences): the best val F1 is that of
    # flagging every session, and the calibration says so
    same = [(160, 20, {"key": 2, "key_nll": 1.0, "value": None, "pca": 1.0}),
            (20, 2, {"key": 3, "key_nll": 2.0, "value": None, "pca": 1.5})]
    out = C.choose_rules(_table(same))
    assert out["fused"]["no_signal"] is True
    assert out["fused"]["val_f1_flag_all"] == pytest.approx(2 * 22 / (2 * 22 + 180))
    sep = [(180, 0, {"key": 2, "key_nll": 1.0, "value": None, "pca": 1.0}),
           (0, 22, {"key": 9, "key_nll": 9.0, "value": None, "pca": 1.0})]
    assert C.choose_rules(_table(sep))["fused"]["no_signal"] is False
