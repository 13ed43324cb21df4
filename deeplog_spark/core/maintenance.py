"""Table maintenance (``--task maintain``): compact the small files that scheduled appends leave,
and remove the data files no table version within the retention still needs.

For every table that exists under ``tables_root``:

1. set ``delta.deletedFileRetentionDuration`` and ``delta.logRetentionDuration`` to
   ``retention_days``, so time travel reaches back that many days and no further;
2. ``OPTIMIZE`` (bin-packing: a day of hourly batches becomes a few files per partition);
3. ``VACUUM ... RETAIN <retention_days * 24> HOURS``: the files that only versions older than the
   retention read are deleted. Delta refuses a retention under 7 days unless its safety check is
   turned off; a shorter ``retention_days`` turns it off for this statement only, with a warning,
   because a reader or writer still working on an older version then loses its files.

Each step is one Delta operation, so ``DESCRIBE HISTORY`` shows when the table was maintained.
"""

from __future__ import annotations

import logging
import time

from pyspark.sql import SparkSession

from deeplog_spark.core.config import Config
from deeplog_spark.core.logs import stage
from deeplog_spark.core.names import ALL_TABLES
from deeplog_spark.core.tables import as_ref, session_conf, table_exists

log = logging.getLogger(__name__)

#: Delta's own floor for VACUUM's retention, under which it asks for its safety check to be off.
DELTA_MIN_RETENTION_DAYS = 7
_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
#: VACUUM lists a table's files in a Spark job of this many tasks (10,000 by default, far too many for
#: a table of a few hundred files); maintenance sets it to the session's shuffle partitions.
_LISTING = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


def maintain_table(spark: SparkSession, cfg: Config, name: str) -> dict:
    """Retention properties, OPTIMIZE and VACUUM of one table; returns what each did."""
    ref = as_ref(cfg.table(name))
    days = cfg.retention_days
    t0 = time.perf_counter()
    spark.sql(f"ALTER TABLE {ref.sql} SET TBLPROPERTIES ("
              f"'delta.deletedFileRetentionDuration' = 'interval {days} days', "
              f"'delta.logRetentionDuration' = 'interval {days} days')")
    optimized = spark.sql(f"OPTIMIZE {ref.sql}").first()["metrics"]
    conf = {_LISTING: str(cfg.shuffle_partitions), **({_CHECK: "false"} if days < DELTA_MIN_RETENTION_DAYS else {})}
    with session_conf(spark, conf):
        files = spark.sql(f"VACUUM {ref.sql} RETAIN {days * 24} HOURS DRY RUN").count()
        spark.sql(f"VACUUM {ref.sql} RETAIN {days * 24} HOURS").collect()
    out = {"files_added": int(optimized["numFilesAdded"]), "files_removed": int(optimized["numFilesRemoved"]),
           "files_deleted": files, "seconds": round(time.perf_counter() - t0, 2)}
    log.info("maintain %s: OPTIMIZE %d -> %d files, VACUUM retaining %d days (%.1f s)", name,
             out["files_removed"], out["files_added"], days, out["seconds"])
    return out


def run_maintenance(spark: SparkSession, cfg: Config) -> dict:
    """Maintain every table that exists; returns per table what was done."""
    with stage("maintain") as st:
        if cfg.retention_days < DELTA_MIN_RETENTION_DAYS:
            log.warning("maintain: retention_days = %d is under Delta's %d-day floor: a reader or writer still on a "
                        "version older than that loses its files", cfg.retention_days, DELTA_MIN_RETENTION_DAYS)
        done = {name: maintain_table(spark, cfg, name) for name in ALL_TABLES
                if table_exists(spark, cfg.table(name))}
        st.update(tables=len(done), retention_days=cfg.retention_days)
    return {"retention_days": cfg.retention_days, "tables": done}
