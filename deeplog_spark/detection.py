"""Detect stage: score windows with a trained run's models, then per-BlockId verdicts.

Scoring is a ``pandas_udf`` of the Iterator form: each task loads the model once (from the
checkpoint bytes broadcast by the driver, checked against their sha256) and scores Arrow batches.
With ``distinct_scoring`` the key model scores each distinct (window, next) once and the results
are joined back, which gives exactly the per-window results (the model is deterministic in eval
mode); the value model always scores window by window (continuous intervals rarely repeat).

Decisions per window: ``key_anomaly`` = rank of the true next event > g (or an event never seen in
training, with ``key_reason``); ``value_anomaly`` = |error| > mu + k*sigma; ``fused_anomaly`` =
key OR value. A session (BlockId) is anomalous if any of its windows is.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark import schemas
from deeplog_spark.runs import read_json, resolve_run_id, run_dir, validate_run_id, write_json
from deeplog_spark.config import Config
from deeplog_spark.errors import InputError
from deeplog_spark.logs import stage
from deeplog_spark.tables import read_table, replace_where

log = logging.getLogger(__name__)

KEY_OUT = "key_rank int, key_score float, top_g array<int>, key_reason string"


class ModelBundle:
    """A run's checkpoints and statistics as the driver ships them to executors."""

    def __init__(self, artifacts_root: str, run_id: str | None):
        try:
            self.run_id = resolve_run_id(artifacts_root, run_id)
        except ValueError as exc:  # a malformed --model
            raise InputError(str(exc)) from exc
        self.dir = run_dir(artifacts_root, self.run_id)
        if not self.dir.is_dir():
            raise InputError(f"no model run {self.run_id!r} under {self.dir.parent}")
        key = self.dir / "key_model.pt"
        if not key.is_file():
            raise InputError(f"run {self.run_id} has no key model ({key} missing)")
        from deeplog_spark.nn.model import load_checkpoint

        _, payload = load_checkpoint(key, expect_task="key")  # validate on the driver first
        self.key_bytes = key.read_bytes()
        self.vocab_size = int(payload["extra"]["vocab_size"])
        self.train_vocab = list(payload["extra"]["train_vocab"])
        self.value_bytes = None
        value = self.dir / "value_model.pt"
        if value.is_file():
            load_checkpoint(value, expect_task="value")
            self.value_bytes = value.read_bytes()
            self.norm = read_json(self.dir / "value_norm.json")
            self.errors = read_json(self.dir / "value_threshold.json")

    def value_threshold(self, k: float) -> float | None:
        if self.value_bytes is None:
            return None
        return self.errors["mu"] + k * self.errors["sigma"]


def _key_udf(bc, sha: str, vocab_size: int, train_vocab: list[int], top_g: int, batch_size: int):
    @F.pandas_udf(KEY_OUT)
    def score_key(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np
        import torch

        from deeplog_spark.nn.model import load_checkpoint_bytes
        from deeplog_spark.nn.scoring import KeyScorer

        torch.set_num_threads(1)  # one Spark task per core
        model, _ = load_checkpoint_bytes(bc.value, "key", sha, "key_model.pt")
        scorer = KeyScorer(model, vocab_size, train_vocab, top_g, batch_size)
        for pdf in batches:
            if len(pdf) == 0:
                yield pd.DataFrame({"key_rank": [], "key_score": [], "top_g": [], "key_reason": []})
                continue
            out = scorer.score(np.stack(pdf["window"].to_numpy()), pdf["next_event"].to_numpy())
            yield pd.DataFrame({"key_rank": out["key_rank"], "key_score": out["key_score"],
                                "top_g": list(out["top_g"]), "key_reason": out["key_reason"]})

    return score_key


def _value_udf(bc, sha: str, mean: float, std: float, batch_size: int):
    @F.pandas_udf("float")
    def score_value(batches: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
        import numpy as np
        import torch

        from deeplog_spark.nn.model import load_checkpoint_bytes
        from deeplog_spark.nn.scoring import ValueScorer

        torch.set_num_threads(1)
        model, _ = load_checkpoint_bytes(bc.value, "value", sha, "value_model.pt")
        scorer = ValueScorer(model, mean, std, batch_size)
        for pdf in batches:
            if len(pdf) == 0:
                yield pd.Series([], dtype="float32")
                continue
            yield pd.Series(scorer.score(np.stack(pdf["window_intervals"].to_numpy()),
                                         pdf["next_interval"].to_numpy()))

    return score_value


def score_windows(spark: SparkSession, windows: DataFrame, bundle: ModelBundle, top_g: int,
                  batch_size: int, distinct: bool) -> DataFrame:
    """Model outputs for every window: key_rank, key_score, top_g, key_reason, value_error."""
    sc = spark.sparkContext
    key_bc = sc.broadcast(bundle.key_bytes)
    key_udf = _key_udf(key_bc, hashlib.sha256(bundle.key_bytes).hexdigest(), bundle.vocab_size,
                       bundle.train_vocab, top_g, batch_size)
    kcols = ["window", "next_event"]
    if distinct:
        scored = (windows.select(*kcols).distinct()
                  .select(*kcols, key_udf(F.struct(*kcols)).alias("s")).select(*kcols, "s.*"))
        out = windows.join(scored, kcols, "left")
    else:
        out = windows.select("*", key_udf(F.struct(*kcols)).alias("s")).select(*windows.columns, "s.*")

    if bundle.value_bytes is None:
        return out.withColumn("value_error", F.lit(None).cast("float"))
    value_bc = sc.broadcast(bundle.value_bytes)
    value_udf = _value_udf(value_bc, hashlib.sha256(bundle.value_bytes).hexdigest(),
                           bundle.norm["mean"], bundle.norm["std"], batch_size)
    # The value model scores every window where it is: intervals rarely repeat exactly (78 % of
    # the windows are distinct on the generated 575k workload), so a global distinct would shuffle
    # every window's intervals for little saving (105 s against 42 s there; README "Benchmarks").
    vcols = ["window_intervals", "next_interval"]
    return out.withColumn("value_error", F.when(F.col("next_interval").isNotNull(), value_udf(F.struct(*vcols))))


def decide(scored: DataFrame, run_id: str, g: int, k: float, value_threshold: float | None) -> DataFrame:
    """Per-window decisions at (g, k); the ``predictions`` table's rows."""
    key_anomaly = F.col("key_rank") > F.lit(g)
    if value_threshold is None:
        value_anomaly = F.lit(None).cast("boolean")
        window_score = F.col("key_rank") / F.lit(g)
    else:
        value_anomaly = F.col("value_error") > F.lit(value_threshold)
        window_score = F.greatest(F.col("key_rank") / F.lit(g), F.col("value_error") / F.lit(value_threshold))
    return scored.select(
        F.lit(run_id).alias("run_id"), F.lit(g).alias("g"), F.lit(float(k)).alias("k"),
        "block_id", "split", "label", "position", "window",
        F.col("next_event").alias("y_true"),
        F.slice("top_g", 1, g).alias("y_pred_topg"),
        "key_rank", "key_score", key_anomaly.alias("key_anomaly"), "key_reason",
        "value_error", value_anomaly.alias("value_anomaly"),
        (key_anomaly | F.coalesce(value_anomaly, F.lit(False))).alias("fused_anomaly"),
        window_score.cast("double").alias("window_score"),
        "ingest_batch",
    )


def session_verdicts(predictions: DataFrame) -> DataFrame:
    """One row per (run_id, g, k, block_id): anomalous if any window is, with its evidence."""
    fused_pos = F.when(F.col("fused_anomaly"), F.col("position"))
    first = F.min_by(F.struct(F.col("window"), F.col("y_true").alias("next_event"), F.col("key_reason")), fused_pos)
    return (
        predictions.groupBy("run_id", "g", "k", "block_id", "split", "label", "ingest_batch")
        .agg(
            F.max(F.col("fused_anomaly").cast("int")).cast("boolean").alias("anomalous"),
            F.max(F.col("key_anomaly").cast("int")).cast("boolean").alias("key_anomalous"),
            F.max(F.col("value_anomaly").cast("int")).cast("boolean").alias("value_anomalous"),
            F.count(F.lit(1)).cast("int").alias("n_windows"),
            F.sum(F.col("fused_anomaly").cast("int")).cast("int").alias("n_anomalous_windows"),
            F.max("window_score").alias("score"),
            F.max("key_rank").alias("max_key_rank"),
            F.max("key_score").alias("max_key_score"),
            F.max("value_error").alias("max_value_error"),
            F.min(fused_pos).alias("first_anomalous_position"),
            first.alias("_first"),
        )
        .select("*", F.col("_first.window").alias("first_anomaly_window"),
                F.col("_first.next_event").alias("first_anomaly_next_event"),
                F.col("_first.key_reason").alias("first_anomaly_reason"))
        .drop("_first")
    )


def _rows_of(run_id: str, g: int, k: float, batch: str = "") -> str:
    """SQL predicate of one detection's rows (names are validated: no quotes can get in)."""
    cond = f"run_id = '{validate_run_id(run_id)}' AND g = {int(g)} AND k = {float(k)!r}"
    return cond + (f" AND ingest_batch = '{validate_run_id(batch)}'" if batch else "")


def replace_rows(df: DataFrame, path: str, run_id: str, g: int, k: float, batch: str = "") -> None:
    """Write ``df`` as the rows of (run_id, g, k[, batch]) in the Delta table at ``path``, replacing them."""
    replace_where(df, path, _rows_of(run_id, g, k, batch), partition_by=["run_id"])


def run_detect(spark: SparkSession, cfg: Config, model: str | None = None) -> dict:
    """Score the windows table with run ``model`` (default: latest) at (top_g, k_sigma).

    With ``ingest_batch`` set only that batch's windows are scored, and only its rows replaced.
    """
    with stage("detect") as st:
        bundle = ModelBundle(cfg.artifacts_root, model)
        if cfg.top_g > bundle.vocab_size + 1:
            raise InputError(f"--top_g {cfg.top_g} exceeds the model's {bundle.vocab_size + 1} outputs")
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.detect_batch_size))
        windows = read_table(spark, cfg.table_path(schemas.WINDOWS))
        batch = cfg.ingest_batch
        if batch:
            windows = windows.where(F.col("ingest_batch") == batch)
            if windows.limit(1).count() == 0:
                raise InputError(f"no windows of batch {batch!r}: ingest it and run the windows task first")
        threshold = bundle.value_threshold(cfg.k_sigma)
        t0 = time.perf_counter()
        scored = score_windows(spark, windows, bundle, cfg.top_g, cfg.detect_batch_size, cfg.distinct_scoring)
        preds = decide(scored, bundle.run_id, cfg.top_g, cfg.k_sigma, threshold)
        pred_path = cfg.table_path(schemas.PREDICTIONS)
        replace_rows(preds, pred_path, bundle.run_id, cfg.top_g, cfg.k_sigma, batch)
        score_s = time.perf_counter() - t0
        mine = read_table(spark, pred_path).where(_rows_of(bundle.run_id, cfg.top_g, cfg.k_sigma, batch))
        verdicts = session_verdicts(mine)
        replace_rows(verdicts, cfg.table_path(schemas.VERDICTS), bundle.run_id, cfg.top_g, cfg.k_sigma, batch)
        v = read_table(spark, cfg.table_path(schemas.VERDICTS)).where(
            _rows_of(bundle.run_id, cfg.top_g, cfg.k_sigma, batch))
        counts = v.agg(F.count(F.lit(1)).alias("sessions"), F.sum(F.col("anomalous").cast("int")).alias("anomalous"),
                       F.sum("n_windows").alias("windows")).first()
        stats = {"run_id": bundle.run_id, "g": cfg.top_g, "k": cfg.k_sigma, "value_threshold": threshold,
                 "ingest_batch": batch or None,
                 "windows": int(counts["windows"] or 0), "sessions": int(counts["sessions"] or 0),
                 "anomalous_sessions": int(counts["anomalous"] or 0), "distinct_scoring": cfg.distinct_scoring,
                 "scoring_seconds": round(score_s, 2),
                 "windows_per_s": round((counts["windows"] or 0) / max(score_s, 1e-9), 1)}
        suffix = f"_{batch}" if batch else ""
        write_json(bundle.dir / "detection" / f"detection_stats_g{cfg.top_g}_k{cfg.k_sigma}{suffix}.json", stats)
        st.update(stats)
    return stats
