"""The task CLI as users run it: full pipeline through spark-submit, then every task on its output.

The session's ``full_run`` (conftest: one spark-submit of ``--task full-pipeline`` on the
embedded sample, 3 epochs) is what the visual, online, detect/eval-with-a-new-model and
notebook tests read.
"""

import os
import re
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from deeplog_spark import tasks
from deeplog_spark.core import schemas
from deeplog_spark.core.runs import read_json
from deeplog_spark.core.config import ConfigError
from deeplog_spark.core.errors import InputError
from deeplog_spark.nn.model import load_checkpoint
from deeplog_spark.train.online import feedback_blocks, run_online
from deeplog_spark.core.tables import read_table

from conftest import REPO

pytestmark = pytest.mark.slow  # spark-submit or jobs/run.py: JVMs of their own


def _run(args, env_extra=None, timeout=900):
    env = {**os.environ, **(env_extra or {})}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_full_pipeline_through_spark_submit(full_run):
    cfg, summary, out, _ = full_run
    assert summary["ingest"]["traces"] == 3000 and summary["ingest"]["trace_rejects"] == 1  # blk_extra: E77
    assert "windows" not in summary  # the models build their windows from the traces
    for stage_name in ("ingest", "train", "detect", "evaluate", "visual"):
        assert f"stage {stage_name}: done" in out, stage_name
    assert "key epoch 3/3" in out and " eta " in out  # per-epoch progress lines with ETA
    assert "calibration on val" in out and summary["train"]["calibration"]["fused"]["members"]
    # training: the sample has no intervals, so the key model alone (with a warning); it learns
    assert list(summary["train"]["tasks"]) == ["key"]
    key = summary["train"]["tasks"]["key"]
    assert os.path.isfile(key["checkpoint"]) and key["val_top_g_recall"] > 0.95
    run = summary["train"]["run_dir"]
    for rel in ("key_model.pt", "key_model.pt.sha256", "key_history.json", "key_loss_curve.png", "run.json",
                "eval/metrics.json", "eval/roc_curve.png", "eval/classification_report.md",
                "visual/workflow_graph.png", "visual/workflow_stats.json"):
        assert os.path.isfile(os.path.join(run, rel)), rel
    _, payload = load_checkpoint(os.path.join(run, "key_model.pt"), expect_task="key")
    assert payload["extra"]["vocab_size"] == 29 and payload["extra"]["run_id"] == summary["train"]["run_id"]
    assert set(payload["extra"]["train_vocab"]) <= set(range(1, 30)) and 0 not in payload["extra"]["train_vocab"]
    hist = read_json(os.path.join(run, "key_history.json"))["history"]
    assert len(hist) == 3 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    # the test-split metrics table is printed: the fused detector, each detector, the spec's g=9 row
    assert "| fused | val_chosen |" in out and "| key | spec | 9 |" in out and "| exact | baseline |" in out


def test_workflow_graph_counts_and_red_edges(spark, full_run):
    cfg, summary, _, _ = full_run
    stats = read_json(os.path.join(summary["train"]["run_dir"], "visual", "workflow_stats.json"))
    traces = read_table(spark, cfg.table_path(schemas.TRACES)).where(
        (F.col("split") == "train") & (F.coalesce("label", F.lit(0)) == 0)).select("events").collect()
    expected: dict = {}
    for r in traces:
        for a, b in zip(r["events"], r["events"][1:]):
            expected[(a, b)] = expected.get((a, b), 0) + 1
    got = {(e["src"], e["dst"]): e["count"] for e in stats["edge_list"]}
    assert got == expected
    assert stats["normal_sessions"] == len(traces) and stats["transitions"] == sum(expected.values())
    assert 1 <= stats["nodes"] <= 29 and all(n["template"] != "?" for n in stats["node_list"])
    # red = transitions in flagged windows never seen in normal training
    flagged = read_table(spark, cfg.table_path(schemas.PREDICTIONS)).where(
        F.col("fused_anomaly") & (F.col("g") == cfg.top_g) & (F.col("run_id") == summary["train"]["run_id"])
        & (F.col("k") == cfg.k_sigma)).select("window", "y_true").collect()
    in_flagged = set()
    for r in flagged:  # transitions between events: padding and the session markers are left out
        seq = [e for e in r["window"] + [r["y_true"]] if 1 <= e <= 29]
        in_flagged |= set(zip(seq, seq[1:]))
    red = {(e["src"], e["dst"]) for e in stats["anomalous_edge_list"]}
    assert red == in_flagged - set(expected)
    assert stats["anomalous_edges"] == len(red) > 0
    from matplotlib.image import imread

    height, width = imread(os.path.join(summary["train"]["run_dir"], "visual", "workflow_graph.png")).shape[:2]
    assert (width, height) == (1900, 1000)


@pytest.mark.extended  # ~50 s: in `make test-extended`, keeping `make test` inside its 15 minutes
def test_online_update_does_not_raise_val_false_positives(spark, own_full_run):
    cfg, summary, _, _ = own_full_run
    parent = summary["train"]["run_id"]
    from deeplog_spark.train.online import key_flagged

    verdicts = read_table(spark, cfg.table_path(schemas.VERDICTS)).where(
        (F.col("run_id") == parent) & (F.col("g") == cfg.top_g))
    key_fp = key_flagged(cfg.top_g) & (F.col("label") == 0) & (F.col("split") == "train")
    train_fp = verdicts.where(key_fp).count()
    assert train_fp > 0, "the sample run should have false positives to learn from"

    entry = tasks.run(spark, cfg, {"task": "online", "model": parent})
    new = entry["new_run_id"]
    assert new.startswith(parent + "-ft") and entry["parent_run_id"] == parent
    assert entry["feedback_sessions"] == train_fp and entry["feedback_sessions_by_split"] == {"train": train_fp}
    assert entry["val_false_positives_before"] == entry["before"]["val"]["fp"]
    # the guard: the kept epoch never lowers the val normal windows' top-g recall
    assert entry["val_window_top_g_recall_after"] >= entry["val_window_top_g_recall_before"]
    run = os.path.join(cfg.artifacts_root, "runs", new)
    new_model, payload = load_checkpoint(os.path.join(run, "key_model.pt"), expect_task="key", expect_run=new)
    assert payload["extra"]["parent_run_id"] == parent
    old_model, _ = load_checkpoint(os.path.join(cfg.artifacts_root, "runs", parent, "key_model.pt"), expect_task="key")
    # the update learned the feedback: its windows are likelier under the new model (or, if the guard
    # kept the parent's weights, the weights are the parent's)
    from deeplog_spark.features.window_rule import session_windows
    from deeplog_spark.nn.scoring import KeyScorer

    fp_events = [r.events for r in read_table(spark, cfg.table_path(schemas.TRACES)).join(
        verdicts.where(key_fp), "block_id").collect()]
    rows = [w for ev in fp_events for w in session_windows(ev, cfg.h, (30, 31))]
    import numpy as np

    x, y = np.array([w for w, _ in rows]), np.array([t for _, t in rows])
    nll = lambda m: float(KeyScorer(m, list(range(1, 30)), 9).score(x, y)["key_score"].mean())  # noqa: E731
    if entry["kept_epoch"] > 0:
        assert nll(new_model) < nll(old_model)
    else:
        assert nll(new_model) == nll(old_model)
    assert read_json(os.path.join(run, "online", "update_log.json"))["new_run_id"] == new
    assert [e["new_run_id"] for e in read_json(os.path.join(cfg.artifacts_root, "online", "update_log.json"))] == [new]
    # the new version is a model detect --model can use: its verdicts are already written ...
    mine = read_table(spark, cfg.table_path(schemas.VERDICTS)).where(F.col("run_id") == new)
    assert mine.count() == verdicts.count() == 3000
    # ... and eval works on it; the latest run is still the parent
    assert tasks.run(spark, cfg, {"task": "eval", "model": new})["run_id"] == new
    assert read_json(os.path.join(cfg.artifacts_root, "runs", "latest.json"))["run_id"] == parent


def test_online_feedback_from_a_block_list(spark, full_run, tmp_path):
    cfg, _, _, _ = full_run
    traces = read_table(spark, cfg.table_path(schemas.TRACES))
    ids = [r["block_id"] for r in traces.orderBy("block_id").limit(3).collect()]
    path = tmp_path / "normal.csv"
    path.write_text("BlockId,Label\n# confirmed by ops\n" + "\n".join(f"{b},Normal" for b in ids)
                    + f"\n\n\"{ids[0]}\"\nblk_404,Normal\n")
    blocks, source = feedback_blocks(spark, cfg, None, traces, str(path))
    assert sorted(r["block_id"] for r in blocks.collect()) == sorted(ids)
    assert source["blocks_in_file"] == 4 and source["unknown_blocks"] == 1
    with pytest.raises(FileNotFoundError, match="--normal_blocks"):
        feedback_blocks(spark, cfg, None, traces, str(tmp_path / "missing.txt"))


def test_online_without_verdicts_or_with_a_bad_model_is_a_clear_error(spark, full_run):
    cfg, summary, _, _ = full_run
    with pytest.raises(InputError, match="run detect"):
        run_online(spark, cfg.replace(top_g=7), summary["train"]["run_id"])
    with pytest.raises(InputError, match="invalid run id"):
        tasks.run(spark, cfg, {"task": "detect", "model": "../../etc"})
    with pytest.raises(InputError, match="no model run"):
        tasks.run(spark, cfg, {"task": "visual", "model": "nosuchrun"})
    with pytest.raises(ConfigError, match="--model does not apply to --task key"):
        tasks.run(spark, cfg, {"task": "key", "model": summary["train"]["run_id"]})


def test_detect_task_with_new_thresholds_adds_rows(spark, own_full_run):
    cfg, summary, _, _ = own_full_run
    stats = tasks.run(spark, cfg.replace(top_g=5), {"task": "detect", "model": summary["train"]["run_id"]})
    assert stats["g"] == 5 and stats["sessions"] == 3000
    gs = {r["g"] for r in read_table(spark, cfg.table_path(schemas.VERDICTS)).select("g").distinct().collect()}
    assert {5, 9} <= gs


@pytest.mark.extended  # a notebook kernel beside the test session, ~65 s
def test_notebook_executes_end_to_end(full_run, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    cfg, _, _, root = full_run
    conf = (REPO / "conf" / "deeplog.toml").read_text()
    conf = conf.replace('tables_root = "warehouse"', f'tables_root = "{cfg.tables_root}"')
    conf = conf.replace('artifacts_root = "artifacts"', f'artifacts_root = "{cfg.artifacts_root}"')
    (tmp_path / "conf.toml").write_text(conf)
    monkeypatch.setenv("DEEPLOG_CONFIG", str(tmp_path / "conf.toml"))
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    nb = nbformat.read(REPO / "notebooks" / "deeplog_results.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()  # raises on any cell error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # loss curve, ROC, F1 bars, workflow graph
    streams = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    templates = (REPO / "data" / "sample" / "HDFS.log_templates.csv").read_text().splitlines()[1:]
    spelled = {f"{key}: {template}" for key, template in (t.split(",", 1) for t in templates)}
    # the top anomalous sessions spelled out in templates: a window, then "--> " the unexpected event
    assert re.search(r"\n  --> E\d+: ", streams)
    assert sum(line.removeprefix("  --> ") in spelled for line in streams.splitlines()) >= 4


def test_help_lists_tasks_options_and_config_keys():
    res = _run(["./spark-submit.sh", "--help"])
    assert res.returncode == 0, res.stderr[-2000:]
    for word in list(tasks.TASKS) + ["--task TASK", "--model RUN_ID", "--normal_blocks FILE", "--epochs",
                                     "--lr", "--batch_size", "--k_sigma", "--top_g", "--online_lr", "writes:"]:
        assert word in res.stdout, word


@pytest.mark.parametrize("argv, message", [
    (["--task", "train"], "--task must be one of ingest, ingest-sequences, ingest-raw, windows, key"),
    (["--task"], "option --task needs a value"),
    (["--task", "key", "--epochs", "many"], "config key epochs: expected int"),
    (["--task", "key", "--epoch", "3"], "unknown option --epoch"),
])
def test_bad_task_flags_are_clear_errors_before_spark_starts(argv, message):
    res = _run([sys.executable, "jobs/run.py", *argv])
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and "stage" not in res.stderr


def test_unknown_flag_is_a_clear_error_before_spark_starts():
    res = _run([sys.executable, "jobs/run.py", "--task", "ingest", "--windw", "3"])
    assert res.returncode == 2
    assert "unknown option --windw" in res.stderr
    assert "Traceback" not in res.stderr


def test_out_of_range_flag_names_the_key():
    res = _run([sys.executable, "jobs/run.py", "--task", "windows", "--h", "0"])
    assert res.returncode == 2 and "config key h=0 is out of range" in res.stderr


def test_unknown_job_is_refused():
    res = _run(["./spark-submit.sh", "nosuchjob"])
    assert res.returncode == 2 and "unknown job 'nosuchjob'" in res.stderr


def test_missing_input_file_exits_2_with_one_line(tmp_path):
    res = _run([sys.executable, "jobs/run.py", "--task", "ingest", "--event_traces", str(tmp_path / "none.csv"),
                "--tables_root", str(tmp_path / "wh"), "--master", "local[1]"])
    assert res.returncode == 2
    assert "error: input not found" in res.stderr


@pytest.mark.extended  # Spark jobs of 10-60 s: `make test-extended`, so that `make test` stays under 15 minutes
def test_the_cli_runs_in_the_active_session_and_leaves_it_running(spark, tmp_path, capsys):
    """A Databricks job or a notebook owns its session: the CLI takes the active one and never stops
    it; a failed run raises SystemExit with its code (a wheel task ignores a returned code)."""
    from deeplog_spark.__main__ import main

    flags = ["--tables_root", str(tmp_path / "wh"), "--artifacts_root", str(tmp_path / "art"), "--mlflow", "false"]
    assert main(["--task", "ingest", *flags]) == 0
    assert spark.range(3).count() == 3  # still running
    with pytest.raises(SystemExit) as failed:
        main(["--task", "ingest", "--event_traces", str(tmp_path / "missing.csv"), *flags])
    assert failed.value.code == 2 and "error:" in capsys.readouterr().err
    assert spark.range(3).count() == 3
