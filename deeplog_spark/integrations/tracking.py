"""MLflow: every training run is an MLflow run, evaluation logs to it, the detector is an MLflow model.

- **Training** (:func:`log_training`): the resolved config as params, every epoch's metrics
  (``key_val_loss`` ... with ``step`` = epoch), and the run folder as artifacts (checkpoints,
  histories, loss curves, the count and PCA models, the calibration). The detector is logged as one
  MLflow model, ``detector`` (pyfunc, with a signature; :class:`DeepLogPyfunc`), and registered as
  ``mlflow_model_name`` when that is set.
- **Evaluation** (:func:`log_evaluation`): the test metrics of every detector, and the evaluation
  folder (report, plots), on the same MLflow run.
- **Model URIs** (:func:`resolve_model`): ``--model`` takes ``runs:/<mlflow run id>/detector``,
  ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` besides a run id. The model's files are
  the run folder, so detect, eval and the other tasks score with exactly what was trained.

The tracking store is ``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<artifacts_root>/mlflow.db``
with artifacts under ``<artifacts_root>/mlartifacts``. The deeplog run folder keeps the MLflow run
id in ``mlflow.json``. No Spark import: the Spark-free trainer can log the same way.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from deeplog_spark import __version__
from deeplog_spark.core.errors import ConfigError, InputError
from deeplog_spark.core.runs import read_json, write_json

log = logging.getLogger(__name__)

#: The MLflow model's name inside its run (``runs:/<id>/detector``).
MODEL_ARTIFACT = "detector"
URI_PREFIXES = ("runs:/", "models:/")


def is_model_uri(model: str | None) -> bool:
    return bool(model) and model.startswith(URI_PREFIXES)


def tracking_uri(artifacts_root: str) -> str:
    """``$MLFLOW_TRACKING_URI``, else a sqlite store under ``artifacts_root``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath(artifacts_root)}/mlflow.db"


def _client(artifacts_root: str, uri: str | None = None):
    """MLflow, pointed at ``uri`` (default :func:`tracking_uri`) for this process only."""
    try:
        # mlflow loads only when tracking is on
        import mlflow
    except ImportError as exc:
        raise ConfigError("mlflow = true needs the mlflow package (pip install 'mlflow>=3,<4'), or set "
                          "--mlflow false") from exc
    uri = uri or tracking_uri(artifacts_root)
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {n: os.environ.get(n) for n in names}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # the setters also export the URIs as environment variables, which would then pass for the user's
    # choice in later runs of this process (another artifacts_root) and in every child process
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return mlflow


def _experiment(mlflow, name: str, artifacts_root: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri(artifacts_root).startswith("sqlite:"):  # a local store keeps its artifacts beside it
        location = (Path(artifacts_root).resolve() / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def _params(config: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:6000] for k, v in sorted(config.items())}


def _epoch_metrics(task: str, history: Sequence[Mapping[str, Any]]) -> list[tuple[str, float, int]]:
    out = []
    for step, epoch in enumerate(history, start=1):
        for k, v in epoch.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch":
                out.append((f"{task}_{k}", float(v), step))
    return out


def log_training(config: Mapping[str, Any], run_id: str, out_dir: Path, experiment: str,
                 model_name: str = "") -> dict:
    """Log a finished deeplog run (its folder ``out_dir``) as an MLflow run; returns its ids."""
    # mlflow loads only when tracking is on
    from mlflow.entities import Metric

    t0 = time.perf_counter()
    mlflow = _client(str(out_dir.parent.parent))
    exp_id = _experiment(mlflow, experiment, str(out_dir.parent.parent))
    with mlflow.start_run(experiment_id=exp_id, run_name=run_id, tags={"deeplog.run_id": run_id}) as run:
        mlflow.log_params(_params(config))
        now = int(time.time() * 1000)
        metrics = []
        for task in ("key", "value"):
            hist = out_dir / f"{task}_history.json"
            if hist.is_file():
                metrics += [Metric(k, v, now, s) for k, v, s in _epoch_metrics(task, read_json(hist)["history"])]
        cal = out_dir / "calibration.json"
        if cal.is_file():
            fused = read_json(cal).get("fused", {})
            for k in ("val_f1", "val_tp", "val_fp"):
                if isinstance(fused.get(k), (int, float)):
                    metrics.append(Metric(f"fused_{k}", float(fused[k]), now, 0))
        for i in range(0, len(metrics), 1000):
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
        ids = {"mlflow_run_id": run.info.run_id, "experiment_id": exp_id, "tracking_uri": tracking_uri(
            str(out_dir.parent.parent))}
        write_json(out_dir / "mlflow.json", ids)
        mlflow.log_artifacts(str(out_dir), artifact_path="run")
        info = log_detector(mlflow, out_dir, model_name)
        ids["model_uri"] = info.model_uri
        if model_name:
            ids["registered_version"] = str(info.registered_model_version)
    log.info("mlflow: run %s (experiment %s) logged in %.1f s%s", ids["mlflow_run_id"], experiment,
             time.perf_counter() - t0, f", registered {model_name} v{ids['registered_version']}" if model_name else "")
    write_json(out_dir / "mlflow.json", ids)
    return ids


def log_detector(mlflow, out_dir: Path, model_name: str = ""):
    """Log the run folder as one pyfunc model (``detector``), optionally registered."""
    # mlflow loads only when tracking is on
    from mlflow.models import ModelSignature

    # mlflow loads only when tracking is on
    from mlflow.types.schema import Array, ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec(Array("long"), "events")]),
        outputs=Schema([ColSpec("integer", "key_rank"), ColSpec("double", "key_score"),
                        ColSpec("boolean", "deeplog_anomalous"), ColSpec("boolean", "key_nll_anomalous")]))
    package = Path(__file__).resolve().parent.parent
    # the package's own code travels with the model when it is a folder (not a --py-files zip or wheel)
    code = [str(package)] if package.is_dir() else None
    quiet = logging.getLogger("mlflow.pyfunc")
    level = quiet.level
    with warnings.catch_warnings():  # cloudpickle and type-hint advice, printed on every log_model
        warnings.simplefilter("ignore")
        quiet.setLevel(logging.ERROR)
        # imported here: it loads mlflow.pyfunc, which only logging a model needs
        from deeplog_spark.integrations.mlflow_model import RUN_ARTIFACT, DeepLogPyfunc

        try:
            return mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT, python_model=DeepLogPyfunc(), artifacts={RUN_ARTIFACT: str(out_dir)},
                signature=signature, registered_model_name=model_name or None, code_paths=code,
                pip_requirements=[f"deeplog-spark=={__version__}" if code is None else "torch", "numpy<2", "pandas"])
        finally:
            quiet.setLevel(level)


def log_evaluation(run_dir_: Path, metrics: Sequence[Mapping[str, Any]], eval_dir: Path) -> str | None:
    """Log the test metrics of every detector and the evaluation folder to the run's MLflow run
    (None when the run was not tracked)."""
    ids_path = run_dir_ / "mlflow.json"
    if not ids_path.is_file():
        return None
    ids = read_json(ids_path)
    mlflow = _client(str(run_dir_.parent.parent), os.environ.get("MLFLOW_TRACKING_URI") or ids["tracking_uri"])
    values = {}
    for m in metrics:
        if m["split"] != "test":
            continue
        for k in ("precision", "recall", "f1", "fpr", "auroc"):
            if isinstance(m.get(k), (int, float)):
                values[f"test_{m['detector']}_{m['threshold_source']}_{k}"] = float(m[k])
    with mlflow.start_run(run_id=ids["mlflow_run_id"]):
        mlflow.log_metrics(values)
        mlflow.log_artifacts(str(eval_dir), artifact_path="eval")
    log.info("mlflow: %d evaluation metrics logged to run %s", len(values), ids["mlflow_run_id"])
    return ids["mlflow_run_id"]


def _store_problem(exc: BaseException, uri: str) -> str:
    """What is wrong with the tracking store at ``uri``, in a few words, from the error it raised."""
    first = (str(exc).splitlines() or [""])[0][:300]
    if "locked" in first.lower():
        return f"the MLflow store {uri} is locked (another process is writing it; retry when it is done)"
    return f"the MLflow store {uri} cannot be read ({type(exc).__name__}: {first})"


def check_store(artifacts_root: str) -> str:
    """Open the tracking store and read from it, before a training spends its time: a truncated,
    corrupt or locked store fails here in one line. Returns the store's URI."""
    mlflow = _client(artifacts_root)
    uri = tracking_uri(artifacts_root)
    try:
        mlflow.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MlflowException, sqlalchemy or sqlite errors: the store is unusable
        raise InputError(f"{_store_problem(exc, uri)}; repair or move it, or run with --mlflow false to train "
                         "without tracking") from exc
    return uri


def resolve_model(model: str, artifacts_root: str) -> tuple[str, str]:
    """``(artifacts root, deeplog run id)`` of an MLflow model URI, its files downloaded under
    ``<artifacts_root>/mlflow_models/`` (raises InputError when the URI names nothing)."""
    mlflow = _client(artifacts_root)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    dest = Path(artifacts_root) / "mlflow_models" / safe
    try:  # the pyfunc model keeps the run folder under artifacts/<deeplog run id>/
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{model.rstrip('/')}/artifacts",
                                                         dst_path=str(dest)))
    except Exception as exc:  # noqa: BLE001 - MlflowException, or a store error: the URI names nothing usable
        if "locked" in str(exc).lower():
            raise InputError(f"--model {model}: {_store_problem(exc, tracking_uri(artifacts_root))}") from exc
        raise InputError(f"--model {model}: no deeplog detector at that MLflow URI ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]})") from exc
    found = [p.parent for p in local.glob("*/run.json")]
    if len(found) != 1:
        raise InputError(f"--model {model}: the MLflow model holds no deeplog run folder (is it a deeplog detector?)")
    run = read_json(found[0] / "run.json")["run_id"]
    root = dest / "root"
    target = root / "runs" / run
    if target.exists():
        shutil.rmtree(found[0])
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        found[0].rename(target)
    return str(root), run
