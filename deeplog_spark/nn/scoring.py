"""Batch scoring of windows with trained models (torch + numpy only; runs inside pandas_udfs).

Key model, per window: ``key_rank`` = 1 + number of event ids the model scores strictly higher than
the true next event (1 = most likely), ``key_score`` = -log p(true next event), the predicted
top-g ids, and ``key_reason`` when the window holds an event the model never saw in training.
A window whose next event or any of whose events was never seen in training gets rank
``unseen_rank(vocab)`` (worse than any g) and score ``UNSEEN_SCORE``, so it is an anomaly at
every g, with its reason. Value model, per window: ``value_error`` =
|predicted - actual| next interval in z units (the training threshold's units).
"""

from __future__ import annotations

import math

import numpy as np
import torch

UNSEEN_SCORE = 100.0  # -log p for an event the model cannot predict at all (p ~ e^-100)
REASON_UNSEEN_NEXT = "unseen_next_event"
REASON_UNSEEN_IN_WINDOW = "unseen_event_in_window"


def unseen_rank(vocab_size: int) -> int:
    """Rank given to a next event the model never saw: worse than every real rank (1..vocab+1)."""
    return vocab_size + 2


class KeyScorer:
    """Scores (window, next_event) rows with a Key LSTM, in batches."""

    def __init__(self, model: torch.nn.Module, vocab_size: int, train_vocab: list[int], top_g: int,
                 batch_size: int = 4096):
        self.model = model.eval()
        self.vocab_size, self.top_g, self.batch_size = vocab_size, top_g, batch_size
        known = np.zeros(vocab_size + 2, dtype=bool)
        known[[e for e in train_vocab if 0 < e <= vocab_size]] = True
        known[0] = True  # padding
        self.known = known

    def _known(self, ids: np.ndarray) -> np.ndarray:
        inside = (ids >= 0) & (ids <= self.vocab_size)
        return inside & self.known[np.where(inside, ids, 0)]

    @torch.no_grad()
    def score(self, window: np.ndarray, next_event: np.ndarray) -> dict[str, np.ndarray]:
        n = len(next_event)
        window = np.asarray(window, dtype=np.int64).reshape(n, -1)
        next_event = np.asarray(next_event, dtype=np.int64)
        window_ok = self._known(window).all(axis=1)
        next_ok = self._known(next_event)
        safe_window = np.where(self._known(window), window, 0)  # unseen ids -> padding for the forward
        safe_next = np.where(next_ok, next_event, 0)
        rank = np.empty(n, dtype=np.int32)
        score = np.empty(n, dtype=np.float32)
        top = np.empty((n, min(self.top_g, self.vocab_size + 1)), dtype=np.int32)
        for s in range(0, n, self.batch_size):
            x = torch.from_numpy(safe_window[s:s + self.batch_size])
            y = torch.from_numpy(safe_next[s:s + self.batch_size])
            logits = self.model(x)
            true = logits.gather(1, y.unsqueeze(1))
            rank[s:s + len(y)] = ((logits > true).sum(dim=1) + 1).numpy()
            score[s:s + len(y)] = (-torch.log_softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)).numpy()
            top[s:s + len(y)] = logits.topk(top.shape[1], dim=1).indices.numpy()
        unseen = ~(next_ok & window_ok)  # anomalous at every g, ranked above every seen window
        rank[unseen] = unseen_rank(self.vocab_size)
        score[unseen] = UNSEEN_SCORE
        reason = np.where(~next_ok, REASON_UNSEEN_NEXT, np.where(~window_ok, REASON_UNSEEN_IN_WINDOW, None))
        return {"key_rank": rank, "key_score": score, "top_g": top, "key_reason": reason}


class ValueScorer:
    """Scores (window_intervals, next_interval) rows with a Value LSTM: |error| in z units."""

    def __init__(self, model: torch.nn.Module, mean: float, std: float, batch_size: int = 4096):
        if not (std > 0 and math.isfinite(std)):
            raise ValueError(f"interval std must be a positive number, got {std}")
        self.model, self.mean, self.std, self.batch_size = model.eval(), mean, std, batch_size

    @torch.no_grad()
    def score(self, window_intervals: np.ndarray, next_interval: np.ndarray) -> np.ndarray:
        n = len(next_interval)
        x = (np.asarray(window_intervals, dtype=np.float32).reshape(n, -1) - self.mean) / self.std
        y = (np.asarray(next_interval, dtype=np.float32) - self.mean) / self.std
        out = np.empty(n, dtype=np.float32)
        for s in range(0, n, self.batch_size):
            pred = self.model(torch.from_numpy(x[s:s + self.batch_size]))
            out[s:s + len(pred)] = (pred - torch.from_numpy(y[s:s + self.batch_size])).abs().numpy()
        return out
