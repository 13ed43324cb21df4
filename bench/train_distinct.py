"""Benchmark: Key LSTM training on all windows vs on distinct (window, next) pairs with counts.

All trainings run in one process on the same windows table, same config and seed; only
``distinct_windows`` (and, for the third run, epochs/patience) differs. Writes JSON and Markdown.

    .venv/bin/python bench/train_distinct.py \\
        --event_traces ../shared/data/hdfs/sample15k/Event_traces.csv.gz \\
        --anomaly_labels ../shared/data/hdfs/sample15k/anomaly_label.csv.gz --name sample15k
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from deeplog_spark.features.runner import run_windows

from deeplog_spark.ingest.runner import run_ingest
from deeplog_spark.train.runner import run_train

from _common import bench_setup, command, machine, machine_line, write_results


def main() -> None:
    name, cfg, spark = bench_setup("bench-train-distinct")
    ingest = run_ingest(spark, cfg)
    windows = run_windows(spark, cfg)
    rows = {}
    runs = {"distinct": dict(distinct_windows=True), "all": dict(distinct_windows=False),
            # distinct rows take ~1/20 of the optimizer steps per epoch: let it run to convergence
            "distinct, to convergence (300 epochs max, patience 10)": dict(distinct_windows=True, epochs=300, patience=10)}
    for mode, overrides in runs.items():
        t0 = time.perf_counter()
        summary = run_train(spark, cfg.replace(**overrides), "key")
        wall = time.perf_counter() - t0
        hist = json.loads((Path(summary["run_dir"]) / "key_history.json").read_text())
        epochs = hist["history"]
        best = epochs[hist["best_epoch"] - 1]
        rows[mode] = {
            "train_rows_per_epoch": epochs[0]["train_rows"],
            "train_windows_per_epoch": epochs[0]["train_windows"],
            "epochs_run": len(epochs),
            "best_epoch": hist["best_epoch"],
            "median_epoch_s": statistics.median(e["seconds"] for e in epochs),
            "median_windows_per_s": statistics.median(e["windows_per_s"] for e in epochs),
            "train_wall_s": round(wall, 1),
            "best_val_loss": best["val_loss"],
            "best_val_top_g_recall": best["val_top_g_recall"],
            "best_val_accuracy": best["val_accuracy"],
            "val_top_g_recall_per_epoch": [round(e["val_top_g_recall"], 5) for e in epochs],
        }
    d, a = rows["distinct"], rows["all"]
    result = {
        "name": name, "command": command(__file__), "machine": machine(spark), "master": cfg.master,
        "config": {k: getattr(cfg, k) for k in ("h", "top_g", "batch_size", "lr", "epochs", "patience", "seed")},
        "traces": ingest["traces"], "windows": windows["windows"], "runs": rows,
        "epoch_time_ratio_all_over_distinct": round(a["median_epoch_s"] / d["median_epoch_s"], 2),
        "train_wall_ratio_all_over_distinct": round(a["train_wall_s"] / d["train_wall_s"], 2),
    }
    lines = [f"# Key LSTM: all windows vs distinct windows ({name})", "",
             f"Command: `.venv/bin/python {result['command']}`", "",
             f"{result['traces']} traces, {result['windows']} windows, machine: {machine_line(result['machine'])}", "",
             "| mode | rows/epoch | epochs (best) | median epoch s | median windows/s | train wall s | best val loss | best val top-g recall |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, r in rows.items():
        lines.append(f"| {mode} | {r['train_rows_per_epoch']} | {r['epochs_run']} ({r['best_epoch']}) | "
                     f"{r['median_epoch_s']:.2f} | {r['median_windows_per_s']:.0f} | {r['train_wall_s']} | "
                     f"{r['best_val_loss']:.4f} | {r['best_val_top_g_recall']:.4f} |")
    lines += ["", f"Epoch time ratio (all / distinct, medians): {result['epoch_time_ratio_all_over_distinct']}; "
                  f"training wall-time ratio: {result['train_wall_ratio_all_over_distinct']}."]
    write_results(f"train_distinct_{name}", result, "\n".join(lines) + "\n")
    spark.stop()


if __name__ == "__main__":
    main()
