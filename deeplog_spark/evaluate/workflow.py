"""Visual stage: the workflow DeepLog learns, as an event transition graph.

Nodes are events (labelled with their template), edges are transitions between consecutive
events of the training-normal sessions (train split, label normal or unlabelled), weighted by how
often they occur. Transitions inside windows the detector flagged (window events plus the next
event) that never occur in normal training are the anomalous transitions, drawn in red.

All counting is Spark aggregation; the driver only collects the aggregates (at most
(V+1)^2 edges for V event types, 29 for HDFS).
"""

from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.config import Config
from deeplog_spark.core.logs import stage
from deeplog_spark.core.runs import detection_rows, run_dir, write_json
from deeplog_spark.core.tables import read_table, table_exists
from deeplog_spark.detect.bundle import ModelBundle
from deeplog_spark.evaluate.plots import plot_workflow

log = logging.getLogger(__name__)


def transitions(events: Column) -> Column:
    """``array<struct<src:int, dst:int>>`` of consecutive pairs of an event array."""
    n = F.greatest(F.size(events) - 1, F.lit(0))
    return F.zip_with(F.slice(events, 1, n), F.slice(events, 2, n),
                      lambda a, b: F.struct(a.alias("src"), b.alias("dst")))


def normal_training_sessions(traces: DataFrame) -> DataFrame:
    """Train-split sessions labelled normal or unlabelled (what the models learn from)."""
    return traces.where((F.col("split") == "train") & (F.coalesce(F.col("label"), F.lit(0)) == 0))


def edge_counts(sessions: DataFrame) -> DataFrame:
    """``src, dst, count, sessions``: transition frequencies over the sessions' events."""
    return (sessions.select("block_id", F.explode(transitions(F.col("events"))).alias("t"))
            .groupBy(F.col("t.src").alias("src"), F.col("t.dst").alias("dst"))
            .agg(F.count(F.lit(1)).alias("count"), F.countDistinct("block_id").alias("sessions")))


def node_counts(sessions: DataFrame) -> DataFrame:
    """``event_id, count, sessions, mean_position, starts, ends`` over the sessions' events.

    ``mean_position`` is the mean relative position of the event in its sessions (0 = first
    event, 1 = last); the layout orders the workflow by it.
    """
    n = F.size("events")
    exploded = sessions.select("block_id", n.alias("n"), F.posexplode("events").alias("pos", "event_id"))
    rel = F.when(F.col("n") > 1, F.col("pos") / (F.col("n") - 1)).otherwise(F.lit(0.0))
    return exploded.groupBy("event_id").agg(
        F.count(F.lit(1)).alias("count"),
        F.countDistinct("block_id").alias("sessions"),
        F.avg(rel).alias("mean_position"),
        F.sum((F.col("pos") == 0).cast("long")).alias("starts"),
        F.sum((F.col("pos") == F.col("n") - 1).cast("long")).alias("ends"),
    )


def anomalous_transitions(flagged: DataFrame, normal_edges: DataFrame, vocab_size: int) -> DataFrame:
    """``src, dst, windows, sessions``: transitions in flagged windows never seen in normal training
    (between events: padding, session markers and unknown ids are left out)."""
    event = lambda x: (x >= 1) & (x <= vocab_size)  # noqa: E731
    seq = F.filter(F.concat("window", F.array("y_true")), event)
    return (flagged.select("block_id", F.explode(transitions(seq)).alias("t"))
            .select("block_id", F.col("t.src").alias("src"), F.col("t.dst").alias("dst"))
            .join(normal_edges.select("src", "dst"), ["src", "dst"], "left_anti")
            .groupBy("src", "dst")
            .agg(F.count(F.lit(1)).alias("windows"), F.countDistinct("block_id").alias("sessions")))


def workflow_stats(templates: list[dict], nodes: list[dict], edges: list[dict], red: list[dict],
                   meta: dict) -> dict:
    """The graph statistics written to ``workflow_stats.json`` (pure Python, no Spark)."""
    tpl = {t["event_id"]: t for t in templates}
    out_total: dict[int, int] = {}
    for e in edges:
        out_total[e["src"]] = out_total.get(e["src"], 0) + e["count"]
    edge_rows = [{**e, "prob": e["count"] / out_total[e["src"]]} for e in edges]
    seen = {n["event_id"] for n in nodes}
    red_events = {e for r in red for e in (r["src"], r["dst"])}
    node_rows = []
    for n in sorted(nodes, key=lambda n: n["mean_position"]):
        t = tpl.get(n["event_id"], {})
        node_rows.append({**n, "event_key": t.get("event_key", f"E{n['event_id']}"),
                          "template": t.get("template", "?"),
                          "out_degree": sum(1 for e in edges if e["src"] == n["event_id"]),
                          "in_degree": sum(1 for e in edges if e["dst"] == n["event_id"]),
                          "self_loop": any(e["src"] == e["dst"] == n["event_id"] for e in edges)})
    total = sum(e["count"] for e in edges)
    n_nodes = len(node_rows)
    return {
        **meta,
        "nodes": n_nodes,
        "edges": len(edge_rows),
        "transitions": total,
        "density": round(len(edge_rows) / (n_nodes * n_nodes), 4) if n_nodes else 0.0,
        "self_loops": sum(1 for e in edge_rows if e["src"] == e["dst"]),
        "anomalous_edges": len(red),
        "anomalous_edge_windows": sum(r["windows"] for r in red),
        "events_never_in_normal_training": [
            {"event_id": t["event_id"], "event_key": t["event_key"], "template": t["template"],
             "in_anomalous_transitions": t["event_id"] in red_events}
            for t in sorted(templates, key=lambda t: t["event_id"]) if t["event_id"] not in seen],
        "start_events": sorted(({"event_id": n["event_id"], "sessions": n["starts"]} for n in nodes if n["starts"]),
                               key=lambda d: -d["sessions"]),
        "end_events": sorted(({"event_id": n["event_id"], "sessions": n["ends"]} for n in nodes if n["ends"]),
                             key=lambda d: -d["sessions"]),
        "top_transitions": sorted(edge_rows, key=lambda e: -e["count"])[:15],
        "node_list": node_rows,
        "edge_list": sorted(edge_rows, key=lambda e: (e["src"], e["dst"])),
        "anomalous_edge_list": sorted(red, key=lambda r: -r["windows"]),
    }


def run_visual(spark: SparkSession, cfg: Config, model: str | None = None) -> dict:
    """Workflow graph PNG and statistics JSON for run ``model`` (default: latest) at (top_g, k_sigma)."""
    with stage("visual") as st:
        bundle = ModelBundle(cfg.artifacts_root, model)  # checks the run exists and is valid
        run_id = bundle.run_id
        out_dir = run_dir(cfg.artifacts_root, run_id) / "visual"
        traces = read_table(spark, cfg.table(schemas.TRACES))
        sessions = normal_training_sessions(traces).select("block_id", "events").cache()
        edges_df = edge_counts(sessions).cache()
        try:
            edges = [r.asDict() for r in edges_df.collect()]
            nodes = [r.asDict() for r in node_counts(sessions).collect()]
            n_sessions = sessions.count()
            pred_path = cfg.table(schemas.PREDICTIONS)
            red: list[dict] = []
            flagged_windows = 0
            if table_exists(spark, pred_path):
                flagged = read_table(spark, pred_path).where(detection_rows(run_id, cfg.top_g, cfg.k_sigma)) \
                    .where(F.col("fused_anomaly"))
                flagged_windows = flagged.count()
                red = [r.asDict() for r in anomalous_transitions(flagged, edges_df, bundle.vocab_size).collect()]
            if not flagged_windows:
                log.warning("visual: no flagged windows for run %s at g=%d k=%s (run detect first?); "
                            "drawing the normal workflow only", run_id, cfg.top_g, cfg.k_sigma)
        finally:
            sessions.unpersist()
            edges_df.unpersist()
        templates = [r.asDict() for r in read_table(spark, cfg.table(schemas.TEMPLATES)).collect()]
        meta = {"run_id": run_id, "g": cfg.top_g, "k": cfg.k_sigma, "normal_sessions": n_sessions,
                "flagged_windows": flagged_windows,
                "normal": "train split, sessions labelled normal or unlabelled",
                "anomalous": "transitions inside windows flagged by detect (fused) that never occur in normal training"}
        stats = workflow_stats(templates, nodes, edges, red, meta)
        png = plot_workflow(stats, out_dir / "workflow_graph.png")
        write_json(out_dir / "workflow_stats.json", stats)
        st.update(run_id=run_id, nodes=stats["nodes"], edges=stats["edges"],
                  anomalous_edges=stats["anomalous_edges"], flagged_windows=flagged_windows)
    return {"run_id": run_id, "workflow_graph": str(png), "workflow_stats": str(out_dir / "workflow_stats.json"),
            **{k: stats[k] for k in ("nodes", "edges", "transitions", "anomalous_edges", "normal_sessions",
                                     "flagged_windows")}}
