"""Benchmark: the whole pipeline on a generated full-size workload, stage by stage.

Generates (or reuses) a SYNTHETIC workload of ``--blocks`` blocks resampled from a real sample
(``deeplog_spark.ingest.generate``; default source: ``../shared/data/hdfs/sample15k`` when present, else
the embedded sample), then runs the real stage functions in one Spark application:

    generate -> ingest -> windows -> train (both LSTMs, count and PCA models, calibration) -> detect
    -> evaluate -> reference

and writes ``bench/results/pipeline_<name>.{json,md}``: per stage wall seconds, rows in and out,
throughput, and peak memory (RSS, sampled every 0.2 s) of the driver's Python process, the JVM
(driver and executor in one process under ``local[*]``), the executors' Python workers and the
training processes. The reference stage runs, in the same process after the product's stages, on
the windows of the same windows table: plain PyTorch with the run's Key LSTM scoring every window
in large batches under ``torch.inference_mode()`` (the near-limit reference), the same on the
distinct (window, next) rows only (found with a packed int64 key), and the public-DeepLog style
(one window per forward pass) on a fixed subset; it reports the product's detect rate as a
fraction of each.

    .venv/bin/python bench/pipeline.py --blocks 575061 --name 575k
    .venv/bin/python bench/pipeline.py --blocks 2875305 --name 2.9M --stages ingest,windows,detect,evaluate \\
        --model_from generated/bench/work_575k/artifacts

Any other ``--key value`` overrides the config. ``--training default`` trains as conf/deeplog.toml
does; ``--training spec`` with the DeepLog spec's settings (:data:`SPEC_TRAINING`: every window, 20
epochs at batch 128 and lr 1e-3), the full-data reference for validation quality. Work files go
to ``generated/bench/`` (git-ignored); ``--keep true`` keeps the Delta tables afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

import psutil

from deeplog_spark.core.config import Config, parse_overrides
from deeplog_spark.core.logs import setup_logging
from deeplog_spark.core.session import build_spark

from _common import REPO, command, machine, options, started, write_results

SHARED = REPO.parent / "shared" / "data" / "hdfs" / "sample15k"
ALL_STAGES = ("generate", "ingest", "train", "detect", "evaluate", "windows", "reference")
#: The stages of the product's full pipeline (the end-to-end time); windows is the optional SQL export.
PIPELINE = ("ingest", "train", "detect", "evaluate")
#: The DeepLog spec's training: a pass over every window per epoch, batch 128, constant lr 1e-3,
#: 20 epochs, patience 5 (the full-data reference for validation quality).
SPEC_TRAINING = {"distinct_windows": "false", "batch_size": "128", "lr": "0.001", "lr_schedule": "constant",
                 "epochs": "20", "patience": "5", "max_train_rows": "0", "max_val_rows": "0"}


class MemorySampler:
    """Peak RSS (MiB) per process group of this process tree, sampled on a thread."""

    GROUPS = ("driver_python", "jvm", "executor_python", "trainer_python")

    def __init__(self, interval: float = 0.2):
        self.me = psutil.Process()
        self.interval = interval
        self.peaks = dict.fromkeys(self.GROUPS, 0.0)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> dict[str, float]:
        now = dict.fromkeys(self.GROUPS, 0.0)
        now["driver_python"] = self.me.memory_info().rss
        procs = []
        for p in self.me.children(recursive=True):
            try:
                procs.append((p, p.name(), p.memory_info().rss))
            except psutil.Error:
                continue
        jvms = {p.pid for p, name, _ in procs if name == "java"}
        for p, name, rss in procs:
            if name == "java":
                now["jvm"] += rss
                continue
            try:
                under_jvm = any(a.pid in jvms for a in p.parents())
            except psutil.Error:
                continue
            now["executor_python" if under_jvm else "trainer_python"] += rss
        return {k: v / 2**20 for k, v in now.items()}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            s = self.sample()
            with self._lock:
                for k, v in s.items():
                    self.peaks[k] = max(self.peaks[k], v)

    def reset(self) -> None:
        with self._lock:
            self.peaks = dict.fromkeys(self.GROUPS, 0.0)

    def read(self) -> dict[str, float]:
        with self._lock:
            return {k: round(v, 1) for k, v in self.peaks.items()}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _rel(path: str) -> str:
    """A path as the results record it: relative to the repository, never this machine's layout."""
    return os.path.relpath(os.path.realpath(path), REPO)


def _workload(gen_dir: Path) -> dict:
    """The generator's ``generated.json``, with its paths relative to the repository."""
    have = json.loads((gen_dir / "generated.json").read_text())
    return {**have, "out": _rel(have["out"]), "source": _rel(have["source"])}


class Bench:
    def __init__(self, name: str, cfg: Config, spark, sampler: MemorySampler):
        self.name, self.cfg, self.spark, self.sampler = name, cfg, spark, sampler
        self.stages: list[dict] = []

    def run(self, stage: str, fn, counts) -> object:
        """Run ``fn()``, time it, and record ``counts(result)`` (rows in/out, unit) with peak memory."""
        self.sampler.reset()
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        rec = {"stage": stage, "seconds": round(seconds, 1), **counts(result)}
        rec["per_s"] = round(rec["rows_in"] / seconds, 1) if rec.get("rows_in") else None
        rec["peak_mib"] = self.sampler.read()
        self.stages.append(rec)
        print(f"BENCH {json.dumps(rec)}", flush=True)
        return result


def generate_stage(bench: Bench, blocks: int, source: tuple[str, str], out: Path) -> dict:
    from deeplog_spark.ingest.generate import run_generate

    meta = out / "generated.json"
    if meta.is_file():
        have = json.loads(meta.read_text())
        same_source = os.path.realpath(have.get("source", "")) == os.path.realpath(source[0])
        if have.get("blocks") == blocks and have.get("seed") == bench.cfg.seed and same_source:
            print(f"reusing the generated workload in {out}", flush=True)
            bench.stages.append({"stage": "generate", "seconds": None, "rows_in": None, "rows_out": blocks,
                                 "unit": "blocks", "note": f"reused {_rel(str(out))}"})
            return _workload(out)
    cfg = bench.cfg.replace(event_traces=source[0], anomaly_labels=source[1], gen_out=str(out), gen_blocks=blocks)
    bench.run("generate", lambda: run_generate(bench.spark, cfg),
              lambda r: {"rows_in": None, "rows_out": r["blocks"], "unit": "blocks",
                         "events": r["events"], "windows": r[f"windows_h{cfg.h}"]})
    return _workload(out)


def _windows_matrix(cfg: Config, limit: int = 0):
    """(every window of the windows table as uint8 [n, h+1] with the next event last, its count):
    the bench reads the table itself, with delta-rs (not a pipeline table collect)."""
    import numpy as np
    import pyarrow.compute as pc

    from deeplog_spark.core import schemas
    from deeplog_spark.nn.local import read_delta

    table, _ = read_delta(cfg.table_path(schemas.WINDOWS), ["window", "next_event"])
    if limit:
        table = table.slice(0, limit)
    flat = pc.list_flatten(table.column("window")).to_numpy(zero_copy_only=False)
    out = np.empty((table.num_rows, cfg.h + 1), dtype=np.uint8)
    out[:, :cfg.h] = flat.reshape(-1, cfg.h)
    out[:, cfg.h] = table.column("next_event").to_numpy(zero_copy_only=False)
    return out


def reference_stage(bench: Bench, run_id: str, public_windows: int, limit_windows: int) -> dict:
    """Plain PyTorch with the run's Key LSTM on the windows table: every window in large batches, the
    distinct rows only, and one window per forward (public DeepLog code); rates against detect's."""
    import numpy as np
    import torch

    from deeplog_spark.nn.model import load_checkpoint_bytes
    from deeplog_spark.detect.bundle import ModelBundle

    cfg = bench.cfg
    bundle = ModelBundle(cfg.artifacts_root, run_id)
    model, _ = load_checkpoint_bytes(bundle.key_bytes, "key", bundle.key_sha, "key")
    model.eval()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = _windows_matrix(cfg)
    n_all = len(rows)

    def score(x: np.ndarray, batch: int = 8192) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(x), batch):
                w = torch.from_numpy(x[s:s + batch, :cfg.h].astype(np.int64))
                y = torch.from_numpy(x[s:s + batch, cfg.h].astype(np.int64))
                logits = model(w)
                (logits > logits.gather(1, y.unsqueeze(1))).sum(dim=1)  # the rank, as detect computes it
        return time.perf_counter() - t0

    batched = rows[:limit_windows] if limit_windows else rows
    t_batched = score(batched)
    t0 = time.perf_counter()
    packed = np.zeros(n_all, dtype=np.int64)  # 5 bits per id: h+1 ids in one int64 (h <= 11)
    for j in range(cfg.h + 1):
        packed = (packed << 5) | rows[:, j].astype(np.int64)
    _, first = np.unique(packed, return_index=True)
    t_dedupe = time.perf_counter() - t0
    t_distinct = score(rows[first])
    subset = rows[:public_windows]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for r in subset:  # as public DeepLog predict loops do: one window, one forward pass
            logits = model(torch.from_numpy(r[None, :cfg.h].astype(np.int64)))
            torch.topk(logits, cfg.top_g, dim=1)
    t_public = time.perf_counter() - t0
    det = next(s for s in bench.stages if s["stage"] == "detect")
    product = det["rows_in"] / det["seconds"]
    out = {"windows": n_all, "torch_threads": torch.get_num_threads(),
           "batched_windows": len(batched), "batched_seconds": round(t_batched, 2),
           "batched_windows_per_s": round(len(batched) / t_batched, 1),
           "distinct_rows": int(len(first)), "distinct_seconds": round(t_dedupe + t_distinct, 2),
           "distinct_dedupe_seconds": round(t_dedupe, 2),
           "distinct_windows_per_s": round(n_all / (t_dedupe + t_distinct), 1),
           "public_windows": len(subset), "public_seconds": round(t_public, 2),
           "public_windows_per_s": round(len(subset) / t_public, 1),
           "product_windows_per_s": round(product, 1)}
    out["fraction_of_limit"] = {"batched": round(product / out["batched_windows_per_s"], 3),
                                "distinct": round(product / out["distinct_windows_per_s"], 3),
                                "public": round(product / out["public_windows_per_s"], 3)}
    return out


def timing_anomalies(spark, cfg: Config, run_id: str) -> dict | None:
    """The value detector on the generated timing anomalies (a normal session with one interval
    stretched 1000x): its recall on them and its FPR on normal sessions, test split, at the run's
    val-chosen threshold; the fused rule's too."""
    from pyspark.sql import functions as F

    from deeplog_spark.core import schemas
    from deeplog_spark.detect.verdicts import fires
    from deeplog_spark.core.runs import detection_rows
    from deeplog_spark.detect.bundle import ModelBundle
    from deeplog_spark.core.tables import read_table

    bundle = ModelBundle(cfg.artifacts_root, run_id)
    value = (bundle.calibration or {}).get("detectors", {}).get("value")
    if value is None:
        return None
    v = (read_table(spark, cfg.table_path(schemas.VERDICTS)).where(detection_rows(run_id, cfg.top_g, cfg.k_sigma))
         .where(F.col("split") == "test")
         .join(read_table(spark, cfg.table_path(schemas.TRACES)).select("block_id", "type"), "block_id"))
    kind = F.when(F.col("type") == "synthetic-timing", "timing").when(F.col("label") == 1, "structural").otherwise("normal")
    rows = v.groupBy(kind.alias("kind")).agg(
        F.count(F.lit(1)).alias("n"), F.sum(fires("value", value["threshold"]).cast("int")).alias("value"),
        F.sum(F.col("anomalous").cast("int")).alias("fused")).collect()
    got = {r["kind"]: r.asDict() for r in rows}
    t, n = got.get("timing", {"n": 0, "value": 0, "fused": 0}), got.get("normal", {"n": 1, "value": 0, "fused": 0})
    return {"threshold": value["threshold"], "timing_anomalies": t["n"], "normals": n["n"],
            "value_recall": t["value"] / max(t["n"], 1), "value_fpr": n["value"] / max(n["n"], 1),
            "fused_recall": t["fused"] / max(t["n"], 1), "fused_fpr": n["fused"] / max(n["n"], 1)}


def main() -> None:
    setup_logging()
    opts, args = options({"name": "bench", "blocks": "575061", "stages": ",".join(ALL_STAGES), "model_from": "", "keep": "false",
                          "reference_windows": "50000", "reference_limit": "5000000", "training": "default"})
    name, blocks, stages, model_from, keep, ref_windows, ref_limit, training = (
        opts[o] for o in ("name", "blocks", "stages", "model_from", "keep", "reference_windows", "reference_limit", "training"))
    blocks = int(blocks)
    stages = [s for s in stages.split(",") if s]
    if unknown := set(stages) - set(ALL_STAGES):
        raise SystemExit(f"unknown stages {sorted(unknown)}; choose from {', '.join(ALL_STAGES)}")
    if SHARED.is_dir():
        source = (str(SHARED / "Event_traces.csv.gz"), str(SHARED / "anomaly_label.csv.gz"))
    else:
        source = (str(REPO / "data/sample/Event_traces.csv.gz"), str(REPO / "data/sample/anomaly_label.csv.gz"))
    root = REPO / "generated" / "bench"
    gen_dir = root / f"b{blocks}"
    work = root / f"work_{name}"
    shutil.rmtree(work / "warehouse", ignore_errors=True)
    if training not in ("spec", "default"):
        raise SystemExit("--training must be 'default' (conf/deeplog.toml) or 'spec' (SPEC_TRAINING: every window)")
    overrides = {**(SPEC_TRAINING if training == "spec" else {}), **parse_overrides(args)}
    cfg = Config.load(overrides={"tables_root": str(work / "warehouse"), "artifacts_root": str(work / "artifacts"),
                                 "event_traces": str(gen_dir / "Event_traces.csv"),
                                 "anomaly_labels": str(gen_dir / "anomaly_label.csv"), **overrides})
    if model_from:
        shutil.rmtree(work / "artifacts", ignore_errors=True)
        shutil.copytree(model_from, work / "artifacts")
    spark = build_spark("bench-pipeline", cfg)
    sampler = MemorySampler()
    bench = Bench(name, cfg, spark, sampler)
    start = started()
    t_all = time.perf_counter()
    from deeplog_spark.detect.verdicts import run_detect
    from deeplog_spark.evaluate.metrics import run_evaluate
    from deeplog_spark.features.runner import run_windows
    from deeplog_spark.ingest.runner import run_ingest
    from deeplog_spark.train.runner import run_train

    out: dict = {"name": name, "blocks": blocks, "started": start, "source": _rel(source[0]),
                 "command": command(__file__),
                 "overrides": overrides, "machine": machine(spark, cfg)}
    gen = generate_stage(bench, blocks, source, gen_dir) if "generate" in stages or not gen_dir.is_dir() else None
    out["workload"] = gen or _workload(gen_dir)
    if "ingest" in stages:
        ing = bench.run("ingest", lambda: run_ingest(spark, cfg),
                        lambda r: {"rows_in": r["trace_rows"], "rows_out": r["traces"], "unit": "blocks",
                                   "events": r["events"], "rejects": r["trace_rejects"] + r.get("label_rejects", 0)})
        out["splits"] = ing["splits"]
    run_id = None
    if "train" in stages:
        tr = bench.run("train", lambda: run_train(spark, cfg, "both"),
                       lambda r: {"rows_in": None, "rows_out": len(r["tasks"]), "unit": "models"})
        run_id = tr["run_id"]
        out["models"] = {t: {k: v for k, v in s.items() if k != "checkpoint"} for t, s in tr["tasks"].items()}
        out["calibration"] = tr.get("calibration")
        out["quantitative"] = tr.get("quantitative")
        for t, s in tr["tasks"].items():
            hist = json.loads((Path(tr["run_dir"]) / f"{t}_history.json").read_text())["history"]
            out["models"][t].update(rows_per_epoch=hist[0].get("train_rows"), windows_per_epoch=hist[0].get("train_windows"),
                                    median_epoch_s=statistics.median(h["train_seconds"] for h in hist))
    if run_id is None and {"detect", "evaluate", "reference"} & set(stages):
        run_id = json.loads((Path(cfg.artifacts_root) / "runs" / "latest.json").read_text())["run_id"]
    out["run_id"] = run_id
    if "detect" in stages:
        bench.run("detect", lambda: run_detect(spark, cfg, run_id),
                  lambda r: {"rows_in": r["windows"], "rows_out": r["sessions"], "unit": "windows",
                             "anomalous_sessions": r["anomalous_sessions"]})
    if "evaluate" in stages:
        ev = bench.run("evaluate", lambda: run_evaluate(spark, cfg, run_id),
                       lambda r: {"rows_in": None, "rows_out": len(r["metrics"]), "unit": "metric rows"})
        out["fused_rule"] = ev["fused_rule"]
        out["metrics"] = [m for m in ev["metrics"] if m["split"] == "test"]
        out["timing"] = timing_anomalies(spark, cfg, run_id)
    if "windows" in stages:
        bench.run("windows", lambda: run_windows(spark, cfg),
                  lambda r: {"rows_in": None, "rows_out": r["windows"], "unit": "windows", "splits": r["splits"]})
        bench.stages[-1]["per_s"] = round(bench.stages[-1]["rows_out"] / bench.stages[-1]["seconds"], 1)
    if "reference" in stages:
        out["reference"] = bench.run("reference", lambda: reference_stage(bench, run_id, int(ref_windows), int(ref_limit)),
                                     lambda r: {"rows_in": r["windows"], "rows_out": r["windows"],
                                                "unit": "windows"})
    out["stages"] = bench.stages
    out["total_seconds"] = round(time.perf_counter() - t_all, 1)
    out["pipeline_seconds"] = round(sum(s_["seconds"] for s_ in bench.stages if s_["stage"] in PIPELINE), 1)
    sampler.stop()
    spark.stop()
    if keep != "true":
        shutil.rmtree(work / "warehouse", ignore_errors=True)
        shutil.rmtree(work / "artifacts" / "petastorm_cache", ignore_errors=True)
    write_results(f"pipeline_{name}", out, markdown(out))


def _fmt(v, spec: str = ",.0f") -> str:
    return "" if v is None else format(v, spec)


def markdown(out: dict) -> str:
    m = out["machine"]
    w = out["workload"]
    lines = [f"# Pipeline benchmark: {out['blocks']:,} blocks ({out['name']})", "",
             f"Command: `.venv/bin/python {out['command']}` (started {out['started']}).", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU; {m['os']}; Python {m['python']}, "
             f"{m['java']}, Spark {m['spark']} (master `{m['master']}`, driver memory {m['driver_memory']}, "
             f"{m['shuffle_partitions']} shuffle partitions), Delta {m['delta']}, torch {m['torch']}.", "",
             f"Workload: SYNTHETIC, generated by `--task generate` from the real sessions of `{out['source']}` "
             f"(resampled; intervals from the documented model): {w.get('blocks', 0):,} blocks, "
             f"{w.get('anomalies', 0):,} anomalies ({w.get('timing_anomalies', 0):,} timing), {w.get('events', 0):,} events.",
             "", "| stage | seconds | rows in | rows out | unit | per second | peak MiB driver py | JVM | executor py | trainer py |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in out["stages"]:
        p = s.get("peak_mib") or {}
        lines.append(f"| {s['stage']} | {_fmt(s['seconds'], ',.1f')} | {_fmt(s.get('rows_in'))} | {_fmt(s.get('rows_out'))} | "
                     f"{s['unit']} | {_fmt(s.get('per_s'))} | {_fmt(p.get('driver_python'))} | {_fmt(p.get('jvm'))} | "
                     f"{_fmt(p.get('executor_python'))} | {_fmt(p.get('trainer_python'))} |")
    lines += ["", f"**End to end (ingest, train, detect, evaluate: the full pipeline's stages): "
              f"{out.get('pipeline_seconds', 0):,.1f} s.** The windows table is an optional export for SQL (the models "
              "build their windows from the distinct sequences of the traces); the reference stage reads it.", "",
              f"Total {out['total_seconds']:,.1f} s. Per second = rows in (windows for `windows`) / wall seconds. "
              "Peak MiB: RSS sampled every 0.2 s per process group; under `local[*]` the JVM is the driver and the "
              "executor in one process, and `executor py` are its Python workers (the scoring passes)."]
    if "models" in out:
        lines += ["", "## Training", "", "| model | precision | epochs (best) | rows per epoch | windows per epoch | "
                  "median epoch s | seconds | val loss | val top-g recall |", "|---|---|---|---|---|---|---|---|---|"]
        for t, s in out["models"].items():  # runs before train_precision trained in fp32
            lines.append(f"| {t} | {s.get('precision', 'fp32')} | {s['epochs']} ({s['best_epoch']}) | {_fmt(s.get('rows_per_epoch'))} | "
                         f"{_fmt(s.get('windows_per_epoch'))} | {_fmt(s.get('median_epoch_s'), '.2f')} | "
                         f"{_fmt(s.get('seconds'), '.1f')} | {_fmt(s.get('val_loss'), '.4f')} | "
                         f"{_fmt(s.get('val_top_g_recall'), '.4f')} |")
        q = out.get("quantitative") or {}
        cal = out.get("calibration") or {}
        launch = next((s.get("launch_seconds") for s in out["models"].values() if s.get("launch_seconds") is not None), None)
        together = any(s.get("side_by_side") for s in out["models"].values())
        lines += ["", "Seconds per model: its rows prepared in Spark and its training in the trainer process"
                  + (" (the two trained side by side, the value model in a process of its own: their seconds "
                     "overlap)" if together else "") + ". "
                  + ("" if launch is None else f"Both models share one TorchDistributor launch: {launch:.1f} s "
                     "besides their training (Petastorm's Parquet cache, the processes' start). ")
                  + f"Settings: {json.dumps(out['overrides'])}. Count and PCA models: {q.get('seconds', 0):.1f} s"
                  + (" (fitted while the key model trained)" if together else "") + "; "
                  f"calibration on val: {cal.get('seconds', 0):.1f} s, fused rule "
                  f"{' OR '.join(sorted((cal.get('fused') or {}).get('members', {})))}."]
    if "metrics" in out:
        lines += ["", "## Detection quality (test sessions)", "",
                  "| detector | thresholds | threshold | TP | FP | TN | FN | precision | recall | F1 | FPR | AUROC |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in out["metrics"]:
            au = "n/a" if x["auroc"] is None else f"{x['auroc']:.4f}"
            thr = "" if x.get("threshold") is None else f"{x['threshold']:.4g}"
            lines.append(f"| {x['detector']} | {x['threshold_source']} | {thr} | {x['tp']} | {x['fp']} | {x['tn']} | "
                         f"{x['fn']} | {x['precision']:.4f} | {x['recall']:.4f} | {x['f1']:.4f} | {x['fpr']:.5f} | {au} |")
    if out.get("timing"):
        t = out["timing"]
        lines += ["", f"Timing anomalies of the test split ({t['timing_anomalies']:,}, SYNTHETIC: one interval stretched "
                  f"1000x): the value detector at its val-chosen threshold {t['threshold']:.3g} finds "
                  f"**{t['value_recall']:.3f}** of them at a session FPR of **{t['value_fpr']:.4%}** on the "
                  f"{t['normals']:,} normal test sessions; the fused rule {t['fused_recall']:.3f} at {t['fused_fpr']:.4%}."]
    if "reference" in out:
        r = out["reference"]
        f = r["fraction_of_limit"]
        lines += ["", "## Reference: plain PyTorch on the same windows, same process, after the product's stages", "",
                  f"The windows table holds {r['windows']:,} windows ({r['distinct_rows']:,} distinct (window, next) rows). "
                  f"The run's Key LSTM, {r['torch_threads']} torch threads, `torch.inference_mode()`:", "",
                  "| scorer | windows | seconds | windows/s | product's detect rate as a fraction |", "|---|---|---|---|---|",
                  f"| every window, batches of 8192 (near the limit) | {r['batched_windows']:,} | {r['batched_seconds']} | "
                  f"{r['batched_windows_per_s']:,.0f} | {f['batched']:.3f} |",
                  f"| distinct (window, next) rows only (packed int64 key, np.unique; rate over all windows) | "
                  f"{r['windows']:,} | {r['distinct_seconds']} | {r['distinct_windows_per_s']:,.0f} | {f['distinct']:.3f} |",
                  f"| one window per forward pass (public DeepLog code) | {r['public_windows']:,} | {r['public_seconds']} | "
                  f"{r['public_windows_per_s']:,.0f} | {f['public']:.3f} |",
                  "", f"The product's detect stage: {r['product_windows_per_s']:,.0f} windows/s end to end (every detector, "
                  "verdicts and the predictions of flagged sessions written to Delta)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
