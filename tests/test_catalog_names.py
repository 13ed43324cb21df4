"""Tables by name in the test session's catalog: writes by name are versions of the external table
at its location, a table written by path is registered when first read by name, and a name that
points at another location is refused (the real Hive metastore: tests/test_catalog.py)."""

from __future__ import annotations

import pytest

from deeplog_spark.errors import InputError
from deeplog_spark.tables import TableRef, read_table, table_version, write_table


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
