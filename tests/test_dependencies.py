"""The two dependency sets: the default (requirements.txt, a current runtime's numpy 2 and pyarrow)
and the Petastorm set (requirements-petastorm.txt). In whichever set runs the tests, the wheel
installs without changing a version, and ``pip check`` reports only Drain3's own two pins
(docs/dependencies.md). ``make test`` runs this in the default set, ``make test-petastorm`` in the
other."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import REPO

#: What ``pip check`` may report: Drain3 0.9.11 pins versions from 2021 and runs on the newer ones
#: (it is installed with --no-deps, requirements-nodeps.txt; tests/test_mining.py runs it).
KNOWN = ("drain3 0.9.11 has requirement cachetools==", "drain3 0.9.11 has requirement jsonpickle==")


def test_pip_check_reports_only_drain3s_own_pins():
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    problems = [line for line in out.stdout.splitlines() if line.strip() and not line.startswith(KNOWN)]
    assert problems == [], out.stdout + out.stderr


@pytest.mark.slow  # builds the wheel (pip fetches its build backend)
def test_installing_the_wheel_with_its_extras_changes_no_version(tmp_path):
    """``pip install`` of the wheel and the extras a user of this set takes, resolved against what is
    installed with no index: any version the wheel asked to change would fail to resolve."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, timeout=600)
    (wheel,) = tmp_path.glob("deeplog_spark-*.whl")
    extras = ["spark", "mlflow", "connect", "test", "mining"]
    if importlib.util.find_spec("petastorm"):
        extras.append("petastorm")
    report = tmp_path / "report.json"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet", "--report",
                          str(report), f"{wheel}[{','.join(extras)}]"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    installs = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
    assert set(installs) <= {"deeplog-spark"}, installs  # nothing but the wheel itself (if not installed yet)
