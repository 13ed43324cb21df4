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
from deeplog_spark.runs import read_json, validate_run_id, write_json
from deeplog_spark.config import SPLITS, Config
from deeplog_spark.detection import ModelBundle
from deeplog_spark.errors import InputError
from deeplog_spark.logs import stage
from deeplog_spark.tables import read_table, replace_where

log = logging.getLogger(__name__)

DETECTORS = ("key", "value", "fused")
K_GRID = (2.0, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5)


def confusions(df: DataFrame, preds: dict[str, Column], by: str, label: str = "label") -> dict[tuple, dict]:
    """TP/FP/TN/FN of every boolean prediction in ``preds`` for every value of column ``by``, in one
    Spark aggregation: ``{(by value, name): counts}``. Unlabelled rows are skipped."""
    y = F.col(label)
    aggs = []
    for i, pred in enumerate(preds.values()):
        aggs += [F.sum((pred & (y == 1)).cast("long")).alias(f"tp{i}"),
                 F.sum((pred & (y == 0)).cast("long")).alias(f"fp{i}"),
                 F.sum((~pred & (y == 0)).cast("long")).alias(f"tn{i}"),
                 F.sum((~pred & (y == 1)).cast("long")).alias(f"fn{i}")]
    out = {}
    for row in df.where(y.isNotNull()).groupBy(by).agg(*aggs).collect():
        for i, name in enumerate(preds):
            out[(row[by], name)] = {k: int(row[f"{k}{i}"] or 0) for k in ("tp", "fp", "tn", "fn")}
    return out


def confusion(df: DataFrame, pred: Column, label: str = "label") -> dict:
    """TP/FP/TN/FN of a boolean prediction against 0/1 labels (unlabelled rows are skipped)."""
    got = confusions(df.withColumn("_all", F.lit(0)), {"p": pred}, "_all", label)
    return got.get((0, "p"), {"tp": 0, "fp": 0, "tn": 0, "fn": 0})


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


def aurocs(df: DataFrame, scores: dict[str, Column], by: str, label: str = "label",
           buckets: int = 16) -> dict[tuple, float | None]:
    """Area under the ROC curve (ties count half) of every score in ``scores`` for every value of
    column ``by``: ``{(by value, name): auroc}`` (None without both classes).

    Mann-Whitney U from the rank sum of the positives, with ranks from a prefix sum that stays
    distributed: the distinct scores of each (group, score) are cut into ``buckets`` contiguous
    ranges at approximate quantiles, ranked inside each range by a window partitioned by
    (group, score, range), and offset by the counts of the lower ranges (a small table). Exact for
    any cut points, since a score value and all its ties fall in one range.
    """
    from pyspark.sql.window import Window

    keys = [by, "name"]
    stacked = df.where(F.col(label).isNotNull()).select(
        F.col(by), F.col(label).alias("y"),
        F.explode(F.array(*[F.struct(F.lit(n).alias("name"), c.cast("double").alias("s")) for n, c in scores.items()]))
        .alias("_x")).select(by, "y", "_x.name", "_x.s").where(F.col("s").isNotNull())
    grouped = stacked.groupBy(*keys, "s").agg(F.count(F.lit(1)).alias("n"), F.sum("y").alias("pos")).cache()
    try:
        if buckets > 1:
            qs = [i / buckets for i in range(1, buckets)]
            cuts = grouped.groupBy(*keys).agg(F.percentile_approx("s", qs, 100).alias("cuts"))
            ranged = (grouped.join(F.broadcast(cuts), keys)
                      .withColumn("b", F.size(F.filter("cuts", lambda c: c <= F.col("s")))).drop("cuts"))
        else:
            ranged = grouped.withColumn("b", F.lit(0))
        sizes = ranged.groupBy(*keys, "b").agg(F.sum("n").alias("bn"))
        lower = Window.partitionBy(*keys).orderBy("b").rowsBetween(Window.unboundedPreceding, -1)
        offsets = sizes.withColumn("offset", F.coalesce(F.sum("bn").over(lower), F.lit(0))).drop("bn")
        within = Window.partitionBy(*keys, "b").orderBy("s").rowsBetween(Window.unboundedPreceding, -1)
        ranked = (ranged.join(F.broadcast(offsets), [*keys, "b"])
                  .withColumn("below", F.col("offset") + F.coalesce(F.sum("n").over(within), F.lit(0))))
        rows = ranked.groupBy(*keys).agg(
            F.sum(F.col("pos") * (F.col("below") + (F.col("n") + 1) / 2)).alias("rank_sum"),
            F.sum("pos").alias("p"), F.sum("n").alias("n")).collect()
    finally:
        grouped.unpersist()
    out: dict[tuple, float | None] = {}
    for r in rows:
        p, n = r["p"] or 0, r["n"] or 0
        neg = n - p
        out[(r[by], r["name"])] = (float((r["rank_sum"] - p * (p + 1) / 2) / (p * neg))
                                   if p and neg else None)
    return out


def auroc(df: DataFrame, score: Column, label: str = "label", buckets: int = 16) -> float | None:
    """Area under the ROC curve of ``score`` (ties count half); see :func:`aurocs`."""
    got = aurocs(df.withColumn("_all", F.lit(0)), {"s": score}, "_all", label, buckets)
    return got.get((0, "s"))


def roc_points(df: DataFrame, score: Column, label: str = "label", points: int = 200) -> list[tuple[float, float]]:
    """(FPR, TPR) at up to ``points`` score quantiles (for plotting): the sessions are counted per
    range between consecutive cut points (one small aggregation) and the rates summed from the top."""
    d = df.where(F.col(label).isNotNull() & score.isNotNull()).select(score.cast("double").alias("s"), F.col(label).alias("y"))
    qs = sorted(set(d.approxQuantile("s", [i / points for i in range(points + 1)], 0.001)))
    if not qs:
        return []
    bucket = F.size(F.filter(F.array(*[F.lit(q) for q in qs]), lambda c: c <= F.col("s")))
    hist = {r["b"]: (r["n"], r["pos"] or 0) for r in
            d.groupBy(bucket.alias("b")).agg(F.count(F.lit(1)).alias("n"), F.sum("y").alias("pos")).collect()}
    p = sum(pos for _, pos in hist.values())
    neg = sum(n for n, _ in hist.values()) - p
    pts, tp, fp = [], 0, 0
    for i in range(len(qs), 0, -1):  # s >= qs[i-1] exactly when the bucket is at least i
        n, pos = hist.get(i, (0, 0))
        tp, fp = tp + pos, fp + n - pos
        pts.append((fp / neg if neg else 0.0, tp / p if p else 0.0))
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
    """Sweep g in 1..vocab+1 and k in K_GRID on validation sessions; pick the best fused F1.

    One small aggregation: sessions are counted by (label, largest key rank, how many of the k
    thresholds their largest value error exceeds); every (g, k) is then scored from those counts
    (key-anomalous at g = rank > g; value-anomalous at the j-th k = exceeds more than j thresholds,
    since the thresholds grow with k).
    """
    ks = K_GRID if errors else (None,)
    y = F.col("label")
    rank = F.coalesce(F.col("max_key_rank"), F.lit(0))
    exceeded = F.lit(0)
    if errors:
        exceeded = sum(F.coalesce(F.col("max_value_error") > F.lit(errors["mu"] + k * errors["sigma"]), F.lit(False))
                       .cast("int") for k in ks)
    hist = (val.where(y.isNotNull()).groupBy(y.alias("y"), rank.alias("r"), exceeded.alias("e"))
            .agg(F.count(F.lit(1)).alias("n")).collect())
    best = None
    for g in range(1, vocab_size + 2):
        for j, k in enumerate(ks):
            tp = fp = fn = 0
            for h in hist:
                pred = h["r"] > g or (errors is not None and h["e"] > j)
                if pred and h["y"] == 1:
                    tp += h["n"]
                elif pred:
                    fp += h["n"]
                elif h["y"] == 1:
                    fn += h["n"]
            f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
            # ties: prefer the larger g, then the larger k (fewer false alarms, closer to the spec)
            if best is None or (f1, g, k or 0) > (best["val_f1"], best["g"], best["k"] or 0):
                best = {"g": g, "k": k, "val_f1": f1}
    return best


def evaluate_all(v: DataFrame, settings: dict[str, tuple[int, float | None, float | None]],
                 vocab_size: int) -> list[dict]:
    """Metrics of every detector on every split for every threshold setting, in a few Spark jobs.

    ``settings``: threshold source -> (g, k, value threshold). Rows have ``threshold_source,
    g, k, split, detector, sessions``, the confusion counts, :func:`rates` and ``auroc``.
    """
    preds, scores = {}, {}
    for source, (g, k, thr) in settings.items():
        for det, pred in predictions_at(v, g, thr).items():
            preds[(source, det)] = pred
        for det, score in session_scores(thr, vocab_size).items():
            scores[(source, det)] = score
    names = {f"{source}|{det}": (source, det) for source, det in preds}
    counts = confusions(v, {n: preds[key] for n, key in names.items()}, "split")
    areas = aurocs(v, {n: scores[key] for n, key in names.items()}, "split")
    out = []
    for source, (g, k, _) in settings.items():
        for split in SPLITS:
            for n in (n for n, (src, _) in names.items() if src == source):
                c = counts.get((split, n), {"tp": 0, "fp": 0, "tn": 0, "fn": 0})
                out.append({"threshold_source": source, "g": g, "k": k, "split": split, "detector": names[n][1],
                            "sessions": sum(c.values()), **c, **rates(c), "auroc": areas.get((split, n))})
    return out


def _evaluation_rows(run_id: str, cfg: Config) -> str:
    """SQL predicate of the metrics rows of one evaluation (run ids are validated: no quotes)."""
    return f"run_id = '{validate_run_id(run_id)}' AND detect_g = {int(cfg.top_g)} AND detect_k = {float(cfg.k_sigma)!r}"


def run_evaluate(spark: SparkSession, cfg: Config, model: str | None = None) -> dict:
    """Metrics for the run's verdicts at (top_g, k_sigma) and at val-chosen thresholds."""
    from deeplog_spark.plots import plot_f1_bars, plot_roc

    with stage("evaluate") as st:
        bundle = ModelBundle(cfg.artifacts_root, model)
        verdicts = read_table(spark, cfg.table_path(schemas.VERDICTS)).where(
            (F.col("run_id") == bundle.run_id) & (F.col("g") == cfg.top_g) & (F.col("k") == cfg.k_sigma))
        if verdicts.limit(1).count() == 0:
            raise InputError(f"no verdicts for run {bundle.run_id} at g={cfg.top_g} k={cfg.k_sigma}: run detect first")
        verdicts = verdicts.cache()
        errors = bundle.errors if bundle.value_bytes is not None else None
        chosen = choose_thresholds(verdicts.where(F.col("split") == "val"), bundle.vocab_size, errors)
        settings = {source: (g, k, bundle.value_threshold(k) if (errors and k is not None) else None)
                    for source, (g, k) in {"default": (cfg.top_g, cfg.k_sigma),
                                           "val_chosen": (chosen["g"], chosen["k"])}.items()}
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        rows = [{**m, "run_id": bundle.run_id, "k": float(m["k"] if m["k"] is not None else cfg.k_sigma),
                 "detect_g": cfg.top_g, "detect_k": float(cfg.k_sigma), "evaluated_at": now}
                for m in evaluate_all(verdicts, settings, bundle.vocab_size)]
        metrics_df = spark.createDataFrame(
            [tuple(r[f.name] for f in schemas.METRICS_SCHEMA.fields) for r in rows], schemas.METRICS_SCHEMA)
        # one evaluation = the verdicts of (run_id, g, k): a re-run replaces its rows, others are kept
        replace_where(metrics_df, cfg.table_path(schemas.METRICS), _evaluation_rows(bundle.run_id, cfg),
                      partition_by=["run_id"])
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
