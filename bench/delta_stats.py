"""Writing a verdicts table with Delta's default statistics against the product's named columns.

Reads the verdicts a pipeline benchmark kept (``bench/pipeline.py ... --keep true``), caches them,
then writes them to scratch Delta tables, alternating the two settings, ``--repeats`` times each:

    .venv/bin/python bench/delta_stats.py --tables generated/bench/work_2.9M/warehouse --name 2.9M

Writes ``bench/results/delta_stats_<name>.{json,md}``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time

from deeplog_spark import schemas
from deeplog_spark.config import Config, pop_option
from deeplog_spark.detection import table_properties
from deeplog_spark.logs import setup_logging
from deeplog_spark.session import build_spark
from deeplog_spark.tables import read_table

from _common import RESULTS


def main() -> None:
    setup_logging()
    args, name = pop_option(sys.argv[1:], "name", "stats")
    args, tables = pop_option(args, "tables", "")
    args, repeats = pop_option(args, "repeats", "3")
    if not tables or args:
        raise SystemExit("usage: delta_stats.py --tables DIR [--name NAME] [--repeats N]")
    cfg = Config.load(overrides={"tables_root": tables})
    spark = build_spark("bench-delta-stats", cfg)
    verdicts = read_table(spark, cfg.table_path(schemas.VERDICTS)).cache()
    rows = verdicts.count()
    product = table_properties(schemas.VERDICTS)
    settings = {"Delta's default (the first 32 columns)": {},
                f"the product's ({product['delta.dataSkippingStatsColumns']})": product}
    scratch = tempfile.mkdtemp(prefix="delta_stats_")
    runs: dict[str, list[float]] = {s: [] for s in settings}
    for i in range(int(repeats) + 1):  # the first round warms up and is not counted
        for label, props in settings.items():
            shutil.rmtree(f"{scratch}/v", ignore_errors=True)
            t0 = time.perf_counter()
            verdicts.write.format("delta").mode("overwrite").partitionBy("run_id").options(**props).save(f"{scratch}/v")
            if i:
                runs[label].append(round(time.perf_counter() - t0, 2))
    spark.stop()
    shutil.rmtree(scratch, ignore_errors=True)
    out = {"name": name, "command": "bench/delta_stats.py " + " ".join(sys.argv[1:]), "rows": rows,
           "columns": len(verdicts.columns), "runs": runs,
           "median_seconds": {s: statistics.median(r) for s, r in runs.items()}}
    (RESULTS / f"delta_stats_{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"# Writing {rows:,} verdicts ({out['columns']} columns): which columns get Delta statistics", "",
             f"Command: `.venv/bin/python {out['command']}`. The cached table written to a new Delta table, "
             "the settings alternating, after one uncounted round.", "",
             "| statistics of | median seconds | runs |", "|---|---|---|"]
    lines += [f"| {s} | {out['median_seconds'][s]} | {', '.join(map(str, r))} |" for s, r in runs.items()]
    (RESULTS / f"delta_stats_{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
