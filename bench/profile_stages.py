"""Profile: where the detect and evaluate stages spend their time, piece by piece.

Runs on tables a pipeline benchmark kept (``bench/pipeline.py ... --keep true``) and the latest
model run of its artifacts. Each piece is forced with a ``noop`` write (everything computed,
nothing stored), a write to a scratch Delta table or its own aggregation, timed alone (median of
``--repeats``, 3 by default) in one Spark application, after one untimed warm-up of each:

    .venv/bin/python bench/profile_stages.py --tables generated/bench/work_575k/warehouse \\
        --artifacts generated/bench/work_575k/artifacts --name 575k

``--value_batches 4096,32768`` times the value pass again at each of those Arrow batch sizes.
Writes ``bench/results/profile_<name>.{json,md}``. The pieces overlap in what they compute (the
verdicts include the value pass), so they do not add up to a stage.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time

from pyspark.sql import functions as F

from deeplog_spark.evaluate import metrics as ev
from deeplog_spark.core import schemas
from deeplog_spark.core.config import Config
from deeplog_spark.detect.verdicts import (_deeplog_evidence, arrow_batches, count_patterns, decide, predictions,
                                     score_sessions, table_properties, templates_map)
from deeplog_spark.detect.scores import (count_per_sequence, key_per_sequence, pca_per_sequence, sequences,
                                     value_per_session, with_counts)
from deeplog_spark.core.logs import setup_logging
from deeplog_spark.detect.bundle import ModelBundle
from deeplog_spark.core.session import build_spark
from deeplog_spark.core.tables import read_table

from _common import command, options, write_results


def main() -> None:
    setup_logging()
    opts, args = options({"name": "profile", "tables": "", "artifacts": "", "repeats": "3", "value_batches": ""})
    name, tables, artifacts, repeats, value_batches = (
        opts[o] for o in ("name", "tables", "artifacts", "repeats", "value_batches"))
    if not tables or not artifacts or args:
        raise SystemExit("usage: profile_stages.py --tables DIR --artifacts DIR [--name NAME] [--repeats N] "
                         "[--value_batches N,M,...]")
    cfg = Config.load(overrides={"tables_root": tables, "artifacts_root": artifacts})
    spark = build_spark("bench-profile", cfg)
    arrow_batches(spark, cfg)
    bundle = ModelBundle(cfg.artifacts_root, None)
    g, k, batch = cfg.top_g, cfg.k_sigma, cfg.detect_batch_size
    scratch = tempfile.mkdtemp(prefix="profile_")
    pieces: list[dict] = []

    def timed(piece: str, fn):
        fn()  # warm-up: the first run of a query shape compiles its code
        runs = []
        for _ in range(int(repeats)):
            t0 = time.perf_counter()
            out = fn()
            runs.append(time.perf_counter() - t0)
        pieces.append({"piece": piece, "seconds": round(statistics.median(runs), 2), "runs": [round(r, 2) for r in runs]})
        print(f"PROFILE {pieces[-1]}", flush=True)
        return out

    def noop(df):
        return lambda: df.write.format("noop").mode("overwrite").save()

    traces = read_table(spark, cfg.table_path(schemas.TRACES)).select("block_id", "split", "label", "ingest_batch",
                                                                      "events", "intervals")
    n_sessions = timed("traces: read every column", lambda: (noop(traces)(), traces.count())[1])
    seqs = sequences(traces).select("events").persist()
    n_seq = timed("distinct sequences (group by events)", lambda: sequences(traces).count())
    seqs.count()
    one = seqs.coalesce(1)
    timed("key model per distinct sequence (windows, scores, reductions in one Arrow pass)",
          noop(key_per_sequence(one, bundle, g, batch)))
    counted = with_counts(one)
    if bundle.count is not None:
        timed("count model per distinct sequence", noop(count_per_sequence(
            counted, count_patterns(spark, cfg, bundle), bundle.count, templates_map(spark, cfg))))
    if bundle.pca is not None:
        timed("PCA per distinct sequence", noop(pca_per_sequence(spark, counted, bundle.pca)))
    spec = bundle.value_threshold(k)
    timed("value model per session (one Arrow pass)",
          noop(value_per_session(traces, bundle, spec if spec is not None else float("inf"), batch)))
    for rows in [int(n) for n in value_batches.split(",") if n]:  # the same pass at other Arrow batch sizes
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(rows))
        timed(f"value model per session, {rows:,} sessions per Arrow batch",
              noop(value_per_session(traces, bundle, spec if spec is not None else float("inf"), batch)))
    arrow_batches(spark, cfg)
    sessions, cached = score_sessions(spark, cfg, bundle, traces, g, k)
    verdicts = _deeplog_evidence(decide(sessions, bundle, g, k), bundle).drop("events")
    timed("verdicts (every detector, decided; noop)", noop(verdicts))
    timed("verdicts written to a Delta table",
          lambda: verdicts.write.format("delta").mode("overwrite").options(**table_properties(schemas.VERDICTS))
          .save(f"{scratch}/verdicts"))
    written = read_table(spark, f"{scratch}/verdicts")
    n_flagged = timed("verdicts read back: counts", lambda: written.where(F.col("anomalous")).count())
    flagged = F.broadcast(written.where(F.col("anomalous")).select("block_id"))
    preds = predictions(traces.join(flagged, "block_id", "left_semi"), bundle, g, k, batch)
    timed("predictions of the flagged sessions (traces read again; noop)", noop(preds))
    timed("predictions written to a Delta table",
          lambda: preds.write.format("delta").mode("overwrite").options(**table_properties(schemas.PREDICTIONS))
          .save(f"{scratch}/predictions"))
    table = ev.rules(bundle, g, k)
    timed("evaluate: the histogram of every rule (one aggregation)", lambda: ev.histogram(written, table))
    for df in [seqs, *cached]:
        df.unpersist()
    spark.stop()
    shutil.rmtree(scratch, ignore_errors=True)

    out = {"name": name, "command": command(__file__), "sessions": n_sessions,
           "distinct_sequences": n_seq, "flagged_sessions": n_flagged, "run_id": bundle.run_id, "pieces": pieces}
    lines = [f"# Detect and evaluate, piece by piece ({name})", "",
             f"Command: `.venv/bin/python {out['command']}`. {n_sessions:,} sessions ({n_seq:,} distinct event "
             f"sequences, {n_flagged:,} flagged); model run {bundle.run_id}. Each piece is timed alone after a "
             f"warm-up (median of {repeats}), so pieces overlap in what they compute and do not add up to a stage.",
             "", "| piece | seconds | runs |", "|---|---|---|"]
    lines += [f"| {p['piece']} | {p['seconds']} | {', '.join(map(str, p['runs']))} |" for p in pieces]
    write_results(f"profile_{name}", out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
