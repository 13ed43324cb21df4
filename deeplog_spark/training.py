"""Train stage on Spark: traces -> training rows -> Petastorm -> TorchDistributor -> a run.

One train function (:func:`petastorm_train_fn`) runs on every rank: it opens this rank's shard of
the Petastorm cache, wraps the model in DistributedDataParallel (gloo on CPU, nccl on GPU) and
calls the Spark-free :func:`deeplog_spark.nn.trainer.run_task`. The driver saves what rank 0 returns.

Every training task also fits the quantitative (count) model and the PCA baseline (Spark jobs of a
few seconds) and ends with the calibration: every detector scores the val split, and the
thresholds, the count model's knobs and the fused rule are chosen there (:mod:`deeplog_spark.calibration`).
"""

from __future__ import annotations

import logging
import math
import os
import time
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


def run_id_for(cfg: Config, traces_path: str, traces_version: int) -> str:
    """Hash of the model-defining config and the traces table (path and version)."""
    return cfg.fingerprint(RUN_KEYS, extra={"traces": os.path.abspath(traces_path), "traces_version": traces_version})


def petastorm_train_fn(job, train_converter, val_converter) -> dict | None:
    """The function TorchDistributor runs on each rank; returns rank 0's result."""
    import torch

    from deeplog_spark.logs import setup_logging
    from deeplog_spark.nn.sources import CountSampledSource, PetastormSource
    from deeplog_spark.nn.trainer import init_distributed, run_task, shutdown_distributed

    setup_logging()
    rank, world, device = init_distributed(job.use_gpu)
    if job.count_sampling:  # distinct rows: every rank loads them all and draws windows by count ** power
        rows = PetastormSource(train_converter, job.batch_size, 0, 1, job.seed, job.loader_workers)
        train = CountSampledSource.from_batches(rows.full(), job.steps_per_epoch, batch_size=job.batch_size,
                                                seed=job.seed, rank=rank, world=world, power=job.sampling_power)
    else:
        train = PetastormSource(train_converter, job.batch_size, rank, world, job.seed, job.loader_workers)
    val = (PetastormSource(val_converter, job.batch_size, rank, world, job.seed, job.loader_workers)
           if val_converter is not None else None)
    try:
        result = run_task(job, train, val, device)
    finally:
        train.close()
        shutdown_distributed()
    if rank != 0:
        return None
    # In local mode TorchDistributor lets every rank write the returned value to one file, so
    # another rank's None can win; rank 0 also leaves its result where the driver can read it.
    tmp = job.result_path + ".tmp"
    torch.save(result, tmp)
    os.replace(tmp, job.result_path)
    return result


def _converter(spark: SparkSession, df: DataFrame, partitions: int):
    from petastorm.spark import make_spark_converter

    # at least one Parquet file (row group) per rank, or a shard would be empty
    return make_spark_converter(df.repartition(partitions))


def distribute(spark: SparkSession, cfg: Config, job, train_df: DataFrame, val_df: DataFrame | None) -> dict:
    """Train ``job`` on ``train_df`` (early stopping on ``val_df``) with TorchDistributor; rank 0's result."""
    from pyspark.ml.torch.distributor import TorchDistributor

    Path(job.result_path).unlink(missing_ok=True)  # never read a crashed attempt's result
    parts = max(2 * cfg.num_processes, 2)
    train_conv = _converter(spark, train_df, parts)
    val_conv = _converter(spark, val_df, parts) if val_df is not None else None
    try:
        if len(train_conv) == 0:
            raise InputError(f"no training rows for the {job.task} model (train split, normal sessions)")
        if val_conv is not None and len(val_conv) == 0:
            log.warning("%s: no validation rows; early stopping watches the training loss", job.task)
            val_conv.delete()
            val_conv = None
        log.info("%s: %d training rows, %s validation rows, %d process(es), local_mode=%s, gpu=%s",
                 job.task, len(train_conv), len(val_conv) if val_conv else 0, cfg.num_processes,
                 cfg.local_mode, cfg.use_gpu)
        distributor = TorchDistributor(num_processes=cfg.num_processes, local_mode=cfg.local_mode,
                                       use_gpu=cfg.use_gpu)
        result = distributor.run(petastorm_train_fn, job, train_conv, val_conv)
    finally:
        train_conv.delete()
        if val_conv is not None:
            val_conv.delete()
    if not result and cfg.local_mode and os.path.isfile(job.result_path):
        import torch

        result = torch.load(job.result_path, map_location="cpu", weights_only=True)
    if os.path.isfile(job.result_path):
        os.remove(job.result_path)
    if not result:
        raise RuntimeError("TorchDistributor returned no result from rank 0")
    return result


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


def train_lstm(spark: SparkSession, cfg: Config, task: str, traces: DataFrame, vocab_size: int, out_dir: Path,
               run_id: str, version: int) -> dict:
    """Train one LSTM (``key`` or ``value``) and save it into ``out_dir``; returns its summary."""
    t0 = time.perf_counter()
    train_n, val_n = normal_sessions(traces, "train"), normal_sessions(traces, "val")
    job = train_job(cfg, task, vocab_size, out_dir)
    extra: dict = {"run_id": run_id, "traces_version": version, "vocab_size": vocab_size}
    seen = train_n.select(F.explode("events").alias("e")).distinct()
    extra["train_vocab"] = sorted(r["e"] for r in seen.collect() if 1 <= r["e"] <= vocab_size)  # <= vocab rows
    if task == "key":
        m = markers(cfg, vocab_size)
        train_df = key_dataset(train_n, cfg.h, m, cfg.max_train_rows, cfg.seed)
        val_df = key_dataset(val_n, cfg.h, m, cfg.max_val_rows, cfg.seed)
    else:
        stats = interval_stats(train_n)
        norm = {"mean": stats.mean, "std": stats.std, "of": "log1p(interval seconds)",
                "fitted_on": "train split, normal sessions, every interval but the first", "steps": stats.count}
        write_json(out_dir / "value_norm.json", norm)
        extra["norm"] = norm
        train_df = value_chunks(train_n, stats, vocab_size, cfg.value_chunk, cfg.h, cfg.max_train_rows, cfg.seed)
        val_df = value_chunks(val_n, stats, vocab_size, cfg.value_chunk, cfg.h, cfg.max_val_rows, cfg.seed)
    result = distribute(spark, cfg, job, train_df, val_df)
    summary = save_model(out_dir, task, job.model_config, result, extra, cfg.top_g)
    if task == "value":
        e = result["train_errors"]
        if not all(math.isfinite(v) for v in (e["mu"], e["sigma"])):
            raise InputError(f"the value model's residuals are not finite (mu {e['mu']}, sigma {e['sigma']}): "
                             "check the intervals of the input")
        threshold = {"mu": e["mu"], "sigma": e["sigma"], "k": cfg.k_sigma, "threshold": e["mu"] + cfg.k_sigma * e["sigma"],
                     "error": "standardized residual |z - mean| / sd of log1p(interval)",
                     "fitted_on": "train split, normal sessions", "steps": e["steps"]}
        write_json(out_dir / "value_threshold.json", threshold)
        summary["threshold"] = threshold["threshold"]
    Path(job.resume_path).unlink(missing_ok=True)  # finished: a re-run trains afresh
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


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
        pca_model = pca.fit(spark, patterns)
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
    sessions, _, cached = score_sessions(spark, cfg, bundle, traces, cfg.top_g, cfg.k_sigma)
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
        for t in tasks:
            summary["tasks"][t] = train_lstm(spark, cfg, t, traces, vocab_size, out_dir, run_id, version)
        summary["quantitative"] = fit_quantitative(spark, cfg, traces, run_id, out_dir)
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
