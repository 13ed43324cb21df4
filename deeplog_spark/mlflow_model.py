"""The trained detector as an MLflow pyfunc model (imported only where MLflow is used)."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc

from deeplog_spark.runs import read_json
from deeplog_spark.tracking import RUN_ARTIFACT, session_windows


class DeepLogPyfunc(mlflow.pyfunc.PythonModel):
    """The trained detector as an MLflow pyfunc model, for serving without Spark.

    Input: a DataFrame with ``events`` (a session's event ids, as ingest writes them). Output per
    session: the Key LSTM's worst ``key_rank`` and ``key_score`` (-log p) over the session's windows,
    DeepLog's rule (``deeplog_anomalous``: some next event outside the top g) and the calibrated
    ``key_nll`` rule. The fused verdict with the count model and the reasons are Spark's
    (``--task detect --model models:/...``).
    """

    def load_context(self, context):
        from deeplog_spark.nn.model import load_checkpoint
        from deeplog_spark.nn.scoring import KeyScorer

        run = Path(context.artifacts[RUN_ARTIFACT])
        model, payload = load_checkpoint(run / "key_model.pt", expect_task="key")
        cal = read_json(run / "calibration.json") if (run / "calibration.json").is_file() else {}
        self.g = int(read_json(run / "run.json")["config"]["top_g"])
        self.nll = (cal.get("detectors") or {}).get("key_nll", {}).get("threshold")
        self.cfg = model.cfg
        self.vocab_size = int(payload["extra"]["vocab_size"])
        self.scorer = KeyScorer(model, [int(e) for e in payload["extra"]["train_vocab"]], self.g)

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd

        rows = []
        for events in model_input["events"]:
            window, nxt = session_windows(np.asarray(events, dtype=np.int64), self.cfg.h, self.vocab_size,
                                          self.cfg.markers)
            s = self.scorer.score(window, nxt)
            rank, score = int(s["key_rank"].max()), float(s["key_score"].max())
            rows.append({"key_rank": rank, "key_score": score, "deeplog_anomalous": rank > self.g,
                         "key_nll_anomalous": self.nll is not None and score > float(self.nll)})
        return pd.DataFrame(rows, columns=["key_rank", "key_score", "deeplog_anomalous", "key_nll_anomalous"])
