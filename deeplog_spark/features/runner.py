"""The windows runner: the sliding windows of the traces written to the ``windows`` table (an export
for SQL; the models build their rows from ``traces``)."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.config import Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.logs import stage
from deeplog_spark.core.tables import read_table, table_exists, table_version, write_batches
from deeplog_spark.features.train_rows import vocab_size_of
from deeplog_spark.features.windows import sliding_windows
from deeplog_spark.train.job import markers

log = logging.getLogger(__name__)


def run_windows(spark: SparkSession, cfg: Config) -> dict:
    """Explode the traces table into the windows table. Returns its counts.

    ``append=False``: rebuild the whole table. ``append=True``: window the batches of ``traces`` that
    have no windows yet or were ingested again since (or the batch named by ``ingest_batch``), drop
    the windows of batches no longer in ``traces`` (a replacing ingest removed them), keep the rest.
    A table of windows of another length is refused (rebuild it without ``--append``).
    """
    with stage("windows") as st:
        traces_path = cfg.table(schemas.TRACES)
        traces = read_table(spark, traces_path)
        path = cfg.table(schemas.WINDOWS)
        batches: list[str] = []
        if cfg.append:
            batches = _stale_batches(spark, cfg, traces, path)
            traces = traces.where(F.col("ingest_batch").isin(batches))
            st["batches"] = ",".join(batches) or "none"
        if cfg.append and not batches:
            log.info("windows: every ingest batch already has its windows; nothing to do")
            st.update(h=cfg.h, traces_version=table_version(spark, traces_path), windows=0, splits={})
            return dict(st)
        windows = sliding_windows(traces, cfg.h, markers(cfg, vocab_size_of(spark, cfg)))
        write_batches(windows, path, batches, cfg.append, partition_by=["split"])
        written = read_table(spark, path)
        if cfg.append:
            written = written.where(F.col("ingest_batch").isin(batches))
        splits = {r["split"]: r["n"] for r in written.groupBy("split").agg(F.count(F.lit(1)).alias("n")).collect()}
        st.update(h=cfg.h, traces_version=table_version(spark, traces_path),
                  windows=sum(splits.values()), splits=splits)
    return dict(st)


def _stale_batches(spark: SparkSession, cfg: Config, traces: DataFrame, windows_path: str) -> list[str]:
    """Batches whose windows are missing or older than their traces, or whose traces are gone (one
    small aggregation each)."""
    def stamps(df: DataFrame) -> dict:
        return {r[0]: r[1] for r in df.groupBy("ingest_batch").agg(F.max("ingested_at")).collect() if r[0] is not None}

    have: dict = {}
    if table_exists(spark, windows_path):
        windows = read_table(spark, windows_path)
        h = windows.select(F.size("window")).limit(1).collect()
        if h and h[0][0] != cfg.h:
            raise InputError(f"the windows table {windows_path} holds windows of h={h[0][0]}, not h={cfg.h}: "
                             "run the windows task without --append to rebuild it")
        have = stamps(windows) if "ingested_at" in windows.columns else {}
    if cfg.ingest_batch:
        return [cfg.ingest_batch]
    current = stamps(traces)
    return sorted({b for b, at in current.items() if have.get(b, "missing") != at} | (set(have) - set(current)))
