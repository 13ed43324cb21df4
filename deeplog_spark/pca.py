"""PCA baseline (Xu et al., SOSP 2009, as loglizer implements it) with Spark MLlib's PCA.

Features: per session the count of every event of the training vocabulary (events the training
sessions never hold are dropped, as loglizer does without its OOV column), weighted by tf-idf
(idf = ln(N / df) over the training sessions) and centred on the training mean. PCA (Spark MLlib,
``pyspark.ml.feature.PCA``) keeps the components that explain ``variance`` (95 %) of the
variance; a session's score is its squared prediction error (SPE): the squared norm of its
residual outside that subspace. loglizer's threshold is the Q-statistic (Jackson and Mudholkar)
at alpha = 0.001 (``c_alpha`` 3.2905); the product also chooses one on the val split.

Fitting uses the train-split normal sessions (DeepLog's assumption about training logs); scoring
is Spark SQL on distinct count vectors (explode, a join with the small loadings table, aggregates).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

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


def fit(spark: SparkSession, sequences: DataFrame, variance: float = 0.95) -> PcaModel:
    """Fit on ``sequences(counts, sessions)``: the distinct count vectors of the training sessions
    with how many sessions each stands for (every session is one sample of the PCA)."""
    from pyspark.ml.feature import PCA
    from pyspark.ml.functions import array_to_vector

    total = sequences.agg(F.sum("sessions")).first()[0] or 0
    if total < 2:
        raise ValueError("PCA needs at least two training sessions")
    exploded = sequences.select("sessions", F.explode("counts").alias("c"))
    df_rows = exploded.groupBy(F.col("c.event").alias("event")).agg(F.sum("sessions").alias("df")).collect()
    events = sorted(r["event"] for r in df_rows)  # the vocabulary: bounded by the templates
    if len(events) < 2:
        raise ValueError("PCA needs at least two distinct events in the training sessions")
    idf = {r["event"]: math.log(total / (r["df"] + 1e-8)) for r in df_rows}
    m = F.map_from_entries(F.col("counts"))
    dense = F.array(*[F.coalesce(F.element_at(m, F.lit(e)), F.lit(0)).cast("double") * F.lit(idf[e]) for e in events])
    weighted = sequences.select(dense.alias("x"), "sessions")
    mean = weighted.select(F.posexplode("x").alias("i", "v"), "sessions").groupBy("i").agg(
        (F.sum(F.col("v") * F.col("sessions")) / F.lit(float(total))).alias("m")).collect()
    mu = [0.0] * len(events)
    for r in mean:
        mu[r["i"]] = float(r["m"])
    centred = weighted.select(F.transform("x", lambda v, i: v - F.element_at(F.array(*[F.lit(x) for x in mu]), i + 1))
                              .alias("x"), "sessions")
    samples = centred.select(F.explode(F.array_repeat(F.col("x"), F.col("sessions").cast("int"))).alias("x"))
    fitted = PCA(k=len(events), inputCol="v", outputCol="p").fit(samples.select(array_to_vector("x").alias("v")))
    # MLlib reports each eigenvalue as a share of the total variance (the trace of the covariance)
    trace = centred.select(F.aggregate("x", F.lit(0.0), lambda acc, v: acc + v * v).alias("s"), "sessions") \
        .agg(F.sum(F.col("s") * F.col("sessions"))).first()[0] / (total - 1)
    eig = [float(v) * trace for v in fitted.explainedVariance.toArray()]
    if not (math.isfinite(trace) and trace > 0 and all(math.isfinite(v) for v in eig)):
        eig = [0.0] * len(events)  # every training session alike: no variance to explain
    k = next((i + 1 for i in range(len(eig)) if sum(eig[:i + 1]) >= variance * sum(eig) - 1e-12), 1)
    pc = fitted.pc.toArray()  # [event, component]
    return PcaModel(events=events, idf=[idf[e] for e in events], mean=mu,
                    components=[[float(v) for v in pc[i, :k]] for i in range(len(events))],
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
    from deeplog_spark.quantitative import vector_key

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
