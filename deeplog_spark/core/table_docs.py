"""What every table and column means, in one place (no Spark import).

Every table is created with these as its Delta comments (the table's description and each column's
comment), so ``DESCRIBE TABLE`` and a catalog browser explain the tables themselves;
``tests/test_operations.py`` checks that every column the pipeline writes has one. docs/tables.md
says the same at more length.
"""

from __future__ import annotations

from deeplog_spark.core import names

_DETECTION = {
    "run_id": "the trained run (model) that scored the session",
    "g": "DeepLog's top-g of this detection (--top_g)",
    "k": "DeepLog's k of mu + k*sigma for the value model of this detection (--k_sigma)",
}
_SESSION = {
    "block_id": "the session id: an HDFS BlockId, or another system's session (instance, container, node, window)",
    "split": "train, val or test: a hash of the session id (seed 1337)",
    "label": "1 anomalous, 0 normal, null unlabelled",
    "ingest_batch": "the ingest batch (a day of logs, say) the session was ingested in",
}

_TIMES = {
    "session_start": "the event time of the session's first event (raw logs; null when the input has no times)",
    "session_end": "the event time of the session's last event (raw logs; null when the input has no times)",
}

_TEMPLATE = {
    "event_id": "event id (n of En)",
    "event_key": "event key, En",
    "template": "template text, [*] for a parameter",
}

#: table -> (description, {column: comment}).
TABLES: dict[str, tuple[str, dict[str, str]]] = {
    names.TEMPLATES: ("The event templates: event id n is template En", _TEMPLATE),
    names.TRACES: ("One row per accepted session: its events in log order", {
        **_SESSION,
        "events": "event ids in log order",
        "intervals": "seconds between consecutive events (the first 0); null when the input has no times",
        "event_count": "number of events",
        "type": "Loghub's Type column of Event_traces (null when absent)",
        "latency": "Loghub's Latency column of Event_traces (null when absent)",
        "source_file": "the input file (the session's first file for raw logs)",
        "ingested_at": "when the batch was ingested (UTC)",
        **_TIMES,
    }),
    names.INGEST_REJECTS: ("Input rows and log lines that were not accepted, each with its reason", {
        "source": "event_traces, sequences, raw_log or anomaly_labels",
        "source_file": "the input file",
        "block_id": "the session id the row names, when it could be read",
        "raw": "the input row or line as text",
        "reason": "why it was rejected (docs/tables.md lists the reasons)",
        "detail": "more about the reason (the unknown keys, the batch that holds the block...)",
        "ingested_at": "when the batch was ingested (UTC)",
        "ingest_batch": "the ingest batch",
    }),
    names.TEMPLATE_COUNTS: ("Accepted raw log lines per template, per ingest batch", {
        **_TEMPLATE,
        "event_id": "event id (0: a message no saved template matched)",
        "lines": "accepted lines of the batch matching the template",
        "block_mentions": "session ids those lines name",
        "ingest_batch": "the ingest batch",
    }),
    names.MINER_STATE: ("The Drain3 miner of mined templates, so later batches keep the ids", {
        "state": "the miner as JSON",
        "templates": "number of templates",
        "sim_th": "Drain3 similarity threshold",
        "depth": "Drain3 parse-tree depth",
        "mined_at": "when it was mined (UTC)",
        "ingest_batch": "the batch it was mined on",
    }),
    names.WINDOWS: ("Sliding windows of every session (an export for SQL; the models build theirs from traces)", {
        **_SESSION,
        "label": "the session's label",
        "position": "window index in the session, from 0",
        "window": "h event ids (0 pads)",
        "next_event": "the event to predict (with session markers, vocab + 2 is the end)",
        "window_intervals": "the window's intervals (null without times)",
        "next_interval": "the next event's interval (null without times, or at the end)",
        "ingested_at": "when the session's batch was ingested (UTC)",
    }),
    names.COUNT_PATTERNS: ("The normal event-count vectors of each trained run (the count model)", {
        "run_id": "the trained run",
        "counts": "an event-count vector of train-normal sessions",
        "sessions": "train-normal sessions with that vector",
    }),
    names.VERDICTS: ("One verdict per session and detection (run_id, g, k): anomalous or not, and why", {
        **_DETECTION, **_SESSION, **_TIMES,
        "anomalous": "the fused verdict: the rule chosen on the val split",
        "detectors": "the members of the fused rule that fired",
        "reason": "what is wrong, in words, and where the key model was most surprised",
        "deeplog_anomalous": "DeepLog's own rule at (g, k): a next event outside the top g, or an interval over mu + k*sigma",
        "count_anomalous": "the count detector fired",
        "exact_anomalous": "baseline: the count vector was never seen in a normal training session",
        "n_windows": "windows of the session",
        "n_anomalous_windows": "windows whose next event is outside the top g",
        "max_key_rank": "the key model's largest rank of a true next event",
        "max_key_score": "the key model's largest -log p of a true next event",
        "max_value_error": "the value model's largest standardized residual (null without a value model or times)",
        "count_score": "the count detector's score",
        "pca_spe": "PCA's squared prediction error",
        "first_anomalous_position": "DeepLog's rule: the first window outside the top g (or over the value threshold)",
        "first_anomaly_window": "that window's event ids",
        "first_anomaly_next_event": "the event that window did not expect",
        "first_anomaly_reason": "not_in_top_g, unseen_next_event, unseen_event_in_window or value",
        "detection_id": "the detection that wrote the row (a row of detection_runs)",
        "detected_at": "when the detection ran (UTC)",
        "verdict_status": "final: the session is complete and its verdict will not change",
        "registered_version": "the MLflow registered model version of the run, when it has one",
    }),
    names.PREDICTIONS: ("Per-window predictions of the flagged sessions (every session with --predictions all)", {
        **_DETECTION, **_SESSION,
        "position": "window index in the session, from 0",
        "window": "the window's event ids",
        "y_true": "the next event",
        "y_pred_topg": "the key model's top g predictions",
        "key_rank": "rank of the true next event",
        "key_score": "-log p of the true next event",
        "key_anomaly": "the next event is outside the top g",
        "key_reason": "unseen_next_event or unseen_event_in_window, else null",
        "value_error": "the value model's standardized residual of the next interval",
        "value_anomaly": "the residual is over mu + k*sigma",
        "fused_anomaly": "the window is anomalous by the key or the value rule",
        "window_score": "a window score for ranking (the larger, the more surprising)",
    }),
    names.METRICS: ("Session-level metrics of every detector per split and evaluation", {
        **_DETECTION,
        "g": "the detector's g (key at the spec's or the val-chosen g), else the detection's",
        "split": "train, val, test; all for a batch evaluation",
        "threshold_source": "val_chosen, spec or baseline",
        "detector": "fused, count, key, key_nll, value, pca, deeplog, exact or pca_q",
        "threshold": "the detector's threshold (rank g for key), null for rules",
        "sessions": "labelled sessions evaluated",
        "tp": "true positives", "fp": "false positives", "tn": "true negatives", "fn": "false negatives",
        "precision": "precision", "recall": "recall", "f1": "F1", "fpr": "false positive rate",
        "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "mcc": "Matthews correlation coefficient",
        "auroc": "area under the ROC curve (ties count half); null without both classes",
        "detect_g": "the evaluated detection's g", "detect_k": "the evaluated detection's k",
        "evaluated_at": "when the evaluation ran (UTC)",
        "ingest_batch": "the batch evaluated (--ingest_batch), null for the whole detection",
    }),
    names.LATEST_VERDICTS: ("The newest final verdict of every session, from the model and (g, k) of the newest "
                            "detection (a view)", {}),
    names.DETECTION_RUNS: ("One row per detection: when, which model, what it scored and found (for SQL alerts)", {
        "detection_id": "the detection (the detection_id of its verdicts)",
        "detected_at": "when it ran (UTC)",
        **_DETECTION,
        "model": "the --model given (a run id or an MLflow URI), or latest",
        "registered_version": "the MLflow registered model version of the run, when it has one",
        "ingest_batch": "the batch scored (null: every session)",
        "sessions": "sessions scored",
        "anomalies": "sessions the fused rule flags",
        "deeplog_anomalies": "sessions DeepLog's rule flags",
        "new_anomalies": "flagged sessions that the previous detection of this model and (g, k) did not flag",
        "seconds": "how long the detection took",
        "alert_status": "sent, failed, or null when no alert was due (no webhook, or no new anomaly)",
    }),
    names.OPEN_SESSIONS: ("The events of the sessions still open after the newest batch (the session rule across "
                          "batches; docs/scheduled-scoring.md)", {
        "block_id": "the session id",
        "t": "the event's time, seconds since the epoch (UTC)",
        "f": "the log file of the event's line",
        "o": "the line's position in its file (orders events of the same second)",
        "e": "the event id",
        "lab": "the line's label (1 alert line, 0 normal, null when the format has none)",
        "ingest_batch": "the batch that brought the event",
    }),
    names.SESSION_STATE: ("One row per batch of the session rule: the watermark, the sessions it closed, the state "
                          "it started from", {
        "seq": "the batch's position in the sequence of batches (from 1)",
        "ingest_batch": "the batch (a file, a day, a stream trigger)",
        "ingested_at": "when the batch ran (UTC)",
        "max_event_time": "the newest event time seen up to and including this batch",
        "watermark": "max_event_time - session_timeout: sessions quiet since before it are closed",
        "session_timeout": "seconds of event time without an event after which a session is closed",
        "flushed": "true when the batch closed every session (--flush, or a batch without --append)",
        "open_version": "the version of open_sessions this batch started from (a re-run starts from it again)",
        "lines": "log lines the batch read",
        "sessions_closed": "sessions the batch closed (written to traces under this batch)",
        "sessions_open": "sessions still open after it",
        "events_open": "events of the sessions still open",
        "late_events": "events of sessions an earlier batch closed (rejected as session_closed)",
        "late_sessions": "sessions closed by this batch whose every event was already behind the watermark",
    }),
}


def column_comment(table: str, column: str) -> str | None:
    return TABLES.get(table, ("", {}))[1].get(column)


def table_comment(table: str) -> str | None:
    return TABLES[table][0] if table in TABLES else None
