"""A trained run, loaded for scoring: its checkpoints, the value model's statistics, the count and
PCA models and the calibration (what detection, evaluation, calibration, the workflow graph and
online fine-tuning read)."""

from __future__ import annotations

import hashlib

from deeplog_spark.core.errors import InputError
from deeplog_spark.core.names import marker_ids
from deeplog_spark.core.runs import read_json, resolve_run_id, run_dir
from deeplog_spark.integrations.tracking import is_model_uri, resolve_model
from deeplog_spark.models.count import CountModel
from deeplog_spark.models.pca import PcaModel
from deeplog_spark.nn.model import load_checkpoint


class ModelBundle:
    """A trained run as detection, evaluation, calibration and the visual and online tasks use it
    (``run_id``: a run id, None for the latest, or an MLflow ``runs:/``/``models:/`` URI).

    Holds the checkpoints' bytes (shipped to the executors inside the scoring functions, so no
    SparkContext broadcast is needed) and what was fitted beside them: the value model's
    normalisation and residual statistics, the count and PCA models and the calibration chosen
    on the val split. Raises :class:`deeplog_spark.core.errors.InputError` (or its subclass
    ``CheckpointError``) for a missing, malformed or foreign run.
    """

    def __init__(self, artifacts_root: str, run_id: str | None):
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
            self.count = CountModel.from_json(read_json(self.dir / "count_model.json"))
        if (self.dir / "pca_model.json").is_file():
            self.pca = PcaModel.from_json(read_json(self.dir / "pca_model.json"))
        if (self.dir / "calibration.json").is_file():
            self.calibration = read_json(self.dir / "calibration.json")

    @property
    def start_end(self) -> tuple[int, int] | None:
        """The session marker ids of the key model (None for a model without markers)."""
        return marker_ids(self.vocab_size) if self.markers else None

    def value_threshold(self, k: float) -> float | None:
        """The spec's per-step threshold mu + k*sigma of the value model's residuals (None without one)."""
        if self.residuals is None:
            return None
        return self.residuals["mu"] + k * self.residuals["sigma"]
