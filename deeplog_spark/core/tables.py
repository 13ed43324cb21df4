"""Delta table I/O: every stage writes whole tables atomically and re-runs replace, never append.

A table is addressed by its location (a path string, the default) or by a :class:`TableRef`,
which adds a catalog name (``catalog_schema``): the data stays at the location, and the table is
registered in the session catalog as an external Delta table, read and written by that name.
Every function works over Spark Connect too: there, table metadata comes from SQL
(``DESCRIBE DETAIL``/``HISTORY``), not from the JVM-side ``DeltaTable`` API.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar, Union

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import table_docs
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.names import TableRef

log = logging.getLogger(__name__)


Table = Union[str, TableRef]


def as_ref(table: Table) -> TableRef:
    return table if isinstance(table, TableRef) else TableRef(str(table))


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect session (no JVM in this process, no SparkContext)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")

T = TypeVar("T")
#: (txnAppId, txnVersion) of the writes in progress (:func:`idempotent`), or None.
_TXN: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("delta_txn", default=None)


def current_txn() -> tuple[str, int] | None:
    """The (txnAppId, txnVersion) of the :func:`idempotent` block in progress, or None."""
    return _TXN.get()


@contextlib.contextmanager
def idempotent(app_id: str, version: int) -> Iterator[None]:
    """Every Delta write inside carries ``txnAppId``/``txnVersion``: a table that already holds a
    commit of ``app_id`` at ``version`` or later skips the write. A stream's micro-batch wraps its
    writes in this (app id: its query, version: the batch id), so a micro-batch that is run again
    after a crash writes nothing twice. Inside, :func:`replace_where` appends instead of replacing
    (the rows it would replace can only come from an attempt of the same version, which the ids
    skip); whole-table writes still replace. Each table must be written at most once inside, and
    ``version`` must grow: a write at a version a table already took is skipped without a word.
    """
    token = _TXN.set((app_id, int(version)))
    try:
        yield
    finally:
        _TXN.reset(token)

@contextlib.contextmanager
def session_conf(spark: SparkSession, conf: Mapping[str, str]) -> Iterator[None]:
    """``conf`` set on the session inside, and restored after."""
    before = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


#: Whether a replaceWhere write checks that its rows match the condition (``replace_where(anywhere=True)``).
REPLACE_WHERE_CHECK = "spark.databricks.delta.replaceWhere.constraintCheck.enabled"
#: The commit's user metadata (``DESCRIBE HISTORY``'s ``userMetadata``): see :func:`commit_note`.
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"


def commit_note(spark: SparkSession, note: str):
    """Delta commits inside carry ``note`` as their user metadata, so :func:`version_before` can
    tell which versions a batch wrote (the writes of a batch that was killed)."""
    return session_conf(spark, {USER_METADATA: note})


def version_before(spark: SparkSession, path: Table, note: str) -> int | None:
    """The newest version of the table that was not written under ``note`` (:func:`commit_note`);
    None when the newest versions all were (the table was created under it)."""
    for row in spark.sql(f"DESCRIBE HISTORY {as_ref(path).sql} LIMIT 10").collect():
        if row["userMetadata"] != note:
            return int(row["version"])
    return None


#: How often a commit that lost a race to a concurrent writer is retried (with jittered backoff).
COMMIT_ATTEMPTS = 8


def _conflicts() -> tuple[type[BaseException], ...]:
    """Delta's optimistic-concurrency exceptions: another writer committed first."""
    # delta-spark's Python API needs a classic session's JVM; loaded only on that path
    from delta.exceptions import (
        ConcurrentAppendException,
        ConcurrentDeleteDeleteException,
        ConcurrentDeleteReadException,
        ConcurrentTransactionException,
        ConcurrentWriteException,
        DeltaConcurrentModificationException,
        MetadataChangedException,
        ProtocolChangedException,
    )

    return (ConcurrentAppendException, ConcurrentDeleteDeleteException, ConcurrentDeleteReadException,
            ConcurrentTransactionException, ConcurrentWriteException, DeltaConcurrentModificationException,
            MetadataChangedException, ProtocolChangedException)


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a Delta commit conflict (including two writers creating one table)."""
    if isinstance(exc, _conflicts()):
        return True
    # the same conflicts when they reach Python wrapped in another error: by class or error name
    text = str(exc)
    return any(s in text for s in ("ProtocolChangedException", "MetadataChangedException", "ConcurrentAppendException",
                                   "DELTA_CONCURRENT_", "DELTA_PROTOCOL_CHANGED", "DELTA_METADATA_CHANGED",
                                   # two writers creating one table: the second finds it there
                                   "TABLE_OR_VIEW_ALREADY_EXISTS", "DELTA_TABLE_ALREADY_EXISTS"))


def commit_with_retry(commit: Callable[[], T], what: str, attempts: int = COMMIT_ATTEMPTS,
                      base_delay_s: float = 0.5) -> T:
    """Run ``commit`` (one Delta write), again when a concurrent writer's commit conflicts with it.

    Every write here is a replacement of a defined set of rows, so running it again after a
    conflict is safe: the retry re-reads the table and replaces the same rows, and the other
    writer's rows are kept. Other errors are raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return commit()
        except Exception as exc:  # noqa: BLE001 - filtered by is_conflict
            if attempt == attempts or not is_conflict(exc):
                raise
            delay = base_delay_s * 2 ** (attempt - 1) * (0.5 + random.random())
            log.warning("%s: concurrent commit conflict (%s), retry %d/%d in %.1f s", what,
                        type(exc).__name__, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def write_table(df: DataFrame, path: Table, partition_by: Sequence[str] = ()) -> None:
    """Replace the Delta table at ``path`` with ``df`` in one commit (a new table version).

    Readers see the previous version until the commit lands, and time travel keeps it.
    """
    replace_where(df, path, "true", partition_by, whole=True)


def write_batches(df: DataFrame, path: Table, batches: Sequence[str], append: bool,
                  partition_by: Sequence[str] = ()) -> None:
    """Write ``df`` (rows of the given ingest batches) to the Delta table at ``path``.

    ``append=False``: replace the whole table. ``append=True``: replace only the rows of these
    batches (``replaceWhere``) and keep the others, so re-running a batch is idempotent.
    """
    names = ", ".join("'" + b.replace("'", "") + "'" for b in batches)  # batch names are validated: no quotes
    replace_where(df, path, f"ingest_batch IN ({names})", partition_by, whole=not append)


def replace_where(df: DataFrame, path: Table, cond: str, partition_by: Sequence[str] = (), whole: bool = False,
                  properties: Mapping[str, str] | None = None, anywhere: bool = False) -> None:
    """Replace the rows matching SQL ``cond`` in the Delta table ``path`` with ``df`` (one commit).

    ``anywhere``: ``df``'s rows need not match ``cond`` (delete the rows of ``cond`` and add
    ``df``, in one commit), and the replacement is done inside :func:`idempotent` too.

    Creates the table (partitioned by ``partition_by``, with the table ``properties``) when it does
    not exist; ``whole=True`` replaces the whole table (and sets the ``properties`` again). Rows
    outside ``cond`` are kept, so writers of disjoint row sets can commit at the same time: a
    conflict is retried (:func:`commit_with_retry`). A named :class:`TableRef` is written by name,
    and registered first (at its location) when the catalog does not know it yet.
    """
    ref = as_ref(path)
    spark = df.sparkSession
    refuse_foreign(spark, ref.path)
    if ref.name:
        register(spark, ref)
    df = documented(df, table_name(ref))

    over_orphans = []
    txn = _TXN.get()

    def commit() -> None:
        orphans = False  # decided per attempt: after a conflict, the other writer's table is there
        if not table_exists(spark, ref):
            if create(df, ref, partition_by, properties):
                return
            orphans = True
            over_orphans.append(True)
        if whole or orphans:
            writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
            writer = writer.partitionBy(*partition_by) if partition_by else writer
            for key, value in (properties or {}).items():
                writer = writer.option(key, value)
        elif txn is not None and not anywhere:
            # inside idempotent(): the rows of cond come only from attempts of this (app, version), and
            # the transaction ids skip a second one, so an append replaces nothing and costs a quarter
            # of a replaceWhere (which scans the table for the files it removes)
            writer = df.write.format("delta").mode("append").option("mergeSchema", "true")
        else:
            writer = (df.write.format("delta").mode("overwrite").option("replaceWhere", cond)
                      .option("mergeSchema", "true"))
        if txn is not None:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", str(txn[1]))
        # anywhere: Delta checks that the written rows match replaceWhere's condition unless told not to
        with session_conf(spark, {REPLACE_WHERE_CHECK: "false"} if anywhere else {}):
            if ref.name:
                writer.option("path", ref.path).saveAsTable(ref.name)
            else:
                writer.save(ref.path)

    commit_with_retry(commit, str(ref))
    description = table_docs.table_comment(table_name(ref))
    if over_orphans and description:  # created by an overwrite, which sets no description
        spark.sql(f"ALTER TABLE {ref.sql} SET TBLPROPERTIES ('comment' = '{sql_str(description)}')")


def create(df: DataFrame, ref: TableRef, partition_by: Sequence[str] = (),
           properties: Mapping[str, str] | None = None) -> bool:
    """Create the Delta table ``ref`` from ``df`` in one commit, with its description
    (:mod:`deeplog_spark.core.table_docs`) and ``properties``; a named table is external, at its
    location. Raises when another writer created it first (a conflict: the caller retries).

    Returns False, having written nothing, when the location holds the files of a first write that
    was killed before its commit (no table yet): the caller overwrites them as before, and the
    description is set after that commit."""
    writer = df.writeTo(ref.name or f"delta.`{ref.path}`").using("delta")
    if ref.name:
        writer = writer.tableProperty("location", ref.path)
    description = table_docs.table_comment(table_name(ref))
    if description:
        writer = writer.tableProperty("comment", description)
    for key, value in (properties or {}).items():
        writer = writer.tableProperty(key, value)
    if partition_by:
        writer = writer.partitionedBy(*[F.col(c) for c in partition_by])
    try:
        writer.create()
    except Exception as exc:  # noqa: BLE001 - an AnalysisException of either client
        spark = df.sparkSession
        if "TABLE_OR_VIEW_ALREADY_EXISTS" not in str(exc) or table_exists(spark, ref):
            raise
        log.warning("%s: files of an earlier write that never committed are in the way; overwriting them", ref)
        return False
    return True


def table_name(ref: TableRef) -> str:
    """The table's own name (the last part of its location: tables live at <tables_root>/<name>)."""
    return ref.path.rstrip("/").rsplit("/", 1)[-1]


def documented(df: DataFrame, table: str) -> DataFrame:
    """``df`` with the comment of each of its columns (:mod:`deeplog_spark.core.table_docs`) in
    the column's metadata, where Delta keeps it as the column comment when it creates the table
    or adds the column."""
    comments = {c: table_docs.column_comment(table, c) for c in df.columns}
    if not any(comments.values()):
        return df
    return df.select(*[F.col(f"`{c}`").alias(c, metadata={"comment": text}) if text else F.col(f"`{c}`")
                       for c, text in comments.items()])


def register(spark: SparkSession, ref: TableRef) -> None:
    """Make ``ref.name`` an external Delta table of the catalog at ``ref.path`` (its schema
    created when missing); a table already at that location keeps its data and history."""
    if not ref.name:
        return
    if spark.catalog.tableExists(ref.name):
        _check_location(spark, ref)
        return
    schema = ref.name.rsplit(".", 1)[0]
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    if _delta_at(spark, ref.path):
        spark.sql(f"CREATE TABLE IF NOT EXISTS {ref.name} USING DELTA LOCATION '{sql_str(ref.path)}'")
        log.info("catalog: registered %s at %s", ref.name, ref.path)


#: (session, name, path) already checked: the location is read once per table and session.
_checked: set[tuple[int, str, str]] = set()


def _check_location(spark: SparkSession, ref: TableRef) -> None:
    """Refuse a catalog name that points at another location than ``tables_root`` says (a config
    that changed tables_root but kept catalog_schema would otherwise read and write the old table)."""
    key = (id(spark), ref.name or "", ref.path)
    if key in _checked:
        return
    location = spark.sql(f"DESCRIBE DETAIL {ref.name}").first()["location"] or ""
    norm = re.sub(r"^file:(//)?", "", location).rstrip("/")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", ref.path) is None and norm and norm != ref.path.rstrip("/"):
        raise InputError(f"catalog table {ref.name} is at {location}, not at {ref.path}: use another "
                         "catalog_schema, or the tables_root it was registered with")
    _checked.add(key)


def sql_str(text: str) -> str:
    """``text`` escaped for a single-quoted Spark SQL literal."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _delta_at(spark: SparkSession, path: str) -> bool:
    if not is_connect(spark):
        # delta-spark's Python API needs a classic session's JVM; loaded only on that path
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(spark, path)
    try:  # Spark Connect: no JVM-side DeltaTable here; ask the server
        return spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["format"] == "delta"
    except Exception:  # noqa: BLE001 - AnalysisException (no table, not Delta) in either client
        return False


def table_exists(spark: SparkSession, path: Table) -> bool:
    """Whether the Delta table exists (by name when it has one, else at its location)."""
    ref = as_ref(path)
    if ref.name:
        register(spark, ref)  # a table written before catalog_schema was set: named now
        return spark.catalog.tableExists(ref.name)
    return _delta_at(spark, ref.path)


def refuse_foreign(spark: SparkSession, path: str) -> None:
    """Raise InputError when ``path`` holds files but no Delta table (a plain Parquet folder, say):
    writing there would leave files Delta does not track, and reading would mislead."""
    local = path.removeprefix("file:") if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) or path.startswith("file:") else None
    # Spark marks a finished plain write with _SUCCESS; a Delta writer never does (and a Delta table
    # another writer is creating right now has data files before its log: not foreign)
    if local is not None and os.path.isfile(os.path.join(local, "_SUCCESS")) and not table_exists(spark, path):
        raise InputError(f"{path} holds files but is not a Delta table (a plain Parquet folder?): move it away "
                         "or choose another tables_root")


def read_table(spark: SparkSession, path: Table, version: int | None = None) -> DataFrame:
    """Read the Delta table (by name when it has one; optionally an older ``version``)."""
    ref = as_ref(path)
    if not table_exists(spark, ref):
        refuse_foreign(spark, ref.path)
        raise FileNotFoundError(f"no Delta table {'named ' + ref.name if ref.name else 'at ' + ref.path}: "
                                "run the stage that writes it first")
    if ref.name:
        if version is None:
            return spark.read.table(ref.name)
        return spark.sql(f"SELECT * FROM {ref.name} VERSION AS OF {int(version)}")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(ref.path)


def table_version(spark: SparkSession, path: Table) -> int:
    """Latest committed version of the Delta table."""
    return int(spark.sql(f"DESCRIBE HISTORY {as_ref(path).sql} LIMIT 1").first()["version"])


def table_id(spark: SparkSession, path: Table) -> str:
    """The Delta table's id (a UUID given when it was created): a table deleted and written again at
    the same place is another table, even at the same version."""
    return str(spark.sql(f"DESCRIBE DETAIL {as_ref(path).sql}").first()["id"])
