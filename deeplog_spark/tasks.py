"""The task CLI (``./spark-submit.sh --task TASK``): every user-facing step of the pipeline by name.

Tasks follow the DeepLog spec's ``run_training --task``: ``key``, ``value``, ``both``, ``detect``,
``eval``, ``visual``, ``online`` and ``full-pipeline``, plus the data steps ``ingest``,
``ingest-sequences``, ``ingest-raw``, ``windows`` and ``generate``. Each maps to one stage runner; the job prints the
runner's summary as JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pyspark.sql import SparkSession

from deeplog_spark.cli import Option
from deeplog_spark.core.config import Config, ConfigError


@dataclasses.dataclass(frozen=True)
class Task:
    help: str
    writes: str
    run: Callable[[SparkSession, Config, dict], dict]
    uses: tuple[str, ...] = ()  # the job options (besides --task) this task reads


def _train(task: str):
    def run(spark, cfg, opts):
        # the stage loads when its task runs, so --help and flag checks stay fast
        from deeplog_spark.train.runner import run_train

        return run_train(spark, cfg, task)
    return run


def _calibrate(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.detect.calibration import run_calibrate

    return run_calibrate(spark, cfg, opts.get("model") or None)


def _ingest(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.ingest.runner import run_ingest

    return run_ingest(spark, cfg)


def _ingest_sequences(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.ingest.runner import run_ingest

    return run_ingest(spark, cfg.replace(input="sequences"))


def _ingest_raw(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.ingest.runner import run_ingest_raw

    return run_ingest_raw(spark, cfg)


def _stream(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.streaming import run_stream

    return run_stream(spark, cfg, opts.get("model") or None)


def _windows(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.features.runner import run_windows

    return run_windows(spark, cfg)


def _detect(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.detect.verdicts import run_detect

    return run_detect(spark, cfg, opts.get("model") or None)


def _eval(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.evaluate.metrics import run_evaluate, test_table

    summary = run_evaluate(spark, cfg, opts.get("model") or None)
    print("\nTest split, session level (BlockId):\n" + test_table(summary) + "\n")
    return summary


def _visual(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.evaluate.workflow import run_visual

    return run_visual(spark, cfg, opts.get("model") or None)


def _online(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.train.online import run_online

    return run_online(spark, cfg, opts.get("model") or None, opts.get("normal_blocks") or None)


def _full(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.pipeline import run_pipeline

    summary = run_pipeline(spark, cfg)
    print("\nTest split, session level (BlockId):\n" + summary["test_metrics_table"] + "\n")
    return summary


def _register(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.core.names import ALL_TABLES, DETECTION_RUNS
    from deeplog_spark.core.tables import read_table, register, table_exists
    from deeplog_spark.detect.verdicts import create_latest_view

    if not cfg.catalog_schema:
        raise ConfigError("--task register needs catalog_schema (e.g. --catalog_schema deeplog)")
    done = {}
    for name in ALL_TABLES:
        ref = cfg.table(name)
        if table_exists(spark, ref.path):
            register(spark, ref)
            done[ref.name] = ref.path
    out = {"catalog_schema": cfg.catalog_schema, "registered": done}
    if table_exists(spark, cfg.table(DETECTION_RUNS).path):  # the view follows the newest detection's model
        newest = read_table(spark, cfg.table(DETECTION_RUNS)).orderBy("detected_at", ascending=False).first()
        create_latest_view(spark, cfg, newest["run_id"], newest["g"], newest["k"])
        out["latest_verdicts"] = {"run_id": newest["run_id"], "g": newest["g"], "k": newest["k"]}
    return out


def _maintain(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.core.maintenance import run_maintenance

    return run_maintenance(spark, cfg)


def _generate(spark, cfg, opts):
    # the stage loads when its task runs, so --help and flag checks stay fast
    from deeplog_spark.ingest.generate import run_generate

    return run_generate(spark, cfg)


TASKS: dict[str, Task] = {
    "ingest": Task("parse Event_traces + labels + templates, split by BlockId",
                   "tables templates, traces, ingest_rejects", _ingest),
    "ingest-sequences": Task("parse generic sessions of any system (--sequences: session_id,events[,label]) + labels "
                             "+ templates, split by session id", "tables templates, traces, ingest_rejects",
                             _ingest_sequences),
    "ingest-raw": Task("parse raw log files (--raw_logs, --log_format) into sessions (--segment id|lines|time) with "
                       "real time intervals; templates known (HDFS) or mined by Drain3",
                       "tables templates, traces, ingest_rejects, template_counts, miner_state (mined)", _ingest_raw),
    "windows": Task("explode sessions into sliding windows of length h", "table windows", _windows),
    "key": Task("train the Key LSTM (TorchDistributor), the count and PCA models, calibrate on val",
                "runs/<run>/key_model.pt, key_history.json, key_loss_curve.png, count_model.json, pca_model.json, "
                "calibration.json; table count_patterns", _train("key")),
    "value": Task("train the Value LSTM (needs time intervals)",
                  "runs/<run>/value_model.pt, value_history.json, value_loss_curve.png, value_norm.json, "
                  "value_threshold.json", _train("value")),
    "both": Task("train both models (value skipped with a warning when there are no intervals)",
                 "the files of key and value, run.json", _train("both")),
    "calibrate": Task("fit the count and PCA models and choose thresholds and the fused rule on val, for a run "
                      "trained elsewhere (e.g. on a GPU machine by deeplog_spark.nn.local)",
                      "runs/<run>/count_model.json, pca_model.json, calibration.json; table count_patterns",
                      _calibrate, ("model",)),
    "detect": Task("verdicts per session: the run's fused detector (with reasons) and DeepLog's rule at --top_g/--k_sigma; "
                   "--alert_webhook posts the new anomalies",
                   "tables predictions, verdicts, detection_runs (and the view latest_verdicts with a catalog); "
                   "runs/<run>/detection/detection_stats_g<G>_k<K>.json", _detect,
                   ("model",)),
    "stream": Task("Structured Streaming over --landing: raw log files to final verdicts in one job (the session "
                   "rule across triggers; --trigger available-now or '<n> seconds'; --flush closes every session)",
                   "the tables of ingest-raw and detect, open_sessions, session_state; the query's checkpoint",
                   _stream, ("model",)),
    "eval": Task("session metrics per split of every detector, the fused one and the baselines (--ingest_batch: "
                 "every labelled session of one batch)",
                 "table metrics; runs/<run>/eval/metrics.json, classification_report.md, "
                 "f1_latency_table.csv, roc_curve.png, f1_comparison_bar.png", _eval, ("model",)),
    "visual": Task("workflow graph of normal training sessions, anomalous transitions in red",
                   "runs/<run>/visual/workflow_graph.png, workflow_stats.json", _visual, ("model",)),
    "online": Task("fine-tune the Key LSTM on false positives (or --normal_blocks), a new model version",
                   "runs/<new run>/ (models, history, online/update_log.json), its predictions and verdicts; "
                   "<artifacts_root>/online/update_log.json", _online, ("model", "normal_blocks")),
    "register": Task("register the existing tables under tables_root in the catalog as <catalog_schema>.<name>",
                     "catalog entries (external Delta tables; data and history stay at tables_root)", _register),
    "maintain": Task("OPTIMIZE every table and VACUUM the files older versions need, keeping retention_days of time "
                     "travel", "compacted tables (DESCRIBE HISTORY shows OPTIMIZE and VACUUM)", _maintain),
    "generate": Task("write a SYNTHETIC full-size workload resampled from the real sample (--gen_blocks)",
                     "<gen_out>/Event_traces.csv/, anomaly_label.csv/, GENERATED.md", _generate),
    "full-pipeline": Task("ingest (--input event_traces|sequences|raw_logs) -> both -> detect -> eval -> visual",
                          "all of the above", _full),
}

OPTIONS: dict[str, Option] = {
    "task": Option("what to run: " + ", ".join(TASKS), default="full-pipeline", choices=tuple(TASKS),
                   metavar="TASK"),
    "model": Option("model for detect/eval/visual/online/calibrate: a run id, or an MLflow URI runs:/<id>/detector, "
                    "models:/<name>/<version> or models:/<name>@<alias> (default: the latest trained run)",
                    metavar="RUN_ID|URI"),
    "normal_blocks": Option("online: file of BlockIds confirmed normal (one per line, or a CSV with a "
                            "BlockId column) instead of the detector's false positives", metavar="FILE"),
}


def description() -> str:
    """The job's help text: one line per task with what it writes."""
    lines = ["Run one DeepLog task on Spark. Tasks (artifacts go to <artifacts_root>, tables to <tables_root>):", ""]
    for name, t in TASKS.items():
        lines.append(f"  {name:<14} {t.help}")
        lines.append(f"  {'':<14}   writes: {t.writes}")
    return "\n".join(lines)


def run(spark: SparkSession, cfg: Config, opts: dict) -> dict:
    """Run ``opts['task']`` and return its summary (ConfigError for an option the task does not read)."""
    task = TASKS[opts["task"]]
    unused = [n for n, v in opts.items() if v and n != "task" and n not in task.uses]
    if unused:
        raise ConfigError(f"--{unused[0]} does not apply to --task {opts['task']} "
                          f"(it applies to: {', '.join(t for t, d in TASKS.items() if unused[0] in d.uses)})")
    return task.run(spark, cfg, opts)
