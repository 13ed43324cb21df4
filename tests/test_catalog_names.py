"""Tables by name in the test session's catalog: writes by name are versions of the external table
at its location, a table written by path is registered when first read by name, and a name that
points at another location is refused (the real Hive metastore: tests/test_catalog.py)."""

from __future__ import annotations

import pytest

from deeplog_spark.core.errors import InputError
from deeplog_spark.core.tables import TableRef, read_table, table_version, write_table


def test_named_tables_write_read_register_and_refuse_another_location(spark, tmp_path):
    spark.sql("DROP SCHEMA IF EXISTS names_t CASCADE")
    ref = TableRef(str(tmp_path / "wh" / "x"), "names_t.x")
    write_table(spark.range(3), ref)
    write_table(spark.range(5), ref)
    assert read_table(spark, ref).count() == 5 and table_version(spark, ref) == 1
    assert read_table(spark, ref, version=0).count() == 3
    assert read_table(spark, str(tmp_path / "wh" / "x")).count() == 5  # the same table by its path
    detail = spark.sql("DESCRIBE DETAIL names_t.x").first()
    assert detail["location"].removeprefix("file:").rstrip("/") == ref.path

    by_path = str(tmp_path / "wh" / "y")
    write_table(spark.range(2), by_path)  # written before catalog_schema was set
    assert read_table(spark, TableRef(by_path, "names_t.y")).count() == 2
    assert spark.catalog.tableExists("names_t.y")

    with pytest.raises(InputError, match="is at .* not at"):
        read_table(spark, TableRef(str(tmp_path / "elsewhere" / "x"), "names_t.x"))
    spark.sql("DROP SCHEMA names_t CASCADE")


def test_table_properties_are_set_when_a_table_is_created_by_name_or_by_path(spark, tmp_path):
    from deeplog_spark.core.tables import replace_where

    spark.sql("DROP SCHEMA IF EXISTS props_t CASCADE")
    props = {"delta.dataSkippingStatsColumns": "id"}
    df = spark.range(4).selectExpr("id", "id % 2 AS part", "'x' AS text")
    for ref in (TableRef(str(tmp_path / "wh" / "p"), "props_t.p"), str(tmp_path / "byp")):
        replace_where(df, ref, "true", partition_by=["part"], properties=props)
        replace_where(df.where("part = 1"), ref, "part = 1", partition_by=["part"], properties={"delta.x": "1"})
        where = ref.name if isinstance(ref, TableRef) else f"delta.`{ref}`"
        detail = spark.sql(f"DESCRIBE DETAIL {where}").first()
        assert detail["properties"] == props, ref  # set at creation; a later write leaves them
        assert read_table(spark, ref).count() == 4
    stats = spark.read.json(str(tmp_path / "byp" / "_delta_log" / "00000000000000000000.json")) \
        .where("add IS NOT NULL").select("add.stats").first()[0]
    assert '"minValues":{"id"' in stats and "text" not in stats  # statistics of the named column only
    spark.sql("DROP SCHEMA props_t CASCADE")
