"""The README's SQL examples run against freshly built tables (docs that cannot rot)."""

import re

import pytest

from conftest import REPO

SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_readme_has_sql_examples():
    assert len(SQL_BLOCKS) >= 4


@pytest.fixture(scope="module")
def built_tables(spark, tmp_path_factory):
    from deeplog_spark.config import Config
    from deeplog_spark.pipeline import run_pipeline

    import shutil

    from conftest import SAMPLE

    tmp = tmp_path_factory.mktemp("readme")
    inputs = tmp / "traces"  # a directory of two files: the sample and one with a bad row
    inputs.mkdir()
    shutil.copy(SAMPLE / "Event_traces.csv.gz", inputs / "part1.csv.gz")
    (inputs / "part2.csv").write_text('BlockId,Features\nblk_extra,"[E5,E77]"\n')
    root = tmp / "warehouse"
    cfg = Config.load(overrides={"tables_root": str(root), "shuffle_partitions": 2, "epochs": 2,
                                 "artifacts_root": str(tmp / "artifacts"), "event_traces": str(inputs)})
    counts = run_pipeline(spark, cfg)["ingest"]  # every table the README queries
    assert (counts["trace_rows"], counts["traces"], counts["trace_rejects"]) == (3001, 3000, 1)
    return root


@pytest.mark.parametrize("sql", SQL_BLOCKS, ids=[f"block{i}" for i in range(len(SQL_BLOCKS))])
def test_readme_sql_runs(spark, built_tables, sql):
    query = "\n".join(l for l in sql.splitlines() if not l.strip().startswith("--"))
    rows = spark.sql(query.replace("delta.`/data/deeplog/warehouse/", f"delta.`{built_tables}/")).collect()
    assert rows, f"README query returned nothing:\n{sql}"


def test_readme_split_sql_equals_the_split_column(spark, built_tables):
    split_sql = [b for b in SQL_BLOCKS if "xxhash64" in b]
    assert len(split_sql) == 1
    query = split_sql[0].replace("delta.`/data/deeplog/warehouse/", f"delta.`{built_tables}/")
    from_sql = spark.sql(query)
    stored = spark.read.format("delta").load(str(built_tables / "traces")).select("block_id", "split")
    assert from_sql.count() == 3000
    assert from_sql.exceptAll(stored).count() == 0
