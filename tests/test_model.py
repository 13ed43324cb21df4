"""Models, training loop and checkpoints, without Spark."""

import numpy as np
import pytest
import torch

from deeplog_spark.nn.model import (
    CheckpointError,
    KeyLSTM,
    KeyModelConfig,
    ValueLSTM,
    ValueModelConfig,
    load_checkpoint,
    load_checkpoint_bytes,
    save_checkpoint,
)
from deeplog_spark.nn.sources import ArraySource, CountSampledSource, collected, key_columns
from deeplog_spark.nn.trainer import TrainJob, evaluate, fit, residual_stats, seed_everything, state_digest


def FitOptions(**kw):  # noqa: N802 - the fields these tests set; a TrainJob with an empty model config
    return TrainJob(model_config={}, **kw)


def _src(x, y, w=None, **kw):
    return ArraySource(key_columns(x, y, w), **kw)


def test_key_model_shapes_and_padding_row():
    m = KeyLSTM(KeyModelConfig(vocab_size=29, h=10))
    out = m(torch.randint(0, 30, (5, 10)))
    assert out.shape == (5, 30)
    assert KeyLSTM(KeyModelConfig(vocab_size=29, markers=True))(torch.randint(0, 32, (2, 10))).shape == (2, 32)
    assert m.embedding.weight.shape == (30, 64) and torch.all(m.embedding.weight[0] == 0)
    assert m.lstm.num_layers == 2 and m.lstm.hidden_size == 64 and m.lstm.dropout == 0.2


def test_value_model_shapes():
    m = ValueLSTM(ValueModelConfig(vocab_size=29, event_dim=16))
    mean, logvar = m(torch.randint(0, 30, (7, 12)), torch.randn(7, 12))
    assert mean.shape == logvar.shape == (7, 11)  # a prediction for every step after the first
    assert m.lstm.num_layers == 1 and m.lstm.input_size == 17 and m.head.in_features == 64 + 16


def _toy_key_data(n=600, h=4, vocab=6, seed=0):
    """Sequences that follow a fixed cycle 1..vocab: the next event is predictable."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, vocab, n)
    seq = (starts[:, None] + np.arange(h + 1)) % vocab + 1
    return seq[:, :h], seq[:, h]


def test_fit_lowers_the_loss_and_early_stops():
    seed_everything(1)
    x, y = _toy_key_data()
    src = _src(x, y, batch_size=32)
    model = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
    before = evaluate(model, "key", src.full(), torch.device("cpu"))["loss"]
    res = fit(model, FitOptions(task="key", epochs=40, lr=1e-2, patience=2, top_g=1), src, src, torch.device("cpu"))
    after = evaluate(model, "key", src.full(), torch.device("cpu"), top_g=1)
    assert after["loss"] < before / 5
    assert after["top_g_recall"] == 1.0
    assert [h["epoch"] for h in res["history"]] == list(range(1, len(res["history"]) + 1))


def test_bf16_training_fits_as_fp32_does_and_keeps_fp32_weights():
    """``precision = "bf16"``: the forward passes autocast to bf16, the weights, the optimizer and
    validation stay fp32; on the toy cycle it fits as well as fp32, by a different path."""
    from deeplog_spark.nn.trainer import autocast_dtype

    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype("auto", torch.device("cpu")) in (None, torch.bfloat16)
    with pytest.raises(ValueError, match="precision must be one of"):
        FitOptions(task="key", precision="fp16")
    x, y = _toy_key_data()
    src = _src(x, y, batch_size=32)
    runs = {}
    for precision in ("fp32", "bf16"):
        seed_everything(1)
        model = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
        res = fit(model, FitOptions(task="key", epochs=15, lr=1e-2, patience=20, top_g=1, precision=precision),
                  src, src, torch.device("cpu"))
        assert res["precision"] == precision
        assert all(p.dtype == torch.float32 for p in model.parameters())
        runs[precision] = [h["train_loss"] for h in res["history"]]
        assert res["best_loss"] < 0.05 and runs[precision][-1] < runs[precision][0] / 10
    assert runs["bf16"] != runs["fp32"]  # the forward passes did run in bf16


def test_min_delta_stops_on_a_plateau_of_small_gains():
    x, y = _toy_key_data()
    runs = {}
    for min_delta in (0.0, 0.5):
        seed_everything(1)
        model = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
        src = _src(x, y, batch_size=32)
        runs[min_delta] = fit(model, FitOptions(task="key", epochs=12, lr=1e-2, patience=2, min_delta=min_delta),
                              src, src, torch.device("cpu"))
    plain, strict = runs[0.0], runs[0.5]
    losses = [h["val_loss"] for h in strict["history"]]
    best = strict["best_epoch"]
    # every later epoch gained less than half of the best loss, so the run stopped after `patience`
    assert len(losses) == best + 2 and all(v > losses[best - 1] * 0.5 for v in losses[best:])
    assert len(strict["history"]) < len(plain["history"])


def test_lr_decay_halves_the_rate_after_each_epoch_without_improvement():
    x, y = _toy_key_data()
    seed_everything(1)
    model = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
    src = _src(x, y, batch_size=32)
    out = fit(model, FitOptions(task="key", epochs=12, lr=1e-2, patience=3, min_delta=0.3, lr_decay=0.5, schedule="plateau"),
              src, src, torch.device("cpu"))
    best, lr = float("inf"), 1e-2
    for h in out["history"]:  # the rate in effect for the next epoch
        if h["val_loss"] < best * (1 - 0.3):
            best = h["val_loss"]
        else:
            lr *= 0.5
        assert h["lr_next"] == pytest.approx(lr)
    assert lr < 1e-2  # at least one plateau was met (min_delta 0.3 makes them likely)


def test_early_stopping_on_validation_restores_the_best_epoch():
    seed_everything(2)
    x, y = _toy_key_data()
    train = _src(x, y, batch_size=32)
    rng = np.random.default_rng(5)
    val = _src(x[:200], rng.integers(1, 7, 200))  # unlearnable targets: val loss must turn up
    model = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
    res = fit(model, FitOptions(task="key", epochs=60, lr=1e-2, patience=3), train, val, torch.device("cpu"))
    losses = [h["val_loss"] for h in res["history"]]
    assert res["early_stopped"] and len(losses) < 60
    assert res["best_epoch"] == losses.index(min(losses)) + 1 == len(losses) - 3
    assert evaluate(model, "key", val.full(), torch.device("cpu"))["loss"] == pytest.approx(min(losses), rel=1e-5)


def test_weighted_distinct_rows_give_the_same_metrics_as_all_rows():
    x, y = _toy_key_data(n=500)
    rows, counts = np.unique(np.column_stack([x, y]), axis=0, return_counts=True)
    model = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
    full = evaluate(model, "key", _src(x, y).full(), torch.device("cpu"), top_g=2)
    dist = evaluate(model, "key", _src(rows[:, :4], rows[:, 4], counts).full(), torch.device("cpu"), top_g=2)
    assert len(rows) < len(x) / 10
    assert dist["windows"] == full["windows"] == 500
    for k in ("loss", "accuracy", "top_g_recall"):
        assert dist[k] == pytest.approx(full[k], rel=1e-5)


def test_count_sampling_draws_windows_by_a_power_of_their_counts_with_their_next_event_law():
    # window A has two next events (counts 1 and 3), B one (6), C one (90): windows counts 4, 6, 90
    x = np.array([[0, 0, 1], [0, 0, 1], [0, 1, 2], [1, 2, 3]])
    y, w = np.array([0, 1, 2, 3]), np.array([1.0, 3.0, 6.0, 90.0], dtype=np.float32)
    counts = np.array([4.0, 6.0, 90.0])
    for power in (1.0, 0.5):
        src = CountSampledSource(key_columns(x, y, w), steps_per_epoch=0, batch_size=50, seed=7, power=power)
        assert src.steps_per_epoch == 2  # 0 = as many draws as windows (100)
        batches = [b for e in range(200) for b in src.epoch(e)]
        assert len(batches) == 200 * 2
        drawn = np.zeros(3)
        for b in batches:  # a window drawn k times in a step is evaluated once with weight k
            rows = [src.windows.tolist().index(r) for r in b["window"].tolist()]
            assert len(set(rows)) == len(rows) and b["weight"].sum() == 50
            np.add.at(drawn, rows, b["weight"].numpy())
        assert drawn / drawn.sum() == pytest.approx(counts ** power / (counts ** power).sum(), abs=0.01)
    # each window carries the law of its next event (rows stay whole)
    assert src.windows.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3]]
    assert src.soft.numpy() == pytest.approx(np.array([[0.25, 0.75, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    # repeatable per (seed, rank, epoch); ranks draw differently but take the same number of steps
    again = CountSampledSource(key_columns(x, y, w), 0, 50, seed=7, power=0.5)
    assert torch.equal(next(iter(again.epoch(3)))["window"], next(iter(src.epoch(3)))["window"])
    r0, r1 = (CountSampledSource(key_columns(x, y, w), 3, 10, seed=7, rank=r, world=2) for r in (0, 1))
    assert r0.steps_per_epoch == r1.steps_per_epoch == 3
    assert not torch.equal(next(iter(r0.epoch(0)))["weight"], next(iter(r1.epoch(0)))["weight"]) or \
        not torch.equal(next(iter(r0.epoch(0)))["window"], next(iter(r1.epoch(0)))["window"])
    with pytest.raises(ValueError, match="positive count"):
        CountSampledSource(key_columns(x, y, np.zeros(4, dtype=np.float32)), 0, 50)
    with pytest.raises(ValueError, match="power"):
        CountSampledSource(key_columns(x, y, w), 0, 50, power=0.0)
    # rows collected from a reader in any order give the same draws
    order = [3, 1, 0, 2]
    shuffled = [{"window": torch.as_tensor(x[order]), "target": torch.as_tensor(y[order]), "weight": torch.as_tensor(w[order])}]
    ordered = [{"window": torch.as_tensor(x), "target": torch.as_tensor(y), "weight": torch.as_tensor(w)}]
    a = CountSampledSource(collected(iter(shuffled)), 2, batch_size=20, seed=1)
    b = CountSampledSource(collected(iter(ordered)), 2, batch_size=20, seed=1)
    assert all(torch.equal(p["window"], q["window"]) and torch.equal(p["soft"], q["soft"])
               for p, q in zip(a.epoch(0), b.epoch(0)))


def test_soft_target_loss_of_a_window_equals_the_count_weighted_loss_of_its_rows():
    from deeplog_spark.nn.model import build_model
    from deeplog_spark.nn.trainer import _batch_loss

    torch.manual_seed(0)
    model = build_model("key", {"vocab_size": 3, "h": 3, "embed_dim": 4, "hidden": 5, "layers": 1,
                                "dropout": 0.0, "markers": False}).eval()
    x = np.array([[0, 0, 1], [0, 0, 1], [0, 1, 2]])
    y, w = np.array([1, 3, 2]), np.array([1.0, 3.0, 6.0], dtype=np.float32)
    rows = {k: torch.as_tensor(v) for k, v in key_columns(x, y, w).items()}
    pair_sum, pair_w, _, _ = _batch_loss(model, "key", rows, torch.device("cpu"))
    src = CountSampledSource(key_columns(x, y, w), 1, 10)
    soft = {"window": src.windows, "soft": src.soft, "weight": torch.tensor([4.0, 6.0])}  # each window by its count
    soft_sum, soft_w, _, _ = _batch_loss(model, "key", soft, torch.device("cpu"))
    assert float(soft_w) == float(pair_w) == 10.0
    assert float(soft_sum) == pytest.approx(float(pair_sum), rel=1e-5)


def test_value_summary_takes_each_sessions_largest_residual_earliest_on_ties_and_first_step_over():
    from deeplog_spark.nn.scoring import ValueScorer

    cfg = ValueModelConfig(vocab_size=3, event_dim=2, hidden=3, layers=1, dropout=0.0, chunk=4, context=1)
    scorer = ValueScorer(ValueLSTM(cfg), [1, 2, 3], 0.0, 1.0)
    nan = np.nan
    resid = np.array([nan, 2.0, 5.0, 5.0, nan, nan, nan, nan, 0.5, 9.0], dtype=np.float32)
    offsets = np.array([0, 4, 6, 6, 10])  # sessions of 4, 2 (nothing predicted), 0 and 4 steps
    scorer.score_flat = lambda events, intervals: (resid, resid * 10, offsets)
    intervals = [np.array([0.0, 1, 2, 3]), np.array([0.0, 1]), np.zeros(0), np.array([0.0, 4, 5, 6])]
    out = scorer.summarise([None] * 4, intervals, threshold=4.0)
    assert out["max"].tolist()[0] == 5.0 and out["max"].tolist()[3] == 9.0
    assert np.isnan(out["max"][1]) and np.isnan(out["max"][2])
    assert out["position"].tolist() == [2, -1, -1, 3]  # the earliest of the tied 5.0s
    assert out["first_over"].tolist() == [2, -1, -1, 3]
    assert out["interval"][[0, 3]].tolist() == [2.0, 6.0] and out["expected"][[0, 3]].tolist() == [50.0, 90.0]
    low = scorer.summarise([None] * 4, intervals, threshold=100.0)
    assert low["first_over"].tolist() == [-1, -1, -1, -1]


def test_scores_do_not_depend_on_how_rows_are_batched():
    """The scoring passes hand the scorers Arrow batches of any size (``detect_batch_size``, capped
    in bytes); each forward pass takes at most FORWARD_WINDOWS / FORWARD_CHUNKS rows."""
    from deeplog_spark.nn.scoring import FORWARD_CHUNKS, FORWARD_WINDOWS, KeyScorer, ValueScorer

    seed_everything(3)
    rng = np.random.default_rng(3)
    key = KeyLSTM(KeyModelConfig(vocab_size=29, markers=True))
    windows, nxt = rng.integers(0, 32, (FORWARD_WINDOWS + 500, 10)), rng.integers(1, 32, FORWARD_WINDOWS + 500)
    whole = KeyScorer(key, list(range(1, 28)), 9, batch_size=10**6)
    assert whole.batch_size == FORWARD_WINDOWS
    a, b = whole.score(windows, nxt), KeyScorer(key, list(range(1, 28)), 9, batch_size=97).score(windows, nxt)
    for col in ("key_rank", "key_score", "top_g"):
        assert np.array_equal(a[col], b[col]), col
    value = ValueLSTM(ValueModelConfig(vocab_size=29, event_dim=4, hidden=8, chunk=8, context=2))
    lengths = rng.integers(1, 30, FORWARD_CHUNKS + 300)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    events, intervals = rng.integers(1, 30, offsets[-1]), rng.exponential(5.0, offsets[-1])
    scorer = ValueScorer(value, list(range(1, 30)), 1.0, 2.0, batch_size=10**6)
    full, _ = scorer.score_arrays(events, intervals, offsets)
    parts = []
    for s in range(0, len(lengths), 251):  # Arrow batches of 251 sessions
        o = offsets[s:min(len(lengths), s + 251) + 1]
        parts.append(scorer.score_arrays(events[o[0]:o[-1]], intervals[o[0]:o[-1]], o - o[0])[0])
    assert np.array_equal(full, np.concatenate(parts), equal_nan=True)
    assert np.isfinite(full).sum() > 10_000


def _toy_value_data(n=400, seed=0, stretch_at=None):
    """Sessions of events 1 (about 1 s after the one before) and 2 (about 10 min after)."""
    from deeplog_spark.nn.scoring import chunk_starts, log_intervals

    rng = np.random.default_rng(seed)
    events, intervals = [], []
    for _ in range(n):
        ev = rng.integers(1, 3, int(rng.integers(5, 40)))
        iv = np.where(ev == 1, rng.lognormal(0, 0.3, len(ev)), rng.lognormal(np.log(600), 0.3, len(ev)))
        iv[0] = 0.0
        events.append(ev)
        intervals.append(iv)
    cols = {"events": [], "values": [], "first": [], "length": []}
    for ev, iv in zip(events, intervals):
        z = log_intervals(iv, 3.0, 3.0)
        for start, first in chunk_starts(len(ev), 16, 4):
            pe, pz = ev[start:start + 16], z[start:start + 16]
            cols["events"].append(np.pad(pe, (0, 16 - len(pe))))
            cols["values"].append(np.pad(pz, (0, 16 - len(pz))))
            cols["first"].append(first)
            cols["length"].append(len(pe))
    return events, intervals, {k: np.array(v) for k, v in cols.items()}


def test_value_model_learns_each_events_own_interval_law():
    from deeplog_spark.nn.scoring import ValueScorer

    seed_everything(4)
    _, _, cols = _toy_value_data()
    model = ValueLSTM(ValueModelConfig(vocab_size=2, event_dim=4, hidden=16, chunk=16, context=4))
    src = ArraySource(cols, batch_size=64)
    res = fit(model, FitOptions(task="value", epochs=30, lr=0.02, schedule="onecycle", patience=30), src, src,
              torch.device("cpu"))
    assert res["history"][-1]["val_loss"] < res["history"][0]["val_loss"]
    scorer = ValueScorer(model.eval(), [1, 2], 3.0, 3.0)
    events, intervals, _ = _toy_value_data(n=50, seed=1)
    normal = scorer.score(events, intervals)
    worst_normal = max(np.nanmax(r["residuals"]) for r in normal)
    stretched = [iv.copy() for iv in intervals]
    for ev, iv in zip(events, stretched):  # a write step (event 1) stalls for 10 minutes
        i = int(np.where(ev[1:] == 1)[0][0]) + 1
        iv[i] = 600.0
    hit = scorer.score(events, stretched)
    assert all(np.nanmax(r["residuals"]) > worst_normal for r in hit)
    assert normal[0]["residuals"][0] != normal[0]["residuals"][0]  # step 0 has no prediction (NaN)
    # a 10-min gap before event 2 is its normal law: no alarm there
    assert np.nanmedian([np.nanmedian(r["expected"][np.asarray(e) == 2]) for r, e in zip(normal, events)]) > 100


def test_value_chunks_cover_every_step_once():
    from deeplog_spark.nn.scoring import chunk_starts

    for n in (1, 2, 16, 17, 40, 100):
        covered = []
        for start, first in chunk_starts(n, 16, 4):
            covered += list(range(start + first, min(start + 16, n)))
        assert covered == list(range(1, n)), n


def test_residual_stats_are_the_mean_and_std_of_standardized_residuals():
    class Const(torch.nn.Module):
        def forward(self, events, values):
            b, t = events.shape
            return torch.zeros(b, t - 1), torch.zeros(b, t - 1)  # mean 0, sd 1

    cols = {"events": np.ones((2, 4), np.int64), "values": np.array([[0, 1, -3, 0], [0, 2, 0, 0]], np.float32),
            "first": np.array([1, 1]), "length": np.array([3, 2])}
    mu, sigma, n = residual_stats(Const(), ArraySource(cols).full(), torch.device("cpu"))
    errs = np.array([1.0, 3.0, 2.0])  # steps 1..2 of the first chunk, step 1 of the second
    assert (mu, n) == (pytest.approx(errs.mean()), 3) and sigma == pytest.approx(errs.std())


def test_resume_continues_from_the_last_epoch(tmp_path):
    x, y = _toy_key_data()
    src = _src(x, y, batch_size=64)
    resume = str(tmp_path / "resume.pt")
    seed_everything(3)
    m1 = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
    fit(m1, FitOptions(task="key", epochs=2, patience=50, resume_path=resume), src, src, torch.device("cpu"))
    seed_everything(3)
    m2 = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
    res = fit(m2, FitOptions(task="key", epochs=4, patience=50, resume_path=resume), src, src, torch.device("cpu"))
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3, 4]
    seed_everything(3)
    m3 = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
    straight = fit(m3, FitOptions(task="key", epochs=4, patience=50), src, src, torch.device("cpu"))
    assert [h["train_loss"] for h in res["history"]] == pytest.approx([h["train_loss"] for h in straight["history"]])


def test_checkpoint_round_trip(tmp_path):
    model = KeyLSTM(KeyModelConfig(vocab_size=29, markers=True))
    path = save_checkpoint(tmp_path / "key_model.pt", "key", model, {"train_vocab": [5, 22], "run_id": "abc"})
    loaded, payload = load_checkpoint(path, expect_task="key", expect_run="abc")
    assert state_digest(loaded.state_dict()) == state_digest(model.state_dict())
    assert payload["extra"] == {"train_vocab": [5, 22], "run_id": "abc"}
    assert not loaded.training and loaded.cfg.classes == 32 and loaded.cfg.end_id == 31
    with pytest.raises(CheckpointError, match="expected 'value'"):
        load_checkpoint(path, expect_task="value")
    # a checkpoint (and its sidecar) copied into another run's folder is not that run's model
    with pytest.raises(CheckpointError, match="belongs to run 'abc', not to run 'xyz'"):
        load_checkpoint(path, expect_task="key", expect_run="xyz")


def test_older_checkpoints_load_as_before_or_are_refused_with_a_clear_error(tmp_path):
    old_key = KeyLSTM(KeyModelConfig(vocab_size=29))
    payload = {"format": "deeplog-spark/checkpoint/1", "task": "key", "extra": {"run_id": "r"},
               "model_config": {"vocab_size": 29, "h": 10, "embed_dim": 64, "hidden": 64, "layers": 2, "dropout": 0.2},
               "state_dict": old_key.state_dict()}
    torch.save(payload, tmp_path / "key.pt")
    loaded, _ = load_checkpoint(tmp_path / "key.pt")
    assert not loaded.cfg.markers and loaded.cfg.classes == 30  # a model without session markers
    torch.save({**payload, "task": "value", "model_config": {"h": 10, "hidden": 64, "layers": 1, "dropout": 0.0}},
               tmp_path / "value.pt")
    with pytest.raises(CheckpointError, match="no longer supported; train the value model again"):
        load_checkpoint(tmp_path / "value.pt")


def test_tampered_corrupted_and_foreign_files_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", "value", ValueLSTM(ValueModelConfig(vocab_size=29)))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)
    # the same flipped byte without the sidecar: the archive's CRC catches it
    path.with_name(path.name + ".sha256").unlink()
    with pytest.raises(CheckpointError, match="CRC|not a loadable"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="CRC|not a loadable"):
        load_checkpoint_bytes(path.read_bytes())
    for offset in range(0, len(data), max(1, len(data) // 50)):  # a byte flipped anywhere in the file
        flipped = bytearray(save_checkpoint(tmp_path / "f.pt", "key", KeyLSTM(KeyModelConfig(vocab_size=29))).read_bytes())
        flipped[offset % len(flipped)] ^= 0x01
        (tmp_path / "f.pt").write_bytes(bytes(flipped))
        (tmp_path / "f.pt.sha256").unlink()
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / "f.pt")

    # without the hash sidecar: a pickle carrying arbitrary objects is refused by weights_only
    import os
    import pickle

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "deeplog-spark/checkpoint/2", "call": os.system}))
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_checkpoint(evil)

    truncated = tmp_path / "trunc.pt"
    torch.save({"a": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a deeplog-spark checkpoint"):
        load_checkpoint(foreign)

    wrong_shape = tmp_path / "shape.pt"
    good = save_checkpoint(tmp_path / "g.pt", "key", KeyLSTM(KeyModelConfig(vocab_size=29)))
    payload = torch.load(good, weights_only=True)
    payload["model_config"]["vocab_size"] = 5
    torch.save(payload, wrong_shape)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(wrong_shape)


def test_key_summary_reduces_each_sessions_windows():
    """Per session: windows, largest rank and -log p, the most surprising window (the first on ties)
    and DeepLog's first window ranked worse than g; each distinct window row is scored once."""
    from deeplog_spark.nn.scoring import KeyScorer, key_summary

    table = {(0, 30, 5): (1, 0.1, None), (30, 5, 22): (3, 7.5, None), (5, 22, 31): (12, 7.5, None),
             (30, 5, 31): (40, 100.0, "unseen_next_event")}
    scored = []

    class Table(KeyScorer):
        def __init__(self):
            pass

        def score(self, window, next_event):
            keys = [(*w, n) for w, n in zip(window.tolist(), next_event.tolist())]
            scored.extend(keys)
            return {"key_rank": np.array([table[k][0] for k in keys], np.int32),
                    "key_score": np.array([table[k][1] for k in keys], np.float32),
                    "top_g": np.array([[k[-1], 7] for k in keys], np.int32),
                    "key_reason": np.array([table[k][2] for k in keys], dtype=object)}

    s = key_summary(Table(), np.array([5, 22, 5]), np.array([0, 2, 3]), h=2, markers=(30, 31), g=2)
    assert sorted(scored) == sorted(table)  # (0, 30, 5) opens both sessions: scored once
    assert s["n_windows"].tolist() == [3, 2]
    assert s["max_rank"].tolist() == [12, 40] and s["max_score"].tolist() == [7.5, 100.0]
    assert s["pos"][s["worst"]].tolist() == [1, 1]  # session 0: two windows at 7.5, the first wins
    assert s["n_over"].tolist() == [2, 1] and s["pos"][s["first"]].tolist() == [1, 1]
    assert s["rows"][s["first"]].tolist() == [[30, 5, 22], [30, 5, 31]]
    assert s["key_reason"][s["first"]].tolist() == [None, "unseen_next_event"]
    none = key_summary(Table(), np.array([5]), np.array([0, 1]), h=2, markers=(30, 31), g=50)
    assert none["first"].tolist() == [len(none["rows"])]  # no window ranked worse than g


def test_value_at_picks_each_windows_step_and_is_null_past_the_end_or_where_the_session_has_none():
    import pyarrow as pa

    from deeplog_spark.detect.scores import _value_at

    lists = pa.array([[0.5, None, 2.0], None, [], [float("nan"), 7.0]], pa.list_(pa.float32()))
    seq = np.array([0, 0, 0, 0, 1, 2, 3, 3])
    index = np.array([0, 1, 2, 3, 0, 0, 0, 1])  # 3: past the session (its end marker)
    got = _value_at(lists.slice(0), seq, index).to_pylist()
    assert got == [0.5, None, 2.0, None, None, None, None, 7.0]
    sliced = _value_at(lists.slice(3), np.array([0, 0]), np.array([1, 2])).to_pylist()  # offsets not from 0
    assert sliced == [7.0, None]
    # a null session whose slot still spans values (Arrow allows it): null, not its values
    masked = pa.ListArray.from_arrays(pa.array([0, 2, 3], pa.int32()), pa.array([1.0, 2.0, 3.0], pa.float32()),
                                      mask=pa.array([True, False]))
    assert _value_at(masked, np.array([0, 1]), np.array([0, 0])).to_pylist() == [None, 3.0]
