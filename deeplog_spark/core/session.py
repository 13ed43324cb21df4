"""The one Spark session builder, used by jobs, tests and notebooks alike.

Delta Lake is enabled through its SQL extension and catalog; its jars come from Maven Central via
``spark.jars.packages`` (cached in the Ivy cache after the first run). Under ``spark-submit`` the
master and the packages come from the command line (see ``spark-submit.sh``), so the builder only
sets them for plain ``python`` runs.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import sys
from typing import Mapping

from pyspark.sql import SparkSession

from deeplog_spark.core.config import Config
from deeplog_spark.core.logs import log_dir
from deeplog_spark.resources import resource_path

log = logging.getLogger(__name__)


def delta_package() -> str:
    """Maven coordinate of the Delta jar matching the installed delta-spark and pyspark.

    Delta 4.4 publishes one artifact per Spark minor version, e.g.
    ``io.delta:delta-spark_4.0_2.13:4.4.1`` for pyspark 4.0.x.
    """
    # this module stays importable without pyspark (the Spark-free side uses it)
    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{md.version('delta-spark')}"


#: Files a write task keeps open at once, one per partition value, instead of sorting its rows.
CONCURRENT_WRITERS = 4

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def _log4j_conf():
    """The packaged ``log4j2.properties`` (``conf/log4j2.properties`` of a checkout links to it)."""
    return resource_path("log4j2.properties")


def metastore_conf(metastore_dir: str) -> dict[str, str]:
    """Spark settings of a Hive catalog kept in an embedded Derby metastore in ``metastore_dir``
    (none for ''). Static settings, so they apply when this builder creates the session."""
    if not metastore_dir:
        return {}
    root = os.path.abspath(metastore_dir)
    return {"spark.sql.catalogImplementation": "hive",
            "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={root}/metastore_db;create=true",
            "spark.sql.warehouse.dir": os.path.join(root, "warehouse")}


def _under_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands the Python driver its gateway port.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_spark(
    app_name: str = "deeplog-spark",
    config: Config | None = None,
    master: str | None = None,
    extra_conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """Get or create the SparkSession with Delta enabled.

    ``master`` (or ``config.master``) applies to plain-python runs; under spark-submit its
    ``--master`` is kept. ``extra_conf`` is applied last.

    Example::

        spark = build_spark("tests", master="local[2]", extra_conf={"spark.ui.enabled": "false"})
    """
    cfg = config or Config.load()
    builder = SparkSession.builder.appName(app_name)
    conf: dict[str, str] = dict(DELTA_CONF)
    conf["spark.sql.shuffle.partitions"] = str(cfg.shuffle_partitions)
    # Delta replays its log with this many tasks (default 50); our tables have short logs, and
    # 50 tiny tasks per commit dominated small runs (5-13 s per write on 2 cores).
    conf["spark.databricks.delta.snapshotPartitions"] = str(max(1, min(cfg.shuffle_partitions, 8)))
    # Stage start/end and row counts are logged by the jobs; console progress bars garble logs.
    conf["spark.ui.showConsoleProgress"] = "false"
    # A partitioned write (verdicts and predictions by run_id, windows by split) otherwise sorts every
    # task's rows by the partition columns first, to open one file at a time. Each task here writes
    # one to three partition values, so one open writer per value needs no sort (more than this many
    # values in a task and Spark falls back to the sort).
    conf["spark.sql.maxConcurrentOutputFileWriters"] = str(CONCURRENT_WRITERS)
    conf["spark.sql.debug.maxToStringFields"] = "200"  # our parse plans are wide; avoids a warning per job
    # Session time zone fixed so timestamps in tables do not depend on the machine.
    conf["spark.sql.session.timeZone"] = "UTC"
    conf.update(metastore_conf(cfg.metastore_dir))
    if not _under_spark_submit():
        builder = builder.master(master or cfg.master)
        conf["spark.jars.packages"] = delta_package()
        conf["spark.driver.memory"] = cfg.driver_memory
        log4j = _log4j_conf()
        if log4j is not None:  # the terminal gets one line per Spark warning; the full log a file

            conf["spark.driver.extraJavaOptions"] = (f"-Dlog4j2.configurationFile={log4j.as_uri()} "
                                                     f"-Ddeeplog.log.dir={log_dir()}")
        # Python workers must see the same packages (pandas, torch) as this driver; PySpark
        # reads the worker interpreter from this variable when the context starts.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark %s master=%s app=%s", spark.version, spark.sparkContext.master, app_name)
    return spark
