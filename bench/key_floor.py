"""Benchmark: the lowest validation loss any next-event model of an h-window can reach on a workload.

    .venv/bin/python bench/pipeline.py --blocks 575061 --name prep575 --stages ingest --keep true
    .venv/bin/python bench/key_floor.py --tables_root generated/bench/work_prep575/warehouse --name 575k
    .venv/bin/python bench/key_floor.py --tables_root generated/bench/work_57k/warehouse --name 57k \\
        --session_markers false

Reads the ``traces`` table with delta-rs (no Spark) and builds the key model's distinct
(window, next) rows of the train-normal and val-normal sessions (the rows training and validation
use, ``deeplog_spark.nn.local.key_rows``). Two count-weighted cross-entropies over the val windows:

- ``lookup``: a table of each train window's next-event frequencies (add 1e-3 smoothing; a window
  never seen in train gets the uniform law). What counting alone reaches; a model that
  generalises no better than the table ends here.
- ``val_entropy``: the val windows' own conditional entropy, each window's next-event law taken
  from val itself. No predictor of the next event from the window can score below it on val.

Writes ``bench/results/key_floor_<name>.{json,md}``; the Key LSTM's val loss of a run on the same
workload (``pipeline_<name>.md``) reads against these.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

from deeplog_spark.core.config import Config, parse_overrides
from deeplog_spark.nn.local import key_rows, read_delta
from deeplog_spark.train.job import markers

from _common import command, options, write_results

SMOOTHING = 1e-3


def _laws(window, target, weight) -> dict[bytes, collections.Counter]:
    laws: dict[bytes, collections.Counter] = collections.defaultdict(collections.Counter)
    for w, y, c in zip(map(bytes, window), target.tolist(), weight.tolist()):
        laws[w][y] += c
    return laws


def cross_entropy(laws: dict[bytes, collections.Counter], window, target, weight, classes: int, eps: float) -> float:
    """Count-weighted -log p(next | window) over the rows, p from ``laws`` (add-``eps`` smoothing)."""
    total, n = 0.0, 0.0
    for w, y, c in zip(map(bytes, window), target.tolist(), weight.tolist()):
        law = laws.get(w)
        p = 1.0 / classes if law is None else (law.get(y, 0) + eps) / (sum(law.values()) + eps * classes)
        total -= c * math.log(p)
        n += c
    return total / n


def main() -> None:
    opts, args = options({"name": "bench"})
    name = opts["name"]
    cfg = Config.load(overrides=parse_overrides(args))
    traces, version = read_delta(Path(cfg.tables_root) / "traces", ["split", "label", "events"])
    vocab = int(max(read_delta(Path(cfg.tables_root) / "templates", ["event_id"])[0].column("event_id").to_pylist()))
    m = markers(cfg, vocab)
    classes = vocab + (3 if m else 1)
    train, val = key_rows(traces, "train", cfg.h, m), key_rows(traces, "val", cfg.h, m)
    train_laws = _laws(*train)
    seen = sum(c for w, c in zip(map(bytes, val[0]), val[2].tolist()) if w in train_laws)
    out = {"name": name, "command": command(__file__), "h": cfg.h,
           "session_markers": cfg.session_markers, "traces_version": version,
           "train_rows": len(train[1]), "train_windows": int(train[2].sum()),
           "train_distinct_windows": len(train_laws), "val_rows": len(val[1]), "val_windows": int(val[2].sum()),
           "val_windows_seen_in_train": round(seen / val[2].sum(), 6),
           "lookup": round(cross_entropy(train_laws, *val, classes, SMOOTHING), 4),
           "val_entropy": round(cross_entropy(_laws(*val), *val, classes, 0.0), 4)}
    md = "\n".join([
        f"# Key model: the floor of the validation loss ({name})", "",
        f"Command: `.venv/bin/python {out['command']}`.", "",
        f"{out['train_rows']:,} distinct (window, next) train rows ({out['train_distinct_windows']:,} windows) stand for "
        f"{out['train_windows']:,} train-normal windows; {out['val_rows']:,} val rows for {out['val_windows']:,} val-normal "
        f"windows, {out['val_windows_seen_in_train']:.2%} of them seen in train (h={cfg.h}, session markers "
        f"{'on' if cfg.session_markers else 'off'}). Count-weighted cross-entropy over the val windows:", "",
        "| predictor | val loss |", "|---|---|",
        f"| lookup table of the train windows' next-event frequencies (counting) | {out['lookup']:.4f} |",
        f"| the val windows' own next-event laws (no predictor scores lower) | {out['val_entropy']:.4f} |", ""])
    write_results(f"key_floor_{name}", out, md)


if __name__ == "__main__":
    main()
