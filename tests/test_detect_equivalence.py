"""Detection gives the verdicts and predictions the previous implementation gave, on the same models.

The scenario: the embedded sample (3,000 real HDFS blocks) with SYNTHETIC time intervals (a hash of
the block and the step, so the value model takes part), a key and a value model with fixed random
weights, count and PCA models and a calibration fitted on val (``--task calibrate``), then
``--task detect`` at its default settings. ``tests/data/detect_sample_golden.json.gz`` holds what
the previous implementation wrote for it (commit 09e4391: key windows scored by a pandas_udf over
the distinct (window, next) rows and joined back in Spark, the value model in a pandas_udf): every
verdict row and every prediction row, compared here value for value.

Floats compare within a relative 1e-5 (absolute 1e-6 near zero) and everything else exactly: the
fp32 LSTM kernels round differently on different CPUs (on an AMD EPYC the value model's residuals
differ from the file's, written on another machine, by at most 1.4e-6: max_value_error of 369 of
3,000 verdicts, value_error of 313 and window_score of 28 of 1,735 windows; every decision, rank,
window and text is equal). On one machine the current path and the previous one give the same
bits (compared with this module's ``__main__``).

Regenerate the file only from a tree that still has that implementation:
``PYTHONPATH=<that tree> python tests/test_detect_equivalence.py tests/data/detect_sample_golden.json.gz``.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "data" / "detect_sample_golden.json.gz"
RUN = "golden"
VERDICT_ORDER = ("block_id",)
PREDICTION_ORDER = ("block_id", "position")


def scenario(spark, cfg) -> dict:
    """Run the scenario of the module docstring; returns ``{"verdicts": [...], "predictions": [...]}``."""
    import torch
    from pyspark.sql import functions as F

    from deeplog_spark.core import schemas
    from deeplog_spark.detect.verdicts import run_detect
    from deeplog_spark.core.names import marker_ids
    from deeplog_spark.nn.model import KeyLSTM, KeyModelConfig, ValueLSTM, ValueModelConfig, save_checkpoint
    from deeplog_spark.ingest.runner import run_ingest
    from deeplog_spark.core.runs import run_dir, write_json
    from deeplog_spark.core.tables import read_table, write_table
    from deeplog_spark.detect.calibration import run_calibrate

    run_ingest(spark, cfg)
    path = cfg.table_path(schemas.TRACES)
    synthetic = F.transform("events", lambda e, i: F.when(i == 0, F.lit(0.0)).otherwise(
        F.pmod(F.xxhash64(F.col("block_id"), i), F.lit(97)).cast("double") * F.when(i % 11 == 3, 50.0).otherwise(1.0)))
    write_table(read_table(spark, path).withColumn("intervals", synthetic), path)
    vocab = 29
    d = run_dir(cfg.artifacts_root, RUN)
    # E7 and E20 (in 41 sessions) and E29 never seen in training: windows with them are unseen
    extra = {"vocab_size": vocab, "train_vocab": [e for e in range(1, vocab) if e not in (7, 20)], "run_id": RUN}
    torch.manual_seed(11)
    save_checkpoint(d / "key_model.pt", "key", KeyLSTM(KeyModelConfig(vocab_size=vocab, h=cfg.h, embed_dim=8, hidden=16,
                                                                    layers=1, dropout=0.0, markers=True)), extra)
    torch.manual_seed(12)
    save_checkpoint(d / "value_model.pt", "value", ValueLSTM(ValueModelConfig(vocab_size=vocab, event_dim=4, hidden=8,
                                                                            chunk=16, context=cfg.h)), extra)
    write_json(d / "value_norm.json", {"mean": 2.0, "std": 1.5})
    write_json(d / "value_threshold.json", {"mu": 0.8, "sigma": 0.6})
    write_json(d.parent / "latest.json", {"run_id": RUN})
    assert marker_ids(vocab) == (30, 31)
    run_calibrate(spark, cfg, RUN)
    run_detect(spark, cfg, RUN)

    def rows(table: str, order: tuple[str, ...]) -> list[dict]:
        df = read_table(spark, cfg.table_path(table)).where(F.col("run_id") == RUN).orderBy(*order)
        return [_plain(r.asDict(recursive=True)) for r in df.collect()]

    return {"verdicts": rows(schemas.VERDICTS, VERDICT_ORDER), "predictions": rows(schemas.PREDICTIONS, PREDICTION_ORDER)}


def _plain(row: dict) -> dict:
    """A row as JSON keeps it (NaN as a string, so that it compares equal to itself)."""
    def one(v):
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        if isinstance(v, list):
            return [one(x) for x in v]
        return v
    return {k: one(v) for k, v in row.items()}


def _same(got, want) -> bool:
    """Equal, floats within the tolerance of the module docstring (the CPU's rounding)."""
    if isinstance(got, float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want))
    return got == want and type(got) is type(want)


def test_same_tolerates_only_float_rounding():
    assert _same({"a": 3.172463893890381, "b": [1, "x"]}, {"a": 3.172464370727539, "b": [1, "x"]})
    assert not _same({"a": 3.1724}, {"a": 3.1725})
    assert not _same({"a": 1}, {"a": 1.0}) and not _same({"a": True}, {"a": 1}) and not _same([1, 2], [1])
    assert not _same({"a": "NaN"}, {"a": 0.0}) and _same({"a": None}, {"a": None})


def test_detect_writes_what_the_previous_implementation_wrote(spark, cfg):
    from conftest import SAMPLE

    from deeplog_spark.core import schemas
    from deeplog_spark.detect.verdicts import DETECTION_COLUMNS, STATS_COLUMNS

    cfg = cfg.replace(event_traces=str(SAMPLE / "Event_traces.csv.gz"), anomaly_labels=str(SAMPLE / "anomaly_label.csv.gz"))
    got = scenario(spark, cfg)
    for table in (schemas.VERDICTS, schemas.PREDICTIONS):  # created with statistics on the columns constant per detection
        detail = spark.sql(f"DESCRIBE DETAIL delta.`{cfg.table_path(table)}`").first()
        assert detail["properties"].get("delta.dataSkippingStatsColumns") == STATS_COLUMNS[table], table
        assert set(STATS_COLUMNS[table].split(",")) <= set(got[table][0]), table  # columns the table has
    want = json.loads(gzip.decompress(GOLDEN.read_bytes()))
    assert len(want["verdicts"]) == 3000 and len(want["predictions"]) > 0
    flagged = {v["block_id"] for v in want["verdicts"] if v["anomalous"]}
    assert len(flagged) >= 50 and any(v["max_value_error"] is not None for v in want["verdicts"])
    assert any(v["reason"] and "most surprising" in v["reason"] for v in want["verdicts"])
    assert {p["key_reason"] for p in want["predictions"]} >= {None, "unseen_event_in_window"}
    assert {p["block_id"] for p in want["predictions"]} == flagged  # the predictions of every flagged session
    assert len(got["verdicts"]) == len(want["verdicts"])
    # columns added since the golden file say which detection wrote the row (tests/test_operations.py)
    added = set(DETECTION_COLUMNS) | {"session_start", "session_end"}  # and the session's event times
    assert {k for k in got["verdicts"][0] if k not in want["verdicts"][0]} == added
    for g, w in zip(got["verdicts"], want["verdicts"]):
        g = {k: v for k, v in g.items() if k not in added}
        assert _same(g, w), (w["block_id"], {k: (g.get(k), v) for k, v in w.items() if not _same(g.get(k), v)})
    assert len(got["predictions"]) == len(want["predictions"])
    for g, w in zip(got["predictions"], want["predictions"]):
        assert _same(g, w), (w["block_id"], w["position"], {k: (g.get(k), v) for k, v in w.items() if not _same(g.get(k), v)})


if __name__ == "__main__":  # write the golden file with the deeplog_spark on sys.path
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import SAMPLE

    from deeplog_spark.core.config import Config
    from deeplog_spark.core.session import build_spark

    tmp = Path(tempfile.mkdtemp())
    config = Config.load(overrides={"tables_root": str(tmp / "warehouse"), "artifacts_root": str(tmp / "artifacts"),
                                    "shuffle_partitions": 2, "mlflow": False,
                                    "event_traces": str(SAMPLE / "Event_traces.csv.gz"),
                                    "anomaly_labels": str(SAMPLE / "anomaly_label.csv.gz")})
    session = build_spark("golden", config, master="local[2]",
                          extra_conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"})
    out = scenario(session, config)
    Path(sys.argv[1]).write_bytes(gzip.compress(json.dumps(out, sort_keys=True).encode()))
    print(f"{len(out['verdicts'])} verdicts, {len(out['predictions'])} predictions -> {sys.argv[1]}")
