"""Spark-free data preparation of deeplog_spark.nn.local (pyarrow + numpy only)."""

import numpy as np
import pyarrow as pa
import pytest

from deeplog_spark.nn.local import interval_norm, prepare


def _windows():
    return pa.table({
        "split": ["train", "train", "train", "train", "val", "train"],
        "label": [0, None, 1, 0, 0, 0],
        "window": [[1, 2], [1, 2], [3, 4], [1, 2], [1, 2], [5, 6]],
        "next_event": [3, 3, 5, 4, 3, 7],
        "window_intervals": [[0.0, 1.0], [0.0, 1.0], [9.0, 9.0], [1.0, 1.0], [0.0, 1.0], None],
        "next_interval": [2.0, 4.0, 100.0, 6.0, 50.0, None],
    })


def test_interval_norm_uses_train_normal_windows_with_intervals_only():
    mean, std = interval_norm(_windows(), h=2)
    want = np.array([2.0, 4.0, 6.0])  # label 1, val and the interval-less window are excluded
    assert (mean, std) == (pytest.approx(want.mean()), pytest.approx(want.std()))


def test_prepare_key_distinct_counts_and_value_zscores():
    x, y, w = prepare(_windows(), "train", "key", 2, distinct=True)
    got = {(tuple(a), int(b)): float(c) for a, b, c in zip(x.tolist(), y.tolist(), w.tolist())}
    assert got == {((1, 2), 3): 2.0, ((1, 2), 4): 1.0, ((5, 6), 7): 1.0}
    x, y, w = prepare(_windows(), "train", "value", 2, distinct=False, norm=(4.0, 2.0))
    assert y.tolist() == pytest.approx([-1.0, 0.0, 1.0]) and x[0].tolist() == pytest.approx([-2.0, -1.5])
