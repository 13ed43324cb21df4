"""Progress of long stages: Spark tasks done, rate and ETA; plain log lines (no control characters)
when stderr is not a terminal."""

from __future__ import annotations

import logging

from deeplog_spark.core.progress import SparkProgress


def test_progress_lines_while_spark_works(spark, monkeypatch, caplog):
    monkeypatch.setenv("DEEPLOG_PROGRESS_EVERY", "0")
    caplog.set_level(logging.INFO, logger="deeplog_spark.core.progress")
    with SparkProgress("demo", poll_s=0.1) as p:
        assert not p.tty  # pytest captures stderr: the log-line mode
        spark.range(0, 24, 1, 12).selectExpr("reflect('java.lang.Thread', 'sleep', CAST(150 AS BIGINT))").collect()
    lines = [r.getMessage() for r in caplog.records if r.name == "deeplog_spark.core.progress"]
    assert lines, "no progress line while a 2 s Spark job ran"
    assert all(l.startswith("stage demo: ") and "Spark tasks" in l and "tasks/s" in l for l in lines)
    assert any("/12 of 1 active stage(s)" in l for l in lines)
    assert not any("\r" in l or "\033" in l for l in lines)


def test_progress_off_and_nested_stages_report_once(spark, monkeypatch):
    monkeypatch.setenv("DEEPLOG_PROGRESS", "0")
    with SparkProgress("off") as p:
        assert p._thread is None
    monkeypatch.setenv("DEEPLOG_PROGRESS", "1")
    with SparkProgress("outer") as outer, SparkProgress("inner") as inner:
        assert outer._thread is not None and inner._thread is None
