"""The committed benchmark results are consistent: each Markdown report is what its JSON renders.

The benchmarks themselves are long and run outside the test suite (bench/results/README.md); this
keeps their report code and the committed figures from drifting apart.
"""

import importlib.util
import json
import shutil
import sys

import pytest

from conftest import REPO

BENCH = REPO / "bench"
RESULTS = BENCH / "results"


def _load(name: str):
    sys.path.insert(0, str(BENCH))  # the bench scripts import their shared _common module
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


#: Runs of an earlier commit's code, rendered by that commit's report code (its wording describes
#: that code); their JSON is still checked for its stages and its synthetic label.
EARLIER_CODE = {"pipeline_ab_old.json": "09e4391"}


@pytest.mark.parametrize("result", sorted(p.name for p in RESULTS.glob("pipeline_*.json")))
def test_pipeline_report_is_what_its_json_renders(result):
    out = json.loads((RESULTS / result).read_text())
    # windows is the optional SQL export (bench/pipeline.py ALL_STAGES); the product's stages are always there
    assert {s["stage"] for s in out["stages"]} >= {"ingest", "detect", "evaluate"}
    assert out["workload"]["synthetic"] is True  # a generated workload says so
    if result in EARLIER_CODE:
        report = (RESULTS / result).with_suffix(".md").read_text()
        for stage in out["stages"]:  # its table still shows what its JSON recorded
            assert f"| {stage['stage']} | {stage['seconds']:,.1f} |" in report
        assert f"{out['pipeline_seconds']:,.1f} s" in report
        return
    assert _load("pipeline").markdown(out) == (RESULTS / result).with_suffix(".md").read_text()


def test_scaling_table_is_what_the_three_runs_give(tmp_path, monkeypatch):
    names = ["57k", "575k", "2.9M"]
    for n in names:
        shutil.copy(RESULTS / f"pipeline_{n}.json", tmp_path)
    scaling = _load("scaling")
    monkeypatch.setattr(scaling, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["scaling.py", *names])
    scaling.main()
    assert (tmp_path / "pipeline_scaling.md").read_text() == (RESULTS / "pipeline_scaling.md").read_text()


#: Benchmarks whose Markdown report is ``markdown(out)`` of the JSON they wrote: ``bench/<name>.py``
#: writes ``results/<name>_<label>.{json,md}``.
REPORTS = ("side_by_side", "train_revisions", "key_step")


@pytest.mark.parametrize("result", sorted(p.name for b in REPORTS for p in RESULTS.glob(f"{b}_*.json")))
def test_report_is_what_its_json_renders(result):
    bench = next(b for b in REPORTS if result.startswith(f"{b}_"))
    out = json.loads((RESULTS / result).read_text())
    assert _load(bench).markdown(out) == (RESULTS / result).with_suffix(".md").read_text()


@pytest.mark.parametrize("result", sorted(p.name for p in RESULTS.glob("streaming_*.json")))
def test_streaming_report_is_what_its_json_renders(result):
    out = json.loads((RESULTS / result).read_text())
    assert out["synthetic"] is True and out["lines"] > 0
    if "equivalent_to_one_shot" in out:  # a run with the one-shot: its verdicts compared row by row
        assert out["verdicts"]["differ"] == 0 if out["equivalent_to_one_shot"] else out["verdicts"]["differ"] > 0
    assert _load("streaming").report(out) == (RESULTS / result).with_suffix(".md").read_text()
