"""Thresholds and the fusion rule, chosen on the val split only (pure Python and numpy, no Spark).

Every detector gives each session a score and calls it anomalous when the score exceeds its
threshold (the count detector: when one of its rules fires, the rules' knobs chosen here too).
Input is a small table collected by :mod:`deeplog_spark.detect.scores`: one record per distinct
(val sequence, value-score bucket) with the number of normal and anomalous val sessions it
stands for, and the scores. Unlabelled sessions are left out.

- **Per detector**: the threshold with the best val F1; ties go to the larger threshold (fewer
  alarms). The count detector's knobs are searched on a grid (:mod:`deeplog_spark.models.count`).
- **Fusion**: a session is anomalous when any member detector fires. Members are chosen greedily:
  start from the best single detector; add the detector (with its threshold re-chosen for the
  union) that raises val F1 the most; stop when none raises it. So fusion never keeps a detector
  that lowers val F1.
- **No labelled anomalies in val**: every threshold is the (1 - ``fpr``) quantile of the val
  sessions' scores (all taken as normal) and the fused rule is count OR key.

Nothing here reads the test split: the caller passes val rows only (tested by changing test labels).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

#: Detectors that may join the fused rule, in the order ties are broken.
FUSION_CANDIDATES = ("count", "key", "key_nll", "value", "pca")


@dataclasses.dataclass
class ValTable:
    """Weighted val records: ``normal``/``anomalous`` session counts and one score array per detector."""

    normal: np.ndarray
    anomalous: np.ndarray
    scores: dict[str, np.ndarray]

    @classmethod
    def from_records(cls, records: Sequence[Mapping], detectors: Iterable[str]) -> "ValTable":
        dets = list(detectors)
        return cls(normal=np.array([r["normal"] for r in records], dtype=np.float64),
                   anomalous=np.array([r["anomalous"] for r in records], dtype=np.float64),
                   scores={d: np.array([np.nan if r[d] is None else r[d] for r in records], dtype=np.float64)
                           for d in dets})

    @property
    def anomalies(self) -> float:
        return float(self.anomalous.sum())

    @property
    def normals(self) -> float:
        return float(self.normal.sum())


#: The fused rule finds "no signal" when its val F1 is within this factor of flagging every session.
NO_SIGNAL_MARGIN = 1.05


def f1_of(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def fires(score: np.ndarray, threshold: float) -> np.ndarray:
    """Anomalous where the score exceeds the threshold (a missing score never fires)."""
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(score, nan=-np.inf) > threshold


def best_threshold(score: np.ndarray, normal: np.ndarray, anomalous: np.ndarray,
                   base: np.ndarray | None = None) -> tuple[float, float]:
    """(threshold, F1) maximising the F1 of ``base OR score > threshold``; ties: the larger threshold.

    Candidates are the midpoints between consecutive distinct scores and one below the lowest.
    """
    base = np.zeros(len(score), dtype=bool) if base is None else base
    tp0, fp0 = float(anomalous[base].sum()), float(normal[base].sum())
    total_anom = float(anomalous.sum())
    s = np.nan_to_num(score, nan=-np.inf)
    free = ~base
    vals = np.unique(s[free & np.isfinite(s)])
    if len(vals) == 0:
        return math.inf, f1_of(tp0, fp0, total_anom - tp0)
    cands = np.concatenate([[vals[0] - 1.0], (vals[:-1] + vals[1:]) / 2, [math.inf]])
    order = np.argsort(-s[free], kind="stable")
    ss, aa, nn = s[free][order], anomalous[free][order], normal[free][order]
    best = (-1.0, math.inf)
    for t in cands:  # few distinct scores: a loop over candidates with a prefix count is fast enough
        k = int(np.searchsorted(-ss, -t, side="left"))  # rows with score > t are the first k
        tp, fp = tp0 + aa[:k].sum(), fp0 + nn[:k].sum()
        f = f1_of(tp, fp, total_anom - tp)
        if f > best[0] + 1e-12 or (abs(f - best[0]) <= 1e-12 and t > best[1]):
            best = (f, float(t))
    return best[1], best[0]


def quantile_threshold(score: np.ndarray, weight: np.ndarray, fpr: float) -> float:
    """The smallest threshold that at most ``fpr`` of the (weighted) sessions exceed."""
    s = np.nan_to_num(score, nan=-np.inf)
    order = np.argsort(-s)
    cum = np.cumsum(weight[order]) / max(weight.sum(), 1e-12)
    k = int(np.searchsorted(cum, fpr, side="right"))
    return float(s[order][k]) if k < len(s) else float(s[order][-1])


def choose_count_knobs(records: Sequence[Mapping], grid: Mapping[str, Sequence]) -> tuple[dict, float, np.ndarray]:
    """Knobs of the count detector with the best val F1, from per-record rule inputs.

    ``records``: one per (val record, free-share candidate): ``row`` (the val record index),
    ``free_share``, ``normal``, ``anomalous``, ``unseen`` (bool), ``support``, ``d_free`` (None
    when not computed) and ``cap_ratio``. Ties go to fewer val sessions flagged, then to the
    first grid value. Returns (knobs, F1, the decision of each val record at those knobs).
    """
    by_share: dict[float, list] = {}
    for r in records:
        by_share.setdefault(r["free_share"], []).append(r)
    best = None
    for share in sorted(by_share):  # grid order, whatever order the records came in
        rows = sorted(by_share[share], key=lambda r: r["row"])
        idx = np.array([r["row"] for r in rows])
        normal = np.array([r["normal"] for r in rows], dtype=np.float64)
        anom = np.array([r["anomalous"] for r in rows], dtype=np.float64)
        unseen = np.array([bool(r["unseen"]) for r in rows])
        support = np.array([r["support"] for r in rows], dtype=np.float64)
        d_free = np.array([np.inf if r["d_free"] is None else r["d_free"] for r in rows], dtype=np.float64)
        cap = np.array([r["cap_ratio"] for r in rows], dtype=np.float64)
        always = unseen | (support == 0)
        for ms in grid["min_support"]:
            rare = support < ms
            for slack in grid["slack"]:
                rare_far = rare & (d_free > slack)
                for cf in grid["cap_factor"]:
                    pred = always | rare_far | (cap > cf)
                    tp, fp = anom[pred].sum(), normal[pred].sum()
                    f = f1_of(tp, fp, anom.sum() - tp)
                    key = (f, -(tp + fp))
                    if best is None or key > best[0]:
                        decision = np.zeros(int(idx.max()) + 1 if len(idx) else 0, dtype=bool)
                        decision[idx] = pred
                        best = (key, {"free_share": share, "min_support": ms, "slack": slack, "cap_factor": cf}, decision)
    if best is None:
        raise ValueError("no val records to choose the count knobs on")
    return best[1], best[0][0], best[2]


def choose_rules(table: ValTable, fixed: Mapping[str, np.ndarray] | None = None, fpr: float = 0.001) -> dict:
    """Per-detector thresholds and the fused rule from the val table.

    ``fixed``: detectors whose decision is already made per record (the count detector at its
    chosen knobs), as boolean arrays; they join the fused rule like the others, with threshold 0.5.
    """
    fixed = dict(fixed or {})
    scores = {**table.scores, **{d: v.astype(np.float64) for d, v in fixed.items()}}
    dets = [d for d in FUSION_CANDIDATES if d in scores and np.isfinite(np.nan_to_num(scores[d], nan=-np.inf)).any()]
    out: dict = {"val_sessions": int(table.normals + table.anomalies), "val_anomalies": int(table.anomalies),
                 "detectors": {}, "fused": {}}
    if table.anomalies == 0:  # nothing to score F1 on: bound the false alarms instead
        weight = table.normal
        for d in dets:
            t = 0.5 if d in fixed else quantile_threshold(scores[d], weight, fpr)
            out["detectors"][d] = {"threshold": t, "val_f1": None, "rule": f"val quantile {1 - fpr:g}"}
        members = [d for d in ("count", "key") if d in dets] or dets[:1]
        out["fused"] = {"members": {d: out["detectors"][d]["threshold"] for d in members}, "val_f1": None,
                        "rule": "no labelled anomalies in val: count OR key at the val quantile"}
        return out
    for d in dets:
        if d in fixed:
            pred = fixed[d]
            tp, fp = table.anomalous[pred].sum(), table.normal[pred].sum()
            out["detectors"][d] = {"threshold": 0.5, "val_f1": f1_of(tp, fp, table.anomalies - tp)}
        else:
            t, f = best_threshold(scores[d], table.normal, table.anomalous)
            out["detectors"][d] = {"threshold": t, "val_f1": f}
    first = max(dets, key=lambda d: (out["detectors"][d]["val_f1"], -dets.index(d)))
    members = {first: out["detectors"][first]["threshold"]}
    current = out["detectors"][first]["val_f1"]
    base = fires(scores[first], members[first])
    while True:
        step = None
        for d in dets:
            if d in members:
                continue
            if d in fixed:
                pred = base | fixed[d]
                tp, fp = table.anomalous[pred].sum(), table.normal[pred].sum()
                t, f = 0.5, f1_of(tp, fp, table.anomalies - tp)
            else:
                t, f = best_threshold(scores[d], table.normal, table.anomalous, base)
            if f > current + 1e-9 and (step is None or f > step[0] + 1e-12):
                step = (f, d, t)
        if step is None:
            break
        current, d, t = step
        members[d] = t
        base = base | fires(scores[d], t)
    tp, fp = table.anomalous[base].sum(), table.normal[base].sum()
    flag_all = f1_of(table.anomalies, table.normals, 0.0)
    out["fused"] = {"members": members, "val_f1": current, "val_tp": int(tp), "val_fp": int(fp),
                    "rule": "OR of the members, chosen greedily on val F1",
                    # the F1 of flagging every val session: a rule no better finds nothing in these sessions
                    "val_f1_flag_all": flag_all, "no_signal": bool(current <= flag_all * NO_SIGNAL_MARGIN)}
    return out
