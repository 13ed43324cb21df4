"""PCA baseline (Xu et al., SOSP 2009, as loglizer implements it).

Features: per session the count of every event of the training vocabulary (events the training
sessions never hold are dropped, as loglizer does without its OOV column), weighted by tf-idf
(idf = ln(N / df) over the training sessions) and centred on the training mean. PCA of their
covariance over every training session keeps the components that explain ``variance`` (95 %) of
the variance; a session's score is its squared prediction error (SPE): the squared norm of its
residual outside that subspace. loglizer's threshold is the Q-statistic (Jackson and Mudholkar)
at alpha = 0.001 (``c_alpha`` 3.2905); the product also chooses one on the val split.

Fitting uses the train-split normal sessions (DeepLog's assumption about training logs): one Spark
aggregation of exact integer sums over their distinct count vectors, then an SVD of the d x d
covariance on the driver (:func:`fit`; MLlib's ``PCA`` needed one row per session). Scoring
is Spark SQL on distinct count vectors (explode, a join with the small loadings table, aggregates).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.models.count import vector_key

#: loglizer's default: the Q-statistic at alpha = 0.001.
C_ALPHA = 3.2905


@dataclasses.dataclass(frozen=True)
class PcaModel:
    events: list[int]  # the feature order: the training vocabulary
    idf: list[float]
    mean: list[float]  # of the tf-idf weighted counts
    components: list[list[float]]  # [event][component], the kept principal components
    eigenvalues: list[float]  # all of them, descending (the Q-statistic needs the residual ones)
    q_threshold: float

    @property
    def k(self) -> int:
        return len(self.components[0]) if self.components else 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> "PcaModel":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def q_statistic(eigenvalues: list[float], k: int, c_alpha: float = C_ALPHA) -> float:
    """The SPE threshold of Jackson and Mudholkar from the residual eigenvalues (as loglizer computes it)."""
    rest = np.asarray(eigenvalues[k:], dtype=np.float64)
    phi = [float(np.sum(rest ** i)) for i in (1, 2, 3)]
    if phi[0] <= 0 or phi[1] <= 0:
        return 0.0
    h0 = 1.0 - 2 * phi[0] * phi[2] / (3.0 * phi[1] ** 2)
    return phi[0] * (c_alpha * math.sqrt(2 * phi[1] * h0 * h0) / phi[0] + 1.0
                     + phi[1] * h0 * (h0 - 1) / phi[0] ** 2) ** (1.0 / h0)


def fit(sequences: DataFrame, variance: float = 0.95) -> PcaModel:
    """Fit on ``sequences(counts, sessions)``: the distinct count vectors of the training sessions
    with how many sessions each stands for (every session is one sample of the PCA).

    One Spark aggregation over the pairs of events each distinct vector holds gives exact integer
    sums (sessions holding each event, and the session-weighted sums of ``count_i`` and
    ``count_i * count_j``); the driver turns them into the d x d covariance of the tf-idf weighted
    counts (d: the training vocabulary) and decomposes it with numpy (SVD of the symmetric
    covariance, as MLlib's ``PCA`` does). Nothing is expanded to one row per session, and the sums
    do not depend on the order Spark adds them in, so the model is the same on any partitioning.
    """
    total = sequences.agg(F.sum("sessions")).first()[0] or 0
    if total < 2:
        raise ValueError("PCA needs at least two training sessions")
    w = F.col("sessions").cast("long")
    pairs = (sequences.select(w.alias("w"), F.explode("counts").alias("a"), "counts")
             .select("w", "a", F.explode("counts").alias("b"))
             .groupBy(F.col("a.event").alias("i"), F.col("b.event").alias("j"))
             .agg(F.sum(F.col("w") * F.col("a.count") * F.col("b.count")).alias("sxx"),
                  F.sum("w").alias("sessions"), F.sum(F.col("w") * F.col("a.count")).alias("sx"))
             .collect())  # at most d^2 rows, only the pairs that share a session
    events = sorted({r["i"] for r in pairs})  # the vocabulary: bounded by the templates
    if len(events) < 2:
        raise ValueError("PCA needs at least two distinct events in the training sessions")
    at = {e: n for n, e in enumerate(events)}
    d = len(events)
    gram, df, first = np.zeros((d, d)), np.zeros(d), np.zeros(d)
    for r in pairs:
        gram[at[r["i"]], at[r["j"]]] = float(r["sxx"])
        if r["i"] == r["j"]:
            df[at[r["i"]]], first[at[r["i"]]] = float(r["sessions"]), float(r["sx"])
    idf = np.log(total / (df + 1e-8))
    mu = first * idf / total
    cov = (gram * np.outer(idf, idf) - total * np.outer(mu, mu)) / (total - 1)
    u, sv, _ = np.linalg.svd((cov + cov.T) / 2, hermitian=True)  # singular values, descending
    eig = [float(v) for v in sv]
    if not (np.trace(cov) > 0 and all(math.isfinite(v) for v in eig)):
        eig = [0.0] * d  # every training session alike: no variance to explain
    k = next((i + 1 for i in range(d) if sum(eig[:i + 1]) >= variance * sum(eig) - 1e-12), 1)
    return PcaModel(events=events, idf=[float(v) for v in idf], mean=[float(v) for v in mu],
                    components=[[float(v) for v in u[i, :k]] for i in range(d)],
                    eigenvalues=eig, q_threshold=q_statistic(eig, k))


def spe(spark: SparkSession, x: DataFrame, model: PcaModel, key: str = "counts") -> DataFrame:
    """``x`` plus ``pca_spe``: the squared residual of each row's ``counts`` outside the kept components.

    With w = count * idf - mean over the training vocabulary (events outside it dropped), SPE =
    |w|^2 - |P^T w|^2. Only the events a row holds are exploded; the terms of the others (w = -mean)
    are constants: |w|^2 = sum over held events of ((c idf - m)^2 - m^2) + sum(m^2), and
    P^T w = sum over held events of P_e (c idf) - P^T m.
    """
    p = np.asarray(model.components, dtype=np.float64)  # [event, k]
    m = np.asarray(model.mean, dtype=np.float64)
    const_sq, const_proj = float(np.sum(m * m)), (p.T @ m).tolist()
    loadings = spark.createDataFrame(
        [(e, float(w), float(mu), [float(v) for v in p[i]]) for i, (e, w, mu) in enumerate(zip(model.events, model.idf, model.mean))],
        "event int, w double, mu double, p array<double>")

    ids = x.select(key).distinct().withColumn("_id", vector_key(F.col(key)))
    terms = (ids.select("_id", F.explode(key).alias("c"))
             .join(F.broadcast(loadings), F.col("c.event") == F.col("event"))
             .select("_id", (F.col("c.count") * F.col("w")).alias("v"), "mu", "p"))
    sq = terms.groupBy("_id").agg(F.sum((F.col("v") - F.col("mu")) ** 2 - F.col("mu") ** 2).alias("sq"))
    proj = (terms.select("_id", F.posexplode(F.transform("p", lambda pj: pj * F.col("v"))).alias("j", "b"))
            .groupBy("_id", "j").agg(F.sum("b").alias("b")))
    c = F.array(*[F.lit(v) for v in const_proj]) if const_proj else F.array().cast("array<double>")
    res = (proj.withColumn("r", (F.col("b") - F.element_at(c, F.col("j") + 1)) ** 2).groupBy("_id")
           .agg(F.sum("r").alias("proj_sq")))
    # rows holding no vocabulary event: w = -mean, P^T w = -P^T m
    empty_proj = float(np.sum(np.asarray(const_proj) ** 2))
    scored = (ids.join(sq, "_id", "left").join(res, "_id", "left")
              .select("_id", (F.coalesce("sq", F.lit(0.0)) + F.lit(const_sq)
                               - F.coalesce("proj_sq", F.lit(empty_proj))).alias("pca_spe")))
    return x.withColumn("_id", vector_key(F.col(key))).join(scored, "_id", "left").drop("_id")
