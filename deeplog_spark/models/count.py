"""The quantitative detector: per-session event counts against the count patterns of normal sessions.

Training keeps the **normal patterns**: every distinct event-count vector of the train-split normal
sessions with how many sessions show it (Delta table ``count_patterns``, partitioned by run). Some
events' counts vary freely in normal operation (a block is read, verified or served as often as
clients ask), others are fixed by the workflow (three replicas: three receives, three stores...).
From the patterns each event gets its **variability**: the share of the normal sessions holding
it whose count differs from its most common count. Events at least ``free_share`` variable are
*free*; the others are *structural*. A session's counts of the structural events are its
**structure**, and the normal sessions sharing it are its **support**. A session is anomalous when

1. it holds an event that no normal session holds;
2. no normal session has its structure (support 0);
3. its structure is rare (support below ``min_support``) and its free counts differ from those of
   every normal session of that structure by more than ``slack`` (L1): a rare workflow must look
   like one seen before in every count;
4. a free event occurs more than ``cap_factor`` times its largest normal count.

``free_share``, ``min_support``, ``slack`` and ``cap_factor`` are chosen on the val split
(:mod:`deeplog_spark.detect.thresholds`). The score, for ROC curves, is log10((N + 1) / (s + 1)) with N
the normal sessions and s the support, or its maximum log10(N + 1) when a rule fires. Everything is
Spark SQL (array functions, joins, aggregates) on distinct count vectors; each anomalous verdict
says which rule fired, for which events and counts.

The exact rule, a baseline (``exact``): anomalous when the whole count vector is not a normal
pattern.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

#: Candidate knobs, searched on the val split (calibration).
FREE_SHARES = (0.05, 0.1, 0.2, 0.3, 0.5, math.inf)
MIN_SUPPORTS = (1, 2, 3, 5, 10, 20, 50, 100)
SLACKS = (0, 1, 2, 3, 5, 8)
CAP_FACTORS = (1.0, 2.0, math.inf)
#: d_free is computed only below this support (above it the slack never applies).
MAX_MIN_SUPPORT = max(MIN_SUPPORTS)


def count_vector(events: Column) -> Column:
    """``array<struct<event:int, count:int>>`` of an event array, sorted by event id."""
    ids = F.array_sort(F.array_distinct(events))
    return F.transform(ids, lambda e: F.struct(e.alias("event"), F.size(F.filter(events, lambda x: x == e))
                                               .cast("int").alias("count")))


def vector_key(counts: Column) -> Column:
    """A count vector as a join key: ``"5:3,9:3,22:1"``."""
    return F.array_join(F.transform(counts, lambda c: F.concat(c["event"].cast("string"), F.lit(":"),
                                                                c["count"].cast("string"))), ",")


def fit_patterns(train_normal: DataFrame) -> DataFrame:
    """``counts, sessions``: the distinct count vectors of the sessions (``events``) and their frequency."""
    return (train_normal.groupBy("events").agg(F.count(F.lit(1)).alias("n"))
            .select(count_vector(F.col("events")).alias("counts"), "n")
            .groupBy("counts").agg(F.sum("n").cast("long").alias("sessions")))


@dataclasses.dataclass(frozen=True)
class CountModel:
    """What scoring needs besides the patterns table: the statistics of the normal patterns and the knobs."""

    normal_sessions: int
    variability: dict[int, float]  # event -> share of its normal sessions with a count other than its mode
    caps: dict[int, int]  # event -> largest count in a normal session
    free_share: float = math.inf
    min_support: int = 1
    slack: int = 0
    cap_factor: float = math.inf

    @property
    def vocab(self) -> list[int]:
        return sorted(self.variability)

    def free(self, free_share: float | None = None) -> list[int]:
        """Events at least ``free_share`` variable (those whose counts vary freely in normal sessions)."""
        share = self.free_share if free_share is None else free_share
        return sorted(e for e, v in self.variability.items() if v >= share)

    def with_knobs(self, **knobs) -> "CountModel":
        return dataclasses.replace(self, **knobs)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["variability"] = {str(k): v for k, v in self.variability.items()}
        d["caps"] = {str(k): v for k, v in self.caps.items()}
        for k in ("free_share", "cap_factor"):
            d[k] = None if math.isinf(d[k]) else d[k]  # JSON has no infinity
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "CountModel":
        return cls(normal_sessions=int(d["normal_sessions"]),
                   variability={int(k): float(v) for k, v in d["variability"].items()},
                   caps={int(k): int(v) for k, v in d["caps"].items()},
                   free_share=math.inf if d.get("free_share") is None else float(d["free_share"]),
                   min_support=int(d.get("min_support", 1)), slack=int(d.get("slack", 0)),
                   cap_factor=math.inf if d.get("cap_factor") is None else float(d["cap_factor"]))


def fit_model(patterns: DataFrame) -> CountModel:
    """Per-event statistics of the normal patterns (one small aggregation)."""
    per_count = (patterns.select(F.explode("counts").alias("c"), "sessions")
                 .groupBy(F.col("c.event").alias("event"), F.col("c.count").alias("count"))
                 .agg(F.sum("sessions").alias("n")))
    rows = (per_count.groupBy("event")
            .agg(F.sum("n").alias("holding"), F.max("n").alias("mode_n"), F.max("count").alias("cap"))
            .collect())  # one row per event of the vocabulary
    total = patterns.agg(F.sum("sessions")).first()[0] or 0
    if not total:
        raise ValueError("no normal training sessions to learn count patterns from")
    return CountModel(normal_sessions=int(total),
                      variability={r["event"]: 1.0 - r["mode_n"] / r["holding"] for r in rows},
                      caps={r["event"]: int(r["cap"]) for r in rows})


def _int_array(values) -> Column:
    return F.array(*[F.lit(int(v)) for v in values]).cast("array<int>") if values else F.array().cast("array<int>")


def _split(counts: Column, free: Column) -> tuple[Column, Column]:
    return (F.filter(counts, lambda c: ~F.array_contains(free, c["event"])),
            F.filter(counts, lambda c: F.array_contains(free, c["event"])))


def _l1(a: Column, b: Column) -> Column:
    """L1 distance of two sparse count vectors (arrays of (event, count))."""
    ma, mb = F.map_from_entries(a), F.map_from_entries(b)
    keys = F.array_union(F.map_keys(ma), F.map_keys(mb))
    return F.aggregate(keys, F.lit(0), lambda acc, k: acc + F.abs(F.coalesce(F.element_at(ma, k), F.lit(0))
                                                                 - F.coalesce(F.element_at(mb, k), F.lit(0))))


def _diff_text(here: Column, normal: Column) -> Column:
    """``E26 4 (normal 3), E21 0 (normal 3)`` for the events whose counts differ."""
    mh, mn = F.map_from_entries(here), F.map_from_entries(normal)
    keys = F.array_sort(F.array_union(F.map_keys(mh), F.map_keys(mn)))
    differ = F.filter(keys, lambda k: F.coalesce(F.element_at(mh, k), F.lit(0)) != F.coalesce(F.element_at(mn, k), F.lit(0)))
    return F.array_join(F.transform(differ, lambda k: F.format_string(
        "E%d %d (normal %d)", k, F.coalesce(F.element_at(mh, k), F.lit(0)), F.coalesce(F.element_at(mn, k), F.lit(0)))), ", ")


def features(x: DataFrame, patterns: DataFrame, model: CountModel, shares: Sequence[float],
             with_reasons: bool = False) -> DataFrame:
    """``x`` (distinct ``counts`` vectors, with any other columns) once per free-share candidate in
    ``shares`` (column ``free_share``) with the rule inputs for that free set: ``unseen``
    (array<int>), ``support``, ``d_free`` (null when support is 0 or at least MAX_MIN_SUPPORT),
    ``cap_ratio`` and, with ``with_reasons``, the nearest normal structure (``nearest_structure``)
    and free counts (``nearest_free``) for the reason text.

    Every candidate in one pass: the patterns and structures are small and broadcast, so the few
    Spark jobs cost the same for one share (detection) as for all of them (calibration).
    """
    spark = x.sparkSession
    fs = spark.createDataFrame([(float(s), model.free(s)) for s in shares], "free_share double, _free array<int>")
    free = F.col("_free")
    vocab = _int_array(model.vocab)
    caps = F.create_map(*[x_ for e, c in sorted(model.caps.items()) for x_ in (F.lit(e), F.lit(float(c)))]) \
        if model.caps else F.create_map().cast("map<int,double>")
    s_here, f_here = _split(F.col("counts"), free)
    xs = x.crossJoin(F.broadcast(fs)).select(
        "*", F.transform(F.filter("counts", lambda c: ~F.array_contains(vocab, c["event"])),
                         lambda c: c["event"]).alias("unseen"),
        s_here.alias("_s"), f_here.alias("_f"), vector_key(s_here).alias("_skey"), vector_key(f_here).alias("_fkey"),
        F.aggregate(f_here, F.lit(0.0).cast("double"),
                    lambda acc, c: F.greatest(acc, c["count"] / F.coalesce(F.element_at(caps, c["event"]), F.lit(1.0))))
        .alias("cap_ratio"))
    s_p, f_p = _split(F.col("counts"), free)
    pats = (patterns.crossJoin(F.broadcast(fs))
            .select("free_share", s_p.alias("_ps"), f_p.alias("_pf"), vector_key(s_p).alias("_skey"), "sessions"))
    structures = pats.groupBy("free_share", "_skey").agg(F.sum("sessions").alias("support"), F.first("_ps").alias("_ps"))
    keys = ["free_share", "_skey"]
    xs = xs.join(F.broadcast(structures.select(*keys, "support")), keys, "left") \
        .withColumn("support", F.coalesce("support", F.lit(0)).cast("long"))
    # the free-count distance to the nearest normal session of the same, rare structure
    rare = xs.where((F.col("support") > 0) & (F.col("support") < MAX_MIN_SUPPORT)).select(*keys, "_fkey", "_f").distinct()
    near = (rare.join(F.broadcast(pats.select(*keys, "_pf")), keys).withColumn("_d", _l1(F.col("_f"), F.col("_pf")))
            .groupBy(*keys, "_fkey").agg(F.min("_d").alias("d_free"), F.min_by("_pf", "_d").alias("nearest_free")))
    xs = xs.join(near, [*keys, "_fkey"], "left")
    if with_reasons:  # the nearest normal structure of a structure no normal session has
        unknown = xs.where(F.col("support") == 0).select(*keys, "_s").distinct()
        cand = (unknown.join(F.broadcast(structures.select("free_share", "_ps")), "free_share")
                .withColumn("_d", _l1(F.col("_s"), F.col("_ps"))))
        nearest = cand.groupBy(*keys).agg(F.min_by("_ps", "_d").alias("nearest_structure"))
        xs = xs.join(nearest, keys, "left")
    else:
        xs = xs.withColumn("nearest_structure", F.lit(None).cast("array<struct<event:int,count:int>>"))
    return xs.drop("_skey", "_fkey", "_free")


def decide(model: CountModel) -> tuple[Column, Column]:
    """(anomalous, score) columns over :func:`features` at the model's knobs."""
    unseen = F.size("unseen") > 0
    rare_far = (F.col("support") < F.lit(model.min_support)) & (F.coalesce(F.col("d_free"), F.lit(10**9)) > F.lit(model.slack))
    capped = F.lit(False) if math.isinf(model.cap_factor) else F.col("cap_ratio") > F.lit(model.cap_factor)
    anomalous = unseen | (F.col("support") == 0) | rare_far | capped
    n = float(model.normal_sessions)
    score = F.when(anomalous, F.lit(math.log10(n + 1))).otherwise(F.log10(F.lit(n + 1) / (F.col("support") + 1)))
    return anomalous, score


def reason(model: CountModel, templates: Mapping[int, str]) -> Column:
    """The reason text of an anomalous verdict of the count detector (null when normal)."""
    tpl = F.create_map(*[x for e, t in sorted(templates.items()) for x in (F.lit(e), F.lit(t))]) if templates \
        else F.create_map().cast("map<int,string>")
    unseen_text = F.array_join(F.transform("unseen", lambda e: F.format_string(
        "E%d (%s)", e, F.coalesce(F.element_at(tpl, e), F.lit("?")))), ", ")
    caps = {e: c for e, c in model.caps.items()}
    cap_map = F.create_map(*[x for e, c in sorted(caps.items()) for x in (F.lit(e), F.lit(c))]) if caps \
        else F.create_map().cast("map<int,int>")
    over = F.filter("_f", lambda c: c["count"] > F.coalesce(F.element_at(cap_map, c["event"]), F.lit(0)) * F.lit(
        model.cap_factor if not math.isinf(model.cap_factor) else 1e18))
    over_text = F.array_join(F.transform(over, lambda c: F.format_string(
        "E%d occurs %d times, normal sessions at most %d", c["event"], c["count"],
        F.element_at(cap_map, c["event"]))), "; ")
    return (F.when(F.size("unseen") > 0, F.concat(F.lit("count: never in normal sessions: "), unseen_text))
            .when(F.col("support") == 0, F.concat(
                F.lit("count: no normal session has these counts; nearest normal pattern: "),
                F.coalesce(_diff_text(F.col("_s"), F.col("nearest_structure")), F.lit("none"))))
            .when((F.col("support") < F.lit(model.min_support))
                  & (F.coalesce(F.col("d_free"), F.lit(10**9)) > F.lit(model.slack)),
                  F.format_string("count: a rare workflow (%d normal sessions) whose other counts match none of them: %s",
                                  F.col("support"), F.coalesce(_diff_text(F.col("_f"), F.col("nearest_free")), F.lit("?"))))
            .when(F.size(over) > 0, F.concat(F.lit("count: "), over_text)))


def exact_anomalous(x: DataFrame, patterns: DataFrame) -> DataFrame:
    """``x`` plus ``exact_anomalous``: the whole count vector is not a normal pattern (the baseline rule)."""
    keys = patterns.select(vector_key(F.col("counts")).alias("_k"), F.lit(True).alias("_normal"))
    return (x.withColumn("_k", vector_key(F.col("counts"))).join(F.broadcast(keys), "_k", "left")
            .withColumn("exact_anomalous", F.col("_normal").isNull()).drop("_k", "_normal"))
