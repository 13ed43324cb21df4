"""The package's shape: stages found by folder, no import circle, and the Spark-free side (the torch
model and trainer, and the pure helpers they use) importable and callable without pyspark, on a GPU
machine that has only Python, torch, numpy and pyarrow."""

import ast
import pkgutil
import subprocess
import sys
import textwrap

import deeplog_spark
import deeplog_spark.nn

from conftest import REPO

PACKAGE = REPO / "deeplog_spark"
#: Each stage's folder.
STAGES = ("core", "ingest", "features", "models", "nn", "train", "detect", "evaluate", "integrations")
#: Modules besides deeplog_spark.nn.* that must import without pyspark.
SPARK_FREE = ("deeplog_spark.core.config", "deeplog_spark.core.errors", "deeplog_spark.core.names",
              "deeplog_spark.core.runs", "deeplog_spark.core.logs", "deeplog_spark.core.progress",
              "deeplog_spark.train.job", "deeplog_spark.detect.thresholds", "deeplog_spark.evaluate.plots",
              "deeplog_spark.evaluate.report", "deeplog_spark.features.window_rule", "deeplog_spark.ingest.formats",
              "deeplog_spark.ingest.mining", "deeplog_spark.ingest.loghub", "deeplog_spark.integrations.tracking")


def _module(path):
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports when it is imported (module-level statements)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deeplog_spark"):
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("deeplog_spark")}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


def test_no_import_circle():
    graph = import_graph()
    assert len(graph) > 40 and graph["deeplog_spark.detect.verdicts"]
    assert cycles(graph) == []


def test_a_circle_would_be_caught():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_stages_are_found_by_folder():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert set(STAGES) <= folders
    loose = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    # the entry points and the two jobs that span stages (the batch pipeline, the stream); every stage sits in its folder
    assert loose == ["cli", "pipeline", "streaming", "tasks"], loose


def commented(lines: list[str], lineno: int) -> bool:
    """Whether the import at ``lineno`` (1-based) has a comment at its end, or on the line before its
    block of imports (an import directly under another counts as one block)."""
    if "#" in lines[lineno - 1]:
        return True
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith(("import ", "from ")):
        i -= 1
    return i >= 0 and lines[i].strip().startswith(("#", "try:"))


def test_imports_sit_at_module_top_unless_a_comment_says_why():
    """An import inside a function hides the import graph: each one needs a comment (an optional or
    heavy dependency, a lazy CLI), at its end or above its block."""
    bare = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top and not commented(lines, node.lineno):
                bare.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert bare == []
    # and the check can fail: an import inside a function with no comment above its block is caught
    assert not commented(["def f():", "    x = 1", "    import json"], 3)
    assert commented(["def f():", "    # why", "    import json", "    import csv"], 4)


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
    code = ("import sys\nsys.modules['pyspark'] = None\nimport deeplog_spark.detect.verdicts\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "pyspark" in res.stderr


#: Runs with pyspark blocked: the Spark-free side's public functions on tiny inputs, and the Spark-free
#: trainer end to end on a Delta table written with delta-rs. Any import of pyspark at call time fails it.
SPARK_FREE_CALLS = textwrap.dedent("""
    import json, sys, tempfile
    from pathlib import Path
    sys.modules["pyspark"] = None
    import numpy as np, pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from deeplog_spark.core import config, logs, names, runs
    from deeplog_spark.detect import thresholds
    from deeplog_spark.evaluate import plots, report
    from deeplog_spark.features import window_rule as rule
    from deeplog_spark.ingest import formats, mining
    from deeplog_spark.integrations import tracking
    from deeplog_spark.nn import local, model, scoring
    from deeplog_spark.train import job

    tmp = Path(tempfile.mkdtemp())
    args, task = config.pop_option(["--task", "key", "--epochs", "1"], "task", "x")
    cfg = config.Config.load(overrides={**config.parse_overrides(args), "tables_root": str(tmp / "wh"),
                                        "artifacts_root": str(tmp / "art"), "steps_per_epoch": 5, "mlflow": False})
    assert config.describe("h") and config.sections() and config.valid_name("a-1") and names.marker_ids(29) == (30, 31)
    logs.setup_logging()
    with logs.stage("tiny") as st:
        st["rows"] = 1
    runs.write_json(tmp / "x.json", {"a": 1})
    assert runs.read_json(tmp / "x.json") == {"a": 1} and "g = 9" in runs.detection_rows("r1", 9, 3.0)
    assert rule.session_windows([5, 22], 3, (30, 31))[-1] == ((30, 5, 22), 31)
    assert formats.preset("bgl") is not None and not tracking.is_model_uri("abc")
    assert mining.mine(["open file a1", "open file b2", "close file"]) is not None
    sessions = [[5, 22, 11, 9], [5, 22, 11], [5, 22, 11, 9, 26]] * 10
    split = ["train"] * 20 + ["val"] * 10
    write_deltalake(str(tmp / "wh" / names.TRACES), pa.table({
        "block_id": [f"b{i}" for i in range(30)], "split": split, "label": [0] * 30,
        "events": pa.array(sessions, pa.list_(pa.int32())), "intervals": pa.array([None] * 30, pa.list_(pa.float64()))}))
    write_deltalake(str(tmp / "wh" / names.TEMPLATES), pa.table({"event_id": pa.array(range(1, 30), pa.int32())}))
    assert local.main(["--task", "key", "--epochs", "1", "--steps_per_epoch", "5", "--tables_root", str(tmp / "wh"),
                       "--artifacts_root", str(tmp / "art"), "--mlflow", "false"]) == 0
    run = next((tmp / "art" / "runs").iterdir())
    key, payload = model.load_checkpoint(run / "key_model.pt", expect_task="key")
    scorer = scoring.KeyScorer(key, payload["extra"]["train_vocab"], 9)
    events, offsets = rule.offsets_of(sessions[:3])
    summary = scoring.key_summary(scorer, scoring.model_ids(events, 29), offsets, key.cfg.h, (30, 31), 9)
    assert len(summary["n_windows"]) == 3
    table = thresholds.ValTable.from_records(
        [{"row": 0, "normal": 5, "anomalous": 0, "key": 1.0, "key_nll": 0.1, "pca": 0.0},
         {"row": 1, "normal": 0, "anomalous": 2, "key": 20.0, "key_nll": 9.0, "pca": 1.0}], ["key", "key_nll", "pca"])
    assert thresholds.choose_rules(table)["fused"]["members"]
    plots.plot_roc({"key": [(0.0, 0.0), (0.5, 1.0), (1.0, 1.0)]}, {"key": 0.75}, tmp / "roc.png")
    traces_id = DeltaTable(str(tmp / "wh" / names.TRACES)).metadata().id
    assert job.run_id(cfg, str(tmp / "wh" / names.TRACES), 0, traces_id) == run.name
    assert not [m for m in sys.modules if m.startswith("pyspark") and sys.modules[m] is not None]
    print("ok")
""")


def test_the_spark_free_side_runs_with_pyspark_blocked(tmp_path):
    res = subprocess.run([sys.executable, "-c", SPARK_FREE_CALLS], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
