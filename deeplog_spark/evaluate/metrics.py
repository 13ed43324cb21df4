"""Evaluate stage: session-level metrics of every detector, the fused one and the baselines, per split.

One Spark aggregation over the detection's verdicts: every session contributes, for every
(detector, threshold source), its decision and its score (rounded to 0.05 % in log space); the
driver gets that histogram (bounded by the detectors, the splits and the distinct scores, never
the table) and computes the confusion counts, rates, AUROC (Mann-Whitney, ties half) and ROC points.

Rows, each with ``threshold_source``:

- ``val_chosen``: ``fused`` (the run's fused rule) and every detector at the threshold the run's
  calibration chose on the val split (``key``: DeepLog's top-g with g chosen on val;
  ``key_nll``: the session's largest -log p; ``value``; ``count``; ``pca``).
- ``spec``: the DeepLog spec's rule at the detection's g and k (``deeplog``: key OR value), and the
  key detector alone at g (the spec's g = 9 reference row).
- ``baseline``: the exact count-vector rule (``exact``) and PCA at loglizer's Q-statistic (``pca_q``).

Thresholds are never chosen here, so the test split influences nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.config import SPLITS, Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.logs import stage
from deeplog_spark.core.runs import detection_rows, detection_stats_path, read_json, validate_run_id, write_json
from deeplog_spark.core.tables import read_table, replace_where, table_exists
from deeplog_spark.detect.bundle import ModelBundle
from deeplog_spark.detect.verdicts import fires, fused_members, score_columns, templates_map
from deeplog_spark.evaluate.plots import plot_f1_bars, plot_roc
from deeplog_spark.evaluate.report import write_report
from deeplog_spark.integrations.tracking import log_evaluation

log = logging.getLogger(__name__)

#: log-space resolution of the score histogram (AUROC ties within 0.05 % of each other)
SCORE_RESOLUTION = 2000.0


def rates(c: dict) -> dict:
    """Precision, recall, F1, FPR, accuracy, balanced accuracy and MCC from a confusion dict."""
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    div = lambda a, b: a / b if b else 0.0  # noqa: E731 - sklearn's zero_division=0 convention
    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "precision": precision,
        "recall": recall,
        "f1": div(2 * precision * recall, precision + recall),
        "fpr": div(fp, fp + tn),
        "accuracy": div(tp + tn, tp + fp + tn + fn),
        "balanced_accuracy": (recall + div(tn, tn + fp)) / 2,
        "mcc": div(tp * tn - fp * fn, denom),
    }


def projected(fpr: float, recall: float, ratio: float) -> dict:
    """Precision and F1 at anomaly share ``ratio`` from a detector's FPR and recall."""
    tp, fp = ratio * recall, (1 - ratio) * fpr
    p = tp / (tp + fp) if tp + fp else 0.0
    return {"precision": p, "f1": 2 * p * recall / (p + recall) if p + recall else 0.0}


def auroc_from_histogram(pairs: list[tuple[float, int, int]]) -> float | None:
    """AUROC from (score, negatives, positives) with distinct scores; ties count half."""
    pos = sum(p for _, _, p in pairs)
    neg = sum(n for _, n, _ in pairs)
    if not pos or not neg:
        return None
    below, acc = 0, 0.0
    for _, n, p in sorted(pairs):
        acc += p * (below + n / 2)
        below += n
    return acc / (pos * neg)


def roc_from_histogram(pairs: list[tuple[float, int, int]]) -> list[tuple[float, float]]:
    """(FPR, TPR) at every distinct score, from the top."""
    pos = sum(p for _, _, p in pairs) or 1
    neg = sum(n for _, n, _ in pairs) or 1
    pts, tp, fp = [(0.0, 0.0)], 0, 0
    for _, n, p in sorted(pairs, reverse=True):
        tp, fp = tp + p, fp + n
        pts.append((fp / neg, tp / pos))
    return pts


def rules(bundle: ModelBundle, g: int, k: float) -> dict[tuple[str, str], tuple[Column, Column, float | None]]:
    """(detector, threshold source) -> (decision, score, threshold) over verdict rows."""
    sc = score_columns()
    out: dict[tuple[str, str], tuple[Column, Column, float | None]] = {}
    members = fused_members(bundle, g)
    fused_score = None
    for d, t in members.items():  # a fused score for ROC: the members' scores over their thresholds
        s = sc[d] / F.lit(max(abs(t), 1e-9)) if d not in ("count", "exact") else sc[d] * F.lit(2.0)
        fused_score = s if fused_score is None else F.greatest(fused_score, s)
    out[("fused", "val_chosen")] = (F.col("anomalous"), fused_score, None)
    calibrated = (bundle.calibration or {}).get("detectors", {})
    for d, info in calibrated.items():
        t = float(info["threshold"])
        score = F.col("count_score") if d == "count" else sc[d]
        out[(d, "val_chosen")] = (fires(d, t), score, t)
    spec_value = bundle.value_threshold(k)
    deeplog_score = F.col("max_key_rank") / F.lit(float(g))
    if spec_value is not None:
        deeplog_score = F.greatest(deeplog_score, F.coalesce(F.col("max_value_error") / F.lit(spec_value), F.lit(0.0)))
    out[("deeplog", "spec")] = (F.col("deeplog_anomalous"), deeplog_score, None)
    out[("key", "spec")] = (fires("key", g), sc["key"], float(g))
    if bundle.count is not None:
        out[("exact", "baseline")] = (fires("exact", 0.5), sc["exact"], 0.5)
    if bundle.pca is not None:
        out[("pca_q", "baseline")] = (fires("pca", bundle.pca.q_threshold), sc["pca"], bundle.pca.q_threshold)
    return out


def histogram(verdicts: DataFrame, table: dict) -> list[dict]:
    """One aggregation: (split, label, detector, source, decision, rounded score) -> sessions.

    Each rule is a number inside the aggregation and its (detector, source) only in the result,
    and a score is rounded as ``floor(x + 0.5)``: Spark's ``round`` of a double goes through a
    BigDecimal, which makes this aggregation several times slower for the same histogram."""
    rules = list(table)
    items = [F.struct(F.lit(i).alias("r"), pred.alias("p"),
                      (F.floor(F.log1p(F.abs(score.cast("double"))) * F.lit(SCORE_RESOLUTION) + F.lit(0.5))
                       * F.signum(score)).alias("q"))
             for i, (pred, score, _) in enumerate(table.values())]
    rows = (verdicts.where(F.col("label").isNotNull())
            .select("split", "label", F.explode(F.array(*items)).alias("x"))
            .groupBy("split", "label", "x.r", "x.p", "x.q").agg(F.count(F.lit(1)).alias("n")).collect())
    return [{"split": r["split"], "label": r["label"], "d": rules[r["r"]][0], "s": rules[r["r"]][1], "p": r["p"],
             "q": r["q"], "n": r["n"]} for r in rows]


#: The split of a batch evaluation: every labelled session of the batch, whatever its split.
ALL = "all"


def metrics_rows(hist: list, table: dict, g: int, k: float, splits: tuple[str, ...] = SPLITS) -> tuple[list[dict], dict]:
    """Metrics per (split, detector, source) and ROC points of the last split (test) from the histogram."""
    conf: dict = {}
    scores: dict = {}
    for r in hist:
        key = (r["split"], r["d"], r["s"])
        c = conf.setdefault(key, {"tp": 0, "fp": 0, "tn": 0, "fn": 0})
        pred, y = bool(r["p"]), int(r["label"])
        c[("tp" if y else "fp") if pred else ("fn" if y else "tn")] += r["n"]
        if r["q"] is not None:
            h = scores.setdefault(key, {})
            neg, pos = h.get(r["q"], (0, 0))
            h[r["q"]] = (neg + (0 if y else r["n"]), pos + (r["n"] if y else 0))
    rows, curves = [], {}
    for (det, src), (_, _, thr) in table.items():
        for split in splits:
            c = conf.get((split, det, src), {"tp": 0, "fp": 0, "tn": 0, "fn": 0})
            pairs = [(q, n, p) for q, (n, p) in scores.get((split, det, src), {}).items()]
            rows.append({"threshold_source": src, "detector": det, "split": split,
                         "g": int(thr) if det == "key" and thr is not None else g, "k": float(k),
                         "threshold": thr, "sessions": sum(c.values()), **c, **rates(c),
                         "auroc": auroc_from_histogram(pairs)})
            if split == splits[-1] and pairs and (src != "spec" or det == "deeplog"):
                curves.setdefault(det, roc_from_histogram(pairs))
    return rows, curves


def run_evaluate(spark: SparkSession, cfg: Config, model: str | None = None) -> dict:
    """Metrics for the run's verdicts at (top_g, k_sigma): every detector, the fused rule, the baselines.

    With ``ingest_batch``: the metrics of that batch's labelled sessions, whatever their split
    (split ``all``), in the same table, and its reports under ``eval/batch_<batch>/``."""
    with stage("evaluate") as st:
        bundle = ModelBundle(cfg.artifacts_root, model)
        g, k, batch = cfg.top_g, cfg.k_sigma, cfg.ingest_batch or None
        vpath = cfg.table(schemas.VERDICTS)
        verdicts = read_table(spark, vpath).where(detection_rows(bundle.run_id, g, k)) if _exists(spark, vpath) else None
        if verdicts is not None and batch:
            verdicts = verdicts.where(F.col("ingest_batch") == batch).withColumn("split", F.lit(ALL))
        if verdicts is None or verdicts.limit(1).count() == 0:
            raise InputError(f"no verdicts for run {bundle.run_id} at g={g} k={k}"
                             + (f" in batch {batch!r}" if batch else "") + ": run detect first")
        splits = (ALL,) if batch else SPLITS
        table = rules(bundle, g, k)
        rows, curves = metrics_rows(histogram(verdicts, table), table, g, k, splits)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        full = [{**m, "run_id": bundle.run_id, "detect_g": g, "detect_k": float(k), "evaluated_at": now,
                 "ingest_batch": batch} for m in rows]
        metrics_df = spark.createDataFrame(
            [tuple(r.get(f.name) for f in schemas.METRICS_SCHEMA.fields) for r in full], schemas.METRICS_SCHEMA)
        # one evaluation = the verdicts of (run_id, g, k[, batch]): a re-run replaces its rows, others are kept
        mpath = cfg.table(schemas.METRICS)
        if _exists(spark, mpath) and "ingest_batch" not in read_table(spark, mpath).columns:  # a table of before
            spark.sql(f"ALTER TABLE {mpath.sql} ADD COLUMNS (ingest_batch STRING)")
        replace_where(metrics_df, mpath, _evaluation_rows(bundle.run_id, g, k, batch), partition_by=["run_id"])
        if batch:
            return _batch_summary(bundle, g, k, batch, full, st)
        out_dir = bundle.dir / "eval"
        stats_path = detection_stats_path(bundle.dir, g, k)
        latency_ms = None
        if stats_path.is_file():
            ds = read_json(stats_path)
            latency_ms = 1000.0 * ds["scoring_seconds"] / max(ds["windows"], 1)
        summary = {"run_id": bundle.run_id, "default": {"g": g, "k": k}, "ms_per_window": latency_ms,
                   "calibration": bundle.calibration, "fused_rule": fused_members(bundle, g),
                   "metrics": [{k_: v for k_, v in r.items() if k_ != "evaluated_at"} for r in full]}
        write_json(out_dir / "metrics.json", summary)
        _write_reports(out_dir, summary)
        aucs = {m["detector"]: m["auroc"] for m in summary["metrics"] if m["split"] == "test"
                and (m["threshold_source"] != "spec" or m["detector"] == "deeplog")}
        plot_roc(curves, aucs, out_dir / "roc_curve.png")
        plot_f1_bars(summary["metrics"], out_dir / "f1_comparison_bar.png")
        summary["top_sessions"] = top_sessions(spark, cfg, verdicts)
        summary["report"] = str(write_report(bundle.dir, summary, summary["top_sessions"]))
        if cfg.mlflow:
            summary["mlflow_run_id"] = log_evaluation(bundle.dir, summary["metrics"], out_dir)
        test_fused = next(m for m in rows if m["split"] == "test" and m["detector"] == "fused")
        st.update(run_id=bundle.run_id, fused=",".join(fused_members(bundle, g)), test_f1=round(test_fused["f1"], 4))
    return summary


def top_sessions(spark: SparkSession, cfg: Config, verdicts: DataFrame, n: int = 20) -> list[dict]:
    """The ``n`` most anomalous flagged test sessions (count score, then the key model's surprise),
    with the template of the event where DeepLog's rule first fired appended to the reason."""
    cols = ("block_id", "label", "detectors", "reason", "count_score", "max_key_rank", "max_key_score",
            "first_anomalous_position", "first_anomaly_next_event")
    rows = [r.asDict() for r in verdicts.where((F.col("split") == "test") & F.col("anomalous")).select(*cols)
            .orderBy(F.col("count_score").desc_nulls_last(), F.col("max_key_score").desc_nulls_last(), "block_id")
            .limit(n).collect()]
    templates = templates_map(spark, cfg) if rows else {}
    for r in rows:
        nxt = r.pop("first_anomaly_next_event")
        if nxt is not None:
            where = f"key model: next event E{nxt} '{templates.get(nxt, 'unknown template')}' outside the top g"
            r["reason"] = f"{r['reason']}\n{where}" if r["reason"] else where
        r["detectors"] = ", ".join(r["detectors"] or []) if isinstance(r["detectors"], list) else r["detectors"]
    return rows


def _exists(spark: SparkSession, path: str) -> bool:
    return table_exists(spark, path)


def _evaluation_rows(run_id: str, g: int, k: float, batch: str | None = None) -> str:
    """SQL predicate of the metrics rows of one evaluation (run ids and batches are validated: no quotes)."""
    which = f"ingest_batch = '{validate_run_id(batch)}'" if batch else "ingest_batch IS NULL"
    return f"run_id = '{validate_run_id(run_id)}' AND detect_g = {int(g)} AND detect_k = {float(k)!r} AND {which}"


def _batch_summary(bundle: ModelBundle, g: int, k: float, batch: str, full: list[dict], st: dict) -> dict:
    """A batch evaluation's summary, ``eval/batch_<batch>/metrics.json`` and its classification report."""
    summary = {"run_id": bundle.run_id, "default": {"g": g, "k": k}, "ingest_batch": batch, "split": ALL,
               "ms_per_window": None, "calibration": bundle.calibration, "fused_rule": fused_members(bundle, g),
               "metrics": [{k_: v for k_, v in r.items() if k_ != "evaluated_at"} for r in full]}
    out_dir = bundle.dir / "eval" / f"batch_{batch}"
    write_json(out_dir / "metrics.json", summary)
    _write_reports(out_dir, summary)
    fused = next(m for m in full if m["detector"] == "fused")
    st.update(run_id=bundle.run_id, ingest_batch=batch, sessions=fused["sessions"], test_f1=None,
              batch_f1=round(fused["f1"], 4))
    return summary


#: Row order of the reports: the fused detector, the detectors, the spec and the baselines.
ORDER = ("fused", "count", "key", "key_nll", "value", "pca", "deeplog", "exact", "pca_q")


def _sorted(metrics: list[dict]) -> list[dict]:
    rank = {d: i for i, d in enumerate(ORDER)}
    return sorted(metrics, key=lambda m: (rank.get(m["detector"], 99), m["threshold_source"] != "val_chosen"))


def test_table(summary: dict) -> str:
    """Markdown table of the test-split metrics (of split ``all`` for a batch evaluation), the fused
    rule first, then each detector."""
    lines = ["| detector | thresholds | threshold | TP | FP | TN | FN | precision | recall | F1 | FPR | AUROC |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    split = summary.get("split", "test")
    for m in _sorted([m for m in summary["metrics"] if m["split"] == split]):
        au = "n/a" if m["auroc"] is None else f"{m['auroc']:.4f}"
        thr = "" if m["threshold"] is None else f"{m['threshold']:.4g}"
        lines.append(f"| {m['detector']} | {m['threshold_source']} | {thr} | {m['tp']} | {m['fp']} | {m['tn']} | "
                     f"{m['fn']} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['fpr']:.5f} | {au} |")
    return "\n".join(lines)


def _write_reports(out_dir: Path, summary: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rule = ", ".join(f"{d} > {t:.4g}" for d, t in summary["fused_rule"].items())
    report = [f"# Classification report: run {summary['run_id']}", "",
              f"Fused rule (chosen on val): anomalous when {rule}. DeepLog spec rule at g={summary['default']['g']}, "
              f"k={summary['default']['k']}. Session level (BlockId).", "",
              ("## Test split" if summary.get("split", "test") == "test" else f"## Batch {summary.get('ingest_batch')}, "
               "every labelled session"), "", test_table(summary), "", "## All splits", "",
              "| detector | thresholds | split | sessions | precision | recall | F1 | FPR | accuracy | balanced acc. | MCC |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in _sorted(summary["metrics"]):
        report.append(f"| {m['detector']} | {m['threshold_source']} | {m['split']} | {m['sessions']} | "
                      f"{m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['fpr']:.5f} | {m['accuracy']:.4f} | "
                      f"{m['balanced_accuracy']:.4f} | {m['mcc']:.4f} |")
    (out_dir / "classification_report.md").write_text("\n".join(report) + "\n")
    lat = summary["ms_per_window"]
    csv = ["detector,threshold_source,threshold,test_f1,ms_per_window"]
    for m in _sorted(summary["metrics"]):
        if m["split"] == summary.get("split", "test"):
            csv.append(f"{m['detector']},{m['threshold_source']},{'' if m['threshold'] is None else m['threshold']},"
                       f"{m['f1']:.6f},{'' if lat is None else f'{lat:.6f}'}")
    (out_dir / "f1_latency_table.csv").write_text("\n".join(csv) + "\n")
