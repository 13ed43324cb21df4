"""Template mining quality and throughput of deeplog_spark.ingest.mining (Drain3) on Loghub's labelled 2k sets.

    .venv/bin/python bench/parsing_accuracy.py          # needs ../shared/data/{hdfs,loghub}; ~1 min

For every system with a ``*_2k.log_structured*.csv`` (real Loghub data, 2,000 lines each), the miner
sees the ``Content`` column in file order (the part of a line after its header fields, as the Loghub
benchmark parses it) with the default settings (similarity 0.4, depth 4, generic masks for IPs, hex
and numbers; nothing tuned per system). Reported per system:

- GA, grouping accuracy (Loghub's "parsing accuracy", Zhu et al. ICSE-SEIP 2019): the share of
  lines whose mined group holds exactly the lines of their ground-truth group;
- PA, template accuracy (Loghub-2.0): the share of lines whose mined template text equals the
  corrected ground-truth template (``*_corrected.csv`` where present);
- restored: after saving and restoring the miner state, the share of lines matched to the same id.

Throughput: the ~70k real BGL lines of ``BGL/ztz1989_random_samples`` (not contiguous: used for
throughput only), mined in one Python process. Writes bench/results/parsing_accuracy_2k.{json,md}.
"""

from __future__ import annotations

import csv
import gzip
import time
from importlib.metadata import version
from pathlib import Path

from deeplog_spark.ingest.mining import Miner, grouping_accuracy, mine, template_accuracy

from _common import REPO, command, machine, started, write_results

SHARED = REPO.parent / "shared" / "data"
SYSTEMS = ("HDFS", "BGL", "Hadoop", "OpenStack", "Thunderbird", "Linux", "Spark", "Zookeeper")


def _structured(system: str) -> Path:
    base = SHARED / ("hdfs" if system == "HDFS" else f"loghub/{system}")
    for name in (f"{system}_2k.log_structured_corrected.csv", f"{system}_2k.log_structured.csv"):
        if (base / name).is_file():
            return base / name
    raise SystemExit(f"no structured 2k file for {system} under {base}")


def score(system: str) -> dict:
    path = _structured(system)
    rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    messages = [r["Content"] for r in rows]
    t0 = time.perf_counter()
    miner, ids = mine(messages)
    seconds = time.perf_counter() - t0
    templates = miner.templates()
    restored = Miner.from_state(miner.state())
    same = sum(restored.match(m) == i for m, i in zip(messages, ids)) / len(messages)
    return {"system": system, "file": str(path.relative_to(SHARED)), "lines": len(rows),
            "truth_templates": len({r["EventId"] for r in rows}), "mined_templates": len(templates),
            "ga": round(grouping_accuracy([r["EventId"] for r in rows], ids), 4),
            "pa": round(template_accuracy([r["EventTemplate"] for r in rows], [templates[i] for i in ids]), 4),
            "corrected_truth": "corrected" in path.name, "restored_same_id": round(same, 4),
            "seconds": round(seconds, 3)}


def throughput() -> dict:
    lines = []
    for f in sorted((SHARED / "loghub" / "BGL" / "ztz1989_random_samples").glob("BGL_*k.log.gz")):
        with gzip.open(f, "rt", encoding="utf-8", errors="replace") as fh:
            # BGL: label, timestamp, date, node, time, node, type, component, level, then the content
            lines += [ln.rstrip("\n").split(" ", 9)[-1] for ln in fh if ln.strip()]
    t0 = time.perf_counter()
    miner = Miner()
    for ln in lines:
        miner.add(ln)
    seconds = time.perf_counter() - t0
    return {"lines": len(lines), "seconds": round(seconds, 2), "lines_per_s": round(len(lines) / seconds),
            "templates": len(miner.templates())}


def main() -> None:
    start = started()
    rows = [score(s) for s in SYSTEMS]
    tp = throughput()
    out = {"command": ".venv/bin/python " + command(__file__), "started": start, "machine": machine(),
           "drain3": version("drain3"), "settings": {"sim_th": 0.4, "depth": 4, "masks": "IP, hex, numbers"},
           "systems": rows, "throughput_bgl_random_samples": tp}
    md = ["# Template mining on Loghub's 2k sets (Drain3)", "",
          f"Command: `{out['command']}` (started {start}); Drain3 {out['drain3']}, similarity 0.4, depth 4, "
          "generic masks (IP, hex, numbers); the same settings for every system, nothing tuned on any.", "",
          "Real Loghub data, 2,000 labelled lines per system. GA: grouping accuracy (Loghub's parsing accuracy). "
          "PA: template accuracy against the ground-truth text (the Loghub-2.0 corrected templates where "
          "present). Restored: lines matched to the same id after saving and restoring the miner state.", "",
          "| system | truth file | templates (truth) | mined | GA | PA | restored | seconds |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['system']} | {r['file']} | {r['truth_templates']} | {r['mined_templates']} | {r['ga']:.4f} | "
                  f"{r['pa']:.4f} | {r['restored_same_id']:.4f} | {r['seconds']:.2f} |")
    md += ["", f"Throughput: {tp['lines']:,} real BGL lines (the random samples; not contiguous, so used for "
               f"throughput only) mined in one Python process in {tp['seconds']} s: **{tp['lines_per_s']:,} lines/s**, "
               f"{tp['templates']} templates. This is the miner alone; the Spark ingest that mines as it parses: "
               "`bench/results/raw_parse_multi.md`.", "",
           "2,000 lines per system is small: a template seen once or twice decides several lines, so a GA "
           "difference under ~0.01 between systems or settings is noise."]
    write_results("parsing_accuracy_2k", out, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
