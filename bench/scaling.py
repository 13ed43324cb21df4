"""How the pipeline's cost grows with the workload: one table from several pipeline benchmark runs.

    .venv/bin/python bench/scaling.py 57k 575k 2.9M

reads ``bench/results/pipeline_<name>.json`` for each name (smallest first) and writes
``bench/results/pipeline_scaling.md``: seconds per stage at each size, the growth factor of each
stage against the growth of the workload, and the peak memory of each process group.
"""

from __future__ import annotations

import json
import math
import sys

from _common import RESULTS, write_results

STAGES = ("ingest", "windows", "train", "detect", "evaluate")


def main() -> None:
    names = sys.argv[1:]
    if len(names) < 2:
        raise SystemExit("usage: scaling.py NAME NAME [NAME ...] (pipeline_<NAME>.json, smallest first)")
    runs = [json.loads((RESULTS / f"pipeline_{n}.json").read_text()) for n in names]
    stages = [{s["stage"]: s for s in r["stages"]} for r in runs]
    windows = [st["windows"]["rows_out"] if "windows" in st else None for st in stages]
    head = " | ".join(f"{r['blocks']:,} blocks" for r in runs)
    settings = [json.dumps(r["overrides"]) for r in runs]
    same = len(set(settings)) == 1
    if same:
        training = f"training `{settings[0]}`"
    else:  # a run kept from before a change of training settings: its train time is not comparable
        training = "training settings differ: " + "; ".join(f"{n}: `{s}`" for n, s in zip(names, settings))
    machines = [f"{r['machine']['cpu']}, {r['machine']['cores']} cores, master `{r['machine']['master']}`" for r in runs]
    if len(set(machines)) == 1:
        where = f"Same machine for every size: {machines[0]}"
    else:  # growth across machines mixes the workload's cost with the machines' speed
        where = ("NOT the same machine for every size, so the growth figures mix workload and machine: "
                 + "; ".join(f"{n}: {m}" for n, m in zip(names, machines)))
    lines = ["# Pipeline cost against workload size", "",
             f"From `bench/results/pipeline_{{{','.join(names)}}}.json` (`.venv/bin/python bench/scaling.py "
             f"{' '.join(names)}`). {where}; "
             f"{training}. SYNTHETIC workloads (`--task generate`).", "",
             "## Seconds per stage", "", f"| stage | {head} | growth per 10x blocks |",
             "|---|" + "---|" * (len(runs) + 1)]
    for stage in STAGES:
        secs = [st.get(stage, {}).get("seconds") for st in stages]
        growth = ""
        if stage == "train" and not same:
            growth = "n/a (settings differ)"
        elif secs[0] and secs[-1]:
            decades = math.log10(runs[-1]["blocks"] / runs[0]["blocks"])
            growth = f"{(secs[-1] / secs[0]) ** (1 / decades):.1f}x"
        lines.append(f"| {stage} | " + " | ".join("" if s is None else f"{s:,.1f}" for s in secs) + f" | {growth} |")
    total = [sum(st.get(s, {}).get("seconds") or 0 for s in STAGES) for st in stages]
    lines.append("| total of these stages | " + " | ".join(f"{t:,.1f}" for t in total) + " | |")
    if all("pipeline_seconds" in r for r in runs):  # the main job: the stages but the windows export
        e2e = [r["pipeline_seconds"] for r in runs]
        growth = f"{(e2e[-1] / e2e[0]) ** (1 / math.log10(runs[-1]['blocks'] / runs[0]['blocks'])):.1f}x"
        lines.append("| **end to end** (ingest, train, detect, evaluate) | " + " | ".join(f"**{t:,.1f}**" for t in e2e)
                     + f" | {growth} |")
    lines.append("| windows | " + " | ".join("" if w is None else f"{w:,}" for w in windows) + " | |")
    lines += ["", "Growth per 10x blocks: (seconds at the largest / at the smallest) ^ (1 / decades of blocks); "
              "10x means linear, 1x flat.", "", "## Throughput", "", f"| stage | unit | {head} |",
              "|---|---|" + "---|" * len(runs)]
    for stage, unit in (("ingest", "blocks/s"), ("windows", "windows/s"), ("detect", "windows/s")):
        lines.append(f"| {stage} | {unit} | " + " | ".join(
            "" if not st.get(stage, {}).get("per_s") else f"{st[stage]['per_s']:,.0f}" for st in stages) + " |")
    lines += ["", "## Peak memory (MiB, RSS) over the product's stages", "",
              "The stages above; not the benchmark's generator nor its reference stage, which loads windows into "
              "numpy arrays on purpose.", "", f"| process group | {head} |", "|---|" + "---|" * len(runs)]
    for group in ("driver_python", "jvm", "executor_python", "trainer_python"):
        peaks = [max((s.get("peak_mib") or {}).get(group, 0) for s in r["stages"] if s["stage"] in STAGES) for r in runs]
        lines.append(f"| {group} | " + " | ".join(f"{p:,.0f}" for p in peaks) + " |")
    lines += ["", "Driver python: the job's own process (it holds counts and small aggregates, never a table). "
              "JVM: the driver and, under `local[*]`, the executor. executor python: the Python workers of the scoring passes. "
              "trainer python: TorchDistributor's training processes."]
    write_results("pipeline_scaling", None, "\n".join(lines) + "\n", into=RESULTS)  # the runs' JSON hold the records


if __name__ == "__main__":
    main()
