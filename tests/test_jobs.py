"""Jobs as users run them: spark-submit.sh end to end, and clear errors for bad flags."""

import json
import os
import subprocess
import sys


from conftest import REPO


def _run(args, env_extra=None, timeout=600):
    env = {**os.environ, **(env_extra or {})}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_unknown_flag_is_a_clear_error_before_spark_starts():
    res = _run([sys.executable, "jobs/ingest.py", "--windw", "3"])
    assert res.returncode == 2
    assert "unknown option --windw" in res.stderr
    assert "Traceback" not in res.stderr


def test_out_of_range_flag_names_the_key():
    res = _run([sys.executable, "jobs/windows.py", "--h", "0"])
    assert res.returncode == 2 and "config key h=0 is out of range" in res.stderr


def test_help_lists_the_config_keys():
    res = _run([sys.executable, "jobs/pipeline.py", "--help"])
    assert res.returncode == 0
    for key in ("--h ", "--top_g", "--k_sigma", "--seed", "--tables_root"):
        assert key in res.stdout


def test_unknown_job_is_refused():
    res = _run(["./spark-submit.sh", "nosuchjob"])
    assert res.returncode == 2 and "unknown job 'nosuchjob'" in res.stderr


def test_spark_submit_pipeline_end_to_end(tmp_path):
    """The README's main command, through spark-submit with --packages and --py-files."""
    res = _run(["./spark-submit.sh", "pipeline", "--tables_root", str(tmp_path / "wh"),
                "--artifacts_root", str(tmp_path / "art"), "--epochs", "3"],
               env_extra={"SPARK_MASTER": "local[2]"})
    assert res.returncode == 0, res.stderr[-3000:]
    # spark-submit's PythonRunner merges the driver's stderr (our logs) into stdout
    summary = json.loads(res.stdout[res.stdout.index("\n{\n"):])
    assert summary["ingest"]["traces"] == 3000 and summary["ingest"]["trace_rejects"] == 0
    assert summary["windows"]["windows"] == sum(summary["windows"]["splits"].values()) > 3000
    assert (tmp_path / "wh" / "windows" / "_delta_log").is_dir()
    out = res.stdout + res.stderr
    assert "stage ingest: done" in out and "stage windows: done" in out and "stage train: done" in out
    key = summary["train"]["tasks"]["key"]
    assert os.path.isfile(key["checkpoint"]) and key["val_top_g_recall"] > 0.9


def test_missing_input_file_exits_2_with_one_line(tmp_path):
    res = _run([sys.executable, "jobs/ingest.py", "--event_traces", str(tmp_path / "none.csv"),
                "--tables_root", str(tmp_path / "wh"), "--master", "local[1]"])
    assert res.returncode == 2
    assert "error: input not found" in res.stderr
