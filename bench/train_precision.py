"""The LSTMs trained in fp32 against bf16 autocast (``train_precision``), by the product's own trainer.

    .venv/bin/python bench/train_precision.py --tables_root generated/bench/work_575k/warehouse --name 575k

Runs the Spark-free trainer (``python -m deeplog_spark.nn.local``: the rows, the ``TrainJob`` and
the loop of the Spark job) once per (task, precision, repeat), the precisions alternating, each in
a fresh process with nothing else running, and reads each run's summary: the training seconds
(every epoch, validation included) and the best validation loss (always computed in fp32, so the
two precisions are judged alike). Writes ``bench/results/train_precision_<name>.{json,md}``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time


from _common import command, options, write_results

PRECISIONS = ("fp32", "bf16")


def main() -> None:
    opts, args = options({"name": "bench", "tables_root": "", "tasks": "key,value", "repeats": "2"})
    name, tables, tasks, repeats = (opts[o] for o in ("name", "tables_root", "tasks", "repeats"))
    if not tables or args:
        raise SystemExit("usage: train_precision.py --tables_root DIR [--name NAME] [--tasks key,value] [--repeats N]")
    scratch = tempfile.mkdtemp(prefix="train_precision_")
    runs: list[dict] = []
    for task in tasks.split(","):
        for r in range(int(repeats)):
            for precision in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
                t0 = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "deeplog_spark.nn.local", "--task", task,
                                       "--tables_root", tables, "--train_precision", precision,
                                       "--out", f"{scratch}/{task}_{precision}_{r}"],
                                      capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{' '.join(done.args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
                summary = json.loads(done.stdout[done.stdout.index("{"):])
                runs.append({"task": task, "precision": summary["precision"], "repeat": r,
                             "train_seconds": summary["train_seconds"], "val_loss": summary["val_loss"],
                             "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
                             "process_seconds": round(time.perf_counter() - t0, 1)})
                print(json.dumps(runs[-1]), flush=True)
    out = {"name": name, "command": command(__file__), "runs": runs}
    lines = [f"# Training precision: fp32 against bf16 autocast ({name})", "",
             f"Command: `.venv/bin/python {out['command']}`. The product's Spark-free trainer "
             "(`deeplog_spark.nn.local`), one fresh process per run, the precisions alternating. Seconds: every "
             "epoch's training and validation; the validation loss is computed in fp32 for both.", "",
             "| model | precision | median training s | runs (s) | best val loss per run | speed-up |",
             "|---|---|---|---|---|---|"]
    for task in tasks.split(","):
        med = {p: statistics.median(x["train_seconds"] for x in runs if x["task"] == task and x["precision"] == p)
               for p in PRECISIONS}
        for p in PRECISIONS:
            mine = [x for x in runs if x["task"] == task and x["precision"] == p]
            lines.append(f"| {task} | {p} | {med[p]:.1f} | {', '.join(str(x['train_seconds']) for x in mine)} | "
                         f"{', '.join(format(x['val_loss'], '.4f') for x in mine)} | "
                         f"{med['fp32'] / med[p]:.2f}x |")
    write_results(f"train_precision_{name}", out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
