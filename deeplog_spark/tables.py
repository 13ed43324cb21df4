"""Delta table I/O: every stage writes whole tables atomically and re-runs replace, never append."""

from __future__ import annotations

import logging
from typing import Sequence

from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def write_table(df: DataFrame, path: str, partition_by: Sequence[str] = ()) -> None:
    """Replace the Delta table at ``path`` with ``df`` in one commit (a new table version).

    Readers see the previous version until the commit lands, and time travel keeps it.
    """
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def write_batches(df: DataFrame, path: str, batches: Sequence[str], append: bool,
                  partition_by: Sequence[str] = ()) -> None:
    """Write ``df`` (rows of the given ingest batches) to the Delta table at ``path``.

    ``append=False``: replace the whole table. ``append=True``: replace only the rows of these
    batches (``replaceWhere``) and keep the others, so re-running a batch is idempotent.
    """
    spark = df.sparkSession
    if not append or not table_exists(spark, path):
        write_table(df, path, partition_by)
        return
    names = ", ".join("'" + b.replace("'", "") + "'" for b in batches)  # batch names are validated: no quotes
    (df.write.format("delta").mode("overwrite").option("replaceWhere", f"ingest_batch IN ({names})")
     .option("mergeSchema", "true").save(path))


def table_exists(spark: SparkSession, path: str) -> bool:
    """Whether a Delta table exists at ``path``."""
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def read_table(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """Read the Delta table at ``path`` (optionally an older ``version``)."""
    if not table_exists(spark, path):
        raise FileNotFoundError(f"no Delta table at {path}: run the stage that writes it first")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def table_version(spark: SparkSession, path: str) -> int:
    """Latest committed version of the Delta table at ``path``."""
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, path).history(1).select("version").first()[0]
