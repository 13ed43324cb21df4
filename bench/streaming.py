"""Benchmark: scheduled and streaming scoring of a continuous raw HDFS log (``--task stream``).

Everything is run as a user runs it, one ``./spark-submit.sh`` job at a time (each its own JVM,
alone on the machine), on a SYNTHETIC raw log: ``--task generate --gen_format raw`` resamples
``--blocks`` real sessions of the embedded sample, spells them as HDFS_v1 lines and spreads their
starts over ``--days`` days, one file per hour. The model is trained first on the embedded sample
(``--task full-pipeline``; not timed).

1. **Fixed costs.** A stream job over an empty landing folder: the JVM start, the session, the
   model's loading and the query's start and stop (``jvm_and_job_seconds``). A trigger of a
   ten-line file in a running stream: the fixed cost of a micro-batch (``trigger_fixed_seconds``).
2. **One shot.** Every file at once, one micro-batch, then ``--flush``: raw lines to final verdicts
   (``lines_per_second``: lines over the job's wall time, JVM included; and over the query alone).
3. **Hourly.** The first ``--hours`` files, one trigger per file (``--max_files_per_trigger 1``): each
   trigger's seconds from its start to its verdicts committed; ``hourly_increment_seconds`` is the
   median over the full hours (files of at least ``--full_hour`` of the largest file's lines). Then a
   ten-line file of a new block (``trigger_fixed_seconds``), then the remaining files in one trigger
   and the flush.
4. **Equivalence.** The final verdicts of 3 and 2 are compared row by row
   (``equivalent_to_one_shot``), with the ``session_closed`` rejects (sessions quiet for longer than
   ``session_timeout``) counted.

    .venv/bin/python bench/streaming.py --blocks 357000 --days 1 --name day

HDFS_v1 holds 11.2M lines over 38.7 hours, about 7M lines a day; 357,000 blocks of ~19.4 events are
~6.9M lines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import REPO, command, machine, options, started, write_results

SUMMARY_START = "\n{\n"
#: The block of the ten-line file that measures a trigger's fixed cost (left out of the comparison).
TINY_BLOCK = "blk_7777777777777777"


def submit(args: list[str], log: Path) -> tuple[dict, float]:
    """Run ``./spark-submit.sh ARGS`` (its output to ``log``); (its JSON summary, wall seconds)."""
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    t0 = time.perf_counter()
    res = subprocess.run(["./spark-submit.sh", *args], check=False, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log.write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed (exit {res.returncode}); see {log}")
    return json.loads(res.stdout[res.stdout.rindex(SUMMARY_START):]), wall


def verdicts(tables: Path) -> dict:
    """block_id -> the verdict columns that must agree, read with the deltalake reader (no JVM)."""
    from deltalake import DeltaTable  # the tables read without a JVM, after the jobs

    cols = ["block_id", "session_start", "session_end", "anomalous", "detectors", "deeplog_anomalous", "n_windows", "max_key_rank", "count_score",
            "max_value_error"]
    t = DeltaTable(str(tables / "verdicts")).to_pyarrow_table(columns=cols).to_pylist()
    return {r["block_id"]: tuple(str(r[c]) for c in cols) for r in t}


def rejects(tables: Path, reason: str) -> int:
    import pyarrow.compute as pc  # with deltalake: read after the jobs, without a JVM
    from deltalake import DeltaTable

    t = DeltaTable(str(tables / "ingest_rejects")).to_pyarrow_table(columns=["reason"])
    return int(pc.sum(pc.equal(t["reason"], reason)).as_py() or 0)


def gaps(tables: Path, timeout: float) -> dict:
    """How many sessions of the one-shot traces have a gap between two events over ``timeout``
    (the session rule would cut them), and the largest gap."""
    import pyarrow.compute as pc  # with deltalake: read after the jobs, without a JVM
    from deltalake import DeltaTable

    t = DeltaTable(str(tables / "traces")).to_pyarrow_table(columns=["intervals"])
    per = [0.0] * t.num_rows
    for r, g in zip(pc.list_parent_indices(t["intervals"]).to_pylist(), pc.list_flatten(t["intervals"]).to_pylist()):
        per[r] = max(per[r], g or 0.0)
    return {"session_timeout": timeout, "sessions": len(per), "over_timeout": sum(g > timeout for g in per),
            "largest_gap_seconds": max(per) if per else None}


def main() -> None:
    opts, rest = options({"blocks": "357000", "days": "1", "name": "day", "full_hour": "0.8", "hours": "6",
                            "warm_hours": "0", "one_shot": "true", "timeout": "86400", "keep": ""})
    one_shot = opts["one_shot"] == "true"
    if rest:
        raise SystemExit(f"unknown arguments: {rest}")
    work = Path(opts["keep"] or tempfile.mkdtemp(prefix="bench_stream_"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    for old in [*work.glob("t_*"), *work.glob("land_*"), work / "tiny"]:  # a kept folder: the model and the log stay
        shutil.rmtree(old, ignore_errors=True)
    art = work / "art"
    common = ["--artifacts_root", str(art), "--mlflow", "false"]
    print(f"work: {work}")
    if not (art / "runs" / "latest.json").is_file():
        submit(["--task", "full-pipeline", "--tables_root", str(work / "train"), *common], logs / "train.log")
    gen = work / "gen"
    gen_s = None
    if not (gen / "generated.json").is_file():
        _, gen_s = submit(["--task", "generate", "--gen_format", "raw", "--gen_blocks", opts["blocks"], "--gen_days",
                           opts["days"], "--gen_out", str(gen)], logs / "generate.log")
    generated = json.loads((gen / "generated.json").read_text())
    files = sorted((gen / "raw").glob("*.log"))
    sizes = {f: f.read_bytes().count(b"\n") for f in files}
    labels = ["--anomaly_labels", str(gen / "anomaly_label.csv")]

    def stream(name: str, landing: Path, *extra: str) -> tuple[dict, float]:
        return submit(["--task", "stream", "--landing", str(landing), "--tables_root", str(work / name),
                       *common, *labels, *extra], logs / f"{name}.log")

    def land(landing: Path, chosen: list[Path]) -> None:
        landing.mkdir(parents=True, exist_ok=True)
        base = time.time() - 3600
        for i, f in enumerate(chosen):
            shutil.copy(f, landing / f.name)
            os.utime(landing / f.name, (base + i, base + i))

    out: dict = {"started": started(), "command": command(__file__), "synthetic": True,
                 "generated": generated, "generate_seconds": gen_s and round(gen_s, 1), "files": len(files),
                 "lines": sum(sizes.values())}
    # 1. fixed costs: a job with nothing to read; a trigger of ten lines
    (work / "empty").mkdir(exist_ok=True)
    _, out["jvm_and_job_seconds"] = stream("t_empty", work / "empty")
    # 2. one shot
    if one_shot:
        land(work / "land_all", files)
        one, wall = stream("t_one", work / "land_all", "--flush", "true")
        out["one_shot"] = {"wall_seconds": round(wall, 1), "query_seconds": one["query_seconds"],
                           "lines": one["lines"], "sessions": one["sessions_scored"], "anomalies": one["anomalies"],
                           "batches": one["batches"], "flush": one["flush"]}
        out["lines_per_second"] = round(one["lines"] / wall, 1)
        out["lines_per_second_query"] = round(one["lines"] / one["query_seconds"], 1)
    # 3. hourly: after --warm_hours files in one trigger (the state of a stream running for that long), the
    # next hours one trigger each; a ten-line file (a new block inside the hours already read: no watermark
    # jump) for the fixed cost of a trigger; then the rest at once and the flush
    hours, warm = int(opts["hours"]), int(opts["warm_hours"])
    measured = files[warm:warm + hours]
    hourly_landing = work / "land_hourly"
    if warm:
        land(hourly_landing, files[:warm])
        warm_run, _ = stream("t_hourly", hourly_landing)
        out["warm"] = {"files": warm, "batches": warm_run["batches"]}
    tiny = work / "tiny" / "zz-tiny.log"  # the last trigger of the same job, so the JVM is as warm
    tiny.parent.mkdir(exist_ok=True)
    first_lines = measured[-1].read_text().splitlines(keepends=True)[:10]
    tiny.write_text("".join(re.sub(r"blk_-?\d+", TINY_BLOCK, line) for line in first_lines))
    land(hourly_landing, [*measured, tiny])
    hourly, wall_h = stream("t_hourly", hourly_landing, "--max_files_per_trigger", "1")
    tiny_run = {"batches": hourly["batches"][-1:]}
    hourly["batches"] = hourly["batches"][:-1]
    land(hourly_landing, files[warm + hours:])
    rest, _ = stream("t_hourly", hourly_landing, "--flush", "true")
    largest = max(sizes.values())
    full = [b for b, f in zip(hourly["batches"], measured) if sizes[f] >= float(opts["full_hour"]) * largest]
    out["hourly"] = {"wall_seconds": round(wall_h, 1), "query_seconds": hourly["query_seconds"],
                     "triggers": len(hourly["batches"]), "batches": hourly["batches"], "full_hours": len(full),
                     "full_hour_lines_median": statistics.median(b["lines"] for b in full) if full else None,
                     "tiny_trigger": tiny_run["batches"], "rest": rest["batches"], "flush": rest["flush"]}
    out["hourly_increment_seconds"] = round(statistics.median(b["seconds"] for b in full), 1) if full else None
    out["trigger_fixed_seconds"] = tiny_run["batches"][0]["seconds"] if tiny_run["batches"] else None
    # 4. equivalence
    b = verdicts(work / "t_hourly")
    b.pop(TINY_BLOCK, None)
    out["verdicts"] = {"hourly": len(b), "session_closed_rejects_hourly": rejects(work / "t_hourly", "session_closed")}
    if one_shot:
        a = verdicts(work / "t_one")
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        out["equivalent_to_one_shot"] = not differ
        out["verdicts"].update(one_shot=len(a), differ=len(differ), examples=differ[:5])
    out["gaps"] = gaps(work / "t_hourly", float(opts["timeout"]))
    out["machine"] = machine()
    write_results(f"streaming_{opts['name']}", out, report(out))
    if not opts["keep"]:
        shutil.rmtree(work, ignore_errors=True)


def report(o: dict) -> str:
    g, one, h = o["generated"], o.get("one_shot"), o["hourly"]
    m = o["machine"]
    one_rows = (f"| raw lines to final verdicts, the whole log in one job (JVM included) | **{o['lines_per_second']:,.0f} lines/s** "
                f"({one['lines']:,} lines in {one['wall_seconds']} s) | >= 100,000 lines/s |\n"
                f"| the same, the streaming query alone | {o['lines_per_second_query']:,.0f} lines/s ({one['query_seconds']} s) | |\n"
                ) if one else ""
    v = o["verdicts"]
    eq_row = (f"| final verdicts of the hourly stream equal the one-shot's | **{o['equivalent_to_one_shot']}** ({v['hourly']:,} "
              f"vs {v['one_shot']:,} verdicts, {v['differ']} differ; {v['session_closed_rejects_hourly']} `session_closed` "
              "rejects) | true |\n") if one else ""
    warm = (f"Before the measured hours, the first {o['warm']['files']} files ran as one trigger, so the stream holds "
            "the sessions of a stream that has been running that long, and sessions close every hour.\n\n"
            if o.get("warm") else "")
    rows = [f"| {b['ingest_batch']} | {b['lines']:,} | {b['sessions_scored']:,} | {b['ingest_seconds']} | {b['seconds']} |"
            for b in h["batches"] + h["tiny_trigger"] + h["rest"] + ([h["flush"]] if h["flush"] else [])]
    return f"""# Streaming scoring of a continuous raw HDFS log: {o['generated']['blocks']:,} blocks

SYNTHETIC raw log (`--task generate --gen_format raw`): {g['blocks']:,} resampled real sessions of the embedded
sample ({g['anomalies']:,} anomalies), {o['lines']:,} lines from {g['first_line']} to {g['last_line']}, {o['files']}
hourly files. Model: trained on the embedded sample (not timed). Every job alone, through `./spark-submit.sh`
(local[*]). Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB. Command: `.venv/bin/python {o['command']}`.
Started {o['started']}.

{warm}| measure | figure | target |
|---|---|---|
{one_rows}| an hourly increment, trigger start to verdicts committed (median of {h['full_hours']} full hours of ~{h['full_hour_lines_median']:,.0f} lines) | **{o['hourly_increment_seconds']} s** | <= 30 s |
| JVM start + session + model + query start and stop (an empty landing folder) | {o['jvm_and_job_seconds']:.1f} s | |
| the fixed cost of a trigger (a ten-line file of a new block, after the hours, in the same job) | {o['trigger_fixed_seconds']} s | |
| sessions with a gap over session_timeout ({o['gaps']['session_timeout']:g} s): the rule would cut them | {o['gaps']['over_timeout']:,} of {o['gaps']['sessions']:,} (largest gap {o['gaps']['largest_gap_seconds']:,.0f} s) | |
{eq_row}
Hourly triggers (one file each; seconds from the trigger's start to its verdicts committed), then the
ten-line trigger, the rest of the log in one trigger, and the flush:

| batch | lines | sessions closed and scored | ingest s | total s |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
