"""Writing a verdicts table with Delta's default statistics, the columns queries filter on, and the
product's (the columns constant per detection), and what block_id statistics could skip.

Reads the verdicts a pipeline benchmark kept (``bench/pipeline.py ... --keep true``), caches them,
then writes them to scratch Delta tables, alternating the settings, ``--repeats`` times each. Then,
from the statistics of a table written with block_id among them, counts the files a lookup of one
block (``WHERE block_id = ...``, 100 block ids drawn from the table) could skip:

    .venv/bin/python bench/delta_stats.py --tables generated/bench/work_2.9M/warehouse --name 2.9M

Writes ``bench/results/delta_stats_<name>.{json,md}``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time

from deeplog_spark.core import schemas
from deeplog_spark.core.config import Config
from deeplog_spark.detect.verdicts import table_properties
from deeplog_spark.core.logs import setup_logging
from deeplog_spark.core.session import build_spark
from deeplog_spark.core.tables import read_table

from _common import command, options, write_results


#: The statistics columns of the previous product: every column queries filter on.
FILTERED = "g,k,block_id,split,label,ingest_batch"


def block_lookups(spark, path: str, block_ids: list[str]) -> dict:
    """How many of the table's data files each block id's lookup reads, by the files' block_id min/max."""
    adds = (spark.read.json(f"{path}/_delta_log/*.json").where("add IS NOT NULL")
            .selectExpr("get_json_object(add.stats, '$.minValues.block_id') AS lo",
                        "get_json_object(add.stats, '$.maxValues.block_id') AS hi").collect())
    # Delta truncates string statistics to a prefix (and the max is padded up): compare as it does
    read = [sum(1 for a in adds if a["lo"] is None or a["hi"] is None or a["lo"] <= b <= a["hi"] + "\U0010ffff")
            for b in block_ids]
    return {"files": len(adds), "lookups": len(read), "files_read_median": statistics.median(read) if read else None,
            "files_read_min": min(read) if read else None}


def main() -> None:
    setup_logging()
    opts, args = options({"name": "stats", "tables": "", "repeats": "3"})
    name, tables, repeats = (opts[o] for o in ("name", "tables", "repeats"))
    if not tables or args:
        raise SystemExit("usage: delta_stats.py --tables DIR [--name NAME] [--repeats N]")
    cfg = Config.load(overrides={"tables_root": tables})
    spark = build_spark("bench-delta-stats", cfg)
    verdicts = read_table(spark, cfg.table_path(schemas.VERDICTS)).cache()
    rows = verdicts.count()
    product = table_properties(schemas.VERDICTS)
    settings = {"Delta's default (the first 32 columns)": {},
                f"the columns queries filter on ({FILTERED})": {"delta.dataSkippingStatsColumns": FILTERED},
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
    verdicts.write.format("delta").mode("overwrite").partitionBy("run_id") \
        .option("delta.dataSkippingStatsColumns", FILTERED).save(f"{scratch}/v")
    skipping = block_lookups(spark, f"{scratch}/v", [r["block_id"] for r in verdicts.select("block_id").sample(
        fraction=min(1.0, 200 / max(rows, 1)), seed=7).limit(100).collect()])
    spark.stop()
    shutil.rmtree(scratch, ignore_errors=True)
    out = {"name": name, "command": command(__file__), "rows": rows,
           "columns": len(verdicts.columns), "runs": runs,
           "median_seconds": {s: statistics.median(r) for s, r in runs.items()}, "block_lookups": skipping}
    lines = [f"# Writing {rows:,} verdicts ({out['columns']} columns): which columns get Delta statistics", "",
             f"Command: `.venv/bin/python {out['command']}`. The cached table written to a new Delta table, "
             "the settings alternating, after one uncounted round.", "",
             "| statistics of | median seconds | runs |", "|---|---|---|"]
    lines += [f"| {s} | {out['median_seconds'][s]} | {', '.join(map(str, r))} |" for s, r in runs.items()]
    lines += ["", f"A lookup of one block by its block_id statistics (the table written with `{FILTERED}` "
              f"statistics, {skipping['files']} data files, {skipping['lookups']} block ids of the table): "
              f"**{skipping['files_read_median']}** files read of {skipping['files']} (median; fewest "
              f"{skipping['files_read_min']}). Detection writes sessions in trace order, and block ids are "
              "random, so every file's min..max spans nearly all of them."]
    write_results(f"delta_stats_{name}", out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
