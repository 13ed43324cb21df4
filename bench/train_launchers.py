"""The key model's epochs under each way of launching the trainer, side by side.

    .venv/bin/python bench/train_launchers.py --tables_root generated/bench/work_575k/warehouse --name 575k

Trains the key model with the default config on the same tables, in fresh processes, the launchers
in turn (``--repeats`` rounds, 2 by default):

- ``local``: the Spark-free trainer, ``python -m deeplog_spark.nn.local``;
- ``torchrun``: the same under ``torchrun --standalone --nproc_per_node 1`` (how TorchDistributor
  starts its ranks);
- ``spark``: the product's job, ``./spark-submit.sh --task key`` (Petastorm + TorchDistributor,
  then the count and PCA models and the calibration).

Reads each run's ``key_history.json`` and reports every epoch's training seconds (validation
excluded). Asks whether the Spark path trains slower than the trainer alone. Writes
``bench/results/train_launchers_<name>.{json,md}``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, command, tables_bench_args, write_results

LAUNCHERS = ("local", "torchrun", "spark")


def launch_command(launcher: str, tables: str, artifacts: str) -> list[str]:
    trainer = ["-m", "deeplog_spark.nn.local", "--task", "key", "--tables_root", tables, "--artifacts_root", artifacts]
    if launcher == "local":
        return [sys.executable, *trainer]
    if launcher == "torchrun":
        return [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nnodes", "1", "--nproc_per_node", "1",
                *trainer]
    return [str(REPO / "spark-submit.sh"), "--task", "key", "--tables_root", tables, "--artifacts_root", artifacts]


def main() -> None:
    name, tables, repeats, scratch = tables_bench_args("train_launchers.py")
    runs: list[dict] = []
    for r in range(repeats):
        for launcher in LAUNCHERS:
            artifacts = scratch / f"{launcher}_{r}"
            t0 = time.perf_counter()
            done = subprocess.run(launch_command(launcher, tables, str(artifacts)), capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                raise SystemExit(f"{' '.join(done.args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
            history = json.loads(next(artifacts.glob("runs/*/key_history.json")).read_text())["history"]
            epochs = [h["train_seconds"] for h in history]
            runs.append({"launcher": launcher, "repeat": r, "epoch_train_seconds": epochs,
                         "median_epoch_s": round(statistics.median(epochs), 2),
                         "val_loss": min(h["val_loss"] for h in history),
                         "process_seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(runs[-1]), flush=True)
    out = {"name": name, "command": command(__file__), "runs": runs}
    write_results(f"train_launchers_{name}", out, markdown(out))


def markdown(out: dict) -> str:
    runs = out["runs"]
    lines = [f"# The key model's epochs by launcher ({out['name']})", "",
             f"Command: `.venv/bin/python {out['command']}`. The default config, fresh processes, the launchers in "
             "turn; seconds of each epoch's training (validation excluded).", "",
             "| launcher | round | median epoch s | epochs (s) | best val loss |", "|---|---|---|---|---|"]
    lines += [f"| {x['launcher']} | {x['repeat'] + 1} | {x['median_epoch_s']:.2f} | "
              f"{', '.join(format(s, '.2f') for s in x['epoch_train_seconds'])} | {x['val_loss']:.4f} |" for x in runs]
    lines += ["", "| launcher | median of every epoch s | fastest epoch s | slowest epoch s |", "|---|---|---|---|"]
    for launcher in LAUNCHERS:
        every = [s for x in runs if x["launcher"] == launcher for s in x["epoch_train_seconds"]]
        lines.append(f"| {launcher} | {statistics.median(every):.2f} | {min(every):.2f} | {max(every):.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
