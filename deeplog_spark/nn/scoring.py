"""Batch scoring with trained models (torch + numpy only; runs inside pandas_udfs and the bench).

Key model, per (window, next event): ``key_rank`` = 1 + the number of ids the model scores strictly
higher than the true next id (1 = most likely), ``key_score`` = -log p(true next id), the top-g
predicted ids, and ``key_reason`` when the window holds an id the model never saw in training. Such
a window gets rank ``unseen_rank(classes)`` (worse than any g) and score ``UNSEEN_SCORE``, so it is
an anomaly at every g, with its reason. Ids outside the model's vocabulary arrive as ``UNKNOWN_ID``.

Value model, per session: the standardized residual of every interval but the first (which is 0
by definition) against the model's prediction for it, in chunks of ``cfg.chunk`` steps (see
:func:`chunk_starts`, the rule the training rows follow too).
"""

from __future__ import annotations

import math

import numpy as np
import torch

UNSEEN_SCORE = 100.0  # -log p for an event the model cannot predict at all (p ~ e^-100)
REASON_UNSEEN_NEXT = "unseen_next_event"
REASON_UNSEEN_IN_WINDOW = "unseen_event_in_window"
#: Id of an event the model's vocabulary does not have (the Spark side maps such ids to it).
UNKNOWN_ID = -1


def unseen_rank(classes: int) -> int:
    """Rank given to a next event the model never saw: worse than every real rank (1..classes)."""
    return classes + 1


class KeyScorer:
    """Scores (window, next_event) rows with a Key LSTM, in batches."""

    def __init__(self, model: torch.nn.Module, train_vocab: list[int], top_g: int, batch_size: int = 4096):
        self.model = model.eval()
        cfg = model.cfg
        self.classes, self.top_g, self.batch_size = cfg.classes, top_g, batch_size
        known = np.zeros(self.classes, dtype=bool)
        known[[e for e in train_vocab if 0 < e <= cfg.vocab_size]] = True
        known[0] = True  # padding
        if cfg.markers:
            known[[cfg.start_id, cfg.end_id]] = True
        self.known = known

    def _known(self, ids: np.ndarray) -> np.ndarray:
        inside = (ids >= 0) & (ids < self.classes)
        return inside & self.known[np.where(inside, ids, 0)]

    @torch.inference_mode()
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
        top = np.empty((n, min(self.top_g, self.classes)), dtype=np.int32)
        for s in range(0, n, self.batch_size):
            x = torch.from_numpy(safe_window[s:s + self.batch_size])
            y = torch.from_numpy(safe_next[s:s + self.batch_size])
            logits = self.model(x)
            true = logits.gather(1, y.unsqueeze(1))
            rank[s:s + len(y)] = ((logits > true).sum(dim=1) + 1).numpy()
            score[s:s + len(y)] = (-torch.log_softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)).numpy()
            top[s:s + len(y)] = logits.topk(top.shape[1], dim=1).indices.numpy()
        unseen = ~(next_ok & window_ok)  # anomalous at every g, ranked above every seen window
        rank[unseen] = unseen_rank(self.classes)
        score[unseen] = UNSEEN_SCORE
        reason = np.where(~next_ok, REASON_UNSEEN_NEXT, np.where(~window_ok, REASON_UNSEEN_IN_WINDOW, None))
        return {"key_rank": rank, "key_score": score, "top_g": top, "key_reason": reason}


# -- value model --------------------------------------------------------------------------------


def chunk_starts(n: int, chunk: int, context: int) -> list[tuple[int, int]]:
    """(start, first predicted local position) of each chunk of a session of ``n`` steps.

    Chunk k covers steps [k*(chunk-context), +chunk) of the session. The first chunk predicts its
    steps 1.. (step 0 has no interval before it); each later chunk repeats the last ``context``
    steps of the one before as context and predicts the rest, so every step 1..n-1 is predicted
    exactly once. The Spark side builds the training rows by the same rule
    (``deeplog_spark.train_data.value_chunks``).
    """
    if not 0 <= context < chunk:
        raise ValueError(f"context must be in [0, chunk), got context={context} chunk={chunk}")
    if n <= chunk:
        return [(0, 1)]
    k = 1 + math.ceil((n - chunk) / (chunk - context))
    return [(i * (chunk - context), 1 if i == 0 else context) for i in range(k)]


def log_intervals(intervals: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Intervals (seconds) as the value model sees them: z-scored log1p."""
    return ((np.log1p(np.maximum(np.asarray(intervals, dtype=np.float64), 0.0)) - mean) / std).astype(np.float32)


class ValueScorer:
    """Standardized residuals of a value model for whole sessions (events, intervals in seconds)."""

    def __init__(self, model: torch.nn.Module, train_vocab: list[int], mean: float, std: float,
                 batch_size: int = 4096):
        if not (std > 0 and math.isfinite(std) and math.isfinite(mean)):
            raise ValueError(f"interval normalisation must be finite with std > 0, got mean={mean} std={std}")
        self.model, self.mean, self.std, self.batch_size = model.eval(), mean, std, batch_size
        cfg = model.cfg
        self.chunk, self.context = cfg.chunk, cfg.context
        known = np.zeros(cfg.vocab_size + 1, dtype=bool)
        known[[e for e in train_vocab if 0 < e <= cfg.vocab_size]] = True
        self.known = known

    def _ids(self, events: np.ndarray) -> np.ndarray:
        e = np.asarray(events, dtype=np.int64)
        inside = (e > 0) & (e < len(self.known))
        return np.where(inside & self.known[np.where(inside, e, 0)], e, 0)  # unknown events: padding

    @torch.inference_mode()
    def score(self, events: list, intervals: list) -> list[dict]:
        """Per session: ``residuals`` (float32, NaN at step 0), ``expected`` (seconds, NaN at step 0)."""
        pieces = []  # (session, start, first, events, z)
        prepared = []
        for i, (ev, iv) in enumerate(zip(events, intervals)):
            ev, z = self._ids(ev), log_intervals(iv, self.mean, self.std)
            prepared.append(len(ev))
            for start, first in chunk_starts(len(ev), self.chunk, self.context):
                pieces.append((i, start, first, ev[start:start + self.chunk], z[start:start + self.chunk]))
        out = [{"residuals": np.full(n, np.nan, np.float32), "expected": np.full(n, np.nan, np.float32)}
               for n in prepared]
        pieces.sort(key=lambda p: len(p[3]))  # similar lengths together: little padding
        for s in range(0, len(pieces), self.batch_size):
            part = pieces[s:s + self.batch_size]
            width = len(part[-1][3])
            if width < 2:
                continue
            ev = np.zeros((len(part), width), np.int64)
            z = np.zeros((len(part), width), np.float32)
            for j, p in enumerate(part):
                ev[j, :len(p[3])], z[j, :len(p[4])] = p[3], p[4]
            mean, logvar = self.model(torch.from_numpy(ev), torch.from_numpy(z))
            sd = torch.exp(0.5 * logvar)
            resid = ((torch.from_numpy(z[:, 1:]) - mean).abs() / sd).numpy()
            expected = np.expm1(mean.numpy().astype(np.float64) * self.std + self.mean)
            for j, (sess, start, first, pe, _) in enumerate(part):
                m = len(pe)
                if m < 2:
                    continue
                lo = first  # local step `lo` is predicted by output lo - 1
                out[sess]["residuals"][start + lo:start + m] = resid[j, lo - 1:m - 1]
                out[sess]["expected"][start + lo:start + m] = expected[j, lo - 1:m - 1]
        return out
