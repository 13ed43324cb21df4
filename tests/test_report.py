"""The HTML report of an evaluated run renders: headless Chromium (Debian's ``chromium`` package)
loads the self-contained page, every inlined plot decodes, the metrics and sessions tables are
there, and a screenshot shows the plots (coloured pixels, not a blank page)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from deeplog_spark.core.runs import read_json, run_dir

pytestmark = pytest.mark.slow  # reads the session's spark-submit run


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("headless Chromium not installed (apt-get install chromium; .ci/run installs it)")


def _browser(args: list[str], url: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--virtual-time-budget=5000", *args, url],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_report_renders_its_plots_and_tables(full_run, tmp_path):
    import matplotlib.image as mpimg

    cfg, summary, _, _ = full_run
    run_id = summary["train"]["run_id"]
    report = run_dir(cfg.artifacts_root, run_id) / "eval" / "report.html"
    assert report.is_file() and summary["evaluate"]["report"] == str(report)
    metrics = read_json(report.parent / "metrics.json")["metrics"]
    text = report.read_text()
    assert "src='http" not in text and "href='http" not in text  # self-contained: nothing fetched
    n_plots = text.count("<img ")
    assert n_plots >= 4  # ROC, F1 bars, the key model's loss curve, the workflow graph

    dom = _browser(["--dump-dom"], report.as_uri(), tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert f'data-images="{n_plots}/{n_plots}"' in body, body  # every plot decoded in the browser
    test_rows = [m for m in metrics if m["split"] == "test"]
    assert f'data-rows="{len(test_rows) + len(metrics)}"' in body, body
    assert "Top anomalous test sessions" in dom.stdout and "fused" in dom.stdout

    shot = tmp_path / "report.png"
    res = _browser([f"--screenshot={shot}", "--window-size=1280,1600"], report.as_uri(), tmp_path)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = mpimg.imread(str(shot))[..., :3]
    assert img.shape[0] == 1600 and img.shape[1] == 1280
    non_white = (img < 0.95).any(axis=2).mean()
    colour = (img.max(axis=2) - img.min(axis=2) > 0.3).mean()  # the plots' coloured lines and bars
    assert non_white > 0.03, non_white
    assert colour > 0.002, colour
