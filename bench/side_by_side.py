"""The train stage with the key and value models one after the other, then side by side.

    .venv/bin/python bench/side_by_side.py --tables_root generated/bench/work_575k/warehouse --name 575k

Runs the product's training, ``./spark-submit.sh --task both --side_by_side {false,true}
--mlflow false``, on the same tables in fresh processes, the two settings in turn (``--repeats``
rounds, 2 by default). Reports per run: the train stage's seconds (the LSTMs, the count and PCA
models, the calibration), the LSTMs' part (their rows' preparation, the one TorchDistributor launch
and the training), and the weights' digests of both models, which must be equal across the settings.
Writes ``bench/results/side_by_side_<name>.{json,md}``.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, command, tables_bench_args, write_results



def one_run(tables: str, artifacts: Path, options: list[str], repo: Path = REPO) -> dict:
    """The train stage (``--task both``, MLflow off) of ``repo``'s checkout, run with its own library
    (PYTHONPATH), on ``tables``, with ``options``; what its log and its run's files say."""
    cmd = [str(repo / "spark-submit.sh"), "--task", "both", "--tables_root", tables, "--artifacts_root", str(artifacts),
           "--mlflow", "false", *options]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=repo,
                          env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(repo)})
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    log = done.stdout + done.stderr
    stage = float(re.search(r"stage train: done .*seconds=([0-9.]+)", log).group(1))
    lstms = re.search(r"trained key and value(?: side by side)? in ([0-9.]+) s \(one launch: ([0-9.]+) s", log)
    run = next(artifacts.glob("runs/*/run.json")).parent
    history = {t: json.loads((run / f"{t}_history.json").read_text()) for t in ("key", "value")}
    digests = {t: h["rank_digests"][0] for t, h in history.items()}
    epoch_s = {t: round(statistics.median(e["train_seconds"] for e in h["history"]), 2) for t, h in history.items()}
    summary = json.loads((run / "run.json").read_text())["tasks"]
    return {"train_stage_s": stage, "lstms_s": float(lstms.group(1)),
            "launch_s": float(lstms.group(2)), "side_by_side_taken": all(s.get("side_by_side") for s in summary.values()),
            "key_s": summary["key"]["seconds"], "value_s": summary["value"]["seconds"],
            "key_val_loss": round(history["key"]["best_loss"], 5), "value_val_loss": round(history["value"]["best_loss"], 5),
            "key_epoch_s": epoch_s["key"], "value_epoch_s": epoch_s["value"], "digests": digests,
            "process_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    name, tables, repeats, scratch = tables_bench_args("side_by_side.py")
    runs = []
    for r in range(repeats):
        for together in (False, True):
            runs.append({"round": r + 1, "side_by_side": together,
                         **one_run(tables, scratch / f"{together}_{r}", ["--side_by_side", str(together).lower()])})
            print(json.dumps(runs[-1]), flush=True)
    if len({json.dumps(x["digests"], sort_keys=True) for x in runs}) != 1:
        raise SystemExit(f"the weights differ between runs: {[x['digests'] for x in runs]}")
    out = {"name": name, "command": command(__file__), "runs": runs}
    write_results(f"side_by_side_{name}", out, markdown(out))


def markdown(out: dict) -> str:
    runs = out["runs"]
    lines = [f"# Key and value models: one after the other, then side by side ({out['name']})", "",
             f"Command: `.venv/bin/python {out['command']}`. The product's training (`--task both`, MLflow off) on "
             "the same tables, fresh processes, the two settings in turn. Every run ended with the same weights "
             f"(key {runs[0]['digests']['key']}, value {runs[0]['digests']['value']}).", "",
             "| round | side_by_side | train stage s | LSTMs s (rows, launch, training) | launch s besides training | "
             "key median epoch s | value median epoch s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {x['round']} | {str(x['side_by_side']).lower()} | {x['train_stage_s']:.1f} | {x['lstms_s']:.1f} | "
              f"{x['launch_s']:.1f} | {x['key_epoch_s']:.2f} | {x['value_epoch_s']:.2f} |" for x in runs]
    med = {t: {k: statistics.median(x[k] for x in runs if x["side_by_side"] is t) for k in ("train_stage_s", "lstms_s")}
           for t in (False, True)}
    lines += ["", "| median | one after the other | side by side | saved |", "|---|---|---|---|"]
    lines += [f"| {label} | {med[False][k]:.1f} | {med[True][k]:.1f} | {med[False][k] - med[True][k]:.1f} |"
              for label, k in (("train stage s", "train_stage_s"), ("LSTMs s", "lstms_s"))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
