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

from deeplog_spark.features.window_rule import flat_windows

UNSEEN_SCORE = 100.0  # -log p for an event the model cannot predict at all (p ~ e^-100)
REASON_UNSEEN_NEXT = "unseen_next_event"
REASON_UNSEEN_IN_WINDOW = "unseen_event_in_window"
#: Id of an event the model's vocabulary does not have (the Spark side maps such ids to it).
UNKNOWN_ID = -1
#: Windows per forward pass of the key model, whatever the caller's batch (the Arrow batches of
#: the scoring passes are larger): the results do not depend on how rows are batched.
FORWARD_WINDOWS = 4096


def model_ids(values, vocab_size: int) -> np.ndarray:
    """Event ids as the key model sees them: ids outside 1..vocab_size become ``UNKNOWN_ID``."""
    v = np.asarray(values, dtype=np.int64)
    return np.where((v >= 1) & (v <= vocab_size), v, UNKNOWN_ID)


def unseen_rank(classes: int) -> int:
    """Rank given to a next event the model never saw: worse than every real rank (1..classes)."""
    return classes + 1


class KeyScorer:
    """Scores (window, next_event) rows with a Key LSTM, in batches."""

    def __init__(self, model: torch.nn.Module, train_vocab: list[int], top_g: int, batch_size: int = 4096):
        self.model = model.eval()
        cfg = model.cfg
        self.classes, self.top_g, self.batch_size = cfg.classes, top_g, max(1, min(batch_size, FORWARD_WINDOWS))
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


    def score_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`score` of ``rows`` [n, h + 1] (a window, then its next id), each distinct row
        scored once: sessions repeat their windows many times over."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return self.score(rows[:, :-1], rows[:, -1])
        keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        out = self.score(rows[first, :-1], rows[first, -1])
        return {k: v[inverse] for k, v in out.items()}


def key_summary(scorer: KeyScorer, events: np.ndarray, offsets: np.ndarray, h: int,
                markers: tuple[int, int] | None, g: int) -> dict[str, np.ndarray]:
    """Per session (``events``/``offsets`` as :func:`~deeplog_spark.features.window_rule.flat_windows` takes them, ids as the model
    sees them): its windows (``n_windows``), the largest rank and -log p, the most surprising window
    (the largest -log p, the first on ties: ``worst_*``) and DeepLog's evidence at g: how many
    windows rank worse than g and the first of them (``first_*``; position -1 when none)."""
    rows, seq, pos = flat_windows(events, offsets, h, markers)
    s = scorer.score_rows(rows)
    n = len(offsets) - 1
    count = np.bincount(seq, minlength=n)
    out = {"n_windows": count, "rows": rows, "pos": pos, **s}
    if len(rows) == 0:
        return out
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    index = np.arange(len(rows))
    score = np.where(np.isnan(s["key_score"]), np.inf, s["key_score"])  # NaN sorts last, as in Spark
    seg_max = np.maximum.reduceat(score, starts)
    worst = np.minimum.reduceat(np.where(score == np.repeat(seg_max, count), index, len(rows)), starts)
    over = s["key_rank"] > g
    first = np.minimum.reduceat(np.where(over, index, len(rows)), starts)
    out.update(max_rank=np.maximum.reduceat(s["key_rank"], starts), max_score=np.maximum.reduceat(s["key_score"], starts),
               worst=worst, n_over=np.add.reduceat(over.astype(np.int64), starts), first=first)
    return out


# -- value model --------------------------------------------------------------------------------


def chunk_starts(n: int, chunk: int, context: int) -> list[tuple[int, int]]:
    """(start, first predicted local position) of each chunk of a session of ``n`` steps.

    Chunk k covers steps [k*(chunk-context), +chunk) of the session. The first chunk predicts its
    steps 1.. (step 0 has no interval before it); each later chunk repeats the last ``context``
    steps of the one before as context and predicts the rest, so every step 1..n-1 is predicted
    exactly once. The Spark side builds the training rows by the same rule
    (``deeplog_spark.features.train_rows.value_chunks``).
    """
    if not 0 <= context < chunk:
        raise ValueError(f"context must be in [0, chunk), got context={context} chunk={chunk}")
    if n <= chunk:
        return [(0, 1)]
    k = 1 + math.ceil((n - chunk) / (chunk - context))
    return [(i * (chunk - context), 1 if i == 0 else context) for i in range(k)]


#: Chunks per forward pass of the value model: smaller batches keep the LSTM's batch in the CPU's
#: cache, and the results do not depend on the batch size.
FORWARD_CHUNKS = 1024


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

    def _pieces(self, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
        """(session, start, first, length) of every chunk (:func:`chunk_starts`), vectorised for the
        sessions that fit in one chunk (nearly all), looped for the long ones."""
        short = np.where(lengths <= self.chunk)[0]
        parts = [(short, np.zeros_like(short), np.ones_like(short), lengths[short])]
        for i in np.where(lengths > self.chunk)[0]:
            starts = chunk_starts(int(lengths[i]), self.chunk, self.context)
            st = np.array([a for a, _ in starts])
            parts.append((np.full(len(st), i), st, np.array([b for _, b in starts]),
                          np.minimum(self.chunk, lengths[i] - st)))
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(4))

    @torch.inference_mode()
    def score_flat(self, events: list, intervals: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(residual, expected seconds, offsets): flat arrays over every step of every session
        (session i is ``[offsets[i], offsets[i+1])``), NaN where nothing is predicted (step 0, and
        every step of a session without intervals)."""
        lengths = np.array([0 if iv is None else len(e) for e, iv in zip(events, intervals)], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        if offsets[-1] == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32), offsets
        ev = np.concatenate([np.asarray(e) for e, n in zip(events, lengths) if n])
        iv = np.concatenate([np.asarray(iv, dtype=np.float64) for iv, n in zip(intervals, lengths) if n])
        return (*self.score_arrays(ev, iv, offsets), offsets)

    @torch.inference_mode()
    def score_arrays(self, events: np.ndarray, intervals: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score_flat` of sessions laid end to end: ``events`` and ``intervals`` (seconds) of
        equal length, session i at ``[offsets[i], offsets[i+1])`` (offsets from 0; a session without
        intervals has none). Returns (residual, expected seconds) per step."""
        lengths = np.diff(offsets)
        total = int(offsets[-1])
        resid = np.full(total, np.nan, np.float32)
        expected = np.full(total, np.nan, np.float32)
        if total == 0:
            return resid, expected
        ev = self._ids(events)
        z = log_intervals(intervals, self.mean, self.std)
        sess, start, first, plen = self._pieces(lengths)
        keep = plen >= 2
        sess, start, first, plen = sess[keep], start[keep], first[keep], plen[keep]
        order = np.argsort(plen, kind="stable")  # similar lengths together: little padding
        rows = min(self.batch_size, FORWARD_CHUNKS)
        for s in range(0, len(order), rows):
            part = order[s:s + rows]
            width = int(plen[part].max())
            cols = np.arange(width)
            base = offsets[sess[part]] + start[part]
            valid = cols[None, :] < plen[part][:, None]
            idx = np.where(valid, base[:, None] + cols[None, :], 0)
            mean, logvar = self.model(torch.from_numpy(np.where(valid, ev[idx], 0)),
                                      torch.from_numpy(np.where(valid, z[idx], 0.0).astype(np.float32)))
            r = ((torch.from_numpy(np.where(valid, z[idx], 0.0).astype(np.float32))[:, 1:] - mean).abs()
                 * torch.exp(-0.5 * logvar)).numpy()
            x = np.expm1(mean.numpy().astype(np.float64) * self.std + self.mean)
            # output j predicts local step j+1; a chunk's steps first.. are its own
            target = cols[None, 1:] >= first[part][:, None]
            target &= valid[:, 1:]
            flat = idx[:, 1:][target]
            resid[flat] = r[target]
            expected[flat] = x[target]
        return resid, expected

    def score(self, events: list, intervals: list) -> list[dict]:
        """Per session: ``residuals`` (float32, NaN at step 0), ``expected`` (seconds, NaN at step 0)."""
        resid, expected, offsets = self.score_flat(events, intervals)
        return [{"residuals": resid[a:b], "expected": expected[a:b]} for a, b in zip(offsets[:-1], offsets[1:])]

    def summarise(self, events: list, intervals: list, threshold: float) -> dict[str, np.ndarray | list]:
        """Per session: the largest residual, its step (the earliest on ties), the interval there and
        the expected one, and the first step whose residual exceeds ``threshold`` (-1 / NaN where
        there is none). Segment reductions over the flat arrays, no per-session loop or sort."""
        resid, expected, offsets = self.score_flat(events, intervals)
        flat_iv = np.concatenate([np.asarray(iv, dtype=np.float64) if iv is not None and len(iv) else np.zeros(0)
                                  for iv in intervals]) if len(intervals) else np.zeros(0)
        return _summary(resid, expected, offsets, flat_iv, threshold)

    def summarise_arrays(self, events: np.ndarray, intervals: np.ndarray, offsets: np.ndarray,
                         threshold: float) -> dict[str, np.ndarray]:
        """:meth:`summarise` of sessions laid end to end (as :meth:`score_arrays` takes them)."""
        resid, expected = self.score_arrays(events, intervals, offsets)
        return _summary(resid, expected, offsets, np.asarray(intervals, dtype=np.float64), threshold)


def _summary(resid: np.ndarray, expected: np.ndarray, offsets: np.ndarray, flat_iv: np.ndarray,
             threshold: float) -> dict[str, np.ndarray]:
    n = len(offsets) - 1
    out = {"max": np.full(n, np.nan, np.float32), "position": np.full(n, -1, np.int64),
           "expected": np.full(n, np.nan), "first_over": np.full(n, -1, np.int64),
           "interval": np.full(n, np.nan), "residuals": resid, "offsets": offsets}
    total = len(resid)
    lengths = np.diff(offsets)
    rows = np.flatnonzero(lengths > 0)
    if total == 0 or len(rows) == 0:
        return out
    starts = offsets[:-1][rows]
    r = np.where(np.isfinite(resid), resid, -np.inf)
    seg_max = np.maximum.reduceat(r, starts)
    step = np.arange(total)
    owner_max = np.repeat(seg_max, lengths[rows])  # each step's session maximum
    best = np.minimum.reduceat(np.where((r == owner_max) & np.isfinite(r), step, total), starts)
    has = best < total
    s_rows, best = rows[has], best[has]
    out["max"][s_rows], out["position"][s_rows] = resid[best], best - offsets[s_rows]
    out["expected"][s_rows] = expected[best]
    if len(flat_iv) == total:
        out["interval"][s_rows] = flat_iv[best]
    over = np.minimum.reduceat(np.where(r > threshold, step, total), starts)
    hit = over < total
    out["first_over"][rows[hit]] = over[hit] - offsets[rows[hit]]
    return out
