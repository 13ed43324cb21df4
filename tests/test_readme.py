"""The SQL examples of the README and docs/ run against freshly built tables (docs that cannot rot)."""

import re

import pytest

from conftest import REPO
#: Every ```sql block of the user documentation: the README, then docs/*.md in name order.
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SQL_BLOCKS = [b for doc in DOCS for b in re.findall(r"```sql\n(.*?)```", doc.read_text(), re.S)]


def test_readme_has_sql_examples():
    assert len(SQL_BLOCKS) >= 4


pytestmark = pytest.mark.slow  # reads the session's spark-submit run


@pytest.fixture(scope="module")
def built_tables(spark, full_run, tmp_path_factory):
    """Every table the documentation queries: a copy of the session's full pipeline run (with one rejected
    row), plus the windows table the windows query reads (``--task windows``)."""
    import shutil

    from deeplog_spark.features.runner import run_windows

    cfg, summary, _, _ = full_run
    counts = summary["ingest"]
    assert (counts["trace_rows"], counts["traces"], counts["trace_rejects"]) == (3001, 3000, 1)
    root = tmp_path_factory.mktemp("readme") / "wh"
    shutil.copytree(cfg.tables_root, root)
    built = cfg.replace(tables_root=str(root), catalog_schema="deeplog")
    run_windows(spark, built)
    from deeplog_spark import tasks
    from deeplog_spark.core.names import ALL_TABLES
    from deeplog_spark.core.tables import table_exists

    spark.sql("DROP SCHEMA IF EXISTS deeplog CASCADE")  # names of this copy, in the test session's catalog
    registered = tasks.run(spark, built, {"task": "register"})  # the tables, and the latest_verdicts view
    assert set(registered["registered"]) == {f"deeplog.{name}" for name in ALL_TABLES
                                             if table_exists(spark, built.table_path(name))}
    assert registered["latest_verdicts"]["run_id"] == summary["train"]["run_id"]
    return root.resolve()


@pytest.mark.parametrize("sql", SQL_BLOCKS, ids=[f"block{i}" for i in range(len(SQL_BLOCKS))])
def test_readme_sql_runs(spark, built_tables, sql):
    query = "\n".join(l for l in sql.splitlines() if not l.strip().startswith("--"))
    rows = spark.sql(query).collect()
    assert rows, f"documentation query returned nothing:\n{sql}"


def test_readme_split_sql_equals_the_split_column(spark, built_tables):
    split_sql = [b for b in SQL_BLOCKS if "xxhash64" in b]
    assert len(split_sql) == 1
    from_sql = spark.sql(split_sql[0])
    stored = spark.read.format("delta").load(str(built_tables / "traces")).select("block_id", "split")
    assert from_sql.count() == 3000
    assert from_sql.exceptAll(stored).count() == 0
