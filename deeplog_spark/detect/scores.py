"""Session scores of every detector (Spark), computed once per distinct event sequence.

A verdict of the key, count and PCA detectors is a function of the session's event sequence, and
sessions repeat: 575k HDFS blocks hold a few thousand distinct sequences. So the sequences are
deduplicated first, every detector scores the distinct ones, and the (small) result is joined back
to the sessions. The value detector depends on the intervals too and scores every session that has
them, in one pass over whole sessions (not per window).

- **key** (the Key LSTM): one Arrow pass (``mapInArrow``) over the distinct sequences cuts each
  batch into its windows (the model's own h and session markers; ids outside its vocabulary
  become ``UNKNOWN_ID``), scores each distinct (window, next event) once and reduces the windows
  per sequence in numpy: the largest rank and -log p, the most surprising window (where the
  workflow broke) and DeepLog's first window whose next event is not in the top g. No row per
  window reaches Spark, but for the per-window predictions of the sessions asked for.
- **count** and **exact**: :mod:`deeplog_spark.models.count`, Spark SQL on count vectors.
- **pca**: :mod:`deeplog_spark.models.pca`, Spark SQL on count vectors.
- **value** (the Value LSTM): the largest standardized residual of a session's intervals, one
  Arrow pass over the sessions with their events and intervals as flat arrays.

Model files reach the executors inside the scoring functions (checked against their sha256 there),
so no SparkContext broadcast is needed and the functions also run over Spark Connect.
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import pyarrow as pa
import torch
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from deeplog_spark.detect.bundle import ModelBundle
from deeplog_spark.features.window_rule import event_index, flat_windows
from deeplog_spark.models import count as Q
from deeplog_spark.models import pca as pca_mod
from deeplog_spark.nn.model import load_checkpoint_bytes
from deeplog_spark.nn.scoring import UNKNOWN_ID, KeyScorer, ValueScorer, key_summary
from deeplog_spark.nn.scoring import model_ids as model_ids_np

log = logging.getLogger(__name__)

#: Per distinct sequence, from the key model (:func:`key_per_sequence`; ``key_worst_score`` becomes ``key_p``).
KEY_SEQ_DDL = ("events array<int>, n_windows int, max_key_rank int, max_key_score float, n_anomalous_windows int, "
               "first_key_position int, key_position int, key_window array<int>, key_next_event int, "
               "key_expected array<int>, key_worst_score float, first_key_window array<int>, first_key_next_event int, "
               "first_key_reason string")
#: Per window, from the key model (:func:`key_window_rows`).
WINDOW_ROW_DDL = ("position int, window array<int>, next_event int, event_index int, key_rank int, key_score float, "
                  "top_g array<int>, key_reason string")
VALUE_OUT = ("max_value_error float, value_position int, value_interval double, value_expected double, "
             "value_first_over int, value_errors array<float>")


def sequences(traces: DataFrame) -> DataFrame:
    """``events, sessions``: the distinct event sequences of ``traces`` and how many sessions have each."""
    return traces.groupBy("events").agg(F.count(F.lit(1)).cast("long").alias("sessions"))


def model_ids(events: Column, vocab_size: int) -> Column:
    """Event ids as the key model sees them: ids outside 1..vocab_size become ``UNKNOWN_ID``."""
    return F.transform(events, lambda e: F.when((e >= 1) & (e <= vocab_size), e).otherwise(F.lit(UNKNOWN_ID)))


# -- key ------------------------------------------------------------------------------------------


def _flat(lists) -> tuple:
    """(offsets from 0, values) of an Arrow list array (sliced or not), as numpy arrays."""
    off = lists.offsets.to_numpy()
    values = lists.values.to_numpy(zero_copy_only=False)[off[0]:off[-1]]
    return (off - off[0]).astype(np.int64), values


def _list_column(values, width: int, valid=None):
    """An Arrow ``list<int32>`` column of rows of ``width`` ids (null where ``valid`` is False)."""
    n = len(values)
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    mask = None if valid is None else pa.array(~np.asarray(valid, dtype=bool))
    return pa.ListArray.from_arrays(offsets, pa.array(np.asarray(values, dtype=np.int32).reshape(-1)), mask=mask)


def _key_scorer(bundle: ModelBundle, top_g: int, batch_size: int):
    """A function building the run's :class:`KeyScorer` on an executor (the model checked against its sha256)."""
    model_bytes, sha, train_vocab = bundle.key_bytes, bundle.key_sha, bundle.train_vocab

    def build():
        torch.set_num_threads(1)  # one Spark task per core
        model, _ = load_checkpoint_bytes(model_bytes, "key", sha, "key_model.pt")
        return KeyScorer(model, train_vocab, top_g, batch_size)

    return build


def key_per_sequence(seqs: DataFrame, bundle: ModelBundle, g: int, batch_size: int) -> DataFrame:
    """Per distinct sequence (``seqs.events``): ``n_windows, max_key_rank, max_key_score``, the most
    surprising window (``key_position, key_window, key_next_event, key_expected, key_p``) and
    DeepLog's evidence at g (``n_anomalous_windows``, ``first_key_position`` and its window, next
    event and reason).

    One Arrow pass in Python: each batch of sequences is cut into its windows (the model's h and
    markers), each distinct (window, next) row is scored once, and the windows are reduced per
    sequence in numpy (:func:`deeplog_spark.nn.scoring.key_summary`): no row per window in Spark.
    """
    build = _key_scorer(bundle, g, batch_size)
    h, start_end, vocab_size = bundle.h, bundle.start_end, bundle.vocab_size

    def summarise(batches):
        scorer = build()
        for b in batches:
            events = b.column(0)
            off, values = _flat(events)
            s = key_summary(scorer, model_ids_np(values, vocab_size), off, h, start_end, g)
            n = len(off) - 1
            rows, pos = s["rows"], s["pos"]
            if n == 0 or len(rows) == 0:
                continue
            worst, first = s["worst"], s["first"]
            has = first < len(rows)
            at = np.where(has, first, 0)
            reason = s["key_reason"][at]
            yield pa.RecordBatch.from_arrays([
                events, pa.array(s["n_windows"].astype(np.int32)), pa.array(s["max_rank"].astype(np.int32)),
                pa.array(s["max_score"].astype(np.float32)), pa.array(s["n_over"].astype(np.int32)),
                pa.array(pos[at].astype(np.int32), mask=~has), pa.array(pos[worst].astype(np.int32)),
                _list_column(rows[worst, :h], h), pa.array(rows[worst, h].astype(np.int32)),
                _list_column(s["top_g"][worst], s["top_g"].shape[1]), pa.array(s["key_score"][worst].astype(np.float32)),
                _list_column(rows[at, :h], h, has), pa.array(rows[at, h].astype(np.int32), mask=~has),
                pa.array([r if ok else None for r, ok in zip(reason, has)], pa.string())], names=names)

    names = StructType.fromDDL(KEY_SEQ_DDL).fieldNames()
    out = seqs.select(F.col("events").cast("array<int>")).mapInArrow(summarise, KEY_SEQ_DDL)
    return out.withColumn("key_p", F.exp(-F.col("key_worst_score"))).drop("key_worst_score")


def key_window_rows(sessions: DataFrame, bundle: ModelBundle, top_g: int, batch_size: int,
                    keep: list[str], step_values: str | None = None) -> DataFrame:
    """Every window of every session: ``keep`` + ``position, window, next_event, event_index,
    key_rank, key_score, top_g, key_reason`` (the per-window predictions; each distinct (window,
    next) row of an Arrow batch scored once), and with ``step_values`` (a session's ``array<float>``
    of one value per event) ``step_value``: that array's value at the window's ``event_index``
    (null past its end, as the end marker is), picked in numpy so that no window row carries the
    session's whole array."""
    build = _key_scorer(bundle, top_g, batch_size)
    h, start_end, vocab_size, markers = bundle.h, bundle.start_end, bundle.vocab_size, bundle.markers
    extra = StructType.fromDDL("step_value float").fields if step_values else []
    schema = StructType(sessions.select(*keep).schema.fields + StructType.fromDDL(WINDOW_ROW_DDL).fields + extra)
    at = len(keep) + (1 if step_values else 0)  # the events column

    def explode(batches):
        scorer = build()
        for b in batches:
            off, values = _flat(b.column(at))
            rows, seq, pos = flat_windows(model_ids_np(values, vocab_size), off, h, start_end)
            s = scorer.score_rows(rows)
            n = np.diff(off)[seq]
            index = event_index(pos, n, h, markers)
            take = pa.array(seq.astype(np.int64))
            extra_cols = [_value_at(b.column(len(keep)), seq, index)] if step_values else []
            yield pa.RecordBatch.from_arrays(
                [b.column(i).take(take) for i in range(len(keep))]
                + [pa.array(pos.astype(np.int32)), _list_column(rows[:, :h], h), pa.array(rows[:, h].astype(np.int32)),
                   pa.array(index.astype(np.int32)), pa.array(s["key_rank"].astype(np.int32)),
                   pa.array(s["key_score"].astype(np.float32)), _list_column(s["top_g"], s["top_g"].shape[1]),
                   pa.array(s["key_reason"], pa.string())] + extra_cols, names=schema.fieldNames())

    return sessions.select(*keep, *([step_values] if step_values else []),
                           F.col("events").cast("array<int>")).mapInArrow(explode, schema)


def _value_at(lists, seq, index):
    """A float32 Arrow array: element ``index[i]`` of list ``seq[i]`` of ``lists`` (null where the
    list is null, shorter, or holds a null or a non-finite number there)."""
    off, values = _flat(lists)
    values = np.asarray(values, dtype=np.float64)  # a null element reads as NaN
    inside = (index < np.diff(off)[seq]) & ~np.asarray(lists.is_null().to_numpy(zero_copy_only=False), dtype=bool)[seq]
    out = np.full(len(seq), np.nan)
    out[inside] = values[off[:-1][seq[inside]] + index[inside]]
    return pa.array(out.astype(np.float32), mask=~np.isfinite(out))


# -- count and PCA --------------------------------------------------------------------------------


def with_counts(seqs: DataFrame) -> DataFrame:
    return seqs.withColumn("counts", Q.count_vector(F.col("events")))


def count_per_sequence(counted: DataFrame, patterns: DataFrame, model: Q.CountModel,
                       templates: Mapping[int, str]) -> DataFrame:
    """Per sequence (``counted``: distinct ``events`` with their ``counts``): ``count_anomalous,
    count_score, count_reason, exact_anomalous`` at the model's knobs."""
    feats = Q.features(counted, patterns, model, [model.free_share], with_reasons=True)
    anomalous, score = Q.decide(model)
    out = feats.select("events", "counts", anomalous.alias("count_anomalous"), score.alias("count_score"),
                       F.when(anomalous, Q.reason(model, templates)).alias("count_reason"))
    return Q.exact_anomalous(out, patterns).drop("counts")


def pca_per_sequence(spark: SparkSession, counted: DataFrame, model: pca_mod.PcaModel) -> DataFrame:
    """Per sequence (``counted``: distinct ``events`` with their ``counts``): ``pca_spe``."""
    return pca_mod.spe(spark, counted, model).select("events", "pca_spe")


# -- value ----------------------------------------------------------------------------------------


def value_per_session(sessions: DataFrame, bundle: ModelBundle, spec_threshold: float, batch_size: int,
                      full: bool = False) -> DataFrame:
    """``sessions`` without ``intervals`` (the pass reads them and nothing after it does, so they are
    not sent back to the JVM) plus the value columns (null where a session has no intervals or no
    value model):
    ``max_value_error`` (largest standardized residual), its ``value_position``, the interval there and
    the model's expected interval (seconds), ``value_first_over`` (first step above the spec's
    mu + k*sigma) and, with ``full``, every step's residual (``value_errors``).

    One Arrow pass in Python over the sessions (``mapInArrow``): each batch's events and intervals
    reach the model as the flat arrays Arrow holds, with no Python object per session.
    """
    if bundle.value_bytes is None:
        out = sessions.drop("intervals")
        for f in VALUE_OUT.split(", "):
            name, typ = f.split(" ", 1)
            out = out.withColumn(name, F.lit(None).cast(typ))
        return out
    model_bytes, sha, vocab = bundle.value_bytes, bundle.value_sha, bundle.value_vocab
    mean, std = float(bundle.norm["mean"]), float(bundle.norm["std"])
    ev_at, iv_at = sessions.columns.index("events"), sessions.columns.index("intervals")
    kept = [i for i in range(len(sessions.columns)) if i != iv_at]
    schema = StructType([sessions.schema.fields[i] for i in kept] + StructType.fromDDL(VALUE_OUT).fields)

    def score(batches):
        torch.set_num_threads(1)  # one Spark task per core
        model, _ = load_checkpoint_bytes(model_bytes, "value", sha, "value_model.pt")
        scorer = ValueScorer(model, vocab, mean, std, batch_size)
        for b in batches:
            s = scorer.summarise_arrays(*_session_arrays(b.column(ev_at), b.column(iv_at)), spec_threshold)
            has = s["position"] >= 0

            def num(x, dtype, valid):
                x = np.asarray(x)
                valid = valid & ~np.isnan(x) if x.dtype.kind == "f" else valid
                return pa.array(np.where(valid, x, 0).astype(dtype), mask=~valid)

            cols = [num(s["max"], np.float32, has), num(s["position"], np.int32, has),
                    num(s["interval"], np.float64, has), num(s["expected"], np.float64, has),
                    num(s["first_over"], np.int32, s["first_over"] >= 0)]
            if full:
                r, off = s["residuals"], s["offsets"]
                cols.append(pa.ListArray.from_arrays(pa.array(off.astype(np.int32)), pa.array(r, mask=~np.isfinite(r)),
                                                     mask=pa.array(np.diff(off) == 0)))
            else:
                cols.append(pa.nulls(b.num_rows, pa.list_(pa.float32())))
            yield pa.RecordBatch.from_arrays([b.column(i) for i in kept] + cols, names=schema.fieldNames())

    return sessions.mapInArrow(score, schema)


def _session_arrays(events, intervals) -> tuple:
    """(events, intervals, offsets) of an Arrow batch's ``events`` and ``intervals`` lists, laid
    end to end as :meth:`~deeplog_spark.nn.scoring.ValueScorer.score_arrays` takes them: a session
    without intervals counts none."""
    ev_off, ev = _flat(events)
    iv_off, iv = _flat(intervals)
    valid = ~np.asarray(intervals.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if not np.array_equal(ev_off, iv_off):  # sessions without intervals: their events are left out
        lengths = np.where(valid, np.diff(ev_off), 0)
        if not np.array_equal(lengths, np.where(valid, np.diff(iv_off), 0)):
            raise ValueError("a session's events and intervals differ in length")
        take = np.repeat(ev_off[:-1] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) \
            + np.arange(int(lengths.sum()))
        ev_off, ev = np.concatenate([[0], np.cumsum(lengths)]), ev[take]
    return ev, np.asarray(iv, dtype=np.float64), ev_off


# -- all of them ------------------------------------------------------------------------------------


def sequence_scores(spark: SparkSession, seqs: DataFrame, bundle: ModelBundle, patterns: DataFrame | None,
                    templates: Mapping[int, str], g: int, batch_size: int) -> DataFrame:
    """Per-sequence scores of key, count, exact and PCA. ``seqs``: distinct ``events`` (cache them:
    every detector reads them)."""
    out = key_per_sequence(seqs, bundle, g, batch_size)
    counted = with_counts(seqs.select("events"))
    if bundle.count is not None and patterns is not None:
        out = out.join(count_per_sequence(counted, patterns, bundle.count, templates), "events", "left")
    else:
        out = (out.withColumn("count_anomalous", F.lit(None).cast("boolean"))
               .withColumn("count_score", F.lit(None).cast("double"))
               .withColumn("count_reason", F.lit(None).cast("string"))
               .withColumn("exact_anomalous", F.lit(None).cast("boolean")))
    if bundle.pca is not None:
        out = out.join(pca_per_sequence(spark, counted, bundle.pca), "events", "left")
    else:
        out = out.withColumn("pca_spe", F.lit(None).cast("double"))
    return out
