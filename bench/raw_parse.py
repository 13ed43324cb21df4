"""Benchmark: raw HDFS log parse throughput (lines/s) of the ingest-raw stage.

The input is SYNTHETIC, built from real lines: the 2,000 real lines of
``data/sample/HDFS_2k.log.gz`` repeated ``--copies`` times, with every block id of copy c made
unique to that copy (``blk_<n>`` -> ``blk_<n><c as 6 digits>``; the template text, timestamps and everything
else is the real line). It measures parsing and sessionising speed, not detection quality.
Written as ``--files`` plain-text files (splittable, so every core reads) under a temporary
directory that is deleted afterwards. Two timings, in the same run, ``--repeats`` times each,
alternating, medians reported:

- ``parse``: read + parse + template match + block extraction of every line (a count over the
  parsed lines);
- ``ingest-raw``: the whole stage (parse, sessions, rejects, template counts, Delta writes,
  conservation checks).

    .venv/bin/python bench/raw_parse.py --copies 1000 --name 2M

``--systems bgl,thunderbird,hadoop,openstack`` measures the generic ingest instead: per system,
its real lines from ``../shared/data/loghub`` (BGL: the 70,000 lines of the random samples;
the others: their 2,000-line sample) repeated to ``--lines`` lines per system, parsed with the
system's format preset, templates MINED by Drain3 in Spark (distinct masked messages per
partition, merged on the driver), cut into windows of 20 lines. Repetition keeps the distinct
messages of the real lines, so mining costs what it would for a log with that many distinct
messages; the reported figure counts every line. Two timings per system, as above: ``parse``
(parse + mask + mine + match, a count over the lines) and the whole ``ingest-raw`` stage.

    .venv/bin/python bench/raw_parse.py --systems bgl,thunderbird,hadoop,openstack --lines 2000000 --repeats 3 --name multi
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F

from deeplog_spark.core.config import pop_option
from deeplog_spark.ingest.traces import read_templates
from deeplog_spark.ingest.runner import run_ingest_raw
from deeplog_spark.ingest.raw import parse_lines, read_raw_logs

from _common import REPO, bench_setup, command, machine, machine_line, write_results



def write_log(out_dir: Path, copies: int, files: int) -> int:
    real = gzip.decompress((REPO / "data" / "sample" / "HDFS_2k.log.gz").read_bytes()).decode().splitlines()
    blk = re.compile(r"(blk_-?\d+)")
    out_dir.mkdir(parents=True, exist_ok=True)
    handles = [open(out_dir / f"part-{i:03d}.log", "w") for i in range(files)]
    try:
        for c in range(copies):
            chunk = "\n".join(blk.sub(lambda m: f"{m.group(1)}{c:06d}", line) for line in real) + "\n"
            handles[c % files].write(chunk)
    finally:
        for h in handles:
            h.close()
    return copies * len(real)


def counted(parsed) -> int:
    """Lines of ``parsed``, with every parsed field feeding the aggregate (none of the parsing is
    pruned away)."""
    cols = [F.count(F.lit(1)), F.sum(F.col("event_id").isNotNull().cast("long")), F.sum(F.size("block_ids")),
            F.max("ts"), F.count("reason")]
    if "component" in parsed.columns:
        cols.append(F.max(F.length("component")))
    return parsed.agg(*cols).first()[0]


def timed_runs(spark, cfg, lines: int, repeats: int, parse) -> tuple[list[float], list[float], dict]:
    """``repeats`` x (the parse alone: ``parse()``, the lines it counted, then the whole ingest-raw
    stage), alternating."""
    parse_s, stage_s, summary = [], [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = parse()
        parse_s.append(time.perf_counter() - t0)
        assert n == lines, (n, lines)
        t0 = time.perf_counter()
        summary = run_ingest_raw(spark, cfg)
        stage_s.append(time.perf_counter() - t0)
        assert summary["lines"] == lines
    return parse_s, stage_s, summary


def parse_and_mine(spark, path: str, fmt, cfg) -> int:
    """What the ingest does before segmenting: the lines parsed and masked once (cached), their
    distinct messages mined and matched, the ids joined back; the lines counted."""
    from pyspark import StorageLevel

    from deeplog_spark.ingest.raw import mined_fields, parse_mined

    fields = mined_fields(read_raw_logs(spark, path), fmt, False).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return counted(parse_mined(fields, fmt, None, cfg.drain_sim_th, cfg.drain_depth, sessions_by_id=False)[0])
    finally:
        fields.unpersist()


SHARED_LOGHUB = Path(os.environ.get("DEEPLOG_SHARED_LOGHUB", REPO.parent / "shared" / "data" / "loghub"))
SOURCES = {"bgl": "BGL/ztz1989_random_samples/*.log.gz", "thunderbird": "Thunderbird/Thunderbird_2k.log",
           "hadoop": "Hadoop/Hadoop_2k.log", "openstack": "OpenStack/OpenStack_2k.log",
           "spark": "Spark/Spark_2k.log", "zookeeper": "Zookeeper/Zookeeper_2k.log"}


def real_lines(system: str) -> list[str]:
    out = []
    for path in sorted(SHARED_LOGHUB.glob(SOURCES[system])):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        out += [x.rstrip("\r") for x in data.decode("utf-8", errors="replace").splitlines()]
    if not out:
        raise SystemExit(f"no {system} lines under {SHARED_LOGHUB} (set DEEPLOG_SHARED_LOGHUB)")
    return out


def write_system_log(out_dir: Path, system: str, lines: int, files: int) -> tuple[int, int]:
    """``lines`` lines of ``system`` (its real lines repeated) in ``files`` files; (lines, real lines)."""
    real = real_lines(system)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_file = -(-lines // files)
    written = 0
    for i in range(files):
        n = min(per_file, lines - written)
        reps, rest = divmod(n, len(real))
        with open(out_dir / f"part-{i:03d}.log", "w") as fh:
            chunk = "\n".join(real) + "\n"
            for _ in range(reps):
                fh.write(chunk)
            if rest:
                fh.write("\n".join(real[:rest]) + "\n")
        written += n
    return written, len(real)


def multi_system(name: str, cfg, spark, systems: list[str], lines: int, files: int, repeats: int, argv) -> None:
    from deeplog_spark.ingest.formats import PRESETS

    work = Path(tempfile.mkdtemp(prefix="raw_parse_multi_"))
    rows = []
    try:
        for system in systems:
            folder = work / system
            n, real = write_system_log(folder / "logs", system, lines, files)
            scfg = cfg.replace(input="raw_logs", raw_logs=str(folder / "logs"), anomaly_labels="", log_format=system,
                               segment="lines", segment_lines=20, templates_from="mine",
                               tables_root=str(folder / "warehouse"), artifacts_root=str(folder / "artifacts"))
            parse_s, stage_s, summary = timed_runs(spark, scfg, n, repeats, lambda: parse_and_mine(
                spark, scfg.raw_logs, PRESETS[system], scfg))
            rows.append({"system": system, "lines": n, "real_lines": real, "templates": summary["templates"],
                         "accepted_lines": summary["accepted_lines"], "rejected_lines": summary["rejected_lines"],
                         "rejects_by_reason": summary["rejects_by_reason"], "segments": summary["blocks"],
                         "parse_s": [round(x, 2) for x in parse_s], "ingest_raw_s": [round(x, 2) for x in stage_s],
                         "parse_lines_per_s_median": round(n / statistics.median(parse_s)),
                         "ingest_raw_lines_per_s_median": round(n / statistics.median(stage_s))})
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spark.stop()
    total = sum(r["lines"] for r in rows)
    parse_total = sum(statistics.median(r["parse_s"]) for r in rows)
    stage_total = sum(statistics.median(r["ingest_raw_s"]) for r in rows)
    result = {"name": name, "synthetic": True, "systems": rows, "lines": total, "files_per_system": files,
              "parse_lines_per_s_overall": round(total / parse_total),
              "ingest_raw_lines_per_s_overall": round(total / stage_total), "machine": machine(spark),
              "command": command(__file__, argv)}
    md = [f"# Raw log ingest with Drain3 mining, several systems: {name}", "",
          f"SYNTHETIC input built from REAL lines: per system its real Loghub lines repeated to {lines:,} lines, in "
          f"{files} plain files; parsed with the system's format preset, templates mined by Drain3 in Spark, "
          f"segmented into windows of 20 lines. Machine: {machine_line(result['machine'])}. "
          f"Command: `.venv/bin/python {result['command']}`. Medians of {repeats} runs, each run alone.", "",
          "| system | lines (distinct real lines) | templates | rejected | parse + mine, runs (s) | lines/s | "
          "ingest-raw stage, runs (s) | lines/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['system']} | {r['lines']:,} ({r['real_lines']:,}) | {r['templates']} | {r['rejected_lines']:,} | "
                  f"{r['parse_s']} | {r['parse_lines_per_s_median']:,} | {r['ingest_raw_s']} | "
                  f"{r['ingest_raw_lines_per_s_median']:,} |")
    md += ["", f"All systems: {total:,} lines; parse + mine **{result['parse_lines_per_s_overall']:,} lines/s**, "
           f"the whole ingest-raw stage (parse, mine, segment, rejects, counts, Delta writes, checks) "
           f"**{result['ingest_raw_lines_per_s_overall']:,} lines/s** (total lines over the sum of the medians)."]
    write_results(f"raw_parse_{name}", result, "\n".join(md) + "\n")


def main() -> None:
    argv, systems = pop_option(sys.argv[1:], "systems", "")
    argv, per_system = pop_option(argv, "lines", "500000")
    if systems:
        argv2, files = pop_option(argv, "files", "4")
        argv2, repeats = pop_option(argv2, "repeats", "3")
        sys.argv = [sys.argv[0], *argv2]
        name, cfg, spark = bench_setup("bench-raw-parse")
        multi_system(name, cfg, spark, systems.split(","), int(per_system), int(files), int(repeats), sys.argv[1:] + [
            f"--systems {systems}", f"--lines {per_system}", f"--files {files}", f"--repeats {repeats}"])
        return
    argv, copies = pop_option(argv, "copies", "500")
    argv, files = pop_option(argv, "files", "4")
    argv, repeats = pop_option(argv, "repeats", "3")
    sys.argv = [sys.argv[0], *argv]
    name, cfg, spark = bench_setup("bench-raw-parse")
    work = Path(tempfile.mkdtemp(prefix="raw_parse_"))
    try:
        t0 = time.perf_counter()
        lines = write_log(work / "logs", int(copies), int(files))
        gen_s = time.perf_counter() - t0
        cfg = cfg.replace(raw_logs=str(work / "logs"), anomaly_labels="")
        templates = [r.asDict() for r in read_templates(spark, cfg.templates).collect()]
        parse_s, stage_s, summary = timed_runs(spark, cfg, lines, int(repeats), lambda: counted(parse_lines(
            read_raw_logs(spark, cfg.raw_logs), templates)))
        result = {
            "name": name, "synthetic": True, "copies": int(copies), "files": int(files), "lines": lines,
            "bytes": sum(os.path.getsize(p) for p in (work / "logs").iterdir()),
            "generate_s": round(gen_s, 2),
            "parse_s": [round(x, 2) for x in parse_s], "ingest_raw_s": [round(x, 2) for x in stage_s],
            "parse_lines_per_s_median": round(lines / statistics.median(parse_s)),
            "ingest_raw_lines_per_s_median": round(lines / statistics.median(stage_s)),
            "blocks": summary["blocks"], "accepted_lines": summary["accepted_lines"],
            "rejected_lines": summary["rejected_lines"],
            "machine": machine(spark),
            "command": command(__file__, argv + [f"--copies {copies}", f"--files {files}"]),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spark.stop()
    md = [f"# Raw log parse throughput: {name}", "",
          f"SYNTHETIC input built from real lines: the 2,000 real lines of HDFS_2k.log repeated {copies} times "
          f"with per-copy block ids, {lines:,} lines in {files} plain files, {result['bytes'] / 1e6:.0f} MB. "
          f"Machine: {machine_line(result['machine'])}. Command: "
          f"`.venv/bin/python {result['command']}`.", "",
          "| measure | runs (s) | median lines/s |", "|---|---|---|",
          f"| parse (read, parse, match, extract; count) | {result['parse_s']} | {result['parse_lines_per_s_median']:,} |",
          f"| ingest-raw stage (parse + sessions + rejects + counts + Delta writes) | {result['ingest_raw_s']} | "
          f"{result['ingest_raw_lines_per_s_median']:,} |", "",
          f"{summary['blocks']:,} blocks; {summary['accepted_lines']:,} accepted and "
          f"{summary['rejected_lines']:,} rejected lines."]
    write_results(f"raw_parse_{name}", result, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
