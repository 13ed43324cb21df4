"""Every plot of the project (matplotlib on the Agg backend, no Spark): loss curves, ROC curves,
F1 bars and the workflow graph.

The workflow graph is readable at HDFS scale (29 event types) rather than a force-directed
hairball: events are laid out left to right by their mean relative position in the normal
sessions, so the drawing reads like the workflow (allocate, receive, store, ..., delete); edge
width grows with the log of the transition count; transitions rarer than ``min_prob`` of their
source's outgoing transitions are left out of the drawing (still in the JSON); anomalous
transitions are drawn in red on top; the templates are listed beside the graph instead of being
printed over it.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path


def plot_history(history: list[dict], task: str, path: Path, top_g: int = 9) -> Path:
    """Loss curves (train and val) and, for the key model, accuracy and top-g recall."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    panels = 2 if task == "key" else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if all("val_loss" in h for h in history):
        ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy" if task == "key" else "MSE (z-scored)")
    ax.set_title(f"{task} LSTM loss")
    ax.legend()
    if task == "key" and all("val_accuracy" in h for h in history):
        ax = axes[0][1]
        ax.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="val accuracy (top-1)")
        ax.plot(epochs, [h["val_top_g_recall"] for h in history], marker="o", label=f"val top-{top_g} recall")
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.01)
        ax.set_title("key LSTM validation")
        ax.legend()
    return save_figure(plt, fig, path)


def save_figure(plt, fig, path: Path, tight: bool = True) -> Path:
    """Save ``fig`` as a PNG (creating the folder) and close it."""
    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (jobs run headless)."""
    # matplotlib loads only when a plot is drawn
    import matplotlib

    matplotlib.use("Agg")
    # matplotlib loads only when a plot is drawn
    import matplotlib.pyplot as plt

    return plt


def plot_roc(curves: dict[str, list[tuple[float, float]]], aucs: dict[str, float | None], path: Path) -> Path:
    """Session-level ROC curves of the detectors (test split)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for det, pts in curves.items():
        if pts:
            auc = aucs.get(det)
            ax.plot([p[0] for p in pts], [p[1] for p in pts],
                    label=f"{det} (AUROC {auc:.3f})" if auc is not None else det)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, test sessions")
    ax.legend(loc="lower right")
    return save_figure(plt, fig, path)


def plot_f1_bars(metrics: list[dict], path: Path) -> Path:
    """Test F1 of every detector, the fused rule first (bars coloured by how the threshold was set)."""
    plt = pyplot()
    rows = [m for m in metrics if m["split"] == "test"]
    colors = {"val_chosen": "tab:blue", "spec": "tab:orange", "baseline": "tab:grey"}
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(rows) + 1), 4))
    labels = [m["detector"] + ("" if m["threshold_source"] == "val_chosen" else f"\n({m['threshold_source']})")
              for m in rows]
    bars = ax.bar(range(len(rows)), [m["f1"] for m in rows],
                  color=[colors.get(m["threshold_source"], "tab:green") for m in rows])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("F1 (test sessions)")
    ax.set_title("thresholds: blue chosen on val, orange DeepLog spec, grey baseline's own")
    return save_figure(plt, fig, path)


def layout(nodes: list[dict], extra: list[int]) -> dict[int, tuple[float, float]]:
    """Positions of the events: a left-to-right grid ordered by mean position in the session.

    Events sorted by mean position fill columns of equal height (about 2:1 wide); inside a
    column the most frequent event sits on the middle row, so the main path runs straight across.
    ``extra`` events (never in normal training) get one more column on the right.
    """
    pos: dict[int, tuple[float, float]] = {}
    ordered = sorted(nodes, key=lambda n: (n["mean_position"], n["event_id"]))
    ncols = max(1, min(len(ordered), round(math.sqrt(2 * len(ordered)))))
    per_col = math.ceil(len(ordered) / ncols) if ordered else 1
    for x in range(0, len(ordered), per_col):
        column = sorted(ordered[x:x + per_col], key=lambda n: -n["count"])
        for i, n in enumerate(column):
            row = (i + 1) // 2 * (1 if i % 2 else -1)  # 0, +1, -1, +2, -2, ...
            pos[n["event_id"]] = (float(x // per_col), float(row))
    for i, e in enumerate(sorted(extra)):
        pos[e] = (math.ceil(len(ordered) / per_col) + 0.3 if ordered else 0.0,
                  float((i + 1) // 2 * (1 if i % 2 else -1)))
    return pos


def plot_workflow(stats: dict, path: Path, min_prob: float = 0.01) -> Path:
    """Draw ``workflow_stats`` (see :func:`deeplog_spark.evaluate.workflow.workflow_stats`) to ``path``."""
    # matplotlib loads only when a plot is drawn
    from matplotlib.lines import Line2D

    # matplotlib loads only when a plot is drawn
    from matplotlib.patches import Circle, FancyArrowPatch

    plt = pyplot()
    nodes = stats["node_list"]
    normal_ids = {n["event_id"] for n in nodes}
    red = stats["anomalous_edge_list"]
    extra = sorted({e for r in red for e in (r["src"], r["dst"])} - normal_ids)
    pos = layout(nodes, extra)
    keys = {n["event_id"]: n["event_key"] for n in nodes}
    keys.update({e["event_id"]: e["event_key"] for e in stats["events_never_in_normal_training"]})

    fig = plt.figure(figsize=(19, 10))
    ax = fig.add_axes((0.01, 0.06, 0.62, 0.86))
    side = fig.add_axes((0.64, 0.02, 0.35, 0.92))
    side.axis("off")
    ax.axis("off")

    max_count = max([e["count"] for e in stats["edge_list"]] + [1])
    drawn = hidden = 0
    radius = 0.16
    for e in stats["edge_list"]:
        if e["prob"] < min_prob:
            hidden += 1
            continue
        drawn += 1
        lw = 0.4 + 3.2 * math.log1p(e["count"]) / math.log1p(max_count)
        _edge(ax, pos, e["src"], e["dst"], "#4d6a8a", lw, 0.25 + 0.6 * e["prob"], radius, FancyArrowPatch, Circle)
    max_red = max([r["windows"] for r in red] + [1])
    for r in red:
        lw = 1.2 + 2.0 * math.log1p(r["windows"]) / math.log1p(max_red)
        _edge(ax, pos, r["src"], r["dst"], "#d62728", lw, 0.95, radius, FancyArrowPatch, Circle, z=3)

    max_node = max([n["count"] for n in nodes] + [1])
    for eid, (x, y) in pos.items():
        normal = eid in normal_ids
        count = next((n["count"] for n in nodes if n["event_id"] == eid), 0)
        shade = 0.35 + 0.65 * math.log1p(count) / math.log1p(max_node) if normal else 0.0
        ax.add_patch(Circle((x, y), radius, facecolor=(1 - 0.55 * shade, 1 - 0.35 * shade, 1.0) if normal else "white",
                            edgecolor="#1f3b57" if normal else "#d62728", linewidth=1.5 if normal else 2.5, zorder=4))
        ax.text(x, y, keys.get(eid, f"E{eid}"), ha="center", va="center", fontsize=9, fontweight="bold", zorder=5)
    if pos:
        xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"Workflow of normal training sessions (run {stats['run_id']}, {stats['normal_sessions']:,} sessions, "
                 f"{stats['transitions']:,} transitions)\nleft to right: mean position in the session; red: transitions "
                 f"in flagged windows (g={stats['g']}, k={stats['k']}) never seen in normal training", fontsize=11)
    ax.legend(handles=[
        Line2D([0], [0], color="#4d6a8a", lw=2.5, label=f"normal transition (width ~ log count; {drawn} drawn)"),
        Line2D([0], [0], color="#d62728", lw=2.5, label=f"anomalous transition ({len(red)})"),
        Line2D([0], [0], marker="o", color="w", markeredgecolor="#d62728", markersize=12, markeredgewidth=2,
               label="event never in normal training"),
    ], loc="lower left", bbox_to_anchor=(0.0, -0.08), ncol=3, fontsize=9, frameon=False)
    if hidden:
        ax.text(0.0, -0.1, f"{hidden} rare transitions (< {min_prob:.0%} of their source event's) are not drawn; "
                "all are in workflow_stats.json", transform=ax.transAxes, fontsize=8, color="grey")

    lines = ["Events (count in normal training)"]
    for eid in sorted(pos, key=lambda e: (pos[e][0], -pos[e][1])):
        n = next((n for n in nodes if n["event_id"] == eid), None)
        tpl = n["template"] if n else next((t.get("template", "?") for t in stats["events_never_in_normal_training"]
                                            if t["event_id"] == eid), "?")
        label = f"{keys.get(eid, eid):>4} ({n['count']:,})" if n else f"{keys.get(eid, eid):>4} (never)"
        lines.append(f"{label}: " + textwrap.shorten(str(tpl), 70, placeholder="..."))
    side.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=8.5, family="monospace",
              transform=side.transAxes)
    return save_figure(plt, fig, path, tight=False)


def _edge(ax, pos, src, dst, color, lw, alpha, radius, FancyArrowPatch, Circle, z=2) -> None:
    if src not in pos or dst not in pos:
        return
    (x1, y1), (x2, y2) = pos[src], pos[dst]
    if src == dst:  # self-loop: a small ring above the node
        ax.add_patch(Circle((x1, y1 + radius * 1.35), radius * 0.55, fill=False, edgecolor=color, linewidth=lw,
                            alpha=alpha, zorder=z))
        return
    ax.add_patch(FancyArrowPatch((x1, y1), (x2, y2), connectionstyle="arc3,rad=0.18", arrowstyle="-|>",
                                 mutation_scale=9 + 2 * lw, color=color, linewidth=lw, alpha=alpha,
                                 shrinkA=13, shrinkB=13, zorder=z))
