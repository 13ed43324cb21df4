"""Train stage on Spark: windows table -> Petastorm converters -> TorchDistributor -> artifacts.

One train function (:func:`petastorm_train_fn`) runs on every rank: it opens this rank's shard of
the Petastorm cache, wraps the model in DistributedDataParallel (gloo on CPU, nccl on GPU) and
calls the Spark-free :func:`deeplog_spark.nn.trainer.run_task`. The driver saves what rank 0
returns: checkpoint, history, loss curve and, for the value model, norm and threshold JSON.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark import schemas
from deeplog_spark.runs import run_dir, write_json
from deeplog_spark.plots import plot_history
from deeplog_spark.config import Config
from deeplog_spark.errors import InputError
from deeplog_spark.logs import stage
from deeplog_spark.tables import read_table, table_version
from deeplog_spark.nn.trainer import model_config
from deeplog_spark.train_data import (
    has_intervals,
    interval_stats,
    key_dataset,
    normal_windows,
    value_dataset,
)

log = logging.getLogger(__name__)

TRAIN_TASKS = ("key", "value", "both")
#: Config keys that define a trained model; with the input table version they make the run id.
RUN_KEYS = ("h", "embed_dim", "key_hidden", "key_layers", "key_dropout", "value_hidden", "value_layers",
            "value_dropout", "batch_size", "lr", "lr_decay", "epochs", "patience", "min_delta", "distinct_windows",
            "max_train_rows", "max_val_rows", "seed", "train_ratio", "val_ratio", "test_ratio", "num_processes",
            "use_gpu")


def run_id_for(cfg: Config, windows_path: str, windows_version: int) -> str:
    """Hash of the model-defining config and the windows table (path and version)."""
    return cfg.fingerprint(RUN_KEYS, extra={"windows": os.path.abspath(windows_path),
                                            "windows_version": windows_version})


def petastorm_train_fn(spec: dict, train_converter, val_converter) -> dict | None:
    """The function TorchDistributor runs on each rank; returns rank 0's result."""
    import torch
    import torch.distributed as dist

    from deeplog_spark.logs import setup_logging
    from deeplog_spark.nn.sources import CountSampledSource, PetastormSource
    from deeplog_spark.nn.trainer import run_task

    setup_logging()
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if spec["use_gpu"]:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))  # no oversubscription
    if world > 1:
        dist.init_process_group("nccl" if spec["use_gpu"] else "gloo")
    if spec.get("count_sampling"):  # distinct rows: every rank loads them all and draws by count
        rows = PetastormSource(train_converter, spec["batch_size"], 0, 1, spec["seed"], spec["loader_workers"])
        train = CountSampledSource.from_batches(rows.full(), spec["epoch_rows"], batch_size=spec["batch_size"],
                                                seed=spec["seed"], rank=rank, world=world)
    else:
        train = PetastormSource(train_converter, spec["batch_size"], rank, world, spec["seed"], spec["loader_workers"])
    val = (PetastormSource(val_converter, spec["batch_size"], rank, world, spec["seed"], spec["loader_workers"])
           if val_converter is not None else None)
    try:
        result = run_task(spec, train, val, device)
    finally:
        train.close()
        if world > 1:
            dist.destroy_process_group()
    if rank != 0:
        return None
    # In local mode TorchDistributor lets every rank write the returned value to one file, so
    # another rank's None can win; rank 0 also leaves its result where the driver can read it.
    tmp = spec["result_path"] + ".tmp"
    torch.save(result, tmp)
    os.replace(tmp, spec["result_path"])
    return result


def _converter(spark: SparkSession, df: DataFrame, partitions: int):
    from petastorm.spark import make_spark_converter

    # at least one Parquet file (row group) per rank, or a shard would be empty
    return make_spark_converter(df.repartition(partitions))


def distribute(spark: SparkSession, cfg: Config, spec: dict, train_df: DataFrame, val_df: DataFrame | None) -> dict:
    """Train ``spec`` on ``train_df`` (early stopping on ``val_df``) with TorchDistributor; rank 0's result."""
    from pyspark.ml.torch.distributor import TorchDistributor

    Path(spec["result_path"]).unlink(missing_ok=True)  # never read a crashed attempt's result
    parts = max(2 * cfg.num_processes, 2)
    train_conv = _converter(spark, train_df, parts)
    val_conv = _converter(spark, val_df, parts) if val_df is not None else None
    try:
        if len(train_conv) == 0:
            raise InputError(f"no training rows for the {spec['task']} model (train split, normal sessions)")
        if val_conv is not None and len(val_conv) == 0:
            log.warning("%s: no validation rows; early stopping watches the training loss", spec["task"])
            val_conv.delete()
            val_conv = None
        log.info("%s: %d training rows, %s validation rows, %d process(es), local_mode=%s, gpu=%s",
                 spec["task"], len(train_conv), len(val_conv) if val_conv else 0, cfg.num_processes,
                 cfg.local_mode, cfg.use_gpu)
        distributor = TorchDistributor(num_processes=cfg.num_processes, local_mode=cfg.local_mode,
                                       use_gpu=cfg.use_gpu)
        result = distributor.run(petastorm_train_fn, spec, train_conv, val_conv)
    finally:
        train_conv.delete()
        if val_conv is not None:
            val_conv.delete()
    if not result and cfg.local_mode and os.path.isfile(spec["result_path"]):
        import torch

        result = torch.load(spec["result_path"], map_location="cpu", weights_only=True)
    if os.path.isfile(spec["result_path"]):
        os.remove(spec["result_path"])
    if not result:
        raise RuntimeError("TorchDistributor returned no result from rank 0")
    return result


def _resolve_tasks(task: str, windows: DataFrame) -> list[str]:
    if task not in TRAIN_TASKS:
        raise InputError(f"--task must be one of {', '.join(TRAIN_TASKS)}, got {task!r}")
    wanted = ["key", "value"] if task == "both" else [task]
    if "value" in wanted and not has_intervals(windows):
        msg = ("the windows table has no time intervals (the input had no TimeInterval column), "
               "so the value model cannot be trained")
        if task == "value":
            raise InputError(msg)
        log.warning("%s: training the key model alone", msg)
        wanted = ["key"]
    return wanted


def train_spec(cfg: Config, task: str, model_cfg: dict, out_dir: Path, **overrides) -> dict:
    """What the train function needs on every rank (plain values, pickled to the ranks)."""
    spec = {"task": task, "model_config": model_cfg, "epochs": cfg.epochs, "lr": cfg.lr,
            "patience": cfg.patience, "min_delta": cfg.min_delta, "lr_decay": cfg.lr_decay, "top_g": cfg.top_g, "seed": cfg.seed,
            "batch_size": cfg.batch_size, "count_sampling": cfg.distinct_windows, "epoch_rows": cfg.max_train_rows,
            "use_gpu": cfg.use_gpu, "loader_workers": cfg.loader_workers,
            "resume_path": str((out_dir / f"{task}_resume.pt").resolve()),
            "result_path": str((out_dir / f"{task}_result.pt").resolve())}
    spec.update(overrides)
    return spec


def set_petastorm_cache(spark: SparkSession, cfg: Config) -> None:
    """Petastorm materialises training DataFrames as Parquet under ``<artifacts_root>/petastorm_cache``."""
    from petastorm.spark import SparkDatasetConverter

    cache = Path(cfg.artifacts_root).resolve() / "petastorm_cache"
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, cache.as_uri())


def run_train(spark: SparkSession, cfg: Config, task: str = "both") -> dict:
    """Train the requested model(s) on the windows table; returns the run summary."""
    with stage("train") as st:
        windows_path = cfg.table_path(schemas.WINDOWS)
        windows = read_table(spark, windows_path)
        version = table_version(spark, windows_path)
        templates = read_table(spark, cfg.table_path(schemas.TEMPLATES))
        vocab_size = int(templates.agg(F.max("event_id")).first()[0])
        tasks = _resolve_tasks(task, windows)
        run_id = run_id_for(cfg, windows_path, version)
        out_dir = run_dir(cfg.artifacts_root, run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        set_petastorm_cache(spark, cfg)

        train_w, val_w = normal_windows(windows, "train"), normal_windows(windows, "val")
        summary: dict = {"run_id": run_id, "run_dir": str(out_dir), "windows_version": version,
                         "vocab_size": vocab_size, "tasks": {}}
        for t in tasks:
            t0 = time.perf_counter()
            spec = train_spec(cfg, t, model_config(cfg, t, vocab_size), out_dir)
            extra: dict = {"run_id": run_id, "windows_version": version, "distinct_windows": cfg.distinct_windows}
            if t == "key":
                train_df = key_dataset(train_w, cfg.distinct_windows, cfg.max_train_rows, cfg.seed)
                val_df = key_dataset(val_w, cfg.distinct_windows, cfg.max_val_rows, cfg.seed)
                seen = train_w.select(F.explode(F.array_union("window", F.array("next_event"))).alias("e")).distinct()
                extra["train_vocab"] = sorted(r["e"] for r in seen.collect() if r["e"] != schemas.PADDING_ID)
                extra["vocab_size"] = vocab_size
            else:
                stats = interval_stats(train_w)
                write_json(out_dir / "value_norm.json", {"mean": stats.mean, "std": stats.std,
                                                         "fitted_on": "train split, normal sessions",
                                                         "windows": stats.count})
                extra["norm"] = {"mean": stats.mean, "std": stats.std}
                train_df = value_dataset(train_w, stats, cfg.distinct_windows, cfg.max_train_rows, cfg.seed)
                val_df = value_dataset(val_w, stats, cfg.distinct_windows, cfg.max_val_rows, cfg.seed)
            result = distribute(spark, cfg, spec, train_df, val_df)
            summary["tasks"][t] = save_task(cfg, t, spec, result, extra, out_dir)
            summary["tasks"][t]["seconds"] = round(time.perf_counter() - t0, 2)
            Path(spec["resume_path"]).unlink(missing_ok=True)  # finished: a re-run trains afresh
        write_json(out_dir / "run.json", {**summary, "config": cfg.to_dict()})
        write_json(Path(cfg.artifacts_root) / "runs" / "latest.json", {"run_id": run_id})
        st.update(run_id=run_id, tasks=",".join(tasks))
    return summary


def save_task(cfg: Config, task: str, spec: dict, result: dict, extra: dict, out_dir: Path) -> dict:
    """Checkpoint, history JSON and loss curve of a trained model; returns its summary."""
    from deeplog_spark.nn.model import build_model, save_checkpoint

    model = build_model(task, spec["model_config"])
    model.load_state_dict(result["state_dict"])
    history = result["history"]
    ckpt = save_checkpoint(out_dir / f"{task}_model.pt", task, model, extra)
    write_json(out_dir / f"{task}_history.json", {k: v for k, v in result.items() if k != "state_dict"})
    plot_history(history, task, out_dir / f"{task}_loss_curve.png", cfg.top_g)
    out = {"checkpoint": str(ckpt), "epochs": len(history), "best_epoch": result["best_epoch"],
           "early_stopped": result["early_stopped"]}
    if result["best_epoch"] > 0:
        best = history[result["best_epoch"] - 1]
    elif result.get("baseline"):  # no epoch beat the starting weights (a fine-tuning run)
        best = {f"val_{k}": v for k, v in result["baseline"].items()}
    else:
        best = history[-1]
    out.update({k: best[k] for k in ("val_loss", "val_accuracy", "val_top_g_recall") if k in best})
    if result.get("baseline"):
        out["val_top_g_recall_before"] = result["baseline"].get("top_g_recall")
    out["median_windows_per_s"] = sorted(h["windows_per_s"] for h in history)[len(history) // 2]
    if task == "value":
        e = result["train_errors"]
        threshold = {"mu": e["mu"], "sigma": e["sigma"], "k": cfg.k_sigma,
                     "threshold": e["mu"] + cfg.k_sigma * e["sigma"], "error": "|predicted - actual| (z-scored)",
                     "fitted_on": "train split, normal sessions", "windows": e["windows"]}
        write_json(out_dir / "value_threshold.json", threshold)
        out["threshold"] = threshold["threshold"]
    return out
