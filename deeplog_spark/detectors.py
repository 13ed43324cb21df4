"""Session scores of every detector (Spark), computed once per distinct event sequence.

A verdict of the key, count and PCA detectors is a function of the session's event sequence, and
sessions repeat: 575k HDFS blocks hold a few thousand distinct sequences. So the sequences are
deduplicated first, every detector scores the distinct ones, and the (small) result is joined back
to the sessions. The value detector depends on the intervals too and scores every session that has
them, in one pass over whole sessions (not per window).

- **key** (the Key LSTM): the windows of every distinct sequence (with the model's own h and
  session markers; ids outside its vocabulary become ``UNKNOWN_ID``), scored once per distinct
  (window, next event) by a ``pandas_udf`` and joined back. Per sequence: the largest rank and
  -log p, the most surprising window (where the workflow broke) and DeepLog's first window whose
  next event is not in the top g.
- **count** and **exact**: :mod:`deeplog_spark.quantitative`, Spark SQL on count vectors.
- **pca**: :mod:`deeplog_spark.pca`, Spark SQL on count vectors.
- **value** (the Value LSTM): the largest standardized residual of a session's intervals.

Model files reach the executors inside the scoring functions (checked against their sha256 there),
so no SparkContext broadcast is needed and the functions also run over Spark Connect.
"""

from __future__ import annotations

import logging
from typing import Iterator, Mapping

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark import pca as pca_mod
from deeplog_spark import quantitative as Q
from deeplog_spark.nn.scoring import UNKNOWN_ID
from deeplog_spark.runs import ModelBundle
from deeplog_spark.windows import event_index, window_rows

log = logging.getLogger(__name__)

KEY_OUT = "key_rank int, key_score float, top_g array<int>, key_reason string"
VALUE_OUT = ("max_value_error float, value_position int, value_interval double, value_expected double, "
             "value_first_over int, value_errors array<float>")


def sequences(traces: DataFrame) -> DataFrame:
    """``events, sessions``: the distinct event sequences of ``traces`` and how many sessions have each."""
    return traces.groupBy("events").agg(F.count(F.lit(1)).cast("long").alias("sessions"))


def seq_key(events: Column) -> Column:
    """A compact key of an event sequence (SHA-256 of its ids): the window rows of a sequence carry
    it instead of the sequence itself, so a session of L events costs O(L) rows of O(h), not O(L^2)."""
    return F.sha2(F.concat_ws(",", events.cast("array<string>")), 256)


def model_ids(events: Column, vocab_size: int) -> Column:
    """Event ids as the key model sees them: ids outside 1..vocab_size become ``UNKNOWN_ID``."""
    return F.transform(events, lambda e: F.when((e >= 1) & (e <= vocab_size), e).otherwise(F.lit(UNKNOWN_ID)))


# -- key ------------------------------------------------------------------------------------------


def _key_udf(model_bytes: bytes, sha: str, train_vocab: list[int], top_g: int, batch_size: int):
    @F.pandas_udf(KEY_OUT)
    def score_key(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np
        import torch

        from deeplog_spark.nn.model import load_checkpoint_bytes
        from deeplog_spark.nn.scoring import KeyScorer

        torch.set_num_threads(1)  # one Spark task per core
        model, _ = load_checkpoint_bytes(model_bytes, "key", sha, "key_model.pt")
        scorer = KeyScorer(model, train_vocab, top_g, batch_size)
        for pdf in batches:
            if len(pdf) == 0:
                yield pd.DataFrame({"key_rank": [], "key_score": [], "top_g": [], "key_reason": []})
                continue
            out = scorer.score(np.stack(pdf["window"].to_numpy()), pdf["next_event"].to_numpy())
            yield pd.DataFrame({"key_rank": out["key_rank"], "key_score": out["key_score"],
                                "top_g": list(out["top_g"]), "key_reason": out["key_reason"]})

    return score_key


def key_windows(seqs: DataFrame, bundle: ModelBundle, top_g: int, batch_size: int) -> DataFrame:
    """Every window of every distinct sequence with its key scores:
    ``seq_key, n, position, window, next_event, event_index, key_rank, key_score, top_g, key_reason``
    (``seq_key``: :func:`seq_key` of the sequence)."""
    mapped = seqs.select(seq_key(F.col("events")).alias("seq_key"),
                         model_ids(F.col("events"), bundle.vocab_size).alias("events"), F.size("events").alias("n"))
    rows = window_rows(mapped, bundle.h, bundle.start_end, keep=["seq_key", "n"])
    udf = _key_udf(bundle.key_bytes, bundle.key_sha, bundle.train_vocab, top_g, batch_size)
    cols = ["window", "next_event"]
    scored = rows.select(*cols).distinct().select(*cols, udf(F.struct(*cols)).alias("s")).select(*cols, "s.*")
    return (rows.join(scored, cols)
            .select("seq_key", "n", "position", "window", "next_event",
                    event_index(F.col("position"), F.col("n"), bundle.h, bundle.markers).alias("event_index"),
                    "key_rank", "key_score", "top_g", "key_reason"))


def key_per_sequence(windows: DataFrame, g: int) -> DataFrame:
    """Per sequence: ``n_windows, max_key_rank, max_key_score``, the most surprising window
    (``key_position, key_window, key_next_event, key_expected, key_p``) and DeepLog's evidence at g
    (``n_anomalous_windows``, ``first_key_position`` and its window, next event and reason)."""
    # the most surprising window; on ties (windows holding an unseen event) the first one
    worst = F.max_by(F.struct("position", "window", "next_event", "top_g", "key_score"),
                     F.struct(F.col("key_score"), -F.col("position")))
    over = F.col("key_rank") > F.lit(g)
    first = F.min_by(F.struct("position", "window", "next_event", "key_reason"), F.when(over, F.col("position")))
    agg = windows.groupBy("seq_key").agg(
        F.count(F.lit(1)).cast("int").alias("n_windows"), F.max("key_rank").alias("max_key_rank"),
        F.max("key_score").alias("max_key_score"), worst.alias("_w"),
        F.sum(over.cast("int")).cast("int").alias("n_anomalous_windows"), first.alias("_f"),
        F.min(F.when(over, F.col("position"))).alias("first_key_position"))
    return agg.select(
        "seq_key", "n_windows", "max_key_rank", "max_key_score", "n_anomalous_windows", "first_key_position",
        F.col("_w.position").alias("key_position"), F.col("_w.window").alias("key_window"),
        F.col("_w.next_event").alias("key_next_event"), F.slice(F.col("_w.top_g"), 1, g).alias("key_expected"),
        F.exp(-F.col("_w.key_score")).alias("key_p"),
        F.when(F.col("first_key_position").isNotNull(), F.col("_f.window")).alias("first_key_window"),
        F.when(F.col("first_key_position").isNotNull(), F.col("_f.next_event")).alias("first_key_next_event"),
        F.when(F.col("first_key_position").isNotNull(), F.col("_f.key_reason")).alias("first_key_reason"))


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


def _value_udf(bundle: ModelBundle, batch_size: int, spec_threshold: float, full: bool):
    model_bytes, sha, vocab = bundle.value_bytes, bundle.value_sha, bundle.value_vocab
    mean, std = float(bundle.norm["mean"]), float(bundle.norm["std"])

    @F.pandas_udf(VALUE_OUT)
    def score_value(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np
        import torch

        from deeplog_spark.nn.model import load_checkpoint_bytes
        from deeplog_spark.nn.scoring import ValueScorer

        torch.set_num_threads(1)
        model, _ = load_checkpoint_bytes(model_bytes, "value", sha, "value_model.pt")
        scorer = ValueScorer(model, vocab, mean, std, batch_size)
        for pdf in batches:
            s = scorer.summarise(list(pdf["events"]), list(pdf["intervals"]), spec_threshold)
            has = s["position"] >= 0
            out = pd.DataFrame({
                "max_value_error": pd.array(np.where(has, s["max"], np.nan), dtype="Float32"),
                "value_position": pd.array(np.where(has, s["position"], 0), dtype="Int32"),
                "value_interval": pd.array(s["interval"], dtype="Float64"),
                "value_expected": pd.array(s["expected"], dtype="Float64"),
                "value_first_over": pd.array(np.where(s["first_over"] >= 0, s["first_over"], 0), dtype="Int32"),
            })
            out.loc[~has, ["max_value_error", "value_position", "value_interval", "value_expected"]] = pd.NA
            out.loc[s["first_over"] < 0, "value_first_over"] = pd.NA
            if full:
                r, o = s["residuals"], s["offsets"]
                out["value_errors"] = [[None if not np.isfinite(v) else float(v) for v in r[a:b]] if b > a else None
                                       for a, b in zip(o[:-1], o[1:])]
            else:
                out["value_errors"] = None
            yield out

    return score_value


def value_per_session(sessions: DataFrame, bundle: ModelBundle, spec_threshold: float, batch_size: int,
                      full: bool = False) -> DataFrame:
    """``sessions`` plus the value columns (null where a session has no intervals or no value model):
    ``max_value_error`` (largest standardized residual), its ``value_position``, the interval there and
    the model's expected interval (seconds), ``value_first_over`` (first step above the spec's
    mu + k*sigma) and, with ``full``, every step's residual (``value_errors``)."""
    names = [f.split()[0] for f in VALUE_OUT.split(", ")]
    if bundle.value_bytes is None:
        out = sessions
        for f in VALUE_OUT.split(", "):
            name, typ = f.split(" ", 1)
            out = out.withColumn(name, F.lit(None).cast(typ))
        return out
    udf = _value_udf(bundle, batch_size, spec_threshold, full)  # sessions without intervals get nulls
    scored = udf(F.struct(F.col("events"), F.col("intervals")))
    return sessions.withColumn("_v", scored).select("*", *[F.col("_v." + n).alias(n) for n in names]).drop("_v")


# -- all of them ------------------------------------------------------------------------------------


def sequence_scores(spark: SparkSession, seqs: DataFrame, bundle: ModelBundle, patterns: DataFrame | None,
                    templates: Mapping[int, str], g: int, batch_size: int) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(per-sequence scores of key, count, exact and PCA; the scored key windows; the sequences'
    count vectors, cached: unpersist them when done).

    ``seqs``: distinct ``events``. The key windows are returned for the per-window predictions.
    """
    kw = key_windows(seqs, bundle, g, batch_size)
    out = (seqs.select("events", seq_key(F.col("events")).alias("seq_key"))
           .join(key_per_sequence(kw, g), "seq_key").drop("seq_key"))
    counted = with_counts(seqs.select("events")).persist()  # small: the distinct sequences
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
    return out, kw, counted
