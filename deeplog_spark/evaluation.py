"""Evaluate stage: session-level metrics per split for key-only, value-only and fused detection.

Everything is computed from the ``verdicts`` table with Spark aggregations (the driver receives
only counts). Because a session is key-anomalous at g exactly when its largest key rank exceeds g,
and value-anomalous at k exactly when its largest error exceeds mu + k*sigma, a sweep over (g, k)
needs no re-scoring: thresholds are chosen on the val split by F1 and then applied to test.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark import schemas
from deeplog_spark.artifacts import read_json, write_json
from deeplog_spark.config import SPLITS, Config
from deeplog_spark.detection import ModelBundle
from deeplog_spark.ingest import InputError
from deeplog_spark.logs import stage
from deeplog_spark.tables import read_table

log = logging.getLogger(__name__)

DETECTORS = ("key", "value", "fused")
K_GRID = (2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5)


def confusion(df: DataFrame, pred: Column, label: str = "label") -> dict:
    """TP/FP/TN/FN of a boolean prediction against 0/1 labels (unlabelled rows are skipped)."""
    y = F.col(label)
    row = df.where(y.isNotNull()).agg(
        F.sum((pred & (y == 1)).cast("long")).alias("tp"),
        F.sum((pred & (y == 0)).cast("long")).alias("fp"),
        F.sum((~pred & (y == 0)).cast("long")).alias("tn"),
        F.sum((~pred & (y == 1)).cast("long")).alias("fn"),
    ).first()
    return {k: int(row[k] or 0) for k in ("tp", "fp", "tn", "fn")}


def rates(c: dict) -> dict:
    """Precision, recall, F1, accuracy, balanced accuracy and MCC from a confusion dict."""
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    div = lambda a, b: a / b if b else 0.0  # noqa: E731 - sklearn's zero_division=0 convention
    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "precision": precision,
        "recall": recall,
        "f1": div(2 * precision * recall, precision + recall),
        "accuracy": div(tp + tn, tp + fp + tn + fn),
        "balanced_accuracy": (recall + div(tn, tn + fp)) / 2,
        "mcc": div(tp * tn - fp * fn, denom),
    }


def auroc(df: DataFrame, score: Column, label: str = "label") -> float | None:
    """Area under the ROC curve of ``score`` (ties count half), computed with Spark ranks."""
    from pyspark.sql.window import Window

    d = df.where(F.col(label).isNotNull() & score.isNotNull()).select(score.cast("double").alias("s"),
                                                                       F.col(label).alias("y"))
    # Mann-Whitney U: average rank of the positives, ties sharing their mean rank.
    grouped = d.groupBy("s").agg(F.count(F.lit(1)).alias("n"), F.sum("y").alias("pos"))
    w = Window.orderBy("s").rowsBetween(Window.unboundedPreceding, -1)
    ranked = grouped.withColumn("below", F.coalesce(F.sum("n").over(w), F.lit(0)))
    row = ranked.agg(F.sum(F.col("pos") * (F.col("below") + (F.col("n") + 1) / 2)).alias("rank_sum"),
                     F.sum("pos").alias("p"), F.sum("n").alias("n")).first()
    p, n = row["p"] or 0, row["n"] or 0
    neg = n - p
    if p == 0 or neg == 0:
        return None
    return float((row["rank_sum"] - p * (p + 1) / 2) / (p * neg))


def roc_points(df: DataFrame, score: Column, label: str = "label", points: int = 200) -> list[tuple[float, float]]:
    """(FPR, TPR) at up to ``points`` score quantiles (for plotting), one Spark pass."""
    d = df.where(F.col(label).isNotNull() & score.isNotNull()).select(score.cast("double").alias("s"), F.col(label).alias("y"))
    qs = sorted(set(d.approxQuantile("s", [i / points for i in range(points + 1)], 0.001)))
    if not qs:
        return []
    aggs = []
    for i, t in enumerate(qs):
        aggs += [F.sum(((F.col("s") >= t) & (F.col("y") == 1)).cast("long")).alias(f"tp{i}"),
                 F.sum(((F.col("s") >= t) & (F.col("y") == 0)).cast("long")).alias(f"fp{i}")]
    row = d.agg(F.sum("y").alias("p"), F.count(F.lit(1)).alias("n"), *aggs).first()
    p, neg = row["p"] or 0, (row["n"] or 0) - (row["p"] or 0)
    pts = [(row[f"fp{i}"] / neg if neg else 0.0, row[f"tp{i}"] / p if p else 0.0) for i in range(len(qs))]
    return sorted(set(pts + [(0.0, 0.0), (1.0, 1.0)]))


def predictions_at(v: DataFrame, g: int, value_threshold: float | None) -> dict[str, Column]:
    """Boolean session predictions of each detector at (g, threshold) from verdict maxima."""
    key = F.col("max_key_rank") > F.lit(g)
    if value_threshold is None:
        return {"key": key, "fused": key}
    value = F.coalesce(F.col("max_value_error") > F.lit(value_threshold), F.lit(False))
    return {"key": key, "value": value, "fused": key | value}


def session_scores(value_threshold: float | None, vocab_size: int) -> dict[str, Column]:
    """Continuous session scores for AUROC: -log p (key), error / threshold (value), their max (fused)."""
    key = F.col("max_key_score") / F.lit(math.log(vocab_size + 1))  # in units of a uniform guess
    if value_threshold is None:
        return {"key": key, "fused": key}
    value = F.col("max_value_error") / F.lit(value_threshold)
    return {"key": key, "value": value, "fused": F.greatest(key, F.coalesce(value, F.lit(0.0)))}


def choose_thresholds(val: DataFrame, vocab_size: int, errors: dict | None) -> dict:
    """Sweep g in 1..vocab+1 and k in K_GRID on validation sessions; pick the best fused F1."""
    ks = K_GRID if errors else (None,)
    grid = [(g, k) for g in range(1, vocab_size + 2) for k in ks]
    aggs = []
    y = F.col("label")
    for i, (g, k) in enumerate(grid):
        thr = errors["mu"] + k * errors["sigma"] if errors else None
        pred = predictions_at(val, g, thr)["fused"]
        aggs += [F.sum((pred & (y == 1)).cast("long")).alias(f"tp{i}"),
                 F.sum((pred & (y == 0)).cast("long")).alias(f"fp{i}"),
                 F.sum((~pred & (y == 1)).cast("long")).alias(f"fn{i}")]
    row = val.where(y.isNotNull()).agg(*aggs).first()
    best = None
    for i, (g, k) in enumerate(grid):
        tp, fp, fn = row[f"tp{i}"] or 0, row[f"fp{i}"] or 0, row[f"fn{i}"] or 0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        # ties: prefer the larger g, then the larger k (fewer false alarms, closer to the spec)
        if best is None or (f1, g, k or 0) > (best["val_f1"], best["g"], best["k"] or 0):
            best = {"g": g, "k": k, "val_f1": f1}
    return best


def evaluate_split(v: DataFrame, g: int, k: float | None, value_threshold: float | None, vocab_size: int) -> list[dict]:
    """Metrics of every detector on the sessions in ``v``."""
    preds = predictions_at(v, g, value_threshold)
    scores = session_scores(value_threshold, vocab_size)
    out = []
    for det, pred in preds.items():
        c = confusion(v, pred)
        out.append({"detector": det, "sessions": sum(c.values()), **c, **rates(c), "auroc": auroc(v, scores[det])})
    return out


def run_evaluate(spark: SparkSession, cfg: Config, model: str | None = None) -> dict:
    """Metrics for the run's verdicts at (top_g, k_sigma) and at val-chosen thresholds."""
    from deeplog_spark.artifacts import plot_f1_bars, plot_roc

    with stage("evaluate") as st:
        bundle = ModelBundle(cfg.artifacts_root, model)
        verdicts = read_table(spark, cfg.table_path(schemas.VERDICTS)).where(
            (F.col("run_id") == bundle.run_id) & (F.col("g") == cfg.top_g) & (F.col("k") == cfg.k_sigma))
        if verdicts.limit(1).count() == 0:
            raise InputError(f"no verdicts for run {bundle.run_id} at g={cfg.top_g} k={cfg.k_sigma}: run detect first")
        verdicts = verdicts.cache()
        errors = bundle.errors if bundle.value_bytes is not None else None
        chosen = choose_thresholds(verdicts.where(F.col("split") == "val"), bundle.vocab_size, errors)
        settings = {"default": (cfg.top_g, cfg.k_sigma), "val_chosen": (chosen["g"], chosen["k"])}
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        rows = []
        for source, (g, k) in settings.items():
            thr = bundle.value_threshold(k) if (errors and k is not None) else None
            for split in SPLITS:
                for m in evaluate_split(verdicts.where(F.col("split") == split), g, k, thr, bundle.vocab_size):
                    rows.append({"run_id": bundle.run_id, "g": g, "k": float(k if k is not None else cfg.k_sigma),
                                 "split": split, "threshold_source": source, **m, "evaluated_at": now})
        metrics_df = spark.createDataFrame(
            [tuple(r[f.name] for f in schemas.METRICS_SCHEMA.fields) for r in rows], schemas.METRICS_SCHEMA)
        metrics_df.write.format("delta").mode("append").option("mergeSchema", "true").save(
            cfg.table_path(schemas.METRICS))
        out_dir = bundle.dir / "eval"
        stats_path = bundle.dir / "detection" / f"detection_stats_g{cfg.top_g}_k{cfg.k_sigma}.json"
        latency_ms = None
        if stats_path.is_file():
            ds = read_json(stats_path)
            latency_ms = 1000.0 * ds["scoring_seconds"] / max(ds["windows"], 1)
        summary = {"run_id": bundle.run_id, "chosen_on_val": chosen, "default": {"g": cfg.top_g, "k": cfg.k_sigma},
                   "ms_per_window": latency_ms,
                   "metrics": [{k: v for k, v in r.items() if k != "evaluated_at"} for r in rows]}
        write_json(out_dir / "metrics.json", summary)
        _write_reports(out_dir, summary)
        test = verdicts.where(F.col("split") == "test")
        thr = bundle.value_threshold(cfg.k_sigma)
        curves = {det: roc_points(test, score) for det, score in session_scores(thr, bundle.vocab_size).items()}
        aucs = {m["detector"]: m["auroc"] for m in summary["metrics"]
                if m["split"] == "test" and m["threshold_source"] == "default"}
        plot_roc(curves, aucs, out_dir / "roc_curve.png")
        plot_f1_bars(summary["metrics"], out_dir / "f1_comparison_bar.png")
        verdicts.unpersist()
        st.update(run_id=bundle.run_id, chosen_g=chosen["g"], chosen_k=chosen["k"])
    return summary


def test_table(summary: dict) -> str:
    """Markdown table of the test-split metrics (default and val-chosen thresholds)."""
    lines = ["| thresholds | g | k | detector | TP | FP | TN | FN | precision | recall | F1 | MCC | AUROC |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in summary["metrics"]:
        if m["split"] != "test":
            continue
        au = "n/a" if m["auroc"] is None else f"{m['auroc']:.4f}"
        lines.append(f"| {m['threshold_source']} | {m['g']} | {m['k']} | {m['detector']} | {m['tp']} | {m['fp']} | "
                     f"{m['tn']} | {m['fn']} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | "
                     f"{m['mcc']:.4f} | {au} |")
    return "\n".join(lines)


def _write_reports(out_dir: Path, summary: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    report = [f"# Classification report: run {summary['run_id']}", "",
              f"Default thresholds g={summary['default']['g']}, k={summary['default']['k']}; "
              f"chosen on val by fused F1: g={summary['chosen_on_val']['g']}, k={summary['chosen_on_val']['k']} "
              f"(val F1 {summary['chosen_on_val']['val_f1']:.4f}). Session level (BlockId).", "",
              "## Test split", "", test_table(summary), "", "## All splits", "",
              "| thresholds | split | detector | sessions | precision | recall | F1 | accuracy | balanced acc. | MCC |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for m in summary["metrics"]:
        report.append(f"| {m['threshold_source']} | {m['split']} | {m['detector']} | {m['sessions']} | "
                      f"{m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['accuracy']:.4f} | "
                      f"{m['balanced_accuracy']:.4f} | {m['mcc']:.4f} |")
    (out_dir / "classification_report.md").write_text("\n".join(report) + "\n")
    lat = summary["ms_per_window"]
    csv = ["threshold_source,detector,g,k,test_f1,ms_per_window"]
    for m in summary["metrics"]:
        if m["split"] == "test":
            csv.append(f"{m['threshold_source']},{m['detector']},{m['g']},{m['k']},{m['f1']:.6f},"
                       f"{'' if lat is None else f'{lat:.6f}'}")
    (out_dir / "f1_latency_table.csv").write_text("\n".join(csv) + "\n")
