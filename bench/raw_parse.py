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
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F

from deeplog_spark.config import pop_option
from deeplog_spark.ingest import read_templates
from deeplog_spark.pipeline import run_ingest_raw
from deeplog_spark.raw_ingest import parse_lines, read_raw_logs

from _common import RESULTS, bench_setup

REPO = Path(__file__).resolve().parent.parent


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


def main() -> None:
    argv, copies = pop_option(sys.argv[1:], "copies", "500")
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
        parse_s, stage_s, summary = [], [], {}
        for _ in range(int(repeats)):
            t0 = time.perf_counter()
            parsed = parse_lines(read_raw_logs(spark, cfg.raw_logs), templates)
            # every parsed field feeds the aggregate, so none of the parsing is pruned away
            counted = parsed.agg(F.count(F.lit(1)), F.sum(F.col("event_id").isNotNull().cast("long")),
                                 F.sum(F.size("block_ids")), F.max("ts"), F.max(F.length("component")),
                                 F.count("reason")).first()
            parse_s.append(time.perf_counter() - t0)
            assert counted[0] == lines, (counted[0], lines)
            t0 = time.perf_counter()
            summary = run_ingest_raw(spark, cfg)
            stage_s.append(time.perf_counter() - t0)
            assert summary["lines"] == lines
        result = {
            "name": name, "synthetic": True, "copies": int(copies), "files": int(files), "lines": lines,
            "bytes": sum(os.path.getsize(p) for p in (work / "logs").iterdir()),
            "generate_s": round(gen_s, 2),
            "parse_s": [round(x, 2) for x in parse_s], "ingest_raw_s": [round(x, 2) for x in stage_s],
            "parse_lines_per_s_median": round(lines / statistics.median(parse_s)),
            "ingest_raw_lines_per_s_median": round(lines / statistics.median(stage_s)),
            "blocks": summary["blocks"], "accepted_lines": summary["accepted_lines"],
            "rejected_lines": summary["rejected_lines"],
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "spark": spark.version,
                        "master": spark.sparkContext.master},
            "command": "bench/raw_parse.py " + " ".join(argv + [f"--copies {copies}", f"--files {files}"]),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spark.stop()
    (RESULTS / f"raw_parse_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Raw log parse throughput: {name}", "",
          f"SYNTHETIC input built from real lines: the 2,000 real lines of HDFS_2k.log repeated {copies} times "
          f"with per-copy block ids, {lines:,} lines in {files} plain files, {result['bytes'] / 1e6:.0f} MB. "
          f"Machine: {os.cpu_count()} CPUs, master {result['machine']['master']}. Command: "
          f"`.venv/bin/python {result['command']}`.", "",
          "| measure | runs (s) | median lines/s |", "|---|---|---|",
          f"| parse (read, parse, match, extract; count) | {result['parse_s']} | {result['parse_lines_per_s_median']:,} |",
          f"| ingest-raw stage (parse + sessions + rejects + counts + Delta writes) | {result['ingest_raw_s']} | "
          f"{result['ingest_raw_lines_per_s_median']:,} |", "",
          f"{summary['blocks']:,} blocks; {summary['accepted_lines']:,} accepted and "
          f"{summary['rejected_lines']:,} rejected lines."]
    (RESULTS / f"raw_parse_{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
