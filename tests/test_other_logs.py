"""The "Other logs" commands (docs/other-logs.md) through spark-submit, on the shared Loghub samples: raw BGL
lines (Drain3, windows of 20 lines, labels rolled up) and OpenStack sessions (the generic sequence
input), each end to end: ingest, training, calibration, detection, evaluation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deeplog_spark.core import schemas
from deeplog_spark.core.tables import read_table

from conftest import REPO, submit, summary_of

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # two spark-submit runs: `make test-extended`

LOGHUB = REPO.parent / "shared" / "data" / "loghub"
needs_loghub = pytest.mark.skipif(not LOGHUB.is_dir(), reason="needs ../shared/data/loghub (the shared Loghub samples)")
FAST = ["--epochs", "2", "--steps_per_epoch", "20", "--value_epochs", "2", "--mlflow", "false"]


def _test_rows(spark, wh: Path) -> dict:
    metrics = read_table(spark, str(wh / schemas.METRICS)).where("split = 'test'").collect()
    return {(m["detector"], m["threshold_source"]): m for m in metrics}


@needs_loghub
def test_raw_bgl_lines_end_to_end(spark, tmp_path):
    wh, art = tmp_path / "wh", tmp_path / "art"
    res = submit(["--task", "full-pipeline", "--input", "raw_logs", "--raw_logs", str(LOGHUB / "BGL" / "BGL_2k.log"),
                  "--log_format", "bgl", "--segment", "lines", "--segment_lines", "20", "--anomaly_labels", "",
                  "--tables_root", str(wh), "--artifacts_root", str(art), *FAST])
    assert res.returncode == 0, res.stderr[-3000:]
    out = summary_of(res.stdout)
    ingest = out["ingest"]
    assert ingest["lines"] == 2000 == ingest["accepted_lines"] + ingest["rejected_lines"]
    assert ingest["templates_from"] == "mine" and ingest["templates"] > 50 and ingest["blocks"] == 100
    traces = read_table(spark, str(wh / schemas.TRACES))
    # 143 alert lines: every window holding one is anomalous, by the roll-up
    assert traces.where("label = 1").count() == ingest["anomalies"] > 0
    assert read_table(spark, str(wh / schemas.MINER_STATE)).count() == 1
    assert (Path(out["train"]["run_dir"]) / "miner_state.json").is_file()  # the run keeps its miner
    rows = _test_rows(spark, wh)
    assert ("fused", "val_chosen") in rows and rows[("fused", "val_chosen")]["tp"] + rows[("fused", "val_chosen")]["fn"] > 0


@needs_loghub
def test_openstack_sessions_end_to_end(spark, tmp_path):
    data = tmp_path / "openstack"
    conv = subprocess.run([sys.executable, "-m", "deeplog_spark.ingest.loghub", "openstack",
                           str(LOGHUB / "OpenStack" / "ait_openstack_loghub"), str(data)],
                          cwd=REPO, capture_output=True, text=True)
    assert conv.returncode == 0, conv.stderr
    wh, art = tmp_path / "wh", tmp_path / "art"
    res = submit(["--task", "full-pipeline", "--input", "sequences", "--sequences", str(data / "sequences.csv"),
                  "--anomaly_labels", str(data / "labels.csv"), "--templates", str(data / "templates.csv"),
                  "--tables_root", str(wh), "--artifacts_root", str(art), *FAST])
    assert res.returncode == 0, res.stderr[-3000:]
    ingest = summary_of(res.stdout)["ingest"]
    assert ingest["trace_rows"] == 2069 == ingest["traces"] and ingest["anomalies"] == 198
    rows = _test_rows(spark, wh)
    assert rows[("fused", "val_chosen")]["tp"] + rows[("fused", "val_chosen")]["fn"] == \
        read_table(spark, str(wh / schemas.TRACES)).where("split = 'test' AND label = 1").count()
