"""The boundary that matters: the torch side (``deeplog_spark.nn``) and the pure helpers it uses run
without pyspark, on a GPU machine that has only Python, torch, numpy and pyarrow."""

import pkgutil
import subprocess
import sys

import deeplog_spark.nn

from conftest import REPO

#: Modules besides deeplog_spark.nn.* that must import without pyspark.
SPARK_FREE = ("deeplog_spark.config", "deeplog_spark.errors", "deeplog_spark.names", "deeplog_spark.runs",
              "deeplog_spark.train_job", "deeplog_spark.calibration", "deeplog_spark.plots", "deeplog_spark.logs")


def test_the_torch_side_imports_no_pyspark():
    modules = [f"deeplog_spark.nn.{m.name}" for m in pkgutil.iter_modules(deeplog_spark.nn.__path__)]
    assert {"deeplog_spark.nn.model", "deeplog_spark.nn.trainer", "deeplog_spark.nn.sources",
            "deeplog_spark.nn.scoring", "deeplog_spark.nn.local"} <= set(modules)
    code = ("import importlib, sys\n"
            "sys.modules['pyspark'] = None  # any import of pyspark now fails\n"
            f"for m in {modules + list(SPARK_FREE)!r}:\n"
            "    importlib.import_module(m)\n"
            "assert not [m for m in sys.modules if m.startswith('pyspark') and sys.modules[m] is not None]\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_a_pyspark_import_on_the_torch_side_would_be_caught():
    """The check above can fail: a module that imports pyspark is reported."""
    code = ("import sys\nsys.modules['pyspark'] = None\nimport deeplog_spark.detection\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "pyspark" in res.stderr
