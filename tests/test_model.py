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
    save_checkpoint,
)
from deeplog_spark.nn.sources import ArraySource, CountSampledSource
from deeplog_spark.nn.trainer import FitOptions, evaluate, fit, prediction_errors, seed_everything, state_digest


def test_key_model_shapes_and_padding_row():
    m = KeyLSTM(KeyModelConfig(vocab_size=29, h=10))
    out = m(torch.randint(0, 30, (5, 10)))
    assert out.shape == (5, 30)
    assert m.embedding.weight.shape == (30, 64) and torch.all(m.embedding.weight[0] == 0)
    assert m.lstm.num_layers == 2 and m.lstm.hidden_size == 64 and m.lstm.dropout == 0.2


def test_value_model_shapes():
    m = ValueLSTM(ValueModelConfig(h=10))
    assert m(torch.randn(7, 10)).shape == (7,)
    assert m.lstm.num_layers == 1 and m.lstm.input_size == 1


def _toy_key_data(n=600, h=4, vocab=6, seed=0):
    """Sequences that follow a fixed cycle 1..vocab: the next event is predictable."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, vocab, n)
    seq = (starts[:, None] + np.arange(h + 1)) % vocab + 1
    return seq[:, :h], seq[:, h]


def test_fit_lowers_the_loss_and_early_stops():
    seed_everything(1)
    x, y = _toy_key_data()
    src = ArraySource(x, y, batch_size=32)
    model = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
    before = evaluate(model, "key", src.full(), torch.device("cpu"))["loss"]
    res = fit(model, FitOptions(task="key", epochs=40, lr=1e-2, patience=2, top_g=1), src, src, torch.device("cpu"))
    after = evaluate(model, "key", src.full(), torch.device("cpu"), top_g=1)
    assert after["loss"] < before / 5
    assert after["top_g_recall"] == 1.0
    assert [h["epoch"] for h in res["history"]] == list(range(1, len(res["history"]) + 1))


def test_min_delta_stops_on_a_plateau_of_small_gains():
    x, y = _toy_key_data()
    runs = {}
    for min_delta in (0.0, 0.5):
        seed_everything(1)
        model = KeyLSTM(KeyModelConfig(vocab_size=6, h=4, embed_dim=8, hidden=16))
        src = ArraySource(x, y, batch_size=32)
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
    src = ArraySource(x, y, batch_size=32)
    out = fit(model, FitOptions(task="key", epochs=12, lr=1e-2, patience=3, min_delta=0.3, lr_decay=0.5),
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
    train = ArraySource(x, y, batch_size=32)
    rng = np.random.default_rng(5)
    val = ArraySource(x[:200], rng.integers(1, 7, 200))  # unlearnable targets: val loss must turn up
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
    full = evaluate(model, "key", ArraySource(x, y).full(), torch.device("cpu"), top_g=2)
    dist = evaluate(model, "key", ArraySource(rows[:, :4], rows[:, 4], counts).full(), torch.device("cpu"), top_g=2)
    assert len(rows) < len(x) / 10
    assert dist["windows"] == full["windows"] == 500
    for k in ("loss", "accuracy", "top_g_recall"):
        assert dist[k] == pytest.approx(full[k], rel=1e-5)


def test_count_sampling_draws_rows_in_proportion_to_their_counts():
    x = np.arange(12).reshape(4, 3)
    y, w = np.array([0, 1, 2, 3]), np.array([1.0, 2.0, 3.0, 94.0], dtype=np.float32)
    src = CountSampledSource(x, y, w, epoch_rows=0, batch_size=50, seed=7)
    assert src.epoch_rows == 100 and src.steps_per_epoch == 2  # 0 = as many draws as windows
    drawn = torch.cat([b["target"] for e in range(200) for b in src.epoch(e)])
    assert len(drawn) == 200 * 2 * 50
    share = np.bincount(drawn.numpy(), minlength=4) / len(drawn)
    assert share == pytest.approx(w / w.sum(), abs=0.01)
    batch = next(iter(src.epoch(0)))
    assert torch.all(batch["weight"] == 1.0)  # the counts are in the draw, not in the loss
    assert torch.equal(batch["window"], torch.as_tensor(x)[batch["target"]])  # rows stay whole
    # repeatable per (seed, rank, epoch); ranks draw differently but take the same number of steps
    again = CountSampledSource(x, y, w, 0, 50, seed=7)
    assert torch.equal(next(iter(again.epoch(3)))["target"], next(iter(src.epoch(3)))["target"])
    r0, r1 = (CountSampledSource(x, y, w, 60, 10, seed=7, rank=r, world=2) for r in (0, 1))
    assert r0.steps_per_epoch == r1.steps_per_epoch == 3
    assert not torch.equal(next(iter(r0.epoch(0)))["target"], next(iter(r1.epoch(0)))["target"])
    assert CountSampledSource(x, y, w, 10**6, 50).epoch_rows == 100  # never more draws than windows
    with pytest.raises(ValueError, match="positive count"):
        CountSampledSource(x, y, np.zeros(4, dtype=np.float32), 0, 50)


def test_prediction_errors_are_weighted_mean_and_std():
    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x))

    y = np.array([1.0, -3.0], dtype=np.float32)
    src = ArraySource(np.zeros((2, 3), np.float32), y, np.array([3.0, 1.0], np.float32))
    mu, sigma, n = prediction_errors(Const(), src.full(), torch.device("cpu"))
    errs = np.array([1, 1, 1, 3.0])
    assert (mu, n) == (pytest.approx(errs.mean()), 4) and sigma == pytest.approx(errs.std())


def test_resume_continues_from_the_last_epoch(tmp_path):
    x, y = _toy_key_data()
    src = ArraySource(x, y, batch_size=64)
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
    model = KeyLSTM(KeyModelConfig(vocab_size=29))
    path = save_checkpoint(tmp_path / "key_model.pt", "key", model, {"train_vocab": [5, 22], "run_id": "abc"})
    loaded, payload = load_checkpoint(path, expect_task="key")
    assert state_digest(loaded.state_dict()) == state_digest(model.state_dict())
    assert payload["extra"] == {"train_vocab": [5, 22], "run_id": "abc"}
    assert not loaded.training
    with pytest.raises(CheckpointError, match="expected 'value'"):
        load_checkpoint(path, expect_task="value")


def test_tampered_corrupted_and_foreign_files_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", "value", ValueLSTM(ValueModelConfig()))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)

    # without the hash sidecar: a pickle carrying arbitrary objects is refused by weights_only
    import os
    import pickle

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "deeplog-spark/checkpoint/1", "call": os.system}))
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
