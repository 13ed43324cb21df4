"""The wheel runs anywhere: built from the checkout, installed into a fresh virtual environment, and
run from a directory that holds no checkout, as the ``deeplog`` command and as
``spark-submit --py-files deeplog_spark-*.whl``.

The fresh environment reuses the project venv's third-party packages through a ``.pth`` line (the
editable install of this checkout is not active there: a ``.pth`` line adds a folder to the path
without running the ``.pth`` files inside it), so ``deeplog_spark`` can only come from the wheel.
Runs with ``make test-extended``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, summary_of

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # builds, installs and starts JVMs: `make test-extended`


def _venv(path: Path, site_packages: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    target = next(path.glob("lib/python*/site-packages"))
    (target / "project_packages.pth").write_text(site_packages + "\n")
    return path / "bin"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                   check=True, timeout=600)
    (whl,) = out.glob("deeplog_spark-*.whl")
    return whl


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYSPARK_GATEWAY_PORT", "DEEPLOG_CONFIG", "PYTHONPATH", "PYSPARK_PYTHON")}
    env.update({"SPARK_LOCAL_IP": "127.0.0.1", **extra})
    return env


def test_wheel_ships_the_config_sample_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = zipfile.ZipFile(wheel).read("deeplog_spark/resources/deeplog.toml").decode()
    assert packaged == (REPO / "conf" / "deeplog.toml").read_text()
    for f in ("deeplog_spark/nn/model.py", "deeplog_spark/__main__.py", "deeplog_spark/resources/log4j2.properties",
              "deeplog_spark/resources/sample/Event_traces.csv.gz"):
        assert f in names, f
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "deeplog = deeplog_spark.__main__:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_command_runs_outside_the_checkout(wheel, tmp_path):
    bindir = _venv(tmp_path / "venv", sysconfig.get_paths()["purelib"])
    subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(bindir / "python"), "-c", "import deeplog_spark; print(deeplog_spark.__file__)"],
                           cwd=work, env=_env(), capture_output=True, text=True, check=True).stdout
    assert str(tmp_path / "venv") in where and str(REPO) not in where

    helped = subprocess.run([str(bindir / "deeplog"), "--help"], cwd=work, env=_env(), capture_output=True, text=True)
    assert helped.returncode == 0 and "usage: deeplog" in helped.stdout and "full-pipeline" in helped.stdout

    done = subprocess.run([str(bindir / "deeplog"), "--task", "ingest", "--tables_root", "wh", "--master", "local[1]"],
                          cwd=work, env=_env(PYSPARK_PYTHON=str(bindir / "python")), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    assert summary["traces"] == 3000 and summary["trace_rejects"] == 0  # the packaged sample, all of it
    assert (work / "wh" / "traces" / "_delta_log").is_dir()


def test_spark_submit_py_files_wheel(wheel, tmp_path):
    """No deeplog_spark installed at all: the job's package comes from ``--py-files``, its main script
    is a copy of ``jobs/run.py`` outside the checkout."""
    from deeplog_spark.core.session import DELTA_CONF, delta_package

    bindir = _venv(tmp_path / "bare", sysconfig.get_paths()["purelib"])
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "main.py").write_text((REPO / "jobs" / "run.py").read_text())
    py = str(bindir / "python")
    probe = subprocess.run([py, "-c", "import deeplog_spark"], cwd=work, env=_env(), capture_output=True, text=True)
    assert probe.returncode != 0, "deeplog_spark must not be importable without the wheel"
    confs = [a for k, v in DELTA_CONF.items() for a in ("--conf", f"{k}={v}")]
    done = subprocess.run([str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]",
                           "--packages", delta_package(), *confs, "--py-files", str(wheel), "main.py",
                           "--task", "ingest", "--tables_root", "wh"],
                          cwd=work, env=_env(PYSPARK_PYTHON=py, PYSPARK_DRIVER_PYTHON=py), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert summary_of(done.stdout)["traces"] == 3000
