"""A self-contained HTML report per evaluated run (no Spark import): one file a person can open,
mail or attach to a ticket, with every image inlined.

It holds the test-split metrics of every detector, the metrics of every split, the fused rule and
calibration, the training curves and evaluation plots, and the top anomalous test sessions with
their reasons in template text (what the count model saw against the nearest normal pattern, and
where the key model's workflow broke). Written by ``--task eval`` as
``<run>/eval/report.html``.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Mapping, Sequence

#: Images of a run folder the report shows, in order, when present.
PLOTS = (("eval/roc_curve.png", "ROC curves (test split)"), ("eval/f1_comparison_bar.png", "F1 per detector"),
         ("key_loss_curve.png", "Key LSTM training"), ("value_loss_curve.png", "Value LSTM training"),
         ("visual/workflow_graph.png", "Workflow of normal training sessions"))

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#1b1f24}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}
th{background:#f6f8fa}td.l,th.l{text-align:left}tr.fused td{font-weight:600;background:#fff8c5}
.plots{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}figure img{max-width:560px;border:1px solid #d0d7de}
figcaption{font-size:12px;color:#57606a}.reason{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap}
.note{color:#57606a;font-size:13px}
"""

#: Marks the page as rendered once every image has decoded (the screenshot test reads it).
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  document.body.setAttribute('data-rows', document.querySelectorAll('table.metrics tbody tr').length);
});
"""


def _num(v: Any, fmt: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else html.escape(str(v))


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _metrics_table(metrics: Sequence[Mapping[str, Any]], split: str | None) -> str:
    cols = ["detector", "threshold_source", "threshold", "split", "sessions", "tp", "fp", "tn", "fn", "precision",
            "recall", "f1", "fpr", "auroc"]
    rows = [m for m in metrics if split is None or m["split"] == split]
    head = "".join(f"<th{' class=l' if c in ('detector', 'threshold_source', 'split') else ''}>{c}</th>" for c in cols)
    body = []
    for m in rows:
        cells = []
        for c in cols:
            v = m.get(c)
            fmt = ".5f" if c == "fpr" else ".4g" if c == "threshold" else "d" if isinstance(v, int) else ".4f"
            cells.append(f"<td class=l>{html.escape(str(v))}</td>" if c in ("detector", "threshold_source", "split")
                         else f"<td>{_num(v, fmt)}</td>")
        cls = " class=fused" if m["detector"] == "fused" else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table class=metrics><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _sessions_table(sessions: Sequence[Mapping[str, Any]]) -> str:
    if not sessions:
        return "<p class=note>No test session was flagged.</p>"
    cols = ("block_id", "label", "detectors", "count_score", "max_key_rank", "max_key_score", "first_anomalous_position")
    head = "".join(f"<th class=l>{c}</th>" for c in cols) + "<th class=l>reason (templates)</th>"
    body = []
    for s in sessions:
        cells = "".join(f"<td class=l>{_num(s.get(c), '.4g')}</td>" for c in cols)
        body.append(f"<tr>{cells}<td class='l reason'>{html.escape(str(s.get('reason') or ''))}</td></tr>")
    return f"<table class=sessions><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_report(run_dir: Path, summary: Mapping[str, Any], sessions: Sequence[Mapping[str, Any]],
                 out: Path | None = None) -> Path:
    """Write ``<run_dir>/eval/report.html`` from the evaluation ``summary`` and the top anomalous
    test ``sessions`` (dicts of verdict columns with ``reason`` in template text)."""
    out = out or run_dir / "eval" / "report.html"
    rule = ", ".join(f"{d} &gt; {t:.4g}" for d, t in summary.get("fused_rule", {}).items()) or "none"
    cal = summary.get("calibration") or {}
    fused = cal.get("fused", {})
    figures = "".join(f"<figure><img alt='{html.escape(cap)}' src='{_img(run_dir / rel)}'><figcaption>"
                      f"{html.escape(cap)}</figcaption></figure>" for rel, cap in PLOTS if (run_dir / rel).is_file())
    lat = summary.get("ms_per_window")
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>deeplog-spark run {html.escape(summary['run_id'])}</title>
<style>{CSS}</style></head><body>
<h1>deeplog-spark evaluation: run {html.escape(summary['run_id'])}</h1>
<p>Session level (one verdict per session). Fused rule, chosen on the val split: anomalous when {rule}
(val F1 {_num(fused.get('val_f1'))}, {_num(cal.get('val_anomalies'), 'd')} val anomalies).
DeepLog's spec rule at g={summary['default']['g']}, k={summary['default']['k']}.
{'Scoring: ' + format(lat, '.4f') + ' ms per window.' if lat is not None else ''}
Thresholds are never chosen on the test split.</p>
<h2>Test split</h2>
{_metrics_table(summary['metrics'], 'test')}
<h2>Plots</h2>
<div class=plots>{figures}</div>
<h2>Top anomalous test sessions</h2>
<p class=note>Ordered by the count score, then the key model's surprise; the reason says what the
detectors saw, in the templates' text.</p>
{_sessions_table(sessions)}
<h2>Every split</h2>
{_metrics_table(summary['metrics'], None)}
<script>{SCRIPT}</script>
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
