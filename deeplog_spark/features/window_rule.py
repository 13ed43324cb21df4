"""The window rule, in numpy: the one implementation that training, detection, the Spark-free
trainer and the served MLflow model use. The ``windows`` export and the Spark jobs' SQL columns
write the same rule in Spark SQL (:mod:`deeplog_spark.features.windows`);
``tests/test_windows.py`` checks the two on random sessions.

Two rules, chosen by ``session_markers``:

- **Markers** (the default): the session is framed as ``[start] + events + [end]`` (ids
  vocab + 1 and vocab + 2) and every id after the start is predicted from the h ids before it,
  left-padded with the padding id 0. A session of L events gives L + 1 windows: its first event
  (from the start marker alone), every later one, and the end. So a session that stops early is
  scored too: its end comes where the model expects more events.
- **Spec** (``session_markers = false``, the DeepLog spec's windows): a session of length L > h
  gives L - h windows, window i = events[i : i+h] -> events[i+h]; a session with L <= h gives one
  window, its first L-1 events left-padded to h -> its last event. So ``[1..12]`` with h = 10
  gives ``[1..10] -> 11`` and ``[2..11] -> 12``.

Both are one expression: left-pad the (framed) session with zeros and slide over it. Time
intervals are padded and sliced the same way (0.0; the start marker's interval is 0 and the end
has none). No Spark or torch import.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from deeplog_spark.core.names import PADDING_ID


def pad_length(framed: np.ndarray, h: int, markers: bool) -> np.ndarray:
    """Padding ids put before each (framed) session of ``framed`` ids: h - 1 with markers, so every
    id after the start marker is the target of one window; without, enough for one window."""
    return np.full_like(framed, h - 1) if markers else np.maximum(h + 1 - framed, 0)


def event_index(position: np.ndarray, n: np.ndarray, h: int, markers: bool) -> np.ndarray:
    """Index in its session (0-based, of ``n`` events) of the event window ``position`` predicts
    (``n`` for the end marker)."""
    return position if markers else position + h - np.maximum(h + 1 - n, 0)


def flat_windows(events: np.ndarray, offsets: np.ndarray, h: int,
                 markers: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every window of every session: ``(rows [W, h + 1]`` int64, each a window then its next id;
    the session of each row; its position in the session).

    ``events``: the sessions' ids end to end, session i is ``events[offsets[i]:offsets[i + 1]]``.
    ``markers`` = (start id, end id) frames every session (None: the spec's windows). Sessions are
    laid out padded, end to end, and the windows are slices of that one array.
    """
    lengths = np.diff(offsets).astype(np.int64)
    framed = lengths + (2 if markers else 0)
    pad = pad_length(framed, h, markers is not None)
    size = pad + framed
    base = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
    flat = np.full(int(base[-1]), PADDING_ID, np.int64)
    first_event = base[:-1] + pad + (1 if markers else 0)
    flat[np.repeat(first_event - offsets[:-1], lengths) + np.arange(offsets[0], offsets[-1])] = events
    if markers:
        flat[base[:-1] + pad] = markers[0]
        flat[base[1:] - 1] = markers[1]
    count = size - h
    seq = np.repeat(np.arange(len(lengths)), count)
    pos = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    if len(flat) <= h:
        return np.zeros((0, h + 1), np.int64), seq, pos
    rows = np.lib.stride_tricks.sliding_window_view(flat, h + 1)[np.repeat(base[:-1], count) + pos]
    return rows, seq, pos


def offsets_of(sessions: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(events, offsets)`` of a list of sessions, as :func:`flat_windows` takes them."""
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sessions])]).astype(np.int64)
    events = np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions]) if len(sessions) else np.zeros(0, np.int64)
    return events, offsets


def session_windows(events: Sequence[int], h: int, markers: tuple[int, int] | None) -> list[tuple[tuple, int]]:
    """``[(window, next id), ...]`` of one session, in order (:func:`flat_windows` of one session)."""
    rows, _, _ = flat_windows(*offsets_of([events]), h, markers)
    return [(tuple(int(x) for x in r[:h]), int(r[h])) for r in rows]


def distinct_windows(sessions: Sequence[Sequence[int]], weights: Sequence[float], h: int,
                     markers: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(window [n, h], next [n], weight [n] float32)``: the distinct (window, next) rows of the
    sessions' windows, sorted, each with the summed ``weights`` of the sessions it occurs in (once
    per occurrence): the key model's training rows."""
    if not len(sessions):
        return np.zeros((0, h), np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows, seq, _ = flat_windows(*offsets_of(sessions), h, markers)
    uniq, inverse = np.unique(rows, axis=0, return_inverse=True)
    weight = np.bincount(inverse.ravel(), weights=np.asarray(weights, np.float64)[seq], minlength=len(uniq))
    return uniq[:, :h], uniq[:, h], weight.astype(np.float32)
