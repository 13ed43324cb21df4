"""The run store: run directories, their ids and JSON files (no Spark import).

A run lives in ``<artifacts_root>/runs/<run_id>/``; the run id is a hash of the resolved config
and the version of the input table, so the same settings on the same data map to the same run.
No Spark import: the torch-side trainer (``deeplog_spark.nn``) writes runs too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deeplog_spark.config import valid_name


def validate_run_id(run_id: str) -> str:
    """Refuse run ids (and batch names) that could escape the runs directory or a SQL predicate."""
    if not valid_name(run_id):
        raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (max 64, no '..')")
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


def detection_rows(run_id: str, g: int, k: float, batch: str = "") -> str:
    """SQL predicate of one detection's rows in ``predictions`` and ``verdicts`` (names are
    validated, so no quote can get in)."""
    cond = f"run_id = '{validate_run_id(run_id)}' AND g = {int(g)} AND k = {float(k)!r}"
    return cond + (f" AND ingest_batch = '{validate_run_id(batch)}'" if batch else "")


def detection_stats_path(run_dir_: Path, g: int, k: float, batch: str = "") -> Path:
    """Where detect writes, and evaluate reads, the statistics of one detection."""
    return run_dir_ / "detection" / f"detection_stats_g{int(g)}_k{float(k)}{'_' + batch if batch else ''}.json"


class ModelBundle:
    """A trained run as detection, evaluation, calibration and the visual and online tasks use it
    (``run_id``: a run id, None for the latest, or an MLflow ``runs:/``/``models:/`` URI).

    Holds the checkpoints' bytes (shipped to the executors inside the scoring functions, so no
    SparkContext broadcast is needed) and what was fitted beside them: the value model's
    normalisation and residual statistics, the count and PCA models and the calibration chosen
    on the val split. Raises :class:`deeplog_spark.errors.InputError` (or its subclass
    ``CheckpointError``) for a missing, malformed or foreign run.
    """

    def __init__(self, artifacts_root: str, run_id: str | None):
        import hashlib

        from deeplog_spark.errors import InputError
        from deeplog_spark.nn.model import load_checkpoint
        from deeplog_spark.tracking import is_model_uri, resolve_model

        if is_model_uri(run_id):  # runs:/... or models:/...: the run folder from MLflow
            artifacts_root, run_id = resolve_model(run_id, artifacts_root)
        try:
            self.run_id = resolve_run_id(artifacts_root, run_id)
        except ValueError as exc:  # a malformed --model
            raise InputError(str(exc)) from exc
        self.dir = run_dir(artifacts_root, self.run_id)
        if not self.dir.is_dir():
            raise InputError(f"no model run {self.run_id!r} under {self.dir.parent}")
        key = self.dir / "key_model.pt"
        if not key.is_file():
            raise InputError(f"run {self.run_id} has no key model ({key} missing)")
        model, payload = load_checkpoint(key, expect_task="key", expect_run=self.run_id)
        self.key_bytes = key.read_bytes()
        self.key_sha = hashlib.sha256(self.key_bytes).hexdigest()
        self.key_config = dict(payload["model_config"])
        self.vocab_size = int(payload["extra"]["vocab_size"])
        self.train_vocab = [int(e) for e in payload["extra"]["train_vocab"]]
        self.h = int(model.cfg.h)
        self.markers = bool(model.cfg.markers)
        self.classes = int(model.cfg.classes)
        self.value_bytes = self.value_sha = None
        self.norm = self.residuals = None
        value = self.dir / "value_model.pt"
        if value.is_file():
            vmodel, vpayload = load_checkpoint(value, expect_task="value", expect_run=self.run_id)
            self.value_bytes = value.read_bytes()
            self.value_sha = hashlib.sha256(self.value_bytes).hexdigest()
            self.value_vocab = [int(e) for e in vpayload["extra"]["train_vocab"]]
            self.norm = read_json(self.dir / "value_norm.json")
            self.residuals = read_json(self.dir / "value_threshold.json")
        self.count = self.pca = self.calibration = None
        if (self.dir / "count_model.json").is_file():
            from deeplog_spark.quantitative import CountModel

            self.count = CountModel.from_json(read_json(self.dir / "count_model.json"))
        if (self.dir / "pca_model.json").is_file():
            from deeplog_spark.pca import PcaModel

            self.pca = PcaModel.from_json(read_json(self.dir / "pca_model.json"))
        if (self.dir / "calibration.json").is_file():
            self.calibration = read_json(self.dir / "calibration.json")

    @property
    def start_end(self) -> tuple[int, int] | None:
        """The session marker ids of the key model (None for a model without markers)."""
        from deeplog_spark.names import marker_ids

        return marker_ids(self.vocab_size) if self.markers else None

    def value_threshold(self, k: float) -> float | None:
        """The spec's per-step threshold mu + k*sigma of the value model's residuals (None without one)."""
        if self.residuals is None:
            return None
        return self.residuals["mu"] + k * self.residuals["sigma"]


def save_model(out_dir: Path, task: str, model_config: dict, result: dict, extra: dict, top_g: int = 9) -> dict:
    """Write a trained model's checkpoint, history JSON and loss curve into its run directory and
    return its summary (used by the Spark job and the Spark-free trainer alike)."""
    from deeplog_spark.nn.model import build_model, save_checkpoint
    from deeplog_spark.plots import plot_history

    model = build_model(task, model_config)
    model.load_state_dict(result["state_dict"])
    history = result["history"]
    ckpt = save_checkpoint(out_dir / f"{task}_model.pt", task, model, extra)
    write_json(out_dir / f"{task}_history.json", {k: v for k, v in result.items() if k != "state_dict"})
    plot_history(history, task, out_dir / f"{task}_loss_curve.png", top_g)
    out = {"checkpoint": str(ckpt), "epochs": len(history), "best_epoch": result["best_epoch"],
           "early_stopped": result["early_stopped"]}
    if result["best_epoch"] > 0:
        best = history[result["best_epoch"] - 1]
    elif result.get("baseline"):  # no epoch beat the starting weights (a fine-tuning run)
        best = {f"val_{k}": v for k, v in result["baseline"].items()}
    else:
        best = history[-1]
    out.update({k: best[k] for k in ("val_loss", "val_accuracy", "val_top_g_recall", "val_mean_residual") if k in best})
    if result.get("baseline"):
        out["val_top_g_recall_before"] = result["baseline"].get("top_g_recall")
    out["median_windows_per_s"] = sorted(h["windows_per_s"] for h in history)[len(history) // 2]
    out["train_seconds"] = round(sum(h["seconds"] for h in history), 2)
    out["precision"] = result.get("precision", "fp32")
    return out
