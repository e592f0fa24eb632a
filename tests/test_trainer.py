"""The on-chip training loop: learning, checkpoints and exact resume, logs and plots."""

import json

import numpy as np
import pytest

from lightloop.errors import ConfigError
from lightloop.training.checkpoint import load_checkpoint, save_checkpoint
from lightloop.training.datasets import load_dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import SGD, Adam, make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trainer(make_bench, out, ideal=False, epochs=3, gradient="pump_probe", seed=0):
    proc = make_bench((64, 24, 10), ideal=ideal, a0=5.0)
    return Trainer(proc, make_gradient(gradient), Adam(5e-3),
                   TrainSettings(epochs=epochs, batch_size=32, seed=seed, progress=False), out_dir=out)


def test_training_on_the_realistic_twin_learns_digits(make_bench, digits, tmp_path):
    res = _trainer(make_bench, tmp_path, epochs=4).fit(digits)
    assert res.best_test_accuracy > 0.85
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3, 4]
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "best.npz").exists()


def test_eval_hooks_see_the_evaluation_predictions_without_perturbing_the_run(make_bench, digits):
    """Per-sample analyses use the Trainer's own test pass: same accuracy, and on the noisy twin the same run."""
    seen = []
    plain = _trainer(make_bench, None, epochs=2).fit(digits)
    tr = _trainer(make_bench, None, epochs=2)
    tr.eval_hooks.append(lambda epoch, pred: seen.append((epoch, pred.copy())))
    hooked = tr.fit(digits)
    assert [e for e, _ in seen] == [1, 2]
    for (_, pred), h in zip(seen, hooked.history):
        assert pred.shape == digits.y_test.shape
        assert np.mean(pred == digits.y_test) == pytest.approx(h["test_accuracy"])
    for a, b in zip(plain.params, hooked.params):              # no extra acquisition, no shifted noise stream
        np.testing.assert_array_equal(a, b)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(make_bench, digits, tmp_path):
    full = _trainer(make_bench, tmp_path / "full", epochs=4).fit(digits)
    _trainer(make_bench, tmp_path / "cut", epochs=2).fit(digits)
    resumed = _trainer(make_bench, tmp_path / "cut", epochs=4).fit(digits, resume=True)
    for a, b in zip(full.params, resumed.params):
        np.testing.assert_array_equal(a, b)
    assert [h["test_accuracy"] for h in full.history] == [h["test_accuracy"] for h in resumed.history]
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3, 4]


def test_a_fault_mid_run_leaves_the_bench_safe_and_the_checkpoint_intact(make_bench, digits, tmp_path):
    tr = _trainer(make_bench, tmp_path, epochs=3)
    calls = {"n": 0}
    real = tr.method.__class__.__call__

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 60:  # second epoch (45 steps per epoch)
            raise TimeoutError("detector timed out")
        return real(self, *a, **k)

    tr.method.__class__ = type("Flaky", (tr.method.__class__,), {"__call__": flaky})
    with pytest.raises(TimeoutError):
        tr.fit(digits)
    proc = tr.processor
    assert proc.emulator.cell_temperature_k[0] == pytest.approx(proc.absorbers[0].limits.t_min_k)
    assert load_checkpoint(tmp_path / "checkpoint.npz")["epoch"] == 1


def test_huge_steps_stay_within_the_realisable_weights(make_bench, digits):
    proc = make_bench((64, 8, 10), ideal=True, a0=1.0)
    res = Trainer(proc, make_gradient("exact"), SGD(1e30), TrainSettings(epochs=1, progress=False)).fit(digits)
    assert all(np.abs(p).max() <= proc.weights[0].max_weight for p in res.params)


def test_a_nan_reading_stops_the_run_in_the_safe_state(make_bench, digits, tmp_path):
    from lightloop.errors import InstrumentError

    tr = _trainer(make_bench, tmp_path, epochs=1)
    emu = tr.processor.emulator
    tr.processor.pre_taps[0].port._read = lambda layer: np.full((32, 24), np.nan, np.float32)
    with pytest.raises(InstrumentError, match="NaN"):
        tr.fit(digits)
    assert emu.cell_temperature_k[0] == pytest.approx(tr.processor.absorbers[0].limits.t_min_k)


def test_checkpoint_round_trip_and_corrupt_file(tmp_path):
    state = {"epoch": 3, "params": [np.arange(6, dtype=np.float32).reshape(2, 3)], "rng": {"a": 1},
             "optimizer": {"t": 5, "m": [np.ones(2)], "v": None}}
    save_checkpoint(tmp_path / "c.npz", state)
    back = load_checkpoint(tmp_path / "c.npz")
    assert back["epoch"] == 3 and back["optimizer"]["t"] == 5 and back["optimizer"]["v"] is None
    np.testing.assert_array_equal(back["params"][0], state["params"][0])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    from lightloop.errors import LightloopError

    with pytest.raises(LightloopError, match="bad.npz: not a readable lightloop checkpoint"):
        load_checkpoint(tmp_path / "bad.npz")


def test_optimizers_minimise_a_quadratic():
    for opt in (SGD(0.1), SGD(0.05, momentum=0.9), Adam(0.1)):
        p = [np.array([3.0, -2.0], np.float32)]
        for _ in range(300):
            opt.step(p, [2 * p[0]])
        assert np.abs(p[0]).max() < 1e-2
    with pytest.raises(ConfigError, match="unknown optimizer"):
        make_optimizer("lbfgs", 0.1)
    with pytest.raises(ConfigError, match="learning rate"):
        Adam(-1.0)


def test_gradient_method_must_fit_the_processor(make_bench):
    class NoBackward:
        capabilities = frozenset()

    with pytest.raises(ConfigError, match="not available"):
        make_gradient("pump_probe").check(NoBackward())
    with pytest.raises(ConfigError, match="unknown gradient method 'magic'"):
        make_gradient("magic")
