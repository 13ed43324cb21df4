"""Profile: where the detect and evaluate stages spend their time, piece by piece.

Runs on tables a pipeline benchmark kept (``bench/pipeline.py ... --keep true``) and one of its
model runs. Each piece is forced with a ``noop`` write (everything computed, nothing stored) or its
own small aggregation, timed alone, in one Spark application:

    .venv/bin/python bench/profile_stages.py --tables generated/bench/work_575k/warehouse \\
        --artifacts generated/bench/work_575k/artifacts --name 575k

Writes ``bench/results/profile_<name>.{json,md}``. The two scoring variants for the value model
(a global distinct then a join back, or window by window) are the measurement behind the choice
in ``deeplog_spark/detection.py``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

from pyspark.sql import functions as F

from deeplog_spark import evaluation as ev
from deeplog_spark import schemas
from deeplog_spark.config import Config, pop_option
from deeplog_spark.detection import ModelBundle, _key_udf, _value_udf, decide, session_verdicts
from deeplog_spark.logs import setup_logging
from deeplog_spark.session import build_spark
from deeplog_spark.tables import read_table

from _common import RESULTS


def main() -> None:
    setup_logging()
    args, name = pop_option(sys.argv[1:], "name", "profile")
    args, tables = pop_option(args, "tables", "")
    args, artifacts = pop_option(args, "artifacts", "")
    if not tables or not artifacts or args:
        raise SystemExit("usage: profile_stages.py --tables DIR --artifacts DIR [--name NAME]")
    cfg = Config.load(overrides={"tables_root": tables, "artifacts_root": artifacts})
    spark = build_spark("bench-profile", cfg)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.detect_batch_size))
    bundle = ModelBundle(cfg.artifacts_root, None)
    sc = spark.sparkContext
    windows = read_table(spark, cfg.table_path(schemas.WINDOWS))
    key_udf = _key_udf(sc.broadcast(bundle.key_bytes), hashlib.sha256(bundle.key_bytes).hexdigest(),
                       bundle.vocab_size, bundle.train_vocab, cfg.top_g, cfg.detect_batch_size)
    value_udf = _value_udf(sc.broadcast(bundle.value_bytes), hashlib.sha256(bundle.value_bytes).hexdigest(),
                           bundle.norm["mean"], bundle.norm["std"], cfg.detect_batch_size)
    kcols, vcols = ["window", "next_event"], ["window_intervals", "next_interval"]
    pieces: list[dict] = []

    def timed(piece: str, fn, note: str = ""):
        t0 = time.perf_counter()
        out = fn()
        pieces.append({"piece": piece, "seconds": round(time.perf_counter() - t0, 1), "note": note})
        print(f"PROFILE {pieces[-1]}", flush=True)
        return out

    def noop(df):
        return lambda: df.write.format("noop").mode("overwrite").save()

    n = timed("windows: count (first read, warms the JVM)", windows.count)
    timed("windows: read every column", noop(windows))
    distinct_key = timed("key: distinct (window, next event) rows", windows.select(*kcols).distinct().count)
    distinct_value = timed("value: distinct (intervals, next interval) rows",
                           windows.where(F.col("next_interval").isNotNull()).select(*vcols).distinct().count)
    scored_key = windows.select(*kcols).distinct().select(*kcols, key_udf(F.struct(*kcols)).alias("s")).select(*kcols, "s.*")
    timed("key: score every window (no distinct)", noop(windows.select(key_udf(F.struct(*kcols)).alias("s"))))
    timed("key: score distinct rows, join back", noop(windows.join(scored_key, kcols, "left")))
    timed("value: score every window", noop(windows.select(value_udf(F.struct(*vcols)).alias("e"))))
    scored_value = windows.select(*vcols).distinct().select(*vcols, value_udf(F.struct(*vcols)).alias("e"))
    timed("value: score distinct rows, join back", noop(windows.join(scored_value, vcols, "left")))
    both = (windows.join(scored_key, kcols, "left")
            .withColumn("value_error", value_udf(F.struct(*vcols))))
    preds = decide(both, bundle.run_id, cfg.top_g, cfg.k_sigma, bundle.value_threshold(cfg.k_sigma))
    timed("detect: predictions as written (key distinct, value per window)", noop(preds))
    verdict_src = read_table(spark, cfg.table_path(schemas.PREDICTIONS)).where(F.col("run_id") == bundle.run_id)
    timed("detect: verdicts from the predictions table (group by block)", noop(session_verdicts(verdict_src)))

    v = read_table(spark, cfg.table_path(schemas.VERDICTS)).where(
        (F.col("run_id") == bundle.run_id) & (F.col("g") == cfg.top_g) & (F.col("k") == cfg.k_sigma)).cache()
    sessions = timed("evaluate: cache the verdicts", v.count)
    chosen = timed("evaluate: threshold sweep on val", lambda: ev.choose_thresholds(
        v.where(F.col("split") == "val"), bundle.vocab_size, bundle.errors))
    settings = {"default": (cfg.top_g, cfg.k_sigma, bundle.value_threshold(cfg.k_sigma)),
                "val_chosen": (chosen["g"], chosen["k"], bundle.value_threshold(chosen["k"]))}
    preds_at, scores = {}, {}
    for src, (g, _, thr) in settings.items():
        preds_at.update({f"{src}|{d}": c for d, c in ev.predictions_at(v, g, thr).items()})
        scores.update({f"{src}|{d}": c for d, c in ev.session_scores(thr, bundle.vocab_size).items()})
    timed("evaluate: confusion counts (every split, detector, setting)", lambda: ev.confusions(v, preds_at, "split"))
    timed("evaluate: AUROC ranks (every split, detector, setting)", lambda: ev.aurocs(v, scores, "split"))
    test = v.where(F.col("split") == "test")
    timed("evaluate: ROC points of the test split (3 detectors)", lambda: [
        ev.roc_points(test, s) for s in ev.session_scores(settings["default"][2], bundle.vocab_size).values()])
    v.unpersist()
    spark.stop()

    out = {"name": name, "command": "bench/profile_stages.py " + " ".join(sys.argv[1:]), "windows": n,
           "distinct_key_rows": distinct_key, "distinct_value_rows": distinct_value, "sessions": sessions,
           "run_id": bundle.run_id, "pieces": pieces}
    (RESULTS / f"profile_{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"# Detect and evaluate, piece by piece ({name})", "",
             f"Command: `.venv/bin/python {out['command']}`. {n:,} windows ({distinct_key:,} distinct key rows, "
             f"{distinct_value:,} distinct value rows), {sessions:,} sessions; model run {bundle.run_id}. "
             "Each piece is timed alone (a noop write or its own aggregation), so pieces overlap in what "
             "they compute and do not add up to a stage.", "", "| piece | seconds |", "|---|---|"]
    lines += [f"| {p['piece']} | {p['seconds']} |" for p in pieces]
    (RESULTS / f"profile_{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
