"""Online update (DeepLog's feedback loop): fine-tune the Key LSTM on confirmed false positives.

DeepLog lets an operator mark a flagged session as normal; the model then takes gradient steps
on that session's windows so the same behaviour is not flagged again. Here the feedback is either
the key model's false positives on one split (sessions labelled normal that DeepLog's rule at g, or
a key detector of the fused rule, flagged: :func:`key_flagged`; ``online_split``, default train) or a
user's file of BlockIds confirmed normal (``--normal_blocks``).

Four steps, one function each:

1. **plan** (:func:`plan_update`): the feedback sessions and the new run's id
   ``<base run>-ft<hash>`` (the hash covers the parent, the feedback block set and the settings).
2. **fine-tune** (:func:`fine_tune`): the parent's Key LSTM trained further (``online_epochs`` at
   ``online_lr``, the same feed + TorchDistributor path as training) on the feedback windows
   (those the parent flagged in those sessions; all windows of a listed session it did not flag)
   mixed with replayed train-normal windows (total weight ``online_replay`` times the feedback's),
   so it does not forget the normal workflow. Guarded: it keeps the last epoch whose top-g recall on
   the val split's normal windows is at least the parent's (epoch 0 = the parent's weights).
3. **register** (:func:`register`): the new run's files; the value model is carried over unchanged,
   the count and PCA models are fitted again and the thresholds calibrated on val for the new key
   model. ``latest.json`` is not moved: detect uses the new version with ``--model <new run id>``.
4. **measure** (:func:`measure`): the new version is scored right away, and TP/FP/TN/FN per split
   before and after go to ``update_log.json``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deeplog_spark.core import schemas
from deeplog_spark.core.config import SPLITS, Config
from deeplog_spark.core.errors import InputError
from deeplog_spark.core.logs import stage
from deeplog_spark.core.runs import detection_rows, read_json, run_dir, write_json
from deeplog_spark.core.tables import read_table, table_exists
from deeplog_spark.detect.bundle import ModelBundle
from deeplog_spark.detect.calibration import calibrate_run
from deeplog_spark.detect.verdicts import run_detect
from deeplog_spark.features.train_rows import key_dataset, normal_sessions
from deeplog_spark.features.windows import window_rows
from deeplog_spark.models.fit import fit_quantitative
from deeplog_spark.nn.model import load_checkpoint, save_checkpoint
from deeplog_spark.train.job import save_model, train_job
from deeplog_spark.train.runner import distribute, set_petastorm_cache

log = logging.getLogger(__name__)

#: Config keys that define an online update (with the parent run and the feedback blocks).
ONLINE_KEYS = ("online_epochs", "online_lr", "online_replay", "batch_size", "patience", "seed", "top_g", "k_sigma")
_FT_SUFFIX = re.compile(r"-ft[0-9a-f]{8}$")
#: Files of the parent run the new version keeps as they are.
CARRIED = ("value_model.pt", "value_model.pt.sha256", "value_norm.json", "value_threshold.json",
           "value_history.json", "value_loss_curve.png")


def read_block_list(spark: SparkSession, path: str) -> DataFrame:
    """BlockIds from a file: one per line, or a CSV whose first column is the BlockId.

    Blank lines, ``#`` comments and a ``BlockId``/``block_id`` header are skipped.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"--normal_blocks file not found: {path}")
    first = F.trim(F.split(F.col("value"), ",").getItem(0))
    ids = (spark.read.text(path).select(F.regexp_replace(first, '^"|"$', "").alias("block_id"))
           .where((F.col("block_id") != "") & ~F.col("block_id").startswith("#")
                  & ~F.lower(F.col("block_id")).isin("blockid", "block_id")))
    return ids.distinct()


def key_flagged(g: int):
    """Whether the key model flagged a verdict's session: DeepLog's top-g rule at ``g``, or a key
    detector of the run's fused rule (the flags an update of the key model can change)."""
    return (F.col("max_key_rank") > F.lit(g)) | F.exists("detectors", lambda d: d.startswith("key"))


def feedback_blocks(spark: SparkSession, cfg: Config, verdicts: DataFrame | None, traces: DataFrame,
                    normal_blocks: str | None) -> tuple[DataFrame, dict]:
    """``block_id, split, label`` of the sessions to learn from, and where they came from."""
    if normal_blocks:
        given = read_block_list(spark, normal_blocks)
        known = given.join(traces.select("block_id", "split", "label"), "block_id")
        counts = given.join(known.select("block_id"), "block_id", "left_anti").agg(
            F.count(F.lit(1)).alias("unknown")).first()
        source = {"source": f"file {normal_blocks}", "blocks_in_file": given.count(),
                  "unknown_blocks": int(counts["unknown"])}
        if source["unknown_blocks"]:
            log.warning("online: %d BlockIds of %s are not in the traces table; ignored",
                        source["unknown_blocks"], normal_blocks)
        return known, source
    fps = verdicts.where(key_flagged(cfg.top_g) & (F.col("label") == 0) & (F.col("split") == cfg.online_split))
    return (fps.select("block_id", "split", "label"),
            {"source": f"the key model's false positives of the {cfg.online_split} split at g={cfg.top_g}"})


def session_counts(verdicts: DataFrame, g: int) -> dict[str, dict[str, int]]:
    """TP/FP/TN/FN per split (labelled sessions only) of the key model's flags (:func:`key_flagged`)."""
    y, p = F.col("label"), key_flagged(g)
    rows = verdicts.where(y.isNotNull()).groupBy("split").agg(
        F.sum((p & (y == 1)).cast("long")).alias("tp"), F.sum((p & (y == 0)).cast("long")).alias("fp"),
        F.sum((~p & (y == 0)).cast("long")).alias("tn"), F.sum((~p & (y == 1)).cast("long")).alias("fn")).collect()
    out = {s: {"tp": 0, "fp": 0, "tn": 0, "fn": 0} for s in SPLITS}
    for r in rows:
        out[r["split"]] = {k: int(r[k] or 0) for k in ("tp", "fp", "tn", "fn")}
    return out


def _verdicts_at(spark: SparkSession, cfg: Config, run_id: str) -> DataFrame:
    path = cfg.table(schemas.VERDICTS)
    if not table_exists(spark, path):
        raise InputError(f"no verdicts table at {path}: run detect first")
    return read_table(spark, path).where(detection_rows(run_id, cfg.top_g, cfg.k_sigma))


def _block_set_digest(blocks: DataFrame) -> str:
    # order-independent fingerprint of a set of BlockIds, computed by Spark (no collect of the ids)
    h = F.pmod(F.xxhash64("block_id"), F.lit(2**31))
    h2 = F.pmod(F.xxhash64(F.lit("deeplog-online"), "block_id"), F.lit(2**31))
    row = blocks.agg(F.count(F.lit(1)).alias("n"), F.sum(h).alias("a"), F.sum(h2).alias("b")).first()
    return f"{row['n']}:{row['a']}:{row['b']}"


@dataclasses.dataclass
class Plan:
    parent: ModelBundle
    new_id: str
    blocks: DataFrame  # block_id, split, label (cached)
    source: dict
    sessions: int
    by_split: dict
    labelled_anomalous: int
    before: dict
    digest: str


def plan_update(spark: SparkSession, cfg: Config, model: str | None, normal_blocks: str | None) -> Plan:
    """Step 1: the parent run, its verdicts' false positives (or the listed blocks) and the new run id."""
    parent = ModelBundle(cfg.artifacts_root, model)
    before_v = _verdicts_at(spark, cfg, parent.run_id)
    if before_v.limit(1).count() == 0:
        raise InputError(f"no verdicts for run {parent.run_id} at g={cfg.top_g} k={cfg.k_sigma}: "
                         "run detect with this model and thresholds first")
    traces = read_table(spark, cfg.table(schemas.TRACES))
    blocks, source = feedback_blocks(spark, cfg, before_v, traces, normal_blocks)
    blocks = blocks.cache()
    sessions = blocks.count()
    if sessions == 0:
        blocks.unpersist()
        raise InputError(f"nothing to learn from: no feedback sessions ({source['source']})")
    by_split = {r["split"]: r["n"] for r in blocks.groupBy("split").agg(F.count(F.lit(1)).alias("n")).collect()}
    labelled_anomalous = blocks.where(F.col("label") == 1).count()
    if labelled_anomalous:
        log.warning("online: %d feedback sessions are labelled anomalous; learning them as normal as told",
                    labelled_anomalous)
    if by_split.get("val"):
        log.warning("online: %d feedback sessions are in the val split, so the val false-positive count "
                    "after the update is not a held-out measure", by_split["val"])
    digest = _block_set_digest(blocks.select("block_id"))
    root = _FT_SUFFIX.sub("", parent.run_id)
    new_id = f"{root}-ft" + cfg.fingerprint(ONLINE_KEYS, extra={"parent": parent.run_id, "blocks": digest})[:8]
    return Plan(parent, new_id, blocks, source, sessions, by_split, labelled_anomalous,
                session_counts(before_v, cfg.top_g), digest)


def feedback_rows(spark: SparkSession, cfg: Config, plan: Plan, traces: DataFrame) -> tuple[DataFrame, list[int], int]:
    """Key training rows of the feedback ``(window, target, weight)``, the events they hold, and how
    many feedback sessions had windows the parent flagged.

    For a session the parent flagged by its key model, the rows are its flagged windows (as DeepLog
    updates on the windows that caused the alarm); otherwise all of its windows."""
    flagged = (read_table(spark, cfg.table(schemas.PREDICTIONS))
               .where(detection_rows(plan.parent.run_id, cfg.top_g, cfg.k_sigma)).where(F.col("key_anomaly"))
               .join(plan.blocks.select("block_id"), "block_id", "left_semi")
               .select("block_id", "window", F.col("y_true").alias("next_event")))
    flagged_blocks = flagged.select("block_id").distinct()
    rest = (traces.join(plan.blocks.select("block_id"), "block_id", "left_semi")
            .join(flagged_blocks, "block_id", "left_anti").select("block_id", "events"))
    rest_windows = window_rows(rest, plan.parent.h, plan.parent.start_end, keep=["block_id"]) \
        .select("block_id", "window", "next_event")
    rows = flagged.unionByName(rest_windows)
    merged = rows.groupBy("window", F.col("next_event").alias("target")).agg(F.count(F.lit(1)).cast("float").alias("weight"))
    events = rows.select(F.explode(F.array_union("window", F.array("next_event"))).alias("e")).distinct()
    vocab = sorted(r["e"] for r in events.collect() if 1 <= r["e"] <= plan.parent.vocab_size)
    return merged, vocab, flagged_blocks.count()


def fine_tune(spark: SparkSession, cfg: Config, plan: Plan, out_dir: Path) -> tuple[dict, dict]:
    """Step 2: the guarded fine-tuning of the parent's key model; (its saved summary, the online facts)."""
    parent = plan.parent
    traces = read_table(spark, cfg.table(schemas.TRACES))
    feedback, fb_vocab, flagged = feedback_rows(spark, cfg, plan, traces)
    replay = key_dataset(normal_sessions(traces, "train").join(plan.blocks.select("block_id"), "block_id", "left_anti"),
                         parent.h, parent.start_end)
    w_fb = float(feedback.agg(F.sum("weight")).first()[0] or 0.0)
    w_rp = float(replay.agg(F.sum("weight")).first()[0] or 0.0)
    if w_fb == 0:
        raise InputError("the feedback sessions have no windows")
    scale = cfg.online_replay * w_fb / w_rp if w_rp else 0.0
    train_df = feedback if scale == 0 else feedback.unionByName(
        replay.select("window", "target", (F.col("weight") * F.lit(scale)).cast("float").alias("weight")))
    val_df = key_dataset(normal_sessions(traces, "val"), parent.h, parent.start_end)
    payload = load_checkpoint(parent.dir / "key_model.pt", expect_task="key", expect_run=parent.run_id)[1]
    set_petastorm_cache(spark, cfg)
    job = train_job(cfg, "key", parent.vocab_size, out_dir, model_config=payload["model_config"],
                    epochs=cfg.online_epochs, lr=cfg.online_lr, patience=cfg.online_epochs, schedule="constant",
                    count_sampling=False, steps_per_epoch=0, monitor="top_g_recall", baseline=True,
                    init_state=payload["state_dict"])
    log.info("online: fine-tuning run %s on %d feedback sessions (%d windows) + replay (weight %.0f) -> run %s",
             parent.run_id, plan.sessions, int(w_fb), w_fb * cfg.online_replay if scale else 0, plan.new_id)
    result = distribute(spark, cfg, [job], [(train_df, val_df)])[0]
    extra = {**payload["extra"], "run_id": plan.new_id, "parent_run_id": parent.run_id,
             "train_vocab": sorted(set(parent.train_vocab) | set(fb_vocab))}
    summary = save_model(out_dir, "key", job.model_config, result, extra, cfg.top_g)
    if result["best_epoch"] == 0:
        log.warning("online: every fine-tuning epoch lowered the val top-%d recall of normal windows; "
                    "the new version keeps the parent's weights", cfg.top_g)
    Path(job.resume_path).unlink(missing_ok=True)
    facts = {"feedback_sessions_with_flagged_windows": flagged, "feedback_windows": int(w_fb),
             "replay_weight": round(w_fb * cfg.online_replay, 1) if scale else 0.0,
             "replay_distinct_windows": replay.count() if scale else 0}
    return summary, facts


def register(spark: SparkSession, cfg: Config, plan: Plan, out_dir: Path, key_summary: dict, facts: dict) -> dict:
    """Step 3: the new run's files: the carried value model, count and PCA models, calibration, run.json."""
    for name in CARRIED:
        if (plan.parent.dir / name).is_file():
            shutil.copy2(plan.parent.dir / name, out_dir / name)
    if (out_dir / "value_model.pt").is_file():  # the carried checkpoint names its run: re-save it under this one

        vmodel, vpayload = load_checkpoint(out_dir / "value_model.pt", expect_task="value")
        save_checkpoint(out_dir / "value_model.pt", "value", vmodel, {**vpayload["extra"], "run_id": plan.new_id})
    traces = read_table(spark, cfg.table(schemas.TRACES))
    fit_quantitative(spark, cfg, traces, plan.new_id, out_dir)
    calibrate_run(spark, cfg, plan.new_id)
    parent_run = read_json(plan.parent.dir / "run.json") if (plan.parent.dir / "run.json").is_file() else {}
    online = {"parent_run_id": plan.parent.run_id, **plan.source, "feedback_sessions": plan.sessions,
              "feedback_sessions_by_split": plan.by_split, "feedback_labelled_anomalous": plan.labelled_anomalous,
              **facts, "epochs": cfg.online_epochs, "lr": cfg.online_lr, "blocks_digest": plan.digest}
    write_json(out_dir / "run.json", {**{k: v for k, v in parent_run.items() if k != "tasks"},
                                      "run_id": plan.new_id, "run_dir": str(out_dir), "kind": "online",
                                      "online": online, "tasks": {"key": key_summary}, "config": cfg.to_dict()})
    return online


def measure(spark: SparkSession, cfg: Config, plan: Plan, online: dict, key_summary: dict, t0: float) -> dict:
    """Step 4: detect with the new version, count before and after, write the update logs."""
    detect = run_detect(spark, cfg, plan.new_id)
    after = session_counts(_verdicts_at(spark, cfg, plan.new_id), cfg.top_g)
    before = plan.before
    entry = {
        "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "new_run_id": plan.new_id, "g": cfg.top_g, "k": cfg.k_sigma, **online,
        "kept_epoch": key_summary["best_epoch"], "val_loss": key_summary.get("val_loss"),
        "val_window_top_g_recall_before": key_summary.get("val_top_g_recall_before"),
        "val_window_top_g_recall_after": key_summary.get("val_top_g_recall"),
        "before": before, "after": after,
        "val_false_positives_before": before["val"]["fp"], "val_false_positives_after": after["val"]["fp"],
        "val_true_positives_before": before["val"]["tp"], "val_true_positives_after": after["val"]["tp"],
        "anomalous_sessions_after": detect["anomalous_sessions"],
        "seconds": round(time.perf_counter() - t0, 2),
        "use": f"detect/eval/visual with --model {plan.new_id}",
    }
    write_json(run_dir(cfg.artifacts_root, plan.new_id) / "online" / "update_log.json", entry)
    _append_log(Path(cfg.artifacts_root) / "online" / "update_log.json", entry)
    log.info("online: val false positives %d -> %d, val true positives %d -> %d (g=%d, k=%s); use --model %s",
             before["val"]["fp"], after["val"]["fp"], before["val"]["tp"], after["val"]["tp"], cfg.top_g, cfg.k_sigma,
             plan.new_id)
    return entry


def run_online(spark: SparkSession, cfg: Config, model: str | None = None, normal_blocks: str | None = None) -> dict:
    """Fine-tune run ``model`` (default: latest) on feedback sessions; a new run, scored and logged."""
    with stage("online") as st:
        t0 = time.perf_counter()
        plan = plan_update(spark, cfg, model, normal_blocks)
        try:
            out_dir = run_dir(cfg.artifacts_root, plan.new_id)
            out_dir.mkdir(parents=True, exist_ok=True)
            key_summary, facts = fine_tune(spark, cfg, plan, out_dir)
            online = register(spark, cfg, plan, out_dir, key_summary, facts)
        finally:
            plan.blocks.unpersist()
        entry = measure(spark, cfg, plan, online, key_summary, t0)
        st.update(new_run_id=plan.new_id, feedback_sessions=plan.sessions,
                  val_fp_before=entry["val_false_positives_before"], val_fp_after=entry["val_false_positives_after"])
    return entry


def _append_log(path: Path, entry: dict) -> None:
    """Append ``entry`` to the JSON list at ``path`` (rewritten atomically)."""
    entries = []
    if path.is_file():
        try:
            entries = json.loads(path.read_text())
        except json.JSONDecodeError:
            backup = path.with_name(path.name + f".corrupt-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}")
            path.replace(backup)
            log.warning("online: %s was not valid JSON; moved to %s and started a new log", path, backup)
    write_json(path, [e for e in entries if e.get("new_run_id") != entry["new_run_id"]] + [entry])
