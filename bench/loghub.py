"""Benchmark: the product end to end on REAL non-HDFS Loghub data, one system per run.

    .venv/bin/python bench/loghub.py --system openstack      # ait's OpenStack instance sequences
    .venv/bin/python bench/loghub.py --system thunderbird    # KRONE's Thunderbird node sequences
    .venv/bin/python bench/loghub.py --system hadoop         # ait's Hadoop container sequences
    .venv/bin/python bench/loghub.py --system bgl_2k_lines   # raw BGL_2k.log, Drain3, 20-line windows
    .venv/bin/python bench/loghub.py --system bgl_2k_time    # raw BGL_2k.log, Drain3, one-day windows
    .venv/bin/python bench/loghub.py --system bgl_2k_lines --folds 5   # plus 5-fold cross-validation

Data: ``../shared/data/loghub`` (``DEEPLOG_SHARED_LOGHUB``; its ``SOURCES.md`` says what each file
is). The session sets are converted to the generic sequence input by :mod:`deeplog_spark.ingest.loghub`
(labels as published); raw BGL goes through ``ingest-raw`` with the ``bgl`` format, templates
mined by Drain3 and per-line labels rolled up per segment.

Protocol: the product's own stages and defaults (``--key value`` overrides any config key):
ingest, the hash split by session id (seed 1337, 80/10/10), training of every model on the train
split's normal sessions, thresholds, knobs and the fused rule chosen on the val split only,
detection and evaluation. Every metrics row of the test split is recorded, with the anomalies
and normals it rests on. Precision and F1 are at each set's own anomaly ratio (the sets are
samples whose ratio is not that of the full systems), and each row says how few anomalies it
rests on. With ``--folds K`` the tables are then also cross-validated as in ``bench/quality.py``
(K fold runs, every session tested once, counts pooled): for the small sets, whose product test
split holds a handful of anomalies. Results: ``bench/results/loghub_<system>.{json,md}``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from deeplog_spark.core.config import Config, parse_overrides
from deeplog_spark.core.logs import setup_logging
from deeplog_spark.core.session import build_spark

from _common import REPO, machine, machine_line, options, started, write_results

SHARED = Path(os.environ.get("DEEPLOG_SHARED_LOGHUB", REPO.parent / "shared" / "data" / "loghub"))

SYSTEMS = {
    "openstack": {"sequences": "openstack", "src": "OpenStack/ait_openstack_loghub",
                  "about": "REAL OpenStack instance sequences of ait-aecid (Landauer et al.), built from the Loghub "
                           "OpenStack logs: every instance of openstack_abnormal.log is labelled anomalous, the others "
                           "normal (SOURCES.md, convention 2)."},
    "thunderbird": {"sequences": "thunderbird", "src": "Thunderbird/krone_sequences",
                    "about": "REAL Thunderbird node sequences of KRONE (ICDE 2026), a 20,000-sequence sample of the "
                             "Loghub Thunderbird log; a sequence is anomalous when it holds an alert event. No "
                             "timestamps, so no value model."},
    "hadoop": {"sequences": "hadoop", "src": "Hadoop/ait_hadoop_loghub",
               "about": "REAL Hadoop MapReduce container sequences of ait-aecid for all 55 Loghub applications: "
                        "containers of the 44 applications with an injected failure are anomalous. Most containers are "
                        "anomalous here (83 %), unlike a production log."},
    "bgl_2k_lines": {"raw": "BGL/BGL_2k.log", "overrides": {"log_format": "bgl", "segment": "lines",
                                                            "segment_lines": 20},
                     "about": "REAL raw BGL lines (Loghub BGL_2k.log: 2,000 lines, 143 alert lines), templates mined "
                              "by Drain3, cut into windows of 20 consecutive lines; a window is anomalous when one of "
                              "its lines is an alert line. The file is a random sample spread over seven months, not "
                              "a contiguous log: its windows are not real workflows."},
    "bgl_2k_time": {"raw": "BGL/BGL_2k.log", "overrides": {"log_format": "bgl", "segment": "time",
                                                           "window_seconds": 86400.0, "window_step_seconds": 86400.0},
                    "about": "REAL raw BGL lines (Loghub BGL_2k.log), templates mined by Drain3, cut into one-day "
                             "windows (step = size, so no line is in two splits); a window is anomalous when one of "
                             "its lines is an alert line. The file is a random sample (about 1 line in 2,400), so a "
                             "day holds a handful of unrelated lines."},
}


def cross_validate(spark, cfg: Config, folds: int, work: Path) -> dict:
    """``folds`` fold runs of the quality benchmark's protocol (test = one fold by session-id hash,
    val = the next, train = the rest; everything chosen on val) over the ingested tables, so every
    session is tested once: the test rows of every detector, pooled over the folds."""
    from quality import fold_run  # bench/quality.py, beside this script: imported only for --folds

    runs = [fold_run(spark, cfg, cfg, 1, folds, fold, work / "cv") for fold in range(folds)]
    pooled: dict = {}
    for r in runs:
        for name, m in r["test"].items():
            p = pooled.setdefault(name, {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "f1_per_fold": []})
            for k in ("tp", "fp", "tn", "fn"):
                p[k] += m[k]
            p["f1_per_fold"].append(round(m["f1"], 4))
    rows = []
    for name, p in pooled.items():
        det, src = name.split("|")
        prec = p["tp"] / (p["tp"] + p["fp"]) if p["tp"] + p["fp"] else 0.0
        rec = p["tp"] / (p["tp"] + p["fn"]) if p["tp"] + p["fn"] else 0.0
        rows.append({"detector": det, "threshold_source": src, "threshold": None, **{k: p[k] for k in ("tp", "fp", "tn", "fn")},
                     "precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
                     "fpr": p["fp"] / (p["fp"] + p["tn"]) if p["fp"] + p["tn"] else 0.0, "auroc": None,
                     "f1_per_fold": p["f1_per_fold"]})
    return {"folds": folds, "fused_rules": [r["fused_rule"] for r in runs], "test": rows}


def run(system: str, overrides: dict, argv: list[str], folds: int = 0) -> dict:
    from pyspark.sql import functions as F

    from deeplog_spark.core import schemas
    from deeplog_spark.detect.verdicts import run_detect
    from deeplog_spark.evaluate.metrics import run_evaluate
    from deeplog_spark.ingest.loghub import LABELS, SEQUENCES, TEMPLATES, convert
    from deeplog_spark.ingest.runner import run_ingest, run_ingest_raw
    from deeplog_spark.core.tables import read_table
    from deeplog_spark.train.runner import run_train

    spec = SYSTEMS[system]
    start = started()
    work = REPO / "generated" / "loghub" / system
    shutil.rmtree(work, ignore_errors=True)
    base = {"tables_root": str(work / "warehouse"), "artifacts_root": str(work / "artifacts"), "mlflow": "false"}
    if "sequences" in spec:
        src = SHARED / spec["src"]
        if not src.is_dir():
            raise SystemExit(f"{src} not found (set DEEPLOG_SHARED_LOGHUB)")
        data = convert(spec["sequences"], src, work / "input")
        base.update(input="sequences", sequences=str(work / "input" / SEQUENCES),
                    anomaly_labels=str(work / "input" / LABELS), templates=str(work / "input" / TEMPLATES))
    else:
        log = SHARED / spec["raw"]
        if not log.is_file():
            raise SystemExit(f"{log} not found (set DEEPLOG_SHARED_LOGHUB)")
        data = {"lines": sum(1 for _ in open(log, encoding="utf-8", errors="replace"))}
        base.update(input="raw_logs", raw_logs=str(log), anomaly_labels="", **spec["overrides"])
    cfg = Config.load(overrides={**{k: str(v) for k, v in base.items()}, **overrides})
    spark = build_spark(f"bench-loghub-{system}", cfg)
    try:
        t0 = time.perf_counter()
        ingest = run_ingest_raw(spark, cfg) if cfg.input == "raw_logs" else run_ingest(spark, cfg)
        t_ingest = time.perf_counter() - t0
        train = run_train(spark, cfg, "both")
        t_train = time.perf_counter() - t0 - t_ingest
        run_detect(spark, cfg, train["run_id"])
        ev = run_evaluate(spark, cfg, train["run_id"])
        seconds = time.perf_counter() - t0
        cv = cross_validate(spark, cfg, folds, work) if folds > 1 else None
        traces = read_table(spark, cfg.table_path(schemas.TRACES))
        splits = {r["split"]: {"sessions": r["n"], "anomalies": int(r["a"] or 0)} for r in traces.groupBy("split").agg(
            F.count(F.lit(1)).alias("n"), F.sum("label").alias("a")).collect()}
        test_rows = [(tuple(r["events"]), r["label"]) for r in traces.where((F.col("split") == "test")
                                                                            & F.col("label").isNotNull()).collect()]
        templates = read_table(spark, cfg.table_path(schemas.TEMPLATES)).count()
        events_seen = traces.select(F.explode("events")).distinct().count()
    finally:
        spark.stop()
    cal = json.loads((Path(train["run_dir"]) / "calibration.json").read_text())["fused"]
    keep = ("detector", "threshold_source", "threshold", "tp", "fp", "tn", "fn", "precision", "recall", "f1", "fpr", "auroc")
    test = [{k: m.get(k) for k in keep} for m in ev["metrics"] if m["split"] == "test"]
    return {"system": system, "about": spec["about"], "command": "bench/loghub.py " + " ".join(argv),
            "started": start, "machine": machine(),
            "input": data, "ingest": {k: v for k, v in ingest.items() if k in (
                "trace_rows", "traces", "trace_rejects", "rejects_by_reason", "lines", "accepted_lines", "rejected_lines",
                "templates", "templates_from", "segment", "blocks", "anomalies")},
            "templates": templates, "distinct_events_in_sessions": events_seen, "splits": splits,
            "fused_rule": ev["fused_rule"], "val_fused_f1": cal.get("val_f1"),
            "val_f1_flag_all": cal.get("val_f1_flag_all"), "no_signal": cal.get("no_signal"), "seconds": {"ingest": round(t_ingest, 1), "train": round(t_train, 1),
                                                       "total": round(seconds, 1)},
            "test": test, "sequence_ceiling": sequence_ceiling(test_rows), "cross_validation": cv}


def sequence_ceiling(rows: list[tuple[tuple, int]]) -> dict:
    """The best test F1 of ANY detector whose verdict is a function of the event sequence, chosen on
    the test labels themselves: a ceiling for sequence detectors on this set, not a result.

    Sessions with the same sequence get the same verdict; the best set of sequences to flag is a
    prefix of the sequences sorted by their share of anomalous sessions (F1 grows with precision).
    """
    per: dict = {}
    for seq, label in rows:
        a, n = per.get(seq, (0, 0))
        per[seq] = (a + (label == 1), n + (label != 1))
    total = sum(a for a, _ in per.values())
    shared = sum(a for a, n in per.values() if n)
    best = {"f1": 0.0, "tp": 0, "fp": 0}
    tp = fp = 0
    for a, n in sorted(per.values(), key=lambda an: -an[0] / (an[0] + an[1])):
        tp, fp = tp + a, fp + n
        f1 = 2 * tp / (tp + fp + total) if total else 0.0
        if f1 > best["f1"]:
            best = {"f1": round(f1, 4), "tp": tp, "fp": fp}
    return {"distinct_sequences": len(per), "anomalies": total,
            "anomalies_whose_sequence_also_occurs_normal": shared, **best}


def markdown(res: dict) -> str:
    sp = res["splits"]
    test = sp.get("test", {"sessions": 0, "anomalies": 0})
    lines = [f"# {res['system']}: end to end on real Loghub data", "", res["about"], "",
             f"Command: `.venv/bin/python {res['command']}` (started {res['started']}, {res['seconds']['total']:.0f} s on "
             f"{machine_line(res['machine'])}: ingest {res['seconds']['ingest']:.0f} s, train {res['seconds']['train']:.0f} s).", "",
             "| split | sessions | anomalies |", "|---|---|---|"]
    lines += [f"| {s} | {sp[s]['sessions']:,} | {sp[s]['anomalies']:,} |" for s in ("train", "val", "test") if s in sp]
    lines += ["", f"{res['templates']} templates ({res['distinct_events_in_sessions']} of them occur in the sessions). "
              f"Fused rule chosen on val: {' OR '.join(f'{d} > {t:.4g}' for d, t in res['fused_rule'].items()) or 'none'}"
              + (f" (val F1 {res['val_fused_f1']:.4f}; flagging every val session: {res['val_f1_flag_all']:.4f})"
                 if res.get("val_fused_f1") is not None else "") + "."
              + (" **The calibration reports no signal: the best rule on val is no better than flagging every "
                 "session.**" if res.get("no_signal") else ""),
              "", f"**Test split: {test['anomalies']} anomalous and {test['sessions'] - test['anomalies']} normal sessions.** "
              "Every figure below rests on that few; one session more or less found moves recall by "
              f"{1 / max(test['anomalies'], 1):.3f}. Precision and F1 at this set's own anomaly ratio.", "",
              "| detector | thresholds | F1 | precision | recall | FPR | TP | FP | FN | AUROC |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for m in res["test"]:
        auroc = "" if m["auroc"] is None else f"{m['auroc']:.4f}"
        lines.append(f"| {m['detector']} | {m['threshold_source']} | **{m['f1']:.4f}** | {m['precision']:.4f} | "
                     f"{m['recall']:.4f} | {m['fpr']:.4f} | {m['tp']} | {m['fp']} | {m['fn']} | {auroc} |")
    cv = res.get("cross_validation")
    if cv:
        n_anom = cv["test"][0]["tp"] + cv["test"][0]["fn"] if cv["test"] else 0
        lines += ["", f"## {cv['folds']}-fold cross-validation: every session tested once", "",
                  f"The same stages in {cv['folds']} fold runs (test = one fold by session-id hash, val = the next, "
                  "train = the rest; thresholds, knobs and the fused rule chosen on each run's val only). Counts "
                  f"pooled over the folds: **{n_anom} anomalous sessions** in all. Fused rules per fold: "
                  + "; ".join(" OR ".join(sorted(r)) or "none" for r in cv["fused_rules"]) + ".", "",
                  "| detector | thresholds | F1 (pooled) | precision | recall | FPR | TP | FP | FN | F1 per fold |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        order = ("fused", "count", "key", "key_nll", "value", "pca", "deeplog", "key_spec", "exact", "pca_q")
        for m in sorted(cv["test"], key=lambda m: (order.index(m["detector"]) if m["detector"] in order else 99,
                                                  m["threshold_source"])):
            lines.append(f"| {m['detector']} | {m['threshold_source']} | **{m['f1']:.4f}** | {m['precision']:.4f} | "
                         f"{m['recall']:.4f} | {m['fpr']:.4f} | {m['tp']} | {m['fp']} | {m['fn']} | "
                         f"{', '.join(f'{x:.2f}' for x in m['f1_per_fold'])} |")
    c = res["sequence_ceiling"]
    lines += ["", f"**Ceiling for sequence detectors on this test split**: {c['distinct_sequences']} distinct event "
              f"sequences; {c['anomalies_whose_sequence_also_occurs_normal']} of the {c['anomalies']} anomalous sessions "
              "have a sequence that a normal test session also has. The best F1 that any verdict computed from the "
              f"sequence alone can reach, choosing it on the test labels themselves, is **{c['f1']:.4f}** "
              f"({c['tp']} found, {c['fp']} false alarms). A detector of event sequences cannot do better here.",
              "", "Ingest: " + json.dumps(res["ingest"], default=str)]
    return "\n".join(lines) + "\n"


def main() -> None:
    setup_logging()
    argv = sys.argv[1:]
    opts, args = options({"system": "", "folds": "0"}, argv)
    system, folds = opts["system"], opts["folds"]
    if system not in SYSTEMS:
        raise SystemExit(f"--system must be one of {', '.join(SYSTEMS)}")
    res = run(system, parse_overrides(args), argv, int(folds))
    write_results(f"loghub_{system}", res, markdown(res))


if __name__ == "__main__":
    main()
