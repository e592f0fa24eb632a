"""Photon-limited feedback: channel twin statistics, HAL role limits, the stochastic_photonic method, configs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from lightloop.benches.digital import FeedbackSettings, attach_photon_feedback
from lightloop.config import load_config, parse_config
from lightloop.errors import ConfigError, SafetyLimitError
from lightloop.hal.photon_counting import (
    PhotonCountingArray,
    PhotonCountingCalibration,
    PhotonCountingLimits,
    PhotonCountingPort,
    feedback_channel_of,
)
from lightloop.simulators.digital_network import DigitalProcessor
from lightloop.simulators.photon_feedback import (
    PhotonChannelTruth,
    PhotonCountingTwin,
    PhotonFeedbackEmulator,
    channel_clicks,
)
from lightloop.training.datasets import load_dataset, one_hot
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import SGD
from lightloop.training.stochastic import StochasticPhotonicGradient

ROOT = Path(__file__).resolve().parents[1]


def _array(n: int, truth: PhotonChannelTruth | None = None, seed: int = 0, **limits: float) -> PhotonCountingArray:
    emu = PhotonFeedbackEmulator(n, truth, seed=seed)
    return PhotonCountingArray(PhotonCountingTwin(emu), limits=PhotonCountingLimits(**limits) if limits else None)


# --- channel physics ---------------------------------------------------------------------------
def test_twin_implements_the_port():
    assert isinstance(PhotonCountingTwin(PhotonFeedbackEmulator(3)), PhotonCountingPort)


@pytest.mark.parametrize("q", [1.0, 0.3, 0.01])
def test_bernoulli_q_and_sign_bit(q):
    fc = _array(200, seed=1)
    fc.set_emission_probability(q)
    signs = np.where(np.random.default_rng(0).random((500, 200)) < 0.5, -1.0, 1.0)
    bits = fc.send_bits(signs)
    arrived = bits != 0
    frac = arrived.mean()
    assert abs(frac - q) < 4 * np.sqrt(q * (1 - q) / arrived.size) + 1e-12
    assert np.all(bits[arrived] == signs[arrived])      # ideal detectors: the bit is the sign


def test_no_emission_for_zero_error():
    fc = _array(10)
    assert not fc.send_bits(np.zeros((50, 10))).any()


def test_noise_photons_random_sign_and_rate():
    fc = _array(100, seed=3)
    fc.set_emission_probability(0.0)
    fc.set_background_probability(0.2)
    bits = fc.send_bits(np.ones((2000, 100)))
    assert abs((bits != 0).mean() - 0.2) < 0.01
    assert abs(bits[bits != 0].mean()) < 0.03           # random polarisation: zero mean


def test_detector_imperfections_efficiency_readout_error_darks():
    n, gates = 50, 4000
    truth = PhotonChannelTruth.draw(n, 0, detection_efficiency=0.6, polarisation_error=0.1)
    clicks = channel_clicks(np.ones((gates, n), np.int8), 1.0, 0.0, truth, np.random.default_rng(0))
    h, v = clicks[..., 0].mean(), clicks[..., 1].mean()
    assert abs(h + v - 0.6) < 0.01                      # detection efficiency
    assert abs(v / (h + v) - 0.1) < 0.01                # polarisation misread
    dark = PhotonChannelTruth.draw(n, 0, dark_count_probability=0.05)
    clicks = channel_clicks(np.zeros((gates, n), np.int8), 0.0, 0.0, dark, np.random.default_rng(1))
    assert abs(clicks.mean() - 0.05) < 0.005            # dark counts on both detectors, no signal


def test_seeded_and_restorable():
    a, b = _array(30, seed=5), _array(30, seed=5)
    for fc in (a, b):
        fc.set_emission_probability(0.5)
    x = np.ones((20, 30))
    assert np.array_equal(a.send_bits(x), b.send_bits(x))
    state = a.snapshot()
    first = a.send_bits(x)
    a.restore(state)
    assert np.array_equal(a.send_bits(x), first)


def test_analog_and_one_bit_decoding():
    fc = _array(4)
    v = np.array([[0.5, -0.25, 0.0, 2.0]], np.float32)
    assert np.allclose(fc.transmit(v, one_bit=False), v)
    assert np.allclose(fc.transmit(v, one_bit=True, bit_value=0.1), [[0.1, -0.1, 0.0, 0.1]])


def test_limits_and_bad_values():
    fc = _array(4, max_emission_probability=0.5, max_background_probability=0.1)
    with pytest.raises(SafetyLimitError):
        fc.set_emission_probability(0.9)
    with pytest.raises(SafetyLimitError):
        fc.set_background_probability(0.2)
    with pytest.raises(ConfigError):
        fc.set_emission_probability(-0.1)
    with pytest.raises(ConfigError):
        PhotonCountingCalibration(detection_efficiency=0.0)
    with pytest.raises(ValueError):
        fc.send_bits(np.ones((2, 5)))
    fc.safe_state()
    assert fc.emission_probability == 0.0 and fc.background_probability == 0.0


# --- gradient method ---------------------------------------------------------------------------
def _digital(hidden: int = 16, seed: int = 0, **fb) -> DigitalProcessor:
    p = DigitalProcessor((8, hidden, 3))
    attach_photon_feedback(p, FeedbackSettings(**fb), seed=seed)
    return p


def test_q1_analog_equals_exact_backprop():
    p = _digital()
    params = p.init_parameters(np.random.default_rng(0), 0.3)
    p.program(params)
    x = np.random.default_rng(1).random((5, 8), dtype=np.float32)
    t = one_hot(np.array([0, 1, 2, 0, 1]), 3)
    ref = make_gradient("pump_probe")(p, params, x, t)
    got = make_gradient("stochastic_photonic", q=1.0, output_feedback=True)(p, params, x, t)
    for g, r in zip(got.grads, ref.grads):
        assert np.allclose(g, r, atol=1e-6)
    # single-sample fast path and the output layer left digital by default
    got1 = make_gradient("stochastic_photonic", q=1.0)(p, params, x[:1], t[:1])
    ref1 = make_gradient("pump_probe")(p, params, x[:1], t[:1])
    for g, r in zip(got1.grads, ref1.grads):
        assert np.allclose(g, r, atol=1e-6)


def test_digital_backward_matches_finite_differences():
    p = DigitalProcessor((3, 4, 2))
    params = [w.astype(np.float64) for w in p.init_parameters(np.random.default_rng(2), 0.5)]
    p.program([w.astype(np.float32) for w in params])
    x = np.random.default_rng(3).random((2, 3), dtype=np.float32)
    t = one_hot(np.array([0, 1]), 2)
    g = make_gradient("pump_probe")(p, [w.astype(np.float32) for w in params], x, t).grads
    fd = make_gradient("finite_difference", step=1e-3)(p, [w.astype(np.float32) for w in params], x, t).grads
    for a, b in zip(g, fd):
        assert np.allclose(a, b, atol=2e-3)


def test_thinning_one_bit_and_noise_statistics():
    p = _digital(hidden=200)
    params = p.init_parameters(np.random.default_rng(0), 0.3)
    p.program(params)
    x = np.random.default_rng(1).random((400, 8), dtype=np.float32)
    t = one_hot(np.random.default_rng(2).integers(0, 3, 400), 3)
    m = make_gradient("stochastic_photonic", q=0.1, one_bit=True, epsilon=0.5, output_feedback=True)
    m(p, params, x, t)
    n = 400 * 203
    assert abs(m.delivered / n - 0.1) < 0.01          # Bernoulli(q) photons over neurons x trials
    assert p.feedback_channel.emission_probability == 0.1
    # one-bit: every non-zero hidden-layer update row is +-epsilon * a
    m1 = make_gradient("stochastic_photonic", q=0.5, one_bit=True, epsilon=0.5)
    r = m1(p, params, x[:1], t[:1])
    a = p.forward(x[:1]).inputs[0]
    rows = np.flatnonzero(np.abs(r.grads[0]).sum(1))
    assert rows.size > 0
    for i in rows:
        assert np.allclose(np.abs(r.grads[0][i]), 0.5 * a, atol=1e-6)


def test_checks_and_bad_options():
    bare = DigitalProcessor((4, 3, 2))
    m = make_gradient("stochastic_photonic")
    with pytest.raises(ConfigError, match="feedback"):
        m.check(bare)
    with pytest.raises(ConfigError, match="probability"):
        StochasticPhotonicGradient(q=1.5)
    with pytest.raises(ConfigError, match="one_bit"):
        StochasticPhotonicGradient(one_bit="maybe")
    with pytest.raises(ConfigError, match="inner"):
        StochasticPhotonicGradient(inner="exact").check(_digital())
    assert StochasticPhotonicGradient(one_bit="true").one_bit is True
    assert feedback_channel_of(bare) is None


def test_learns_digits_with_one_bit_sparse_feedback():
    data = load_dataset("digits")
    p = DigitalProcessor((64, 64, 10))
    attach_photon_feedback(p, seed=0)
    rng = np.random.default_rng(0)
    params = p.init_parameters(rng, 0.1)
    m = make_gradient("stochastic_photonic", q=0.2, one_bit=True, epsilon=0.1, noise_rate=0.02)
    opt = SGD(0.5)
    t = one_hot(data.y_train, 10)
    p.program(params)
    for k in rng.permutation(data.x_train.shape[0] * 3) % data.x_train.shape[0]:
        opt.step(params, m(p, params, data.x_train[k:k + 1], t[k:k + 1]).grads)
    acc = (p.forward(data.x_test).output.argmax(1) == data.y_test).mean()
    assert acc > 0.7                                     # chance: 0.1


# --- configs and the CLI path --------------------------------------------------------------------
def test_lab_configs_parse():
    dig = load_config(ROOT / "lab_configs" / "digital_mlp.yaml")
    assert dig.processor.kind == "digital" and dig.training.gradient == "stochastic_photonic"
    assert isinstance(dig.feedback, FeedbackSettings)
    fs = load_config(ROOT / "lab_configs" / "photon_limited.yaml")
    assert fs.processor.kind == "free_space" and fs.feedback.detection_efficiency == 0.9
    with pytest.raises(ConfigError, match=r"feedback\.polarisation_error"):
        parse_config({"bench": "x", "processor": {"kind": "digital"}, "feedback": {"polarisation_error": 0.7}}, "f.yaml")
    with pytest.raises(ConfigError, match=r"feedback\.colour"):
        parse_config({"bench": "x", "processor": {"kind": "digital"}, "feedback": {"colour": 1}}, "f.yaml")


def _train_args(tmp_path: Path, config: str, *extra: str) -> argparse.Namespace:
    from lightloop.cli import _train_parser

    ap = argparse.ArgumentParser()
    _train_parser(ap.add_subparsers(dest="command"))
    return ap.parse_args(["train", "--config", str(ROOT / "lab_configs" / config), "--out", str(tmp_path),
                          "--no-progress", *extra])


def test_cli_free_space_bench_with_photon_feedback(tmp_path):
    from lightloop.cli import run_training

    args = _train_args(tmp_path, "photon_limited.yaml", "--epochs", "2", "--hidden", "16",
                       "--gradient-option", "q=0.5", "--gradient-option", "one_bit=true")
    s = run_training(args)
    assert s["gradient_options"]["q"] == 0.5 and s["gradient_options"]["one_bit"] is True
    assert s["feedback_q"] == 0.5 and s["feedback_channels"] == 16 + 10
    assert s["test_accuracy"] > 0.5
    assert json.dumps(s)


def test_cli_rejects_unknown_gradient_option(tmp_path):
    from lightloop.cli import run_training

    with pytest.raises(ConfigError, match="not accepted"):
        run_training(_train_args(tmp_path, "digital_mlp.yaml", "--dataset", "digits", "--gradient-option", "qq=1"))


# --- fast online engine (benchmarks/photon_limited.py) against the HAL path ---------------------
def _hal_run(one_bit: bool, output_feedback: bool, order, q: float = 1.0, n_p: float = 0.0):
    data = load_dataset("digits")
    p = DigitalProcessor((64, 16, 10))
    attach_photon_feedback(p, FeedbackSettings(), seed=0)
    params = p.init_parameters(np.random.default_rng(0), 0.3)
    w0 = [w.copy() for w in params]
    m = make_gradient("stochastic_photonic", q=q, one_bit=one_bit, epsilon=0.1, noise_rate=n_p,
                      output_feedback=output_feedback)
    opt, t = SGD(0.5), one_hot(data.y_train, 10)
    p.program(params)
    for i in order:
        opt.step(params, m(p, params, data.x_train[i:i + 1], t[i:i + 1]).grads)
    return data, w0, params, m


@pytest.mark.parametrize("one_bit,output_feedback", [(False, False), (False, True), (True, False), (True, True)])
def test_fast_online_engine_equals_hal_path_at_q1(one_bit, output_feedback):
    from lightloop.simulators.photon_online import OnlineSettings, PhotonOnlineNet, augment

    order = np.random.default_rng(1).integers(0, 1000, 150)
    data, w0, ref, _ = _hal_run(one_bit, output_feedback, order)
    s = OnlineSettings(hidden=16, q=1.0, one_bit=one_bit, epsilon=0.1, output_feedback=output_feedback, lr=0.5)
    net = PhotonOnlineNet([w.copy() for w in w0], s, np.random.default_rng(0))
    net.train_block(augment(data.x_train)[order], np.eye(10, dtype=np.float32)[data.y_train[order]],
                    data.y_train[order])
    for a, b, c in zip(net.weights, ref, w0):
        assert np.abs(b - c).max() > 0.05                 # the reference did learn
        assert np.allclose(a, b, atol=2e-5)


def test_fast_online_engine_photon_statistics_match_hal_path():
    from lightloop.simulators.photon_online import OnlineSettings, PhotonOnlineNet, augment

    q, n_p = 0.3, 0.1
    order = np.random.default_rng(2).integers(0, 1000, 300)
    data, w0, _, m = _hal_run(True, True, order, q=q, n_p=n_p)
    s = OnlineSettings(hidden=16, q=q, one_bit=True, epsilon=0.1, noise_rate=n_p, output_feedback=True, lr=0.5)
    net = PhotonOnlineNet([w.copy() for w in w0], s, np.random.default_rng(3))
    net.train_block(augment(data.x_train)[order], np.eye(10, dtype=np.float32)[data.y_train[order]],
                    data.y_train[order])
    n = 300 * 26
    expect = q * (1 - n_p) + (1 - q) * n_p + q * n_p / 2   # signal and opposite noise photon read 0
    sd = np.sqrt(expect * (1 - expect) / n)
    assert abs(m.delivered / n - expect) < 5 * sd
    assert abs(net.stats.photons / n - expect) < 5 * sd


def test_fast_online_engine_batched_forwards_are_exact():
    """Sparse photons: batching the forwards between photon trials gives the trial-by-trial result exactly."""
    from lightloop.simulators.photon_online import OnlineSettings, PhotonOnlineNet, augment, init_weights

    data = load_dataset("digits")
    order = np.random.default_rng(4).integers(0, 1000, 400)
    xa, t = augment(data.x_train)[order], np.eye(10, dtype=np.float32)[data.y_train[order]]
    s = OnlineSettings(hidden=16, q=0.01, output_feedback=True, lr=2.0, init="fan_in")
    w0 = init_weights(np.random.default_rng(0), (64, 16, 10), "fan_in")
    out = []
    for frac in (-1.0, 2.0):                               # force trial-by-trial, then batched
        net = PhotonOnlineNet([w.copy() for w in w0], s, np.random.default_rng(5), dense_fraction=frac)
        wrong = net.train_block(xa, t, data.y_train[order])
        out.append((net.weights, wrong, net.stats.events))
    rec = np.arange(400) % 100 >= 80                       # only some trials' errors recorded: same weights
    net = PhotonOnlineNet([w.copy() for w in w0], s, np.random.default_rng(5), dense_fraction=2.0)
    wrong = net.train_block(xa, t, data.y_train[order], rec)
    out.append((net.weights, wrong, net.stats.events))
    assert 0 < out[1][2] < 400 and out[0][2] == out[1][2] == out[2][2]
    assert np.array_equal(out[0][1], out[1][1]) and np.array_equal(out[0][1][rec], out[2][1][rec])
    for a, b, b2, c in zip(out[0][0], out[1][0], out[2][0], w0):
        assert np.abs(a - c).max() > 0 and np.allclose(a, b, atol=1e-6) and np.allclose(a, b2, atol=1e-6)


def test_fan_in_init_and_learning_rates():
    from lightloop.simulators.photon_online import init_weights, layer_learning_rates

    w = init_weights(np.random.default_rng(0), (400, 2000, 10), "fan_in")
    assert abs(w[0][:, :-1].std() - 1 / np.sqrt(400)) < 2e-3 and abs(w[1][:, :-1].std() - 1 / np.sqrt(2000)) < 2e-3
    assert not w[0][:, -1].any() and not w[1][:, -1].any()       # biases start at 0
    fixed = init_weights(np.random.default_rng(0), (3, 4, 2), "fixed", 0.05)
    ref = DigitalProcessor((3, 4, 2)).init_parameters(np.random.default_rng(0), 0.05)
    assert all(np.array_equal(a, b) for a, b in zip(fixed, ref))
    assert layer_learning_rates(0.1, (784, 500, 10)) == [0.1, 0.1]
    assert np.allclose(layer_learning_rates(10.0, (784, 500, 10), "fan_in"), [10 / 785, 10 / 501])
