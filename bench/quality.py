"""Benchmark: detection quality by repeated K-fold cross-validation on real labelled HDFS sessions.

    .venv/bin/python bench/quality.py --name sample15k                 # ../shared/data/hdfs, 10 folds x 2 seeds
    .venv/bin/python bench/quality.py --name 575k --source generated --blocks 575061 --folds 5 --seeds 1

Data (``--source real``, the default): the 15,000 real HDFS_v1 blocks of ``sample15k`` (natural
anomaly ratio 2.97 %), plus the 5,583 real normal blocks of ait's ``hdfs_train`` as extra training
normals (ingested as a second batch; the 177 blocks that are also in sample15k are rejected as
``block_already_ingested``, so none leaks into val or test). ``--source generated`` uses the
SYNTHETIC workload of ``bench/pipeline.py`` (``generated/bench/b<blocks>``).

Protocol, per (seed, fold): the product's own stages on a copy of the traces whose split is
:func:`deeplog_spark.ingest.split.fold_split` (test = one fold, val = the next, train = the rest; the
extra normals always train). Training fits every model, the calibration chooses every threshold,
the count model's knobs and the fused rule on that fold's val part only, then detect and evaluate
run. Per detector the test FPR (on normals) and recall (on anomalies) are recorded, and precision
and F1 are projected to the natural ratio (``--ratio``, 2.93 % in HDFS_v1):
P = r*R / (r*R + (1-r)*FPR). Results: ``bench/results/quality_<name>.{json,md}``, mean +- sd over
the fold runs, with how many test anomalies each figure rests on.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from deeplog_spark.core.config import Config, parse_overrides
from deeplog_spark.core.logs import setup_logging
from deeplog_spark.core.session import build_spark

from _common import REPO, command, machine, machine_line, options, started, write_results

SHARED = Path(os.environ.get("DEEPLOG_SHARED_HDFS", REPO.parent / "shared" / "data" / "hdfs"))
#: Published HDFS F1 figures the report sets beside ours (bench/results/README.md).
PUBLISHED = [
    ("DeepLog paper (Du et al., CCS 2017), g=9", 0.96, "their split; not tuned on test"),
    ("wuyifan18/DeepLog", 0.964, "pads short sessions with -1 (hides a length rule)"),
    ("logdeep DeepLog", 0.945, "pads short sessions with -1"),
    ("LogAnomaly (LSTM + count patterns)", 0.976, "same data"),
    ("Landauer et al., count vectors + new events + length, mean", 0.971, "thresholds tuned on the test set"),
    ("Landauer et al., best", 0.988, "thresholds tuned on the test set"),
    ("STIDE (bigrams with start/end markers)", 0.951, "no threshold"),
]


def write_ait_as_event_traces(src: Path, out: Path) -> Path:
    """ait's ``BlockId,id id id`` lines as a Loghub ``Event_traces.csv`` (+ all-Normal labels)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(src) as fh, open(out / "Event_traces.csv", "w") as tr, open(out / "anomaly_label.csv", "w") as lab:
        tr.write("BlockId,Features\n")
        lab.write("BlockId,Label\n")
        for line in fh:
            block, ids = line.strip().split(",", 1)
            tr.write(f'{block},"[{",".join("E" + i for i in ids.split())}]"\n')
            lab.write(f"{block},Normal\n")
    return out


def base_tables(spark, cfg: Config, source: str, blocks: int, work: Path) -> Config:
    """Ingest the data once: (cfg of the base tables)."""
    from deeplog_spark.ingest.runner import run_ingest

    base = cfg.replace(tables_root=str(work / "base"), artifacts_root=str(work / "base_artifacts"), append=True)
    if source == "real":
        s15 = SHARED / "sample15k"
        if not (s15 / "Event_traces.csv.gz").is_file():
            raise SystemExit(f"real HDFS data not found at {SHARED} (set DEEPLOG_SHARED_HDFS)")
        run_ingest(spark, base.replace(event_traces=str(s15 / "Event_traces.csv.gz"),
                                       anomaly_labels=str(s15 / "anomaly_label.csv.gz"), ingest_batch="sample15k"))
        ait = write_ait_as_event_traces(SHARED / "ait_hdfs_loghub" / "hdfs_train", work / "ait")
        run_ingest(spark, base.replace(event_traces=str(ait / "Event_traces.csv"),
                                       anomaly_labels=str(ait / "anomaly_label.csv"), ingest_batch="ait_train"))
    else:
        gen = REPO / "generated" / "bench" / f"b{blocks}"
        if not (gen / "generated.json").is_file():
            raise SystemExit(f"no generated workload at {gen}: run bench/pipeline.py --blocks {blocks} first")
        run_ingest(spark, base.replace(event_traces=str(gen / "Event_traces.csv"),
                                       anomaly_labels=str(gen / "anomaly_label.csv"), ingest_batch="generated"))
    return base


def fold_run(spark, cfg: Config, base: Config, seed: int, folds: int, fold: int, work: Path) -> dict:
    """The product's stages on one fold split; the test-split metrics of every detector."""
    from pyspark.sql import functions as F

    from deeplog_spark.core import schemas
    from deeplog_spark.detect.verdicts import run_detect
    from deeplog_spark.evaluate.metrics import run_evaluate
    from deeplog_spark.ingest.split import fold_split
    from deeplog_spark.core.tables import read_table, write_table
    from deeplog_spark.train.runner import run_train

    fcfg = cfg.replace(tables_root=str(work / "fold" / "wh"), artifacts_root=str(work / "fold" / "art"))
    shutil.rmtree(work / "fold", ignore_errors=True)
    traces = fold_split(read_table(spark, base.table_path(schemas.TRACES)), seed, folds, fold)
    traces = traces.withColumn("split", F.when(F.col("ingest_batch") == "ait_train", "train").otherwise(F.col("split")))
    write_table(traces, fcfg.table_path(schemas.TRACES))
    write_table(read_table(spark, base.table_path(schemas.TEMPLATES)), fcfg.table_path(schemas.TEMPLATES))
    t0 = time.perf_counter()
    train = run_train(spark, fcfg, "both")
    t_train = time.perf_counter() - t0
    run_detect(spark, fcfg, train["run_id"])
    ev = run_evaluate(spark, fcfg, train["run_id"])
    cal = json.loads((Path(train["run_dir"]) / "calibration.json").read_text())
    test = [m for m in ev["metrics"] if m["split"] == "test"]
    # the fused detector's errors on test, spelled out (few): what a user would look at
    wrong = (read_table(spark, fcfg.table_path(schemas.VERDICTS)).where((F.col("split") == "test") & (F.col("label").isNotNull())
                                                                          & (F.col("anomalous") != (F.col("label") == 1)))
             .join(read_table(spark, fcfg.table_path(schemas.TRACES)).select("block_id", "events"), "block_id")
             .select("block_id", "label", "reason", "events").limit(50).collect())
    errors = [{"block_id": r.block_id, "kind": "missed anomaly" if r.label == 1 else "false alarm", "reason": r.reason,
               "counts": " ".join(f"E{e}:{n}" for e, n in sorted(collections.Counter(r.events).items()))}
              for r in wrong]
    return {"seed": seed, "fold": fold, "train_seconds": round(t_train, 1), "seconds": round(time.perf_counter() - t0, 1),
            "fused_rule": ev["fused_rule"], "count_knobs": cal.get("count_knobs"), "errors": errors,
            "val_anomalies": cal["val_anomalies"], "val_fused_f1": cal["fused"].get("val_f1"),
            "test": {f"{m['detector']}|{m['threshold_source']}": {k: m[k] for k in (
                "tp", "fp", "tn", "fn", "precision", "recall", "f1", "fpr", "auroc", "threshold")} for m in test}}


def summarise(runs: list[dict], ratio: float) -> dict:
    from deeplog_spark.evaluate.metrics import projected

    names = sorted({k for r in runs for k in r["test"]})
    out = {}
    for name in names:
        rows = [r["test"][name] for r in runs if name in r["test"]]
        proj = [projected(x["fpr"], x["recall"], ratio) for x in rows]
        stat = lambda xs: (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)  # noqa: E731
        det, src = name.split("|")
        key = det if src in ("val_chosen", "baseline") or det == "deeplog" else f"{det}_{src}"
        out[key] = {"detector": det, "threshold_source": src, "fold_runs": len(rows),
                    "test_anomalies": sum(x["tp"] + x["fn"] for x in rows),
                    "test_normals": sum(x["fp"] + x["tn"] for x in rows),
                    "false_positives": sum(x["fp"] for x in rows), "missed": sum(x["fn"] for x in rows)}
        for label, xs in (("fpr", [x["fpr"] for x in rows]), ("recall", [x["recall"] for x in rows]),
                          ("precision_observed", [x["precision"] for x in rows]), ("f1_observed", [x["f1"] for x in rows]),
                          ("precision_projected", [p["precision"] for p in proj]), ("f1_projected", [p["f1"] for p in proj])):
            m, s = stat(xs)
            out[key][f"{label}_mean"], out[key][f"{label}_sd"] = m, s
        out[key]["f1_projected_min"] = min(p["f1"] for p in proj)
    return out


ORDER = ("fused", "count", "key", "key_nll", "value", "pca", "deeplog", "key_spec", "exact", "pca_q")


def markdown(res: dict) -> str:
    d = res["detectors"]
    lines = [f"# Detection quality: {res['name']}", "", f"Command: `.venv/bin/python {res['command']}` "
             f"(started {res['started']}; {res['total_seconds'] / 60:.0f} min on {machine_line(res['machine'])}).", "",
             res["data"], "", f"Protocol: {res['folds']} fold runs ({res['k']} folds x seeds {res['seeds']}): per run, "
             "test = one fold by BlockId hash, val = the next fold, train = the rest"
             + (" plus the extra normals" if res["source"] == "real" else "") + ". Thresholds, the count model's knobs "
             "and the fused rule are chosen on that run's val part only. FPR on test normals, recall on test anomalies; "
             f"precision and F1 projected to the natural anomaly ratio {res['ratio']:.2%}. Mean +- sd over the fold runs.",
             "", "| detector | thresholds | F1 projected | precision projected | recall | FPR | F1 observed | "
             "test anomalies (missed) | test normals (false alarms) | worst run F1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key in [k for k in ORDER if k in d] + [k for k in d if k not in ORDER]:
        x = d[key]
        lines.append(f"| **{key}** | {x['threshold_source']} | **{x['f1_projected_mean']:.4f}** +- {x['f1_projected_sd']:.4f} | "
                     f"{x['precision_projected_mean']:.4f} | {x['recall_mean']:.4f} +- {x['recall_sd']:.4f} | "
                     f"{x['fpr_mean']:.5f} +- {x['fpr_sd']:.5f} | {x['f1_observed_mean']:.4f} | "
                     f"{x['test_anomalies']:,} ({x['missed']}) | {x['test_normals']:,} ({x['false_positives']}) | "
                     f"{x['f1_projected_min']:.4f} |")
    lines += ["", "Detectors: `fused` = the run's fused rule; `count` = the quantitative detector; `key` = DeepLog's top-g "
              "with g chosen on val; `key_nll` = the session's largest -log p; `value` = the Value LSTM (needs intervals); "
              "`pca` = PCA SPE at a val-chosen threshold. References: `deeplog` and `key_spec` = the DeepLog spec's rule at "
              "g=9 (k=3); `exact` = the plain count-vector rule (anomalous when the whole vector was never seen in a normal "
              "training session); `pca_q` = PCA at loglizer's Q-statistic threshold.", "",
              "Fused rule chosen per run: " + "; ".join(
                  f"{r['seed']}/{r['fold']}: " + " OR ".join(sorted(r['fused_rule'])) for r in res["runs"]) + "."]
    errs = [(r["seed"], r["fold"], e) for r in res["runs"] for e in r.get("errors", [])]
    if errs:
        lines += ["", "## What the fused detector got wrong on test (every fold run)", "",
                  "| run | kind | block | event counts | reason |", "|---|---|---|---|---|"]
        lines += [f"| {s}/{f} | {e['kind']} | {e['block_id']} | {e['counts']} | {e['reason'] or ''} |" for s, f, e in errs]
    if res["source"] == "real":
        lines += ["", "## Published HDFS figures (their own protocols, not comparable run for run)", "",
                  "| system | F1 | note |", "|---|---|---|"]
        lines += [f"| {n} | {f} | {note} |" for n, f, note in PUBLISHED]
    return "\n".join(lines) + "\n"


def main() -> None:
    setup_logging()
    opts, args = options({"name": "sample15k", "source": "real", "blocks": "575061", "folds": "10", "seeds": "1,2",
                          "ratio": "0.0293", "only": ""})
    name, source, blocks, k, seeds, ratio, only = (
        opts[o] for o in ("name", "source", "blocks", "folds", "seeds", "ratio", "only"))
    if source not in ("real", "generated"):
        raise SystemExit("--source must be real or generated")
    k, ratio = int(k), float(ratio)
    seed_list = [int(s) for s in seeds.split(",") if s]
    work = REPO / "generated" / "bench" / f"quality_{name}"
    shutil.rmtree(work, ignore_errors=True)
    # no MLflow: each fold run deletes its folder, and with it the sqlite store MLflow keeps open
    cfg = Config.load(overrides={"tables_root": str(work / "wh"), "artifacts_root": str(work / "art"), "mlflow": "false",
                                 **parse_overrides(args)})
    spark = build_spark("bench-quality", cfg)
    start = started()
    t0 = time.perf_counter()
    base = base_tables(spark, cfg, source, int(blocks), work)
    runs = []
    for seed in seed_list:
        for fold in range(k):
            if only and f"{seed}/{fold}" not in only.split(","):
                continue
            r = fold_run(spark, cfg, base, seed, k, fold, work)
            runs.append(r)
            print("FOLD " + json.dumps({"seed": seed, "fold": fold, "fused": r["fused_rule"],
                                        "fused_test": r["test"]["fused|val_chosen"]}), flush=True)
    from pyspark.sql import functions as F

    from deeplog_spark.core import schemas
    from deeplog_spark.core.tables import read_table

    traces = read_table(spark, base.table_path(schemas.TRACES))
    counts = {r["ingest_batch"]: (r["n"], r["a"]) for r in traces.groupBy("ingest_batch").agg(
        F.count(F.lit(1)).alias("n"), F.sum("label").alias("a")).collect()}
    if source == "real":
        data = (f"Data: REAL HDFS_v1 sessions: sample15k ({counts['sample15k'][0]:,} blocks, {counts['sample15k'][1]} "
                f"anomalies) plus {counts.get('ait_train', (0, 0))[0]:,} normal blocks of ait's hdfs_train as extra training "
                "normals (the blocks also in sample15k were rejected at ingest). No time intervals: no value model.")
    else:
        data = (f"Data: SYNTHETIC workload generated from the real sample15k sessions "
                f"({sum(n for n, _ in counts.values()):,} blocks, {sum(a for _, a in counts.values()):,} anomalies; "
                "intervals from the generator's documented model, timing anomalies included).")
    res = {"name": name, "source": source, "command": command(__file__), "started": start,
           "machine": machine(), "data": data, "k": k, "seeds": seed_list, "folds": len(runs),
           "ratio": ratio, "runs": runs, "detectors": summarise(runs, ratio),
           "total_seconds": round(time.perf_counter() - t0, 1), "published": PUBLISHED if source == "real" else None}
    spark.stop()
    write_results(f"quality_{name}", res, markdown(res))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
