"""What an operator runs beside scoring: alerts to a webhook, the record of every detection, the
analysts' view, per-batch metrics and table maintenance."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.maintenance import run_maintenance
from deeplog_spark.core.tables import read_table, write_table
from deeplog_spark.detect.verdicts import run_detect
from deeplog_spark.evaluate.metrics import run_evaluate
from deeplog_spark.integrations.alerts import post_alert

from test_detection import RUN, detect_cfg, handmade  # noqa: F401 - the hand-made run and its tables, as fixtures


class _Hook:
    """A local HTTP server on 127.0.0.1 that records the JSON bodies it gets and answers the first
    ``fail_first`` requests with HTTP 500. Started and stopped by the test."""

    def __init__(self, fail_first: int = 0):
        self.bodies: list[dict] = []
        self.fail_first = fail_first
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if hook.fail_first > 0:
                    hook.fail_first -= 1
                    self.send_response(500)
                else:
                    hook.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alert"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_alert_is_posted_as_json_and_retried_after_a_server_error():
    with _Hook(fail_first=1) as hook:
        out = post_alert(hook.url, {"new_anomalies": 3, "run_id": "r1"}, first_pause_s=0.01)
    assert out == {"status": "sent", "attempts": 2, "error": None}
    assert hook.bodies == [{"new_anomalies": 3, "run_id": "r1"}]


def test_a_failing_webhook_is_reported_never_raised(caplog):
    out = post_alert(f"http://127.0.0.1:{_closed_port()}/alert", {"x": 1}, attempts=3, first_pause_s=0.01)
    assert out["status"] == "failed" and out["attempts"] == 3 and out["error"]
    assert "failed after 3 attempts" in caplog.text
    with _Hook(fail_first=5) as hook:
        out = post_alert(hook.url, {"x": 1}, attempts=2, first_pause_s=0.01)
    assert out == {"status": "failed", "attempts": 2, "error": "HTTP 500"} and hook.bodies == []


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1:1/x"])
def test_a_malformed_webhook_url_is_reported_never_raised(url):
    assert post_alert(url, {"x": 1}, attempts=1)["status"] == "failed"


# -- on Spark: the detection record, alerts, the analysts' view, per-batch metrics, maintenance ----


@pytest.fixture
def two_days(spark, detect_cfg):  # noqa: F811 - the imported fixture
    """The hand-made tables with their sessions in two ingest batches, day1 and day2 (by block id)."""
    path = detect_cfg.table_path(schemas.TRACES)
    traces = read_table(spark, path).withColumn(
        "ingest_batch", F.when(F.abs(F.hash("block_id")) % 2 == 0, "day1").otherwise("day2")).cache()
    write_table(traces, path)
    return detect_cfg


def test_each_detection_is_recorded_and_new_anomalies_are_alerted(spark, two_days):
    cfg = two_days
    with _Hook() as hook:
        cfg = cfg.replace(alert_webhook=hook.url)
        day1 = run_detect(spark, cfg.replace(ingest_batch="day1"))
        again = run_detect(spark, cfg.replace(ingest_batch="day1"))  # nothing new: no alert
        day2 = run_detect(spark, cfg.replace(ingest_batch="day2"))
    runs = read_table(spark, cfg.table_path(schemas.DETECTION_RUNS)).orderBy("detected_at").collect()
    assert [r.ingest_batch for r in runs] == ["day1", "day1", "day2"]
    assert [r.detection_id for r in runs] == [day1["detection_id"], again["detection_id"], day2["detection_id"]]
    assert runs[0].anomalies > 0 and runs[2].anomalies > 0
    assert [r.new_anomalies for r in runs] == [runs[0].anomalies, 0, runs[2].anomalies]
    assert [r.alert_status for r in runs] == ["sent", None, "sent"]
    assert [b["new_anomalies"] for b in hook.bodies] == [runs[0].anomalies, runs[2].anomalies]
    assert {s["block_id"] for s in hook.bodies[1]["new_sessions"]} <= {
        r.block_id for r in read_table(spark, cfg.table_path(schemas.VERDICTS)).where("anomalous AND ingest_batch = 'day2'").collect()}
    # every verdict names the detection that wrote it, when, and that it is final
    verdicts = read_table(spark, cfg.table_path(schemas.VERDICTS))
    by_batch = {r.ingest_batch: r for r in verdicts.groupBy("ingest_batch").agg(
        F.collect_set("detection_id").alias("ids"), F.collect_set("verdict_status").alias("status"),
        F.count(F.lit(1)).alias("n")).collect()}
    assert by_batch["day1"].ids == [again["detection_id"]] and by_batch["day2"].ids == [day2["detection_id"]]
    assert by_batch["day1"].status == ["final"] and runs[1].sessions == by_batch["day1"].n


def test_a_failing_webhook_never_fails_the_detection(spark, two_days):
    cfg = two_days.replace(alert_webhook=f"http://127.0.0.1:{_closed_port()}/alert", ingest_batch="day1")
    stats = run_detect(spark, cfg)
    assert stats["alert"] == "failed" and stats["new_anomalies"] > 0
    assert read_table(spark, cfg.table_path(schemas.DETECTION_RUNS)).first().alert_status == "failed"


def test_eval_of_one_batch_counts_every_labelled_session_of_it(spark, two_days):
    cfg = two_days
    run_detect(spark, cfg)
    whole = run_evaluate(spark, cfg)
    day2 = run_evaluate(spark, cfg.replace(ingest_batch="day2"))
    labelled = read_table(spark, cfg.table_path(schemas.TRACES)).where("ingest_batch = 'day2' AND label IS NOT NULL").count()
    fused = next(m for m in day2["metrics"] if m["detector"] == "fused")
    assert fused["split"] == "all" and fused["sessions"] == labelled and fused["tp"] + fused["fn"] > 0
    metrics = read_table(spark, cfg.table_path(schemas.METRICS))
    assert metrics.where("ingest_batch = 'day2'").select("split").distinct().collect()[0][0] == "all"
    assert metrics.where("ingest_batch IS NULL").count() == len(whole["metrics"])  # the whole evaluation is kept
    run_evaluate(spark, cfg.replace(ingest_batch="day2"))  # a re-run replaces its own rows only
    assert read_table(spark, cfg.table_path(schemas.METRICS)).count() == len(whole["metrics"]) + len(day2["metrics"])
    report = Path(cfg.artifacts_root) / "runs" / RUN / "eval" / "batch_day2" / "classification_report.md"
    assert "Batch day2" in report.read_text()


def test_the_latest_view_and_the_comments_explain_the_tables(spark, two_days):
    cfg = two_days.replace(catalog_schema="ops_view")
    try:
        run_detect(spark, cfg.replace(ingest_batch="day1"))
        run_detect(spark, cfg.replace(ingest_batch="day2", top_g=1))
        run_detect(spark, cfg.replace(ingest_batch="day2"))  # the newest detection: g = 2, day2 replaced
        latest = spark.sql("SELECT * FROM ops_view.latest_verdicts")
        n_sessions = read_table(spark, cfg.table_path(schemas.TRACES)).count()
        assert latest.count() == n_sessions == latest.select("block_id").distinct().count()
        assert {(r.g, r.verdict_status) for r in latest.select("g", "verdict_status").distinct().collect()} == {(2, "final")}
        for table in (schemas.VERDICTS, schemas.DETECTION_RUNS, schemas.TRACES):
            described = spark.sql(f"DESCRIBE TABLE ops_view.{table}").collect()
            columns = [r for r in described if r.col_name and not r.col_name.startswith("#")][:len(
                read_table(spark, cfg.table(table)).columns)]
            assert columns and all(r.comment for r in columns), (table, [r.col_name for r in columns if not r.comment])
            assert spark.sql(f"DESCRIBE DETAIL ops_view.{table}").first()["description"], table
    finally:
        spark.sql("DROP SCHEMA IF EXISTS ops_view CASCADE")


def test_maintenance_compacts_and_vacuums_every_table(spark, two_days):
    cfg = two_days
    run_detect(spark, cfg.replace(ingest_batch="day1"))
    run_detect(spark, cfg.replace(ingest_batch="day2"))
    before = read_table(spark, cfg.table_path(schemas.VERDICTS)).count()
    out = run_maintenance(spark, cfg.replace(retention_days=7))
    assert {schemas.TRACES, schemas.VERDICTS, schemas.DETECTION_RUNS} <= set(out["tables"])
    history = {r.operation for r in spark.sql(f"DESCRIBE HISTORY delta.`{cfg.table_path(schemas.VERDICTS)}`").collect()}
    assert {"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"} <= history
    props = spark.sql(f"DESCRIBE DETAIL delta.`{cfg.table_path(schemas.VERDICTS)}`").first()["properties"]
    assert props["delta.deletedFileRetentionDuration"] == "interval 7 days"
    assert read_table(spark, cfg.table_path(schemas.VERDICTS)).count() == before
