"""Configuration: defaults from ``conf/deeplog.toml``, overridden by ``--key value`` flags.

Every key is declared once in :class:`Config` with its type and section. Loading is strict: a key
the file or the command line names that is not declared, a value of the wrong type, or a value out
of range raises :class:`ConfigError` naming the key. The resolved config is fingerprinted
(:meth:`Config.fingerprint`) so runs can be keyed by the settings that produced them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomllib

from deeplog_spark.core.errors import ConfigError
from deeplog_spark.core.names import TableRef
from deeplog_spark.ingest.formats import PRESETS, SEGMENTS
from deeplog_spark.resources import resource_path, sample_input

#: The default config file, shipped inside the package (``conf/deeplog.toml`` of a checkout links
#: to it); when the package runs from a zip, a copy extracted by :mod:`deeplog_spark.resources`.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "resources" / "deeplog.toml"
#: Input keys whose relative ``data/sample/...`` default falls back to the packaged sample.
SAMPLE_KEYS = ("event_traces", "anomaly_labels", "templates", "raw_logs")
#: Environment variable that points to another config file.
CONFIG_ENV = "DEEPLOG_CONFIG"
#: Values of the ``split`` column.
SPLITS = ("train", "val", "test")
#: What full-pipeline ingests.
INPUTS = ("event_traces", "sequences", "raw_logs")
#: Where raw-log event ids come from (``auto``: the file for HDFS, else mined or the saved miner).
TRIGGER_RE = re.compile(r"^(available-now|[0-9]+(\.[0-9]+)? seconds?)$")
TEMPLATE_SOURCES = ("auto", "file", "mine", "state")
#: Learning-rate schedules (deeplog_spark.nn.trainer.TrainJob).
SCHEDULES = ("onecycle", "plateau", "constant")
#: Precisions of the training forward passes (deeplog_spark.nn.trainer.autocast_dtype).
PRECISIONS = ("auto", "bf16", "fp32")
#: How training rows reach the ranks: ``parquet`` (Spark writes Parquet, each rank reads its files
#: with pyarrow), ``petastorm`` (the optional Petastorm converter), ``auto`` (petastorm when installed).
FEEDS = ("auto", "parquet", "petastorm")
#: The largest window length h (a window is an LSTM pass of h steps; more is a typo, not a model).
MAX_H = 1000
#: A URL scheme (``s3a:``, ``dbfs:``): Spark reads and writes tables there; Python's file APIs cannot.
URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


__all__ = ["NAME_RE", "SPLITS", "Config", "ConfigError", "parse_overrides", "pop_option", "valid_name"]


def _field(section: str, doc: str):
    return dataclasses.field(metadata={"section": section, "doc": doc})


@dataclasses.dataclass(frozen=True)
class Config:
    """Resolved settings of a pipeline run (all values come from the config file or flags)."""

    # [data]
    event_traces: str = _field("data", "Loghub Event_traces.csv (plain/.gz, glob or directory)")
    anomaly_labels: str = _field("data", "anomaly_label.csv; empty string for none")
    templates: str = _field("data", "HDFS.log_templates.csv (EventId,EventTemplate)")
    raw_logs: str = _field("data", "raw HDFS log files for --task ingest-raw (plain/.gz, glob or directory)")
    input: str = _field("data", "what full-pipeline ingests: event_traces (Loghub HDFS), sequences (session_id,events "
                               "CSV) or raw_logs (log lines, with log_format)")
    sequences: str = _field("data", "generic sessions for input = sequences: a CSV of session_id,events[,label]")
    ingest_batch: str = _field("data", "name of an input batch (e.g. a day of logs); ingest default: the input's "
                                       "file or folder name; detect: score only this batch ('' = all)")
    append: bool = _field("data", "ingest/windows: add or replace this batch in existing tables, keep the others")
    strict: bool = _field("data", "ingest: fail (exit 2) when any input row or log line is rejected")
    # [sessions]
    session_timeout: float = _field("sessions", "raw logs by id: seconds of event time without an event after which "
                                                "a session is closed (scored with a final verdict)")
    flush: bool = _field("sessions", "ingest-raw --append / stream: close every open session after this batch (the "
                                      "end of a backfill)")
    # [stream]
    landing: str = _field("stream", "--task stream: the folder raw log files land in")
    checkpoint: str = _field("stream", "--task stream: the query's checkpoint folder ('' = <tables_root>/_checkpoints/"
                                       "stream)")
    trigger: str = _field("stream", "--task stream: available-now (process what has landed, then stop) or "
                                    "'<n> seconds' (run, a trigger every n seconds)")
    max_files_per_trigger: int = _field("stream", "--task stream: files per micro-batch at most (0 = all that landed)")
    # [logs]
    log_format: str = _field("logs", "raw_logs line format: a preset (hdfs, bgl, thunderbird, spirit, hadoop, openstack, "
                                     "spark, zookeeper)")
    line_regex: str = _field("logs", "replace the preset's line regex (Python named groups; content required)")
    timestamp_format: str = _field("logs", "replace the preset's timestamp format (Spark datetime pattern, or epoch)")
    session_regex: str = _field("logs", "segment = id: a regex whose group 1 is a session id in the content")
    session_field: str = _field("logs", "segment = id: a named field of the line regex as the session id")
    templates_from: str = _field("logs", "event ids: file (the templates file), mine (Drain3), state (the saved miner) "
                                         "or auto")
    drain_sim_th: float = _field("logs", "Drain3 similarity threshold")
    drain_depth: int = _field("logs", "Drain3 parse-tree depth")
    segment: str = _field("logs", "sessions of raw logs: id, lines (fixed windows of segment_lines) or time windows")
    segment_lines: int = _field("logs", "segment = lines: lines per session")
    window_seconds: float = _field("logs", "segment = time: window length in seconds")
    window_step_seconds: float = _field("logs", "segment = time: seconds between window starts (<= window_seconds)")
    # [tables]
    tables_root: str = _field("tables", "directory holding the Delta tables")
    artifacts_root: str = _field("tables", "directory for model runs and plots")
    catalog_schema: str = _field("tables", "also register every table in the session catalog as SCHEMA.<name> (or "
                                           "CATALOG.SCHEMA.<name>) and read and write it by name; '' = paths only")
    shared_storage: bool = _field("tables", "artifacts_root is a mount every cluster node sees (for local_mode=false)")
    retention_days: int = _field("tables", "--task maintain: days of time travel kept; older files are vacuumed")
    # [split]
    seed: int = _field("split", "seed of the BlockId hash split")
    train_ratio: float = _field("split", "share of blocks in train")
    val_ratio: float = _field("split", "share of blocks in val")
    test_ratio: float = _field("split", "share of blocks in test")
    # [window]
    h: int = _field("window", "window length")
    session_markers: bool = _field("window", "frame sessions with start/end ids and predict every event and the end")
    # [key_model]
    embed_dim: int = _field("key_model", "Key LSTM embedding size")
    key_hidden: int = _field("key_model", "Key LSTM hidden size")
    key_layers: int = _field("key_model", "Key LSTM layers")
    key_dropout: float = _field("key_model", "Key LSTM dropout between layers")
    # [value_model]
    value_hidden: int = _field("value_model", "Value LSTM hidden size")
    value_layers: int = _field("value_model", "Value LSTM layers")
    value_dropout: float = _field("value_model", "Value LSTM dropout")
    value_event_dim: int = _field("value_model", "Value LSTM event embedding size (the model is conditioned on the events)")
    value_chunk: int = _field("value_model", "Value LSTM training rows: sessions cut into chunks of this many steps (> h)")
    value_batch_size: int = _field("value_model", "Value LSTM training: chunks per mini-batch")
    value_epochs: int = _field("value_model", "Value LSTM training: maximum epochs")
    # [train]
    batch_size: int = _field("train", "mini-batch size")
    lr: float = _field("train", "Adam learning rate")
    epochs: int = _field("train", "maximum epochs")
    patience: int = _field("train", "early-stopping patience (epochs)")
    min_delta: float = _field("train", "early stopping: smallest relative val-loss decrease that counts as better")
    lr_decay: float = _field("train", "lr_schedule plateau: multiply the rate by this after each epoch without improvement")
    lr_schedule: str = _field("train", "onecycle (warm up to lr, then anneal), plateau (lr_decay on plateaus) or constant")
    steps_per_epoch: int = _field("train", "distinct_windows: optimizer steps per epoch (0 = as many draws as windows)")
    distinct_windows: bool = _field("train", "key model: draw distinct (window, next) rows by count instead of a pass over all windows")
    sampling_power: float = _field("train", "distinct_windows: draw windows by count ** this (1 = the law of all windows; < 1 favours rare windows)")
    max_train_rows: int = _field("train", "at most this many training rows per model, a hashed sample (key: distinct rows; value: sessions; 0 = all)")
    max_val_rows: int = _field("train", "at most this many validation rows per model, a hashed sample (0 = all)")
    pca_max_events: int = _field("train", "the PCA baseline's limit on distinct events in the training sessions (its d x d matrices), checked before training")
    num_processes: int = _field("train", "TorchDistributor processes (ranks)")
    local_mode: bool = _field("train", "TorchDistributor local_mode (ranks on the driver)")
    side_by_side: bool = _field("train", "one CPU rank: train the key and value models at the same time, each on half of the cores")
    use_gpu: bool = _field("train", "train on GPUs (nccl) instead of CPU (gloo)")
    train_precision: str = _field("train", "training forward passes: auto (bf16 where the CPU or GPU computes it natively), bf16 or fp32")
    feed: str = _field("train", "how training rows reach the ranks: parquet (pyarrow), petastorm (the optional extra), or auto (petastorm when installed)")
    loader_workers: int = _field("train", "Petastorm reader threads per rank")
    # [detect]
    top_g: int = _field("detect", "key model: anomaly if next event not in top g")
    k_sigma: float = _field("detect", "value model: anomaly if error > mu + k*sigma")
    detect_batch_size: int = _field("detect", "rows per Arrow batch of the scoring passes (sequences or sessions)")
    predictions: str = _field("detect", "per-window predictions rows: 'anomalous' (sessions flagged by a rule) or 'all'")
    calibration_fpr: float = _field("detect", "without labelled anomalies in val: thresholds at this val false-positive rate")
    alert_webhook: str = _field("detect", "POST a JSON summary to this http(s) URL when a detection finds new anomalies "
                                          "('' = no alert)")
    # [online]
    online_split: str = _field("online", "split whose false positives the online update learns from")
    online_epochs: int = _field("online", "fine-tuning epochs of the online update")
    online_lr: float = _field("online", "Adam learning rate of the online update")
    online_replay: float = _field("online", "weight of replayed train-normal windows vs feedback (0 = none)")
    # [generate]
    gen_out: str = _field("generate", "output folder of the synthetic workload (--task generate)")
    gen_blocks: int = _field("generate", "blocks to generate")
    gen_anomaly_ratio: float = _field("generate", "share of anomalous blocks")
    gen_timing_share: float = _field("generate", "share of the anomalies that are timing anomalies (a stalled interval)")
    gen_format: str = _field("generate", "traces (Loghub Event_traces.csv) or raw (HDFS log lines in time order, a "
                                         "file per hour)")
    gen_days: float = _field("generate", "gen_format = raw: days of log the sessions' starts are spread over")
    # [tracking]
    mlflow: bool = _field("tracking", "log every training run (params, epoch metrics, artifacts, the detector as a "
                                      "pyfunc model) and its evaluation to MLflow")
    mlflow_experiment: str = _field("tracking", "MLflow experiment of the training runs")
    mlflow_model_name: str = _field("tracking", "register the detector under this MLflow model name ('' = log, "
                                                "do not register)")
    # [spark]
    master: str = _field("spark", "Spark master for plain-python runs")
    shuffle_partitions: int = _field("spark", "spark.sql.shuffle.partitions")
    driver_memory: str = _field("spark", "spark.driver.memory for plain-python runs")
    metastore_dir: str = _field("spark", "Hive catalog in an embedded Derby metastore (and its warehouse) in this "
                                         "directory; '' = the session's own catalog")

    def __post_init__(self) -> None:
        _validate(self)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Config:
        """Read a TOML config file and apply ``overrides`` (key -> value or string).

        ``path`` defaults to ``$DEEPLOG_CONFIG`` or the repository's ``conf/deeplog.toml``.

        Example::

            cfg = Config.load(overrides={"h": "12", "top_g": 5})
        """
        path = Path(path or os.environ.get(CONFIG_ENV) or _default_path())
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (pass --config PATH or set ${CONFIG_ENV})")
        with path.open("rb") as fh:
            try:
                doc = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                                  "TOML files are UTF-8") from exc
        values = _flatten(doc, path)
        for key, raw in (overrides or {}).items():
            values[key] = _coerce(key, raw)

        for key in SAMPLE_KEYS:  # the embedded sample, also from an installed wheel outside a checkout
            if isinstance(values.get(key), str):
                values[key] = sample_input(values[key])
        return cls.from_dict(values, source=str(path))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> Config:
        """Build a config from a flat ``key -> value`` mapping holding every key."""
        known = _fields()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown config key(s): {', '.join(unknown)}")
        missing = sorted(set(known) - set(values))
        if missing:
            raise ConfigError(f"{source}: missing config key(s): {', '.join(missing)}")
        return cls(**{k: _coerce(k, v) for k, v in values.items()})

    def replace(self, **overrides: Any) -> Config:
        """A copy with some keys changed (validated like any other config)."""
        values = self.to_dict()
        for key, raw in overrides.items():
            if key not in values:
                raise ConfigError(f"unknown config key: {key}")
            values[key] = _coerce(key, raw)
        return Config(**values)

    # -- use ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, keys: Iterable[str] | None = None, extra: Mapping[str, Any] | None = None) -> str:
        """A short, stable hash of the chosen keys (all by default) plus ``extra`` values."""
        values = self.to_dict()
        chosen = {k: values[k] for k in (sorted(keys) if keys is not None else sorted(values))}
        if extra:
            chosen["__extra__"] = dict(extra)
        blob = json.dumps(chosen, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def table_path(self, name: str) -> str:
        """Location of the Delta table ``name`` under ``tables_root``.

        A local ``tables_root`` is made absolute (Delta's path-based SQL, ``delta.`<path>```, only
        accepts absolute paths); a URI such as ``s3://bucket/x`` or ``dbfs:/x`` is kept as it is.
        """
        if not name or not name.replace("_", "").isalnum():
            raise ConfigError(f"invalid table name {name!r}: use letters, digits and '_'")
        if URL_RE.match(self.tables_root):
            return self.tables_root.rstrip("/") + "/" + name
        return os.path.join(os.path.abspath(self.tables_root), name)

    def table(self, name: str):
        """The Delta table ``name`` as jobs read and write it: a
        :class:`deeplog_spark.core.tables.TableRef` at :meth:`table_path`, named
        ``<catalog_schema>.<name>`` in the session catalog when ``catalog_schema`` is set."""
        path = self.table_path(name)
        return TableRef(path, f"{self.catalog_schema}.{name}" if self.catalog_schema else None)


def _default_path() -> Path:
    if DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH

    return resource_path("deeplog.toml") or Path.cwd() / "conf" / "deeplog.toml"


# -- helpers ------------------------------------------------------------------------------------


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Config)}


def _types() -> dict[str, type]:
    # Annotations are strings under `from __future__ import annotations`.
    return {name: {"int": int, "float": float, "str": str, "bool": bool}[f.type] for name, f in _fields().items()}


def sections() -> dict[str, list[str]]:
    """Section -> keys, in declaration order (for help texts)."""
    out: dict[str, list[str]] = {}
    for name, f in _fields().items():
        out.setdefault(f.metadata["section"], []).append(name)
    return out


def describe(key: str) -> str:
    """One-line description of a key."""
    return _fields()[key].metadata["doc"]


def _flatten(doc: Mapping[str, Any], path: Path) -> dict[str, Any]:
    fields = _fields()
    values: dict[str, Any] = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
        for key, value in table.items():
            if key not in fields:
                raise ConfigError(f"{path}: unknown config key [{section}] {key}")
            expected = fields[key].metadata["section"]
            if section != expected:
                raise ConfigError(f"{path}: config key {key} belongs in [{expected}], not [{section}]")
            values[key] = value
    return values


def _coerce(key: str, raw: Any) -> Any:
    types = _types()
    if key not in types:
        raise ConfigError(f"unknown config key: {key}")
    want = types[key]
    if want is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _BOOLS:
            return _BOOLS[raw.strip().lower()]
        raise ConfigError(f"config key {key}: expected true or false, got {raw!r}")
    if isinstance(raw, bool):
        raise ConfigError(f"config key {key}: expected {want.__name__}, got a boolean")
    if isinstance(raw, want):
        return raw
    if want is float and isinstance(raw, int):
        return float(raw)
    if isinstance(raw, str):
        try:
            return want(raw.strip()) if want is not str else raw
        except ValueError:
            pass
    raise ConfigError(f"config key {key}: expected {want.__name__}, got {raw!r}")


#: ``catalog_schema``: SCHEMA or CATALOG.SCHEMA.
SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}(\.[A-Za-z_][A-Za-z0-9_]{0,127})?$")

#: Names that end up in file paths or SQL predicates (batches, run ids): no quotes, slashes or spaces.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def valid_name(name: object) -> bool:
    """The one rule for run ids and ingest batch names: NAME_RE, and no ``..`` (never a path step)."""
    return isinstance(name, str) and bool(NAME_RE.match(name)) and ".." not in name

_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key}={value!r} is out of range: {rule}")


def _validate(cfg: Config) -> None:
    types = _types()
    for key, want in types.items():
        value = getattr(cfg, key)
        if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            raise ConfigError(f"config key {key}: expected {want.__name__}, got {value!r}")
        if want is float:
            _check(math.isfinite(value), key, value, "must be a finite number")
    _check(cfg.h <= MAX_H, "h", cfg.h, f"must be <= {MAX_H}")
    _check(cfg.value_chunk > cfg.h, "value_chunk", cfg.value_chunk, f"must be > h ({cfg.h}): later chunks repeat h steps as context")
    _check(cfg.lr_schedule in SCHEDULES, "lr_schedule", cfg.lr_schedule, f"must be one of {', '.join(SCHEDULES)}")
    _check(cfg.train_precision in PRECISIONS, "train_precision", cfg.train_precision,
           f"must be one of {', '.join(PRECISIONS)}")
    _check(cfg.feed in FEEDS, "feed", cfg.feed, f"must be one of {', '.join(FEEDS)}")
    _check(cfg.input in INPUTS, "input", cfg.input, f"must be one of {', '.join(INPUTS)}")
    _check(cfg.log_format in PRESETS, "log_format", cfg.log_format, f"must be one of {', '.join(PRESETS)}")
    _check(cfg.templates_from in TEMPLATE_SOURCES, "templates_from", cfg.templates_from,
           f"must be one of {', '.join(TEMPLATE_SOURCES)}")
    _check(cfg.segment in SEGMENTS, "segment", cfg.segment, f"must be one of {', '.join(SEGMENTS)}")
    _check(0.0 < cfg.drain_sim_th <= 1.0, "drain_sim_th", cfg.drain_sim_th, "must be in (0, 1]")
    _check(cfg.drain_depth >= 3, "drain_depth", cfg.drain_depth, "must be >= 3 (Drain3's minimum)")
    _check(cfg.segment_lines >= 1, "segment_lines", cfg.segment_lines, "must be >= 1")
    _check(cfg.window_seconds > 0, "window_seconds", cfg.window_seconds, "must be > 0")
    _check(0 < cfg.window_step_seconds <= cfg.window_seconds, "window_step_seconds", cfg.window_step_seconds,
           "must be in (0, window_seconds]: a larger step would leave lines in no window")
    _check(cfg.predictions in ("anomalous", "all"), "predictions", cfg.predictions, "must be 'anomalous' or 'all'")
    _check(0.0 < cfg.calibration_fpr < 1.0, "calibration_fpr", cfg.calibration_fpr, "must be in (0, 1)")
    _check(cfg.session_timeout > 0, "session_timeout", cfg.session_timeout, "must be > 0 seconds")
    _check(cfg.max_files_per_trigger >= 0, "max_files_per_trigger", cfg.max_files_per_trigger, "must be >= 0 (0 = all)")
    _check(bool(TRIGGER_RE.match(cfg.trigger)), "trigger", cfg.trigger, "must be available-now or '<n> seconds'")
    _check(cfg.gen_format in ("traces", "raw"), "gen_format", cfg.gen_format, "must be traces or raw")
    _check(cfg.gen_days > 0, "gen_days", cfg.gen_days, "must be > 0")
    _check(cfg.retention_days >= 1, "retention_days", cfg.retention_days, "must be >= 1")
    _check(cfg.alert_webhook == "" or bool(re.match(r"^https?://[^\s/]+", cfg.alert_webhook)), "alert_webhook",
           cfg.alert_webhook, "must be an http:// or https:// URL (or '' for no alert)")
    _check(cfg.steps_per_epoch >= 0, "steps_per_epoch", cfg.steps_per_epoch, "must be >= 0 (0 = one pass)")
    for key in ("h", "embed_dim", "value_event_dim", "value_chunk", "key_hidden", "key_layers", "value_hidden", "value_layers",
                "value_batch_size", "value_epochs",
                "batch_size", "epochs", "top_g", "shuffle_partitions", "num_processes", "loader_workers", "detect_batch_size",
                "pca_max_events"):
        _check(getattr(cfg, key) >= 1, key, getattr(cfg, key), "must be >= 1")
    _check(cfg.patience >= 0, "patience", cfg.patience, "must be >= 0")
    _check(0.0 <= cfg.min_delta < 1.0, "min_delta", cfg.min_delta, "must be in [0, 1)")
    _check(0.0 < cfg.lr_decay <= 1.0, "lr_decay", cfg.lr_decay, "must be in (0, 1]")
    _check(0.0 < cfg.sampling_power <= 1.0, "sampling_power", cfg.sampling_power, "must be in (0, 1]")
    for key in ("max_train_rows", "max_val_rows"):
        _check(getattr(cfg, key) >= 0, key, getattr(cfg, key), "must be >= 0 (0 = no cap)")
    _check(cfg.lr > 0, "lr", cfg.lr, "must be > 0")
    _check(cfg.k_sigma >= 0, "k_sigma", cfg.k_sigma, "must be >= 0")
    _check(cfg.gen_blocks >= 1, "gen_blocks", cfg.gen_blocks, "must be >= 1")
    for key in ("gen_anomaly_ratio", "gen_timing_share"):
        _check(0.0 <= getattr(cfg, key) <= 1.0, key, getattr(cfg, key), "must be in [0, 1]")
    _check(cfg.online_epochs >= 1, "online_epochs", cfg.online_epochs, "must be >= 1")
    _check(cfg.online_lr > 0, "online_lr", cfg.online_lr, "must be > 0")
    _check(cfg.online_replay >= 0, "online_replay", cfg.online_replay, "must be >= 0")
    _check(cfg.online_split in SPLITS, "online_split", cfg.online_split, f"must be one of {', '.join(SPLITS)}")
    for key in ("key_dropout", "value_dropout"):
        _check(0.0 <= getattr(cfg, key) < 1.0, key, getattr(cfg, key), "must be in [0, 1)")
    for key in ("train_ratio", "val_ratio", "test_ratio"):
        _check(0.0 <= getattr(cfg, key) <= 1.0, key, getattr(cfg, key), "must be in [0, 1]")
    total = cfg.train_ratio + cfg.val_ratio + cfg.test_ratio
    _check(abs(total - 1.0) < 1e-9, "train_ratio", cfg.train_ratio,
           f"train_ratio + val_ratio + test_ratio must sum to 1 (got {total:g})")
    _check(cfg.train_ratio > 0, "train_ratio", cfg.train_ratio, "must be > 0")
    _check(cfg.catalog_schema == "" or bool(SCHEMA_RE.match(cfg.catalog_schema)), "catalog_schema", cfg.catalog_schema,
           "SCHEMA or CATALOG.SCHEMA, each a name of letters, digits and '_' (or '' for path-based tables only)")
    _check(cfg.ingest_batch == "" or valid_name(cfg.ingest_batch), "ingest_batch", cfg.ingest_batch,
           "use letters, digits, '.', '_' and '-' (max 64, no '..')")
    for key in ("event_traces", "templates", "tables_root", "artifacts_root", "master"):
        _check(bool(getattr(cfg, key).strip()), key, getattr(cfg, key), "must not be empty")
    # run folders are written with Python's file APIs: a URL would become a local folder named after it
    _check(not URL_RE.match(cfg.artifacts_root.strip()), "artifacts_root", cfg.artifacts_root,
           "must be a filesystem path, not a URL: run folders are written with Python's file APIs (on Databricks "
           "use the /dbfs/... mount; on a cluster, a mount every node sees, with shared_storage = true)")


def parse_overrides(argv: Sequence[str]) -> dict[str, str]:
    """Parse ``--key value`` / ``--key=value`` pairs into a dict (keys checked by ``Config``).

    Example::

        parse_overrides(["--h", "12", "--top_g=5"]) == {"h": "12", "top_g": "5"}
    """
    out: dict[str, str] = {}
    known = _fields()
    it = iter(argv)
    for arg in it:
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}: options look like --key value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in known:
            raise ConfigError(f"unknown option --{key} (see --help for the config keys)")
        if not eq:
            try:
                value = next(it)
            except StopIteration:
                raise ConfigError(f"option --{key} needs a value") from None
        out[key] = value
    return out


def pop_option(argv: Sequence[str], name: str, default: str) -> tuple[list[str], str]:
    """Remove a job-specific ``--name value`` (not a config key) from ``argv``; return (rest, value)."""
    args, value = list(argv), default
    for i, arg in enumerate(args):
        if arg == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
            del args[i:i + 2]
            break
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
            del args[i]
            break
    return args, value
