"""The run store: run directories, their ids and JSON files (no Spark import).

A run lives in ``<artifacts_root>/runs/<run_id>/``; the run id is a hash of the resolved config
and the version of the input table, so the same settings on the same data map to the same run.
No Spark import: the torch-side trainer (``deeplog_spark.nn``) writes runs too. What a run holds
is loaded for scoring by :class:`deeplog_spark.detect.bundle.ModelBundle`; the training's files are
written by :mod:`deeplog_spark.train.job`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deeplog_spark.core.config import valid_name


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
