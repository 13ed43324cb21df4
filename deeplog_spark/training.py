"""Train stage on Spark: traces -> training rows -> Petastorm -> TorchDistributor -> a run.

One train function (:func:`petastorm_train_fn`) runs on every rank, in one TorchDistributor launch
for both LSTMs: for each model it reads the Petastorm cache (into memory when it is small, else
this rank's shard streamed), wraps the model in DistributedDataParallel (gloo on CPU, nccl on GPU)
and calls the Spark-free :func:`deeplog_spark.nn.trainer.run_task`. The driver saves what rank 0
returns. With one rank on CPU the two models train side by side, the value model in a process of
its own (:func:`petastorm_train_fn`).

Every training task also fits the quantitative (count) model and the PCA baseline (Spark jobs of a
few seconds) and ends with the calibration: every detector scores the val split, and the
thresholds, the count model's knobs and the fused rule are chosen there (:mod:`deeplog_spark.calibration`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark import schemas
from deeplog_spark.config import Config
from deeplog_spark.errors import InputError
from deeplog_spark.logs import stage
from deeplog_spark.runs import ModelBundle, run_dir, save_model, write_json
from deeplog_spark.tables import read_table, replace_where, table_exists, table_version
from deeplog_spark.train_data import (
    has_intervals,
    interval_stats,
    key_dataset,
    normal_sessions,
    value_chunks,
)
from deeplog_spark.train_job import RUN_KEYS, markers, train_job

log = logging.getLogger(__name__)

TRAIN_TASKS = ("key", "value", "both")
#: Training or validation tables up to this many rows are read into memory once and served from
#: there every epoch; larger ones stream through Petastorm's loader.
IN_MEMORY_ROWS = 1_000_000


def run_id_for(cfg: Config, traces_path: str, traces_version: int) -> str:
    """Hash of the model-defining config and the traces table (path and version)."""
    return cfg.fingerprint(RUN_KEYS, extra={"traces": os.path.abspath(traces_path), "traces_version": traces_version})


def _sources(job, train_converter, val_converter, rank: int, world: int):
    """(train, val) batch sources of one job on this rank.

    Rows that fit in memory (``IN_MEMORY_ROWS``: the default caps keep 20,000) are read from the
    Parquet cache once, in a repeatable order, and served from memory every epoch; larger tables
    stream through Petastorm's loader. Distinct key rows are drawn by count (``CountSampledSource``).
    """
    from deeplog_spark.nn.sources import ArraySource, CountSampledSource, PetastormSource, collected

    def rows(conv):
        return collected(PetastormSource(conv, job.batch_size, 0, 1, job.seed, job.loader_workers).full())

    if job.count_sampling:  # distinct rows: every rank loads them all and draws windows by count ** power
        train = CountSampledSource(rows(train_converter), job.steps_per_epoch, batch_size=job.batch_size,
                                   seed=job.seed, rank=rank, world=world, power=job.sampling_power)
    elif len(train_converter) <= IN_MEMORY_ROWS:
        train = ArraySource(rows(train_converter), job.batch_size, job.seed, rank, world)
    else:
        train = PetastormSource(train_converter, job.batch_size, rank, world, job.seed, job.loader_workers)
    if val_converter is None:
        val = None
    elif len(val_converter) <= IN_MEMORY_ROWS:
        val = ArraySource(rows(val_converter), job.batch_size, job.seed, rank, world)
    else:
        val = PetastormSource(val_converter, job.batch_size, rank, world, job.seed, job.loader_workers)
    return train, val


def _fit_job(job, train_converter, val_converter, rank: int, world: int, device) -> dict:
    """Train one job on this rank from its converters; rank 0 also leaves the result at
    ``job.result_path``. In local mode TorchDistributor lets every rank write the returned value to
    one file, so another rank's None can win: the driver reads these files instead."""
    import torch

    from deeplog_spark.nn.trainer import run_task

    t0 = time.perf_counter()
    train, val = _sources(job, train_converter, val_converter, rank, world)
    try:
        result = run_task(job, train, val, device)
    finally:
        train.close()
        if val is not None:
            val.close()
    result["fit_seconds"] = round(time.perf_counter() - t0, 2)
    if rank == 0:
        tmp = job.result_path + ".tmp"
        torch.save(result, tmp)
        os.replace(tmp, job.result_path)
    return result


def _side_process_main(job, train_converter, val_converter, threads: int) -> None:
    """Entry of the process that trains a job beside the rank's own (see :func:`petastorm_train_fn`)."""
    import torch

    from deeplog_spark.logs import setup_logging

    setup_logging()
    torch.set_num_threads(threads)
    _fit_job(job, train_converter, val_converter, 0, 1, torch.device("cpu"))


def side_by_side(jobs: int, world: int, gpu: bool, enabled: bool = True) -> bool:
    """Whether the ``jobs`` of a launch (two: key and value) train at the same time (``enabled``,
    config ``side_by_side``): one rank (``world``) on a CPU (not ``gpu``) of two or more cores.

    Measured on 2 cores (README "Training"): the key model trains about as fast on one thread as on
    two, so the value model's training on the other core costs the key model little and saves the
    value model's whole training time.
    """
    return enabled and jobs == 2 and world == 1 and not gpu and (os.cpu_count() or 1) >= 2


def petastorm_train_fn(jobs, converters, together: bool = True) -> list | None:
    """The function TorchDistributor runs on each rank: trains ``jobs`` (the key and the value
    model, one launch), each on its (train, val) converters; returns rank 0's results.

    ``together`` (config ``side_by_side``, local mode) with one rank on CPU: the second job trains
    in a process of its own, started with ``spawn``, at the same time as the first, each on half of
    the cores. A process rather than a thread: each model keeps its own torch random generator (the
    key model's dropout draws from the global one), so the weights are those of training one after
    the other (``tests/test_training.py``). Otherwise the jobs train one after the other.
    """
    import multiprocessing

    from deeplog_spark.logs import setup_logging
    from deeplog_spark.nn.trainer import init_distributed, shutdown_distributed

    setup_logging()
    rank, world, device = init_distributed(jobs[0].use_gpu)
    t0 = time.perf_counter()
    parallel = side_by_side(len(jobs), world, device.type != "cpu", together)
    try:
        if parallel:
            import torch

            cores = os.cpu_count() or 2
            side = multiprocessing.get_context("spawn").Process(
                target=_side_process_main, args=(jobs[1], *converters[1], cores - cores // 2))
            side.start()
            try:
                torch.set_num_threads(cores // 2)
                first = _fit_job(jobs[0], *converters[0], rank, world, device)
            except BaseException:
                side.terminate()
                raise
            finally:
                side.join()
            if side.exitcode != 0:
                raise RuntimeError(f"the {jobs[1].task} model's training process exited {side.exitcode} "
                                   "(its log is above)")
            second = torch.load(jobs[1].result_path, map_location="cpu", weights_only=True)
            results = [first, second]
        else:
            results = [_fit_job(job, *conv, rank, world, device) for job, conv in zip(jobs, converters)]
    finally:
        shutdown_distributed()
    for r in results:
        r["train_wall_seconds"], r["side_by_side"] = round(time.perf_counter() - t0, 2), parallel
    return results if rank == 0 else None


def _converter(spark: SparkSession, df: DataFrame, partitions: int):
    from petastorm.spark import make_spark_converter

    # at least one Parquet file (row group) per rank, or a shard would be empty
    return make_spark_converter(df.repartition(partitions))


def distribute(spark: SparkSession, cfg: Config, jobs: list, data: list[tuple[DataFrame, DataFrame | None]]) -> list[dict]:
    """Train ``jobs`` (each on its ``(train_df, val_df)``, early stopping on val) in one TorchDistributor
    launch; rank 0's results, in order."""
    from pyspark.ml.torch.distributor import TorchDistributor

    for job in jobs:
        Path(job.result_path).unlink(missing_ok=True)  # never read a crashed attempt's result
    parts = max(2 * cfg.num_processes, 2)
    converters = []
    try:
        for job, (train_df, val_df) in zip(jobs, data):
            converters.append((_converter(spark, train_df, parts), None))
            if val_df is not None:
                converters[-1] = (converters[-1][0], _converter(spark, val_df, parts))
            train_conv, val_conv = converters[-1]
            if len(train_conv) == 0:
                raise InputError(f"no training rows for the {job.task} model (train split, normal sessions)")
            if val_conv is not None and len(val_conv) == 0:
                log.warning("%s: no validation rows; early stopping watches the training loss", job.task)
                val_conv.delete()
                converters[-1] = (train_conv, val_conv := None)
            log.info("%s: %d training rows, %s validation rows, %d process(es), local_mode=%s, gpu=%s",
                     job.task, len(train_conv), len(val_conv) if val_conv else 0, cfg.num_processes,
                     cfg.local_mode, cfg.use_gpu)
        distributor = TorchDistributor(num_processes=cfg.num_processes, local_mode=cfg.local_mode,
                                       use_gpu=cfg.use_gpu)
        # side by side only with the ranks on the driver: an executor's task may hold fewer cores
        # than its machine has
        results = distributor.run(petastorm_train_fn, jobs, converters, cfg.side_by_side and cfg.local_mode)
    finally:
        for train_conv, val_conv in converters:
            train_conv.delete()
            if val_conv is not None:
                val_conv.delete()
    if not results and cfg.local_mode and all(os.path.isfile(j.result_path) for j in jobs):
        import torch

        results = [torch.load(j.result_path, map_location="cpu", weights_only=True) for j in jobs]
    for job in jobs:
        if os.path.isfile(job.result_path):
            os.remove(job.result_path)
    if not results or len(results) != len(jobs):
        raise RuntimeError("TorchDistributor returned no result from rank 0")
    return results


def _resolve_tasks(task: str, traces: DataFrame) -> list[str]:
    if task not in TRAIN_TASKS:
        raise InputError(f"--task must be one of {', '.join(TRAIN_TASKS)}, got {task!r}")
    wanted = ["key", "value"] if task == "both" else [task]
    if "value" in wanted and not has_intervals(traces):
        msg = ("the traces have no time intervals (the input had no TimeInterval column), "
               "so the value model cannot be trained")
        if task == "value":
            raise InputError(msg)
        log.warning("%s: training the key model alone", msg)
        wanted = ["key"]
    return wanted


def set_petastorm_cache(spark: SparkSession, cfg: Config) -> None:
    """Petastorm materialises training DataFrames as Parquet under ``<artifacts_root>/petastorm_cache``."""
    from petastorm.spark import SparkDatasetConverter

    cache = Path(cfg.artifacts_root).resolve() / "petastorm_cache"
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, cache.as_uri())


def vocab_size_of(spark: SparkSession, cfg: Config) -> int:
    """The largest event id of the templates table: the models' vocabulary is 1..this."""
    size = read_table(spark, cfg.table(schemas.TEMPLATES)).agg(F.max("event_id")).first()[0]
    if not size:
        raise InputError(f"the templates table {cfg.table(schemas.TEMPLATES)} is empty")
    return int(size)


def train_lstms(spark: SparkSession, cfg: Config, tasks: list[str], traces: DataFrame, vocab_size: int,
                out_dir: Path, run_id: str, version: int) -> dict[str, dict]:
    """Train the LSTMs of ``tasks`` (``key``, ``value``) in one TorchDistributor launch and save them
    into ``out_dir``; returns each one's summary (``seconds``: its rows' preparation and its training,
    ``launch_seconds``: the launch they shared, less their training)."""
    t0 = time.perf_counter()
    train_n, val_n = normal_sessions(traces, "train"), normal_sessions(traces, "val")
    seen = train_n.select(F.explode("events").alias("e")).distinct()
    extra: dict = {"run_id": run_id, "traces_version": version, "vocab_size": vocab_size,
                   "train_vocab": sorted(r["e"] for r in seen.collect() if 1 <= r["e"] <= vocab_size)}  # <= vocab rows
    jobs, data, extras, prep = [], [], [], {}
    for task in tasks:
        t1 = time.perf_counter()
        jobs.append(train_job(cfg, task, vocab_size, out_dir))
        extras.append(dict(extra))
        if task == "key":
            m = markers(cfg, vocab_size)
            data.append((key_dataset(train_n, cfg.h, m, cfg.max_train_rows, cfg.seed),
                         key_dataset(val_n, cfg.h, m, cfg.max_val_rows, cfg.seed)))
        else:
            stats = interval_stats(train_n)
            norm = {"mean": stats.mean, "std": stats.std, "of": "log1p(interval seconds)",
                    "fitted_on": "train split, normal sessions, every interval but the first", "steps": stats.count}
            write_json(out_dir / "value_norm.json", norm)
            extras[-1]["norm"] = norm
            data.append((value_chunks(train_n, stats, vocab_size, cfg.value_chunk, cfg.h, cfg.max_train_rows, cfg.seed),
                         value_chunks(val_n, stats, vocab_size, cfg.value_chunk, cfg.h, cfg.max_val_rows, cfg.seed)))
        prep[task] = time.perf_counter() - t1
    t2 = time.perf_counter()
    results = distribute(spark, cfg, jobs, data)
    # the training's wall time: the jobs side by side, or one after the other (results read back
    # from the files rank 0 left carry only their own fit)
    wall = max((r["train_wall_seconds"] for r in results if "train_wall_seconds" in r),
               default=sum(r["fit_seconds"] for r in results))
    launch = time.perf_counter() - t2 - wall
    summaries = {}
    for job, result, job_extra in zip(jobs, results, extras):
        summary = save_model(out_dir, job.task, job.model_config, result, job_extra, cfg.top_g)
        if job.task == "value":
            e = result["train_errors"]
            if not all(math.isfinite(v) for v in (e["mu"], e["sigma"])):
                raise InputError(f"the value model's residuals are not finite (mu {e['mu']}, sigma {e['sigma']}): "
                                 "check the intervals of the input")
            threshold = {"mu": e["mu"], "sigma": e["sigma"], "k": cfg.k_sigma,
                         "threshold": e["mu"] + cfg.k_sigma * e["sigma"],
                         "error": "standardized residual |z - mean| / sd of log1p(interval)",
                         "fitted_on": "train split, normal sessions", "steps": e["steps"]}
            write_json(out_dir / "value_threshold.json", threshold)
            summary["threshold"] = threshold["threshold"]
        Path(job.resume_path).unlink(missing_ok=True)  # finished: a re-run trains afresh
        summary["seconds"] = round(prep[job.task] + result["fit_seconds"], 2)
        summary["launch_seconds"] = round(launch, 2)
        summary["side_by_side"] = bool(result.get("side_by_side"))
        summaries[job.task] = summary
    log.info("trained %s%s in %.1f s (one launch: %.1f s besides the training)", " and ".join(tasks),
             " side by side" if any(s["side_by_side"] for s in summaries.values()) else "",
             time.perf_counter() - t0, launch)
    return summaries


def fit_quantitative(spark: SparkSession, cfg: Config, traces: DataFrame, run_id: str, out_dir: Path) -> dict:
    """The count model (patterns table + statistics) and the PCA baseline of the train-normal sessions."""
    from deeplog_spark import pca
    from deeplog_spark import quantitative as Q

    t0 = time.perf_counter()
    train_n = normal_sessions(traces, "train")
    patterns = Q.fit_patterns(train_n).persist()
    try:
        replace_where(patterns.select(F.lit(run_id).alias("run_id"), "counts", "sessions"),
                      cfg.table(schemas.COUNT_PATTERNS), f"run_id = '{run_id}'", partition_by=["run_id"])
        model = Q.fit_model(patterns)
        write_json(out_dir / "count_model.json", model.to_json())
        pca_model = pca.fit(patterns)
        write_json(out_dir / "pca_model.json", pca_model.to_json())
        n_patterns = patterns.count()
    finally:
        patterns.unpersist()
    log.info("count model: %d normal sessions, %d patterns, %d events; PCA: %d of %d components, Q %.4g",
             model.normal_sessions, n_patterns, len(model.vocab), pca_model.k, len(pca_model.events),
             pca_model.q_threshold)
    return {"normal_sessions": model.normal_sessions, "patterns": n_patterns, "pca_components": pca_model.k,
            "pca_q_threshold": pca_model.q_threshold, "seconds": round(time.perf_counter() - t0, 2)}


def calibrate(spark: SparkSession, cfg: Config, run_id: str) -> dict:
    """Choose every threshold, the count model's knobs and the fused rule on the val split.

    Every detector scores the val sessions (as detect does); the driver gets one record per
    distinct (val sequence, value-score level) with its normal and anomalous session counts, a
    bounded aggregate. Writes ``calibration.json`` (and the knobs into ``count_model.json``).
    """
    import numpy as np

    from deeplog_spark import calibration as C
    from deeplog_spark import quantitative as Q
    from deeplog_spark.detection import count_patterns, score_sessions
    from deeplog_spark.detectors import with_counts

    t0 = time.perf_counter()
    bundle = ModelBundle(cfg.artifacts_root, run_id)
    traces = read_table(spark, cfg.table(schemas.TRACES)).where(F.col("split") == "val") \
        .select("block_id", "split", "label", "ingest_batch", "events", "intervals")
    sessions, cached = score_sessions(spark, cfg, bundle, traces, cfg.top_g, cfg.k_sigma, count=False)
    value_level = F.least(F.round(F.col("max_value_error") * 20) / 20, F.lit(1000.0))  # 0.05 sd steps
    grouped = (sessions.where(F.col("label").isNotNull())
               .groupBy("events", value_level.alias("value"), F.col("max_key_rank").cast("double").alias("key"),
                        F.col("max_key_score").cast("double").alias("key_nll"), F.col("pca_spe").alias("pca"))
               .agg(F.sum((F.col("label") == 0).cast("long")).alias("normal"),
                    F.sum((F.col("label") == 1).cast("long")).alias("anomalous")))
    records = [dict(r.asDict(), row=i) for i, r in enumerate(grouped.collect())]
    for df in cached:
        df.unpersist()
    if not records:
        raise InputError("no labelled val sessions to calibrate on (the val split is empty or unlabelled); "
                         "check the split ratios and the labels")
    fixed: dict[str, np.ndarray] = {}
    count_info = None
    if bundle.count is not None:
        by_seq: dict[tuple, list[dict]] = {}
        for r in records:
            by_seq.setdefault(tuple(r["events"]), []).append(r)
        patterns = count_patterns(spark, cfg, run_id)
        seqs = with_counts(spark.createDataFrame([(list(e),) for e in by_seq], "events array<int>"))
        feats = Q.features(seqs, patterns, bundle.count, Q.FREE_SHARES).select(
            "events", "free_share", "unseen", "support", "d_free", "cap_ratio").collect()  # distinct seqs x shares
        count_records = [
            {"row": r["row"], "free_share": f["free_share"], "normal": r["normal"], "anomalous": r["anomalous"],
             "unseen": len(f["unseen"]) > 0, "support": f["support"], "d_free": f["d_free"], "cap_ratio": f["cap_ratio"]}
            for f in feats for r in by_seq[tuple(f["events"])]]
        grid = {"min_support": Q.MIN_SUPPORTS, "slack": Q.SLACKS, "cap_factor": Q.CAP_FACTORS}
        knobs, f1, decision = C.choose_count_knobs(count_records, grid)
        model = bundle.count.with_knobs(**knobs)
        write_json(bundle.dir / "count_model.json", model.to_json())
        fixed["count"] = decision
        count_info = {**model.to_json(), "val_f1": f1, "free_events": model.free()}
        for k in ("variability", "caps", "normal_sessions"):
            count_info.pop(k)
    dets = ["key", "key_nll", "pca"] + (["value"] if bundle.value_bytes is not None else [])
    result = C.calibrate(C.ValTable.from_records(records, dets), fixed, cfg.calibration_fpr)
    for where in (result["detectors"], result["fused"]["members"]):  # a rank threshold is a whole g
        if "key" in where:
            info = where["key"]
            if isinstance(info, dict):
                info["threshold"] = float(math.floor(info["threshold"]))
            else:
                where["key"] = float(math.floor(info))
    result["detectors"] = {d: v for d, v in result["detectors"].items() if math.isfinite(v["threshold"])}
    result["fused"]["members"] = {d: t for d, t in result["fused"]["members"].items() if math.isfinite(t)} \
        or {"key": float(cfg.top_g)}
    if count_info is not None:
        result["count_knobs"] = count_info
    result["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(bundle.dir / "calibration.json", result)
    log.info("calibration on val (%d sessions, %d anomalies): fused = %s (val F1 %s)", result["val_sessions"],
             result["val_anomalies"], " OR ".join(f"{d} > {t:.4g}" for d, t in result["fused"]["members"].items()),
             "n/a" if result["fused"].get("val_f1") is None else f"{result['fused']['val_f1']:.4f}")
    if result["fused"].get("no_signal"):
        log.warning("calibration: the best rule on val (F1 %.4f) is no better than flagging every val session "
                    "(F1 %.4f): the detectors find no signal that separates these anomalies from normal sessions; "
                    "do not use its verdicts as alerts", result["fused"]["val_f1"], result["fused"]["val_f1_flag_all"])
    return result


def _train_with_quantitative(spark: SparkSession, cfg: Config, tasks: list[str], traces: DataFrame, vocab_size: int,
                             out_dir: Path, run_id: str, version: int) -> tuple[dict, dict]:
    """(the LSTMs' summaries, the count and PCA models' summary).

    Side by side (:func:`side_by_side`, local mode) the value model finishes well before the key
    model, which trains on one core: the count and PCA models (a few small Spark jobs that need no
    LSTM) are fitted in a driver thread as soon as the value model's process leaves its result,
    on the core it freed. Otherwise they are fitted after the training. Only when they run depends
    on that file, never what they compute.
    """
    value_result = train_job(cfg, "value", vocab_size, out_dir).result_path
    early = side_by_side(len(tasks), cfg.num_processes, cfg.use_gpu, cfg.side_by_side and cfg.local_mode)
    trained, failed = threading.Event(), threading.Event()

    def fit_when_a_core_is_free() -> dict | None:
        if early:  # the value model's process leaves its result when it is done
            while not trained.is_set() and not os.path.isfile(value_result):
                trained.wait(0.5)
        else:
            trained.wait()
        return None if failed.is_set() else fit_quantitative(spark, cfg, traces, run_id, out_dir)

    with ThreadPoolExecutor(1, thread_name_prefix="count-pca") as pool:
        quantitative = pool.submit(fit_when_a_core_is_free)
        try:
            lstms = train_lstms(spark, cfg, tasks, traces, vocab_size, out_dir, run_id, version)
        except BaseException:
            failed.set()
            raise
        finally:
            trained.set()
        return lstms, quantitative.result()


def run_train(spark: SparkSession, cfg: Config, task: str = "both") -> dict:
    """Train the requested LSTM(s), the count and PCA models, and calibrate on val; returns the run summary."""
    with stage("train") as st:
        traces_path = cfg.table(schemas.TRACES)
        traces = read_table(spark, traces_path)
        version = table_version(spark, traces_path)
        vocab_size = vocab_size_of(spark, cfg)
        tasks = _resolve_tasks(task, traces)
        run_id = run_id_for(cfg, traces_path.path, version)
        out_dir = run_dir(cfg.artifacts_root, run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        set_petastorm_cache(spark, cfg)
        summary: dict = {"run_id": run_id, "run_dir": str(out_dir), "traces_version": version,
                         "vocab_size": vocab_size, "tasks": {}}
        if table_exists(spark, cfg.table(schemas.MINER_STATE)):  # mined templates: the run keeps its miner
            miner = read_table(spark, cfg.table(schemas.MINER_STATE)).first()
            (out_dir / "miner_state.json").write_text(miner["state"])
            summary["miner_templates"] = miner["templates"]
        summary["tasks"], summary["quantitative"] = _train_with_quantitative(spark, cfg, tasks, traces, vocab_size,
                                                                            out_dir, run_id, version)
        if (out_dir / "key_model.pt").is_file():
            cal = calibrate(spark, cfg, run_id)
            summary["calibration"] = {"fused": cal["fused"], "val_anomalies": cal["val_anomalies"],
                                      "seconds": cal["seconds"]}
        else:
            log.warning("run %s has no key model yet: train it (--task key) to calibrate and detect", run_id)
        write_json(out_dir / "run.json", {**summary, "config": cfg.to_dict()})
        if cfg.mlflow:
            from deeplog_spark.tracking import log_training

            summary["mlflow"] = log_training(cfg.to_dict(), run_id, out_dir, cfg.mlflow_experiment,
                                             cfg.mlflow_model_name)
        write_json(Path(cfg.artifacts_root) / "runs" / "latest.json", {"run_id": run_id})
        st.update(run_id=run_id, tasks=",".join(tasks))
    return summary


def run_calibrate(spark: SparkSession, cfg: Config, model: str | None = None) -> dict:
    """Fit the count and PCA models and calibrate an existing run (for example one trained on a GPU
    machine by ``deeplog_spark.nn.local``, then copied under ``<artifacts_root>/runs/``)."""
    with stage("calibrate") as st:
        bundle = ModelBundle(cfg.artifacts_root, model)
        traces = read_table(spark, cfg.table(schemas.TRACES))
        quantitative = fit_quantitative(spark, cfg, traces, bundle.run_id, bundle.dir)
        cal = calibrate(spark, cfg, bundle.run_id)
        st.update(run_id=bundle.run_id, fused=",".join(cal["fused"]["members"]))
    return {"run_id": bundle.run_id, "quantitative": quantitative, "calibration": cal}
