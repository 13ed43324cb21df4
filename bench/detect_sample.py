"""Benchmark: the whole pipeline on a labelled dataset, with detect timed both ways in one run.

Runs ingest -> windows -> train (key; value too when intervals exist) -> detect with
``distinct_scoring`` off and on, alternating, three times each (same model, same windows; the
verdicts must be identical) -> evaluate, and writes JSON and Markdown with the test-split metrics.

    .venv/bin/python bench/detect_sample.py \\
        --event_traces ../shared/data/hdfs/sample15k/Event_traces.csv.gz \\
        --anomaly_labels ../shared/data/hdfs/sample15k/anomaly_label.csv.gz --name sample15k
"""

from __future__ import annotations

import statistics
import time

from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.detect.verdicts import run_detect
from deeplog_spark.evaluate.metrics import run_evaluate, test_table
from deeplog_spark.features.runner import run_windows
from deeplog_spark.ingest.runner import run_ingest
from deeplog_spark.core.tables import read_table
from deeplog_spark.train.runner import run_train

from _common import bench_setup, command, machine, machine_line, write_results


REPEATS = 3


def main() -> None:
    name, cfg, spark = bench_setup("bench-detect")
    t = {}
    t0 = time.perf_counter(); ingest = run_ingest(spark, cfg); t["ingest_s"] = time.perf_counter() - t0
    t0 = time.perf_counter(); windows = run_windows(spark, cfg); t["windows_s"] = time.perf_counter() - t0
    t0 = time.perf_counter(); train = run_train(spark, cfg, "both"); t["train_s"] = time.perf_counter() - t0
    run_id = train["run_id"]
    detect = {"per_window": [], "distinct": []}
    verdicts = {}
    # alternate the two modes (warm-up and noise hit both alike) and report medians
    for rep in range(REPEATS):
        for distinct in (False, True):
            d = run_detect(spark, cfg.replace(distinct_scoring=distinct), run_id)
            detect["distinct" if distinct else "per_window"].append(d)
            if rep == 0:
                v = read_table(spark, cfg.table_path(schemas.VERDICTS)).where(F.col("run_id") == run_id)
                verdicts[distinct] = v.select("block_id", "anomalous", "n_anomalous_windows", "max_key_rank",
                                              "score", "first_anomalous_position").localCheckpoint()
    same = (verdicts[True].exceptAll(verdicts[False]).count() == 0
            and verdicts[False].exceptAll(verdicts[True]).count() == 0)
    medians = {m: {"windows": runs[0]["windows"],
                   "median_scoring_seconds": statistics.median(r["scoring_seconds"] for r in runs),
                   "median_windows_per_s": statistics.median(r["windows_per_s"] for r in runs),
                   "windows_per_s_runs": [r["windows_per_s"] for r in runs]} for m, runs in detect.items()}
    t0 = time.perf_counter(); ev = run_evaluate(spark, cfg, run_id); t["evaluate_s"] = time.perf_counter() - t0
    key = train["tasks"]["key"]
    result = {
        "name": name, "command": command(__file__), "machine": machine(spark), "master": cfg.master,
        "traces": ingest["traces"], "anomalies": ingest["anomalies"], "windows": windows["windows"],
        "run_id": run_id, "train": {"tasks": list(train["tasks"]), "key_epochs": key["epochs"],
                                    "key_val_top_g_recall": key["val_top_g_recall"]},
        "detect": medians, "verdicts_identical": same,
        "detect_speedup_distinct_over_per_window": round(
            medians["distinct"]["median_windows_per_s"] / medians["per_window"]["median_windows_per_s"], 2),
        "chosen_on_val": ev["chosen_on_val"], "seconds": {k: round(v, 1) for k, v in t.items()},
        "test_metrics": [m for m in ev["metrics"] if m["split"] == "test"],
    }
    lines = [f"# Detection and evaluation ({name})", "",
             f"Command: `.venv/bin/python {result['command']}`", "",
             f"{result['traces']} traces ({result['anomalies']} anomalous), {result['windows']} windows; "
             f"machine: {machine_line(result['machine'])}; master {cfg.master}. Key model: {key['epochs']} epochs, "
             f"val top-{cfg.top_g} recall {key['val_top_g_recall']:.4f}. No time intervals in this data, "
             "so there is no value model and fused = key.", "",
             "## Test split, session level", "", test_table(ev), "",
             f"Thresholds chosen on val only: g={ev['chosen_on_val']['g']} (val F1 {ev['chosen_on_val']['val_f1']:.4f}).",
             "", f"## Detect throughput (scoring + predictions write), {REPEATS} alternating runs each, medians", "",
             "| scoring | windows | median seconds | median windows/s | windows/s per run |", "|---|---|---|---|---|"]
    for mode, d in medians.items():
        lines.append(f"| {mode} | {d['windows']} | {d['median_scoring_seconds']} | {d['median_windows_per_s']} | "
                     f"{', '.join(str(x) for x in d['windows_per_s_runs'])} |")
    lines += ["", f"Distinct / per-window throughput (medians): {result['detect_speedup_distinct_over_per_window']}x; "
                  f"verdicts identical: {same}.", "",
              "Stage seconds: " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items())]
    write_results(f"detect_{name}", result, "\n".join(lines) + "\n")
    spark.stop()


if __name__ == "__main__":
    main()
