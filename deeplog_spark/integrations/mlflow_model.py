"""The trained detector as an MLflow pyfunc model (imported only where MLflow is used)."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from deeplog_spark.core.names import marker_ids
from deeplog_spark.core.runs import read_json
from deeplog_spark.features.window_rule import flat_windows, offsets_of
from deeplog_spark.nn.model import load_checkpoint
from deeplog_spark.nn.scoring import KeyScorer, model_ids

#: Where the deeplog run folder sits inside the MLflow model's artifacts.
RUN_ARTIFACT = "deeplog_run"


class DeepLogPyfunc(mlflow.pyfunc.PythonModel):
    """The trained detector as an MLflow pyfunc model, for serving without Spark.

    Input: a DataFrame with ``events`` (a session's event ids, as ingest writes them). Output per
    session: the Key LSTM's worst ``key_rank`` and ``key_score`` (-log p) over the session's windows,
    DeepLog's rule (``deeplog_anomalous``: some next event outside the top g) and the calibrated
    ``key_nll`` rule. The fused verdict with the count model and the reasons are Spark's
    (``--task detect --model models:/...``).
    """

    def load_context(self, context):

        run = Path(context.artifacts[RUN_ARTIFACT])
        model, payload = load_checkpoint(run / "key_model.pt", expect_task="key")
        cal = read_json(run / "calibration.json") if (run / "calibration.json").is_file() else {}
        self.g = int(read_json(run / "run.json")["config"]["top_g"])
        self.nll = (cal.get("detectors") or {}).get("key_nll", {}).get("threshold")
        self.cfg = model.cfg
        self.vocab_size = int(payload["extra"]["vocab_size"])
        self.scorer = KeyScorer(model, [int(e) for e in payload["extra"]["train_vocab"]], self.g)

    def predict(self, context, model_input, params=None):
        sessions = [np.asarray(e, dtype=np.int64) for e in model_input["events"]]
        events, offsets = offsets_of([model_ids(s, self.vocab_size) for s in sessions])
        start_end = marker_ids(self.vocab_size) if self.cfg.markers else None
        rows, seq, _ = flat_windows(events, offsets, self.cfg.h, start_end)
        s = self.scorer.score_rows(rows)
        n = len(sessions)
        rank = np.full(n, np.iinfo(np.int64).min)
        score = np.full(n, -np.inf)
        np.maximum.at(rank, seq, s["key_rank"].astype(np.int64))
        np.maximum.at(score, seq, s["key_score"].astype(np.float64))
        out = pd.DataFrame({"key_rank": rank.astype(np.int32), "key_score": score})
        out["deeplog_anomalous"] = out["key_rank"] > self.g
        out["key_nll_anomalous"] = (out["key_score"] > float(self.nll)) if self.nll is not None else False
        return out
