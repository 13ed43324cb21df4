"""The Databricks Asset Bundle (``databricks.yml``), checked offline.

Each job is loaded with the ``databricks-bundles`` package's job models (``Job.from_dict``), which
refuse a field the Jobs API does not have; each task's entry point must be one of the wheel's, its
parameters must parse with the CLI's own parser (a flag, a task or a config key that does not
exist fails), and ``depends_on`` must name tasks of the same job. The bundle is not deployed here
(no workspace is reachable).
"""

from __future__ import annotations

import re

import pytest
import tomllib
import yaml
from conftest import REPO

from deeplog_spark import tasks
from deeplog_spark.cli import parse_job_args

jobs_api = pytest.importorskip("databricks.bundles.jobs", reason="databricks-bundles is in requirements.txt")

BUNDLE = yaml.safe_load((REPO / "databricks.yml").read_text())


def _resolved(value, variables: dict):
    """``value`` with every ``${var.NAME}`` replaced by the variable's default."""
    if isinstance(value, str):
        return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]["default"]), value)
    if isinstance(value, list):
        return [_resolved(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _resolved(v, variables) for k, v in value.items()}
    return value


JOBS = {name: _resolved(job, BUNDLE["variables"]) for name, job in BUNDLE["resources"]["jobs"].items()}


def test_the_bundle_has_the_training_and_the_scheduled_scoring_jobs():
    assert {"deeplog_training", "deeplog_scoring", "deeplog_scoring_serverless"} <= set(JOBS)
    training = [t["python_wheel_task"]["parameters"][1] for t in JOBS["deeplog_training"]["tasks"]]
    assert training == ["ingest", "both", "detect", "eval"]
    assert JOBS["deeplog_scoring"]["schedule"]["quartz_cron_expression"]
    serverless = JOBS["deeplog_scoring_serverless"]
    assert "job_clusters" not in serverless and all("environment_key" in t for t in serverless["tasks"])
    assert BUNDLE["artifacts"]["wheel"]["type"] == "whl"


@pytest.mark.parametrize("name", sorted(JOBS))
def test_each_job_is_a_valid_jobs_api_job(name):
    job = jobs_api.Job.from_dict(JOBS[name])  # raises on a field the Jobs API does not have
    keys = [t.task_key for t in job.tasks]
    assert len(keys) == len(set(keys))
    for task in job.tasks:
        assert all(d.task_key in keys for d in task.depends_on), task.task_key


@pytest.mark.parametrize("name", sorted(JOBS))
def test_each_task_calls_an_entry_point_of_the_wheel_with_flags_the_cli_takes(name):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for task in JOBS[name]["tasks"]:
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"].replace("_", "-") == project["name"]
        assert wheel_task["entry_point"] in project["scripts"]
        cfg, options = parse_job_args(wheel_task["parameters"], "deeplog", "", tasks.OPTIONS)
        assert options["task"] in tasks.TASKS, options["task"]
        assert cfg.tables_root.startswith("/Volumes/") and cfg.artifacts_root.startswith("/Volumes/")
        if not task.get("job_cluster_key"):  # serverless: no training there
            assert options["task"] not in ("key", "value", "both", "full-pipeline", "online")


def test_a_misspelt_flag_or_field_fails_the_checks():
    """The checks above can fail: a flag the CLI lacks, a field the Jobs API lacks."""
    from deeplog_spark.core.config import ConfigError

    with pytest.raises(ConfigError):
        parse_job_args(["--task", "detect", "--tabels_root", "/Volumes/x"], "deeplog", "", tasks.OPTIONS)
    bad = dict(JOBS["deeplog_scoring"], tasks=[dict(JOBS["deeplog_scoring"]["tasks"][0], python_wheel_tsk={})])
    with pytest.raises(ValueError, match="python_wheel_tsk"):
        jobs_api.Job.from_dict(bad)
