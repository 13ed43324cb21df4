"""The quantitative (count) detector and the PCA baseline on hand-made sessions."""

import collections
import math

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from deeplog_spark.models import pca
from deeplog_spark.models import count as Q

# A write workflow (E5 x3, E22, E11 x3, E9 x3, E26 x3) read 0..5 times (E3): the read count varies
# freely; one rare variant with a deletion error (E20) seen only with many reads.
BASE = [5, 5, 5, 22, 11, 9, 11, 9, 11, 9, 26, 26, 26]
NORMAL = [BASE + [3] * r for r in range(6) for _ in range(10)] + [BASE + [20] + [3] * 8, BASE + [20] + [3] * 9]


def _df(spark, sessions):
    return spark.createDataFrame([(s,) for s in sessions], "events array<int>")


@pytest.fixture(scope="module")
def fitted(spark):
    patterns = Q.fit_patterns(_df(spark, NORMAL)).cache()
    return patterns, Q.fit_model(patterns)


def test_count_vectors_and_patterns(spark, fitted):
    got = _df(spark, [[5, 22, 5, 3], []]).select(Q.count_vector(F.col("events")).alias("c")).collect()
    assert [[(x["event"], x["count"]) for x in r.c] for r in got] == [[(3, 1), (5, 2), (22, 1)], []]
    patterns, model = fitted
    want = collections.Counter(tuple(sorted(collections.Counter(s).items())) for s in NORMAL)
    assert {tuple((c["event"], c["count"]) for c in r.counts): r.sessions for r in patterns.collect()} == dict(want)
    assert model.normal_sessions == len(NORMAL) == 62
    # E3 is held by 60 sessions with 1..9 reads: most differ from its mode; E5 is always 3
    assert model.variability[3] > 0.5 and model.variability[5] == 0.0 and model.caps[3] == 9
    assert model.free(0.3) == [3]


def _decide(spark, fitted, sessions, **knobs):
    patterns, model = fitted
    model = model.with_knobs(**{"free_share": 0.3, "min_support": 5, "slack": 1, **knobs})
    x = _df(spark, sessions).select("events", Q.count_vector(F.col("events")).alias("counts"))
    anomalous, score = Q.decide(model)
    rows = Q.features(x, patterns, model, [model.free_share], with_reasons=True).select(
        "events", anomalous.alias("a"), score.alias("s"), Q.reason(model, {7: "writeBlock exception"}).alias("r")).collect()
    return {tuple(r.events): (r.a, r.s, r.r) for r in rows}


def test_an_event_never_seen_in_normal_sessions_is_flagged_with_its_name(spark, fitted):
    got = _decide(spark, fitted, [BASE + [7]])
    anomalous, score, reason = got[tuple(BASE + [7])]
    assert anomalous and score == pytest.approx(math.log10(63))
    assert reason == "count: never in normal sessions: E7 (writeBlock exception)"


def test_counts_outside_normal_structure_are_flagged_and_free_counts_are_tolerated(spark, fitted):
    truncated, replica4 = [5, 22], BASE + [5, 26]
    unseen_reads = BASE + [3] * 7  # 7 reads: no normal session has it, but reads vary freely
    got = _decide(spark, fitted, [truncated, replica4, unseen_reads, BASE + [3] * 2])
    assert got[tuple(truncated)][0] and got[tuple(replica4)][0]
    assert "E26 4 (normal 3)" in got[tuple(replica4)][2] and "E5 4 (normal 3)" in got[tuple(replica4)][2]
    assert got[tuple(truncated)][2].startswith("count: no normal session has these counts")
    assert not got[tuple(unseen_reads)][0] and got[tuple(unseen_reads)][2] is None
    assert not got[tuple(BASE + [3] * 2)][0]
    # the score grows with rarity: a common pattern scores below a rare one
    assert got[tuple(BASE + [3] * 2)][1] < got[tuple(replica4)][1]


def test_a_rare_structure_must_match_one_of_its_normal_sessions_in_every_count(spark, fitted):
    e20_with_reads, e20_without = BASE + [20] + [3] * 10, BASE + [20]
    got = _decide(spark, fitted, [e20_with_reads, e20_without])
    assert not got[tuple(e20_with_reads)][0]  # 1 read from a normal E20 session: within slack 1
    assert got[tuple(e20_without)][0]  # 8 reads from the nearest: outside
    assert "a rare workflow (2 normal sessions)" in got[tuple(e20_without)][2] and "E3 0 (normal 8)" in got[tuple(e20_without)][2]
    # with min_support 1 the rare structure is trusted like any other
    assert not _decide(spark, fitted, [e20_without], min_support=1)[tuple(e20_without)][0]


def test_a_free_count_far_above_any_normal_session_is_capped(spark, fitted):
    heavy = BASE + [3] * 40
    assert not _decide(spark, fitted, [heavy])[tuple(heavy)][0]  # no cap by default
    anomalous, _, reason = _decide(spark, fitted, [heavy], cap_factor=2.0)[tuple(heavy)]
    assert anomalous and reason == "count: E3 occurs 40 times, normal sessions at most 9"


def test_the_exact_rule_flags_any_unseen_vector(spark, fitted):
    patterns, _ = fitted
    x = _df(spark, [BASE + [3] * 7, BASE + [3]]).select("events", Q.count_vector(F.col("events")).alias("counts"))
    got = Q.exact_anomalous(x, patterns).select("events", "exact_anomalous")
    expected = spark.createDataFrame([(BASE + [3] * 7, True), (BASE + [3], False)], "events array<int>, exact_anomalous boolean")
    assertDataFrameEqual(got, expected)


def test_count_model_json_round_trip(fitted):
    _, model = fitted
    m = model.with_knobs(free_share=0.3, min_support=10, slack=2, cap_factor=math.inf)
    assert Q.CountModel.from_json(m.to_json()) == m
    assert m.to_json()["cap_factor"] is None  # JSON has no infinity


def test_pca_matches_loglizers_numpy_computation(spark):
    """SPE and the Q-statistic threshold as loglizer computes them (tf-idf, zero mean, 95 % variance)."""
    rng = np.random.default_rng(3)
    parts = [[1, 1, 2, 3], [4, 4, 5, 6, 6], [7, 8]]
    train = []
    for _ in range(300):
        k = int(rng.integers(1, 4))
        s = sum((p * k for p in parts[:int(rng.integers(1, 4))]), [])
        train.append(s + ([int(rng.integers(1, 9))] if rng.random() < 0.2 else []))
    test = train[:5] + [[1, 2, 3], [9, 9, 1], [4] * 9 + [5] * 7]
    seqs = (_df(spark, train).groupBy("events").agg(F.count(F.lit(1)).alias("sessions"))
            .select(Q.count_vector(F.col("events")).alias("counts"), "sessions"))
    model = pca.fit(seqs)
    x = _df(spark, test).select("events", Q.count_vector(F.col("events")).alias("counts"))
    got = {tuple(r.events): r.pca_spe for r in pca.spe(spark, x, model).collect()}

    events = sorted({e for s in train for e in s})
    X = np.array([[collections.Counter(s)[e] for e in events] for s in train], float)
    idf = np.log(len(train) / ((X > 0).sum(0) + 1e-8))
    W = X * idf
    mu = W.mean(0)
    u, sigma, _ = np.linalg.svd((W - mu).T @ (W - mu) / len(train))
    k = next(i + 1 for i in range(len(sigma)) if sigma[:i + 1].sum() / sigma.sum() >= 0.95)
    proj = np.eye(len(events)) - u[:, :k] @ u[:, :k].T
    assert model.k == k
    for s in test:
        w = np.array([collections.Counter(s)[e] for e in events], float) * idf - mu
        assert got[tuple(s)] == pytest.approx(float(w @ proj @ proj @ w), rel=1e-6, abs=1e-9)
    # the eigenvalues differ only by the n-1 of a sample covariance (loglizer divides by n)
    assert model.q_threshold == pytest.approx(pca.q_statistic(list(sigma * len(train) / (len(train) - 1)), k), rel=1e-6)


def test_pca_fit_is_the_same_on_any_partitioning(spark):
    """The model comes from exact integer sums: no float addition order, no session expanded to a row."""
    seqs = (_df(spark, NORMAL + [[7, 7, 8]] * 5).groupBy("events").agg(F.count(F.lit(1)).alias("sessions"))
            .select(Q.count_vector(F.col("events")).alias("counts"), "sessions"))
    one, many = pca.fit(seqs.coalesce(1)), pca.fit(seqs.repartition(7))
    assert one == many
    assert one.events == [3, 5, 7, 8, 9, 11, 20, 22, 26] and 1 <= one.k < len(one.events)
    assert one.eigenvalues == sorted(one.eigenvalues, reverse=True) and one.q_threshold > 0
