"""Online update (DeepLog's feedback loop): fine-tune the Key LSTM on confirmed false positives.

DeepLog lets an operator mark a flagged session as normal; the model then takes gradient steps
on that session's windows so the same behaviour is not flagged again. Here the feedback is either
the detector's false positives on one split (sessions flagged at (g, k) whose label is normal;
``online_split``, default train) or a user's file of BlockIds confirmed normal (``--normal_blocks``).

The update trains the parent run's Key LSTM further (``online_epochs`` at ``online_lr``, through
the same Petastorm + TorchDistributor path as training) on the feedback windows (the windows the
parent flagged in those sessions; all windows of a listed session it did not flag) mixed with
replayed train-normal windows (total weight ``online_replay`` times the feedback's), so it does
not forget the normal workflow. Only the Key LSTM is updated: a session flagged by the value
model alone stays flagged. It is saved as a new run (model version) whose id is
``<base run>-ft<hash>``; the value model, if any, is carried over unchanged. The new version is
scored by detect right away, and the false positives before and after are counted on the val
split (held out from the feedback by default) and written to ``update_log.json``. The latest run
is not changed: detect/evaluate use the new version with ``--model <new run id>``.
"""

from __future__ import annotations

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

from deeplog_spark import schemas
from deeplog_spark.runs import read_json, run_dir, write_json
from deeplog_spark.config import SPLITS, Config
from deeplog_spark.detection import ModelBundle, run_detect
from deeplog_spark.errors import InputError
from deeplog_spark.logs import stage
from deeplog_spark.tables import read_table, table_exists
from deeplog_spark.train_data import key_dataset, normal_windows

log = logging.getLogger(__name__)

#: Config keys that define an online update (with the parent run and the feedback blocks).
ONLINE_KEYS = ("online_epochs", "online_lr", "online_replay", "batch_size", "patience", "seed", "top_g", "k_sigma")
_FT_SUFFIX = re.compile(r"-ft[0-9a-f]{8}$")


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


def feedback_blocks(spark: SparkSession, cfg: Config, verdicts: DataFrame, traces: DataFrame,
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
    fps = verdicts.where(F.col("anomalous") & (F.col("label") == 0) & (F.col("split") == cfg.online_split))
    return (fps.select("block_id", "split", "label"),
            {"source": f"false positives of the {cfg.online_split} split at g={cfg.top_g} k={cfg.k_sigma}"})


def feedback_windows(spark: SparkSession, cfg: Config, run_id: str, windows: DataFrame,
                     blocks: DataFrame) -> tuple[DataFrame, DataFrame, int]:
    """Key training rows of the feedback: ``(window, target, weight)``, their windows, and a count.

    For a session the parent run flagged, the rows are its flagged windows (its false alarms, as
    DeepLog updates on the sequences that caused them); for a session it did not flag (a
    user-listed block), all of its windows. Identical rows are merged with their count as weight.
    """
    pred_path = cfg.table_path(schemas.PREDICTIONS)
    flagged = (read_table(spark, pred_path)
               .where((F.col("run_id") == run_id) & (F.col("g") == cfg.top_g) & (F.col("k") == cfg.k_sigma)
                      & F.col("fused_anomaly"))
               .join(blocks.select("block_id"), "block_id", "left_semi")
               .select("block_id", "window", F.col("y_true").alias("next_event")))
    flagged_blocks = flagged.select("block_id").distinct()
    unflagged = (windows.join(blocks.select("block_id"), "block_id", "left_semi")
                 .join(flagged_blocks, "block_id", "left_anti").select("block_id", "window", "next_event"))
    rows = flagged.unionByName(unflagged)
    return key_dataset(rows, distinct=True), rows, flagged_blocks.count()


def _block_set_digest(blocks: DataFrame) -> str:
    # order-independent fingerprint of a set of BlockIds, computed by Spark (no collect of the ids)
    h = F.pmod(F.xxhash64("block_id"), F.lit(2**31))
    h2 = F.pmod(F.xxhash64(F.lit("deeplog-online"), "block_id"), F.lit(2**31))
    row = blocks.agg(F.count(F.lit(1)).alias("n"), F.sum(h).alias("a"), F.sum(h2).alias("b")).first()
    return f"{row['n']}:{row['a']}:{row['b']}"


def session_counts(verdicts: DataFrame) -> dict[str, dict[str, int]]:
    """TP/FP/TN/FN of the session verdicts per split (labelled sessions only)."""
    y, p = F.col("label"), F.col("anomalous")
    rows = verdicts.where(y.isNotNull()).groupBy("split").agg(
        F.sum((p & (y == 1)).cast("long")).alias("tp"), F.sum((p & (y == 0)).cast("long")).alias("fp"),
        F.sum((~p & (y == 0)).cast("long")).alias("tn"), F.sum((~p & (y == 1)).cast("long")).alias("fn")).collect()
    out = {s: {"tp": 0, "fp": 0, "tn": 0, "fn": 0} for s in SPLITS}
    for r in rows:
        out[r["split"]] = {k: int(r[k] or 0) for k in ("tp", "fp", "tn", "fn")}
    return out


def _verdicts_at(spark: SparkSession, cfg: Config, run_id: str) -> DataFrame:
    path = cfg.table_path(schemas.VERDICTS)
    if not table_exists(spark, path):
        raise InputError(f"no verdicts table at {path}: run detect first")
    return read_table(spark, path).where(
        (F.col("run_id") == run_id) & (F.col("g") == cfg.top_g) & (F.col("k") == cfg.k_sigma))


def run_online(spark: SparkSession, cfg: Config, model: str | None = None, normal_blocks: str | None = None) -> dict:
    """Fine-tune run ``model`` (default: latest) on feedback sessions; a new run, scored and logged."""
    from deeplog_spark.nn.model import load_checkpoint
    from deeplog_spark.training import distribute, save_task, set_petastorm_cache, train_spec

    with stage("online") as st:
        t0 = time.perf_counter()
        parent = ModelBundle(cfg.artifacts_root, model)
        before_v = _verdicts_at(spark, cfg, parent.run_id)
        if before_v.limit(1).count() == 0:
            raise InputError(f"no verdicts for run {parent.run_id} at g={cfg.top_g} k={cfg.k_sigma}: "
                             "run detect with this model and thresholds first")
        windows = read_table(spark, cfg.table_path(schemas.WINDOWS))
        traces = read_table(spark, cfg.table_path(schemas.TRACES))
        blocks, source = feedback_blocks(spark, cfg, before_v, traces, normal_blocks)
        blocks = blocks.cache()
        fb_sessions = blocks.count()
        by_split = {r["split"]: r["n"] for r in blocks.groupBy("split").agg(F.count(F.lit(1)).alias("n")).collect()}
        labelled_anomalous = blocks.where(F.col("label") == 1).count()
        if labelled_anomalous:
            log.warning("online: %d feedback sessions are labelled anomalous; learning them as normal as told",
                        labelled_anomalous)
        if fb_sessions == 0:
            raise InputError(f"nothing to learn from: no feedback sessions ({source['source']})")
        if by_split.get("val"):
            log.warning("online: %d feedback sessions are in the val split, so the val false-positive count "
                        "after the update is not a held-out measure", by_split["val"])
        before = session_counts(before_v)

        key_payload = load_checkpoint(parent.dir / "key_model.pt", expect_task="key")[1]
        digest = _block_set_digest(blocks.select("block_id"))
        root = _FT_SUFFIX.sub("", parent.run_id)
        new_id = f"{root}-ft" + cfg.fingerprint(ONLINE_KEYS, extra={"parent": parent.run_id, "blocks": digest})[:8]
        out_dir = run_dir(cfg.artifacts_root, new_id)
        out_dir.mkdir(parents=True, exist_ok=True)

        feedback, fb_windows, flagged_blocks = feedback_windows(spark, cfg, parent.run_id, windows, blocks)
        replay = key_dataset(normal_windows(windows, "train").join(blocks.select("block_id"), "block_id", "left_anti"),
                             distinct=True)
        w_fb = float(feedback.agg(F.sum("weight")).first()[0] or 0.0)
        w_rp = float(replay.agg(F.sum("weight")).first()[0] or 0.0)
        if w_fb == 0:
            raise InputError("the feedback sessions have no windows")
        scale = cfg.online_replay * w_fb / w_rp if w_rp else 0.0
        train_df = feedback if scale == 0 else feedback.unionByName(
            replay.select("window", "target", (F.col("weight") * F.lit(scale)).cast("float").alias("weight")))
        val_df = key_dataset(normal_windows(windows, "val"), distinct=True)
        fb_events = fb_windows.select(F.explode(F.array_union("window", F.array("next_event"))).alias("e")).distinct()
        train_vocab = sorted(set(parent.train_vocab) | {r["e"] for r in fb_events.collect()
                                                        if r["e"] != schemas.PADDING_ID})
        blocks.unpersist()

        set_petastorm_cache(spark, cfg)
        # Guarded update: keep the last epoch whose top-g recall on the val split's normal windows
        # is at least the parent's (epoch 0 = the parent's weights): the update may stop flagging
        # the feedback, but never at the price of flagging more normal validation windows.
        spec = train_spec(cfg, "key", key_payload["model_config"], out_dir, epochs=cfg.online_epochs,
                          lr=cfg.online_lr, patience=cfg.online_epochs, monitor="top_g_recall", baseline=True,
                          init_state=key_payload["state_dict"])
        log.info("online: fine-tuning run %s on %d feedback sessions (%d windows) + replay (weight %.0f) -> run %s",
                 parent.run_id, fb_sessions, int(w_fb), w_fb * cfg.online_replay if scale else 0, new_id)
        result = distribute(spark, cfg, spec, train_df, val_df)
        extra = {**key_payload["extra"], "run_id": new_id, "parent_run_id": parent.run_id, "train_vocab": train_vocab}
        key_summary = save_task(cfg, "key", spec, result, extra, out_dir)
        if result["best_epoch"] == 0:
            log.warning("online: every fine-tuning epoch lowered the val top-%d recall of normal windows; "
                        "the new version keeps the parent's weights", cfg.top_g)
        Path(spec["resume_path"]).unlink(missing_ok=True)
        for name in ("value_model.pt", "value_model.pt.sha256", "value_norm.json", "value_threshold.json",
                     "value_history.json", "value_loss_curve.png"):
            if (parent.dir / name).is_file():
                shutil.copy2(parent.dir / name, out_dir / name)
        parent_run = read_json(parent.dir / "run.json") if (parent.dir / "run.json").is_file() else {}
        online = {"parent_run_id": parent.run_id, **source, "feedback_sessions": fb_sessions,
                  "feedback_sessions_by_split": by_split, "feedback_labelled_anomalous": labelled_anomalous,
                  "feedback_sessions_with_flagged_windows": flagged_blocks,
                  "feedback_windows": int(w_fb), "replay_weight": round(w_fb * cfg.online_replay, 1) if scale else 0.0,
                  "replay_distinct_windows": replay.count() if scale else 0,
                  "epochs": cfg.online_epochs, "lr": cfg.online_lr, "blocks_digest": digest}
        write_json(out_dir / "run.json", {**{k: v for k, v in parent_run.items() if k != "tasks"},
                                          "run_id": new_id, "run_dir": str(out_dir), "kind": "online",
                                          "online": online, "tasks": {"key": key_summary},
                                          "config": cfg.to_dict()})

        detect = run_detect(spark, cfg, new_id)
        after = session_counts(_verdicts_at(spark, cfg, new_id))
        entry = {
            "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "new_run_id": new_id, "g": cfg.top_g, "k": cfg.k_sigma, **online,
            "kept_epoch": key_summary["best_epoch"], "val_loss": key_summary.get("val_loss"),
            "val_window_top_g_recall_before": key_summary.get("val_top_g_recall_before"),
            "val_window_top_g_recall_after": key_summary.get("val_top_g_recall"),
            "before": before, "after": after,
            "val_false_positives_before": before["val"]["fp"], "val_false_positives_after": after["val"]["fp"],
            "val_true_positives_before": before["val"]["tp"], "val_true_positives_after": after["val"]["tp"],
            "anomalous_sessions_after": detect["anomalous_sessions"],
            "seconds": round(time.perf_counter() - t0, 2),
            "use": f"detect/eval/visual with --model {new_id}",
        }
        write_json(out_dir / "online" / "update_log.json", entry)
        _append_log(Path(cfg.artifacts_root) / "online" / "update_log.json", entry)
        log.info("online: val false positives %d -> %d, val true positives %d -> %d (g=%d, k=%s); "
                 "use --model %s", before["val"]["fp"], after["val"]["fp"], before["val"]["tp"], after["val"]["tp"],
                 cfg.top_g, cfg.k_sigma, new_id)
        st.update(new_run_id=new_id, feedback_sessions=fb_sessions,
                  val_fp_before=before["val"]["fp"], val_fp_after=after["val"]["fp"])
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
