"""Run directories and their files: JSON, loss-curve PNGs (no Spark import).

A run lives in ``<artifacts_root>/runs/<run_id>/``; the run id is a hash of the resolved config
and the version of the input table, so the same settings on the same data map to the same run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deeplog_spark.config import NAME_RE


def validate_run_id(run_id: str) -> str:
    """Refuse run ids that could escape the runs directory (``..``, slashes, ...)."""
    if not isinstance(run_id, str) or not NAME_RE.match(run_id) or ".." in run_id:
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (max 64)")
    return run_id


def run_dir(artifacts_root: str, run_id: str) -> Path:
    return Path(artifacts_root) / "runs" / validate_run_id(run_id)


def resolve_run_id(artifacts_root: str, run_id: str | None) -> str:
    """``run_id`` checked, or the latest trained run's id (FileNotFoundError when there is none)."""
    if run_id is None:
        latest = Path(artifacts_root) / "runs" / "latest.json"
        if not latest.is_file():
            raise FileNotFoundError(f"no trained model under {latest.parent}: train first or pass --model RUN_ID")
        run_id = read_json(latest)["run_id"]
    return validate_run_id(run_id)


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


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
    import matplotlib

    matplotlib.use("Agg")
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
    """Test F1 per detector at the default and the val-chosen thresholds."""
    plt = pyplot()
    rows = [m for m in metrics if m["split"] == "test"]
    dets = list(dict.fromkeys(m["detector"] for m in rows))
    sources = list(dict.fromkeys(m["threshold_source"] for m in rows))
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(len(sources), 1)
    for i, src in enumerate(sources):
        vals = [next((m["f1"] for m in rows if m["detector"] == d and m["threshold_source"] == src), 0.0) for d in dets]
        g = next(m["g"] for m in rows if m["threshold_source"] == src)
        bars = ax.bar([j + i * width for j in range(len(dets))], vals, width, label=f"{src} (g={g})")
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks([j + width * (len(sources) - 1) / 2 for j in range(len(dets))], dets)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 (test sessions)")
    ax.legend()
    return save_figure(plt, fig, path)
