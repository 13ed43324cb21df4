"""Train stage on Spark: traces -> training rows -> a feed (Parquet, or Petastorm) -> TorchDistributor -> a run.

One train function (:func:`train_fn`) runs on every rank, in one TorchDistributor launch
for both LSTMs: for each model it reads the feed (config ``feed``: Parquet files read with pyarrow,
or the optional Petastorm converter; into memory when it is small, else this rank's shard streamed), wraps the model in DistributedDataParallel (gloo on CPU, nccl on GPU)
and calls the Spark-free :func:`deeplog_spark.nn.trainer.run_task`. The driver saves what rank 0
returns. With one rank on CPU the two models train side by side, the value model in a process of
its own (:func:`train_fn`).

Every training task also fits the quantitative (count) model and the PCA baseline (Spark jobs of a
few seconds) and ends with the calibration: every detector scores the val split, and the
thresholds, the count model's knobs and the fused rule are chosen there (:mod:`deeplog_spark.detect.calibration`).
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.config import Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.logs import setup_logging, stage
from deeplog_spark.core.runs import run_dir, write_json
from deeplog_spark.core.tables import is_connect, read_table, table_exists, table_id, table_version
from deeplog_spark.detect.calibration import calibrate_run
from deeplog_spark.features.train_rows import (
    has_intervals,
    interval_stats,
    key_dataset,
    normal_sessions,
    value_chunks,
    vocab_size_of,
)
from deeplog_spark.integrations.tracking import check_store, log_training
from deeplog_spark.models.fit import check_vocabulary, fit_quantitative
from deeplog_spark.nn.sources import ParquetFeed, ParquetSource, PetastormSource, collected
from deeplog_spark.nn.trainer import init_distributed, run_task, shutdown_distributed
from deeplog_spark.train.job import (
    batch_sources,
    interval_norm,
    markers,
    model_extra,
    save_trained,
    train_job,
    train_vocab,
)
from deeplog_spark.train.job import run_id as job_run_id

log = logging.getLogger(__name__)

TRAIN_TASKS = ("key", "value", "both")
#: Training or validation tables up to this many rows are read into memory once and served from
#: there every epoch; larger ones stream through Petastorm's loader.
IN_MEMORY_ROWS = 1_000_000


def _sources(job, train_converter, val_converter, rank: int, world: int):
    """(train, val) batch sources of one job on this rank.

    Rows that fit in memory (``IN_MEMORY_ROWS``: the default caps keep 20,000) and distinct key rows
    are read from the feed once, in a repeatable order, and served from memory every epoch, so the
    Parquet and the Petastorm feeds train the same weights; larger tables stream from the feed.
    """
    def rows(feed, always: bool = False):
        if feed is None:
            return None
        small = always or len(feed) <= IN_MEMORY_ROWS
        r, w = (0, 1) if small else (rank, world)
        if isinstance(feed, ParquetFeed):
            source = ParquetSource(feed, job.batch_size, r, w, job.seed)
        else:
            source = PetastormSource(feed, job.batch_size, r, w, job.seed, job.loader_workers)
        return collected(source.full()) if small else source

    return batch_sources(job, rows(train_converter, always=job.count_sampling), rows(val_converter), rank, world)


def _fit_job(job, train_converter, val_converter, rank: int, world: int, device) -> dict:
    """Train one job on this rank from its converters; rank 0 also leaves the result at
    ``job.result_path``. In local mode TorchDistributor lets every rank write the returned value to
    one file, so another rank's None can win: the driver reads these files instead."""

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
    """Entry of the process that trains a job beside the rank's own (see :func:`train_fn`)."""

    setup_logging()
    torch.set_num_threads(threads)
    _fit_job(job, train_converter, val_converter, 0, 1, torch.device("cpu"))


def side_by_side(jobs: int, world: int, gpu: bool, enabled: bool = True) -> bool:
    """Whether the ``jobs`` of a launch (two: key and value) train at the same time (``enabled``,
    config ``side_by_side``): one rank (``world``) on a CPU (not ``gpu``) of two or more cores.

    Why: the key model's LSTM steps scale poorly across threads, so on two cores it trains about as
    fast on one thread as on two, and the value model's training on the other core costs it little
    (``bench/results/side_by_side_575k.md``).
    """
    return enabled and jobs == 2 and world == 1 and not gpu and (os.cpu_count() or 1) >= 2


def train_fn(jobs, converters, together: bool = True) -> list | None:
    """The function TorchDistributor runs on each rank: trains ``jobs`` (the key and the value
    model, one launch), each on its (train, val) converters; returns rank 0's results.

    ``together`` (config ``side_by_side``, local mode) with one rank on CPU: the second job trains
    in a process of its own, started with ``spawn``, at the same time as the first, each on half of
    the cores. A process rather than a thread: each model keeps its own torch random generator (the
    key model's dropout draws from the global one), so the weights are those of training one after
    the other (``tests/test_training.py``). Otherwise the jobs train one after the other.
    """

    setup_logging()
    rank, world, device = init_distributed(jobs[0].use_gpu)
    t0 = time.perf_counter()
    parallel = side_by_side(len(jobs), world, device.type != "cpu", together)
    try:
        if parallel:
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


def feed_kind(cfg: Config) -> str:
    """``parquet`` or ``petastorm``: config ``feed``, where ``auto`` is petastorm when it is installed."""
    installed = importlib.util.find_spec("petastorm") is not None
    if cfg.feed == "petastorm" and not installed:
        raise InputError("feed = petastorm, but petastorm is not installed: pip install 'deeplog-spark[petastorm]' "
                         "(it needs numpy < 2 and pyarrow <= 14), or set feed = parquet")
    if cfg.feed == "auto":
        return "petastorm" if installed else "parquet"
    return cfg.feed


def _converter(spark: SparkSession, cfg: Config, df: DataFrame, partitions: int):
    """The training rows ``df`` as a feed the ranks read: a :class:`ParquetFeed` or a Petastorm
    converter. Either has at least one Parquet file per rank, or a shard would be empty."""
    if feed_kind(cfg) == "petastorm":
        # petastorm loads only when a training runs with it (an optional extra)
        from petastorm.spark import make_spark_converter

        return make_spark_converter(df.repartition(partitions))
    path = Path(cfg.artifacts_root).resolve() / "train_feed" / uuid.uuid4().hex
    df.repartition(partitions).write.parquet(path.as_uri())
    return ParquetFeed(str(path), df.sparkSession.read.parquet(path.as_uri()).count())


def distribute(spark: SparkSession, cfg: Config, jobs: list, data: list[tuple[DataFrame, DataFrame | None]]) -> list[dict]:
    """Train ``jobs`` (each on its ``(train_df, val_df)``, early stopping on val) in one TorchDistributor
    launch; rank 0's results, in order."""
    # TorchDistributor loads only when a training launches
    from pyspark.ml.torch.distributor import TorchDistributor

    for job in jobs:
        Path(job.result_path).unlink(missing_ok=True)  # never read a crashed attempt's result
    parts = max(2 * cfg.num_processes, 2)
    converters = []
    try:
        for job, (train_df, val_df) in zip(jobs, data):
            converters.append((_converter(spark, cfg, train_df, parts), None))
            if val_df is not None:
                converters[-1] = (converters[-1][0], _converter(spark, cfg, val_df, parts))
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
        results = distributor.run(train_fn, jobs, converters, cfg.side_by_side and cfg.local_mode)
    finally:
        for train_conv, val_conv in converters:
            train_conv.delete()
            if val_conv is not None:
                val_conv.delete()
    if not results and cfg.local_mode and all(os.path.isfile(j.result_path) for j in jobs):
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
    """With the Petastorm feed, Petastorm materialises training DataFrames as Parquet under
    ``<artifacts_root>/petastorm_cache`` (the Parquet feed writes under ``train_feed``)."""
    if feed_kind(cfg) != "petastorm":
        return
    # petastorm loads only when a training runs with it (an optional extra)
    from petastorm.spark import SparkDatasetConverter

    cache = Path(cfg.artifacts_root).resolve() / "petastorm_cache"
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, cache.as_uri())


def train_lstms(spark: SparkSession, cfg: Config, tasks: list[str], traces: DataFrame, vocab_size: int,
                out_dir: Path, run_id: str, version: int) -> dict[str, dict]:
    """Train the LSTMs of ``tasks`` (``key``, ``value``) in one TorchDistributor launch and save them
    into ``out_dir``; returns each one's summary (``seconds``: its rows' preparation and its training,
    ``launch_seconds``: the launch they shared, less their training)."""
    t0 = time.perf_counter()
    train_n, val_n = normal_sessions(traces, "train"), normal_sessions(traces, "val")
    seen = train_n.select(F.explode("events").alias("e")).distinct()  # at most vocab_size rows
    extra = model_extra(run_id, version, vocab_size, train_vocab((r["e"] for r in seen.collect()), vocab_size),
                        trained_by="spark")
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
            norm = interval_norm(stats.mean, stats.std, stats.count)
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
        summary = save_trained(out_dir, job, result, job_extra, cfg)
        summary["seconds"] = round(prep[job.task] + result["fit_seconds"], 2)
        summary["launch_seconds"] = round(launch, 2)
        summary["side_by_side"] = bool(result.get("side_by_side"))
        summaries[job.task] = summary
    log.info("trained %s%s in %.1f s (one launch: %.1f s besides the training)", " and ".join(tasks),
             " side by side" if any(s["side_by_side"] for s in summaries.values()) else "",
             time.perf_counter() - t0, launch)
    return summaries


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
    if is_connect(spark):
        raise InputError("training needs a classic Spark session (TorchDistributor launches its ranks through the "
                         "SparkContext, which Spark Connect, serverless and shared clusters do not have): run it on a "
                         "classic cluster (single user), or train without Spark with deeplog-train-local")
    if cfg.mlflow:  # a store that cannot take the run fails now, not after the training
        check_store(cfg.artifacts_root)
    with stage("train") as st:
        traces_path = cfg.table(schemas.TRACES)
        traces = read_table(spark, traces_path)
        version = table_version(spark, traces_path)
        vocab_size = vocab_size_of(spark, cfg)
        tasks = _resolve_tasks(task, traces)
        check_vocabulary(traces, vocab_size, cfg.pca_max_events)
        run_id = job_run_id(cfg, traces_path.path, version, table_id(spark, traces_path))
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
            cal = calibrate_run(spark, cfg, run_id)
            summary["calibration"] = {"fused": cal["fused"], "val_anomalies": cal["val_anomalies"],
                                      "seconds": cal["seconds"]}
        else:
            log.warning("run %s has no key model yet: train it (--task key) to calibrate and detect", run_id)
        write_json(out_dir / "run.json", {**summary, "config": cfg.to_dict()})
        if cfg.mlflow:
            summary["mlflow"] = log_training(cfg.to_dict(), run_id, out_dir, cfg.mlflow_experiment,
                                             cfg.mlflow_model_name)
        write_json(Path(cfg.artifacts_root) / "runs" / "latest.json", {"run_id": run_id})
        st.update(run_id=run_id, tasks=",".join(tasks))
    return summary
