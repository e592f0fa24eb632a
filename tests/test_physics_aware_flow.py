"""physics_aware on the flow (resistor) network (issue 16 part 1): one probe acquisition, backward in the HAL's model.

The twin's truth (processor.emulator) is read here only to grade and to inject drift; the model never reads it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lightloop.errors import ConfigError
from lightloop.hal.flow_model import FlowModel
from lightloop.simulators.flow_network import input_currents, loss_gradient_fd
from lightloop.training.datasets import load_dataset
from lightloop.training.flow_learning import FlowCost
from lightloop.training.gradients import make_gradient
from lightloop.training.losses import MSELoss
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_flow_training import _batch, programmed, small_bench  # noqa: E402


def physics_aware(loss=None):
    """The gradient method with the flow cost (what a flow processor's model_loss names)."""
    m = make_gradient("physics_aware")
    m.loss = loss or FlowCost()
    return m


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def true_fd(proc, x, y):
    """Central finite differences of the batch flow cost w.r.t. the WRITTEN conductances, through the twin's truth."""
    net, gain = proc.emulator.net, proc.emulator.truth.programming_gain
    I = input_currents(proc.feature_scale * x, proc.topology.input_pairs, net.n_nodes)
    return gain * loss_gradient_fd(net, I, proc.topology.output_pairs, proc.desired[y])


@pytest.mark.parametrize("seed", [0, 1])
def test_on_the_ideal_twin_it_equals_chemical_signaling_and_finite_differences(seed: int) -> None:
    proc = small_bench()
    proc.learning_defaults["eta"] = 0.7          # the bench's eta scales both methods alike (same Trainer step)
    params = programmed(proc, seed)
    x, y, tb = _batch(proc, seed)
    chem = make_gradient("chemical_signaling")(proc, params, x, tb)
    res = physics_aware()(proc, params, x, tb)
    g = res.grads[0]
    assert g.shape == params[0].shape and g.dtype == np.float32
    assert rel(g, chem.grads[0]) < 1e-5
    assert rel(g, 0.7 * true_fd(proc, x, y)) < 1e-5
    assert (res.measurements, chem.measurements) == (1, 2)     # one probe acquisition instead of two
    assert res.loss == pytest.approx(chem.loss, rel=1e-12)
    np.testing.assert_allclose(proc.model_prediction(proc.forward(x))[0], proc.forward(x).pre[0], atol=1e-9)


def test_the_model_gradient_follows_the_scores_for_another_loss() -> None:
    """model_gradients takes B dL/dscores: with MSE on the scores it returns that loss's gradient (finite differences)."""
    proc = small_bench(n_side=4)
    params = programmed(proc, 2)
    x, y, tb = _batch(proc, 2)
    taps = proc.forward(x)
    grad = proc.model_gradients(taps, MSELoss().error(taps.output, tb))[0]
    w0, fd = params[0].astype(np.float64), np.zeros(params[0].size)
    for e in range(w0.size):
        h, vals = 1e-4 * w0[e], []
        for sgn in (1, -1):
            w = w0.copy()
            w[e] += sgn * h
            proc.program([w])
            vals.append(MSELoss().value(proc.forward(x).output, tb))
        fd[e] = (vals[0] - vals[1]) / (2 * h)
    assert rel(grad, fd) < 1e-4


def test_a_miscalibrated_model_gives_a_different_gradient_and_prediction() -> None:
    proc = small_bench()
    params = programmed(proc, 0)
    x, y, tb = _batch(proc, 0)
    exact = physics_aware()(proc, params, x, tb).grads[0]
    proc.model.set_gain(np.random.default_rng(5).uniform(0.7, 1.3, proc.topology.n_edges))
    res = physics_aware()(proc, params, x, tb)
    assert rel(res.grads[0], exact) > 0.05
    taps = proc.forward(x)
    assert rel(proc.model_prediction(taps)[0], taps.pre[0]) > 0.01


def _history(proc, params, n: int = 12, seed: int = 3):
    """Forward batches at training-like conductances (each taps records what was written)."""
    rng, hist = np.random.default_rng(seed), []
    if proc.desired is None:
        proc.set_desired(np.zeros((proc.n_classes, len(proc.topology.output_pairs))))
    for _ in range(n):
        proc.program([params[0] * rng.uniform(0.9, 1.1, params[0].shape)])
        hist.append(proc.forward(rng.uniform(0, 1, (4, 2))))
    return hist


def test_refinement_recovers_an_injected_drift_and_the_exact_gradient() -> None:
    proc = small_bench()
    params = programmed(proc, 1)
    x, y, tb = _batch(proc, 1)
    drift = np.random.default_rng(11).normal(1.0, 0.1, proc.topology.n_edges).clip(0.7, 1.3)
    proc.emulator.truth.programming_gain = drift            # injected through the twin, in the test only
    proc.program(params)
    stale = physics_aware()(proc, params, x, tb).grads[0]
    want = true_fd(proc, x, y)
    out = proc.refine_model(_history(proc, params))
    assert out["accepted"] == 1.0 and out["n_samples"] == 48
    assert out["prediction_error_before"] > 0.01 and out["prediction_error_after"] < 2e-3 * out["prediction_error_before"]
    # the gain of every edge that carries current is recovered (a few dead-end edges stay near 1, ridge)
    err = np.abs(proc.model.gain - drift)
    assert np.median(err) < 1e-3 and np.sqrt(np.mean(err ** 2)) < 0.3 * np.sqrt(np.mean((drift - 1) ** 2))
    proc.program(params)
    fresh = physics_aware()(proc, params, x, tb).grads[0]
    assert rel(fresh, want) < 1e-3 and rel(stale, want) > 0.02     # 10 % drift: a 5 % wrong gradient


def test_global_refinement_on_the_realistic_twin_and_the_snapshot() -> None:
    proc = small_bench(ideal=False)
    params = programmed(proc, 0)
    proc.emulator.truth.programming_gain = proc.emulator.truth.programming_gain * 0.8   # a 20 % global drift
    hist = _history(proc, params)
    out = proc.refine_model(hist, mode="global")
    assert out["gain_min"] == out["gain_max"] and abs(out["gain_min"] - 0.8) < 0.01
    assert out["prediction_error_after"] < 0.2 * out["prediction_error_before"]   # what is left: 1 % per edge
    per_edge = proc.refine_model(hist)                       # then per edge: the 1 % programming error too
    assert per_edge["prediction_error_after"] < per_edge["prediction_error_before"]
    truth = proc.emulator.truth.programming_gain
    assert np.sqrt(np.mean((proc.model.gain - truth) ** 2)) < 0.5 * np.sqrt(np.mean((0.8 - truth) ** 2))
    st = proc.snapshot()
    proc.model.set_gain(1.0)
    proc.restore(st)
    np.testing.assert_array_equal(proc.model.gain, st["model_gain"])
    assert proc.summary_fields()["model_gain_min"] == pytest.approx(float(st["model_gain"].min()))


def test_refinement_keeps_the_model_when_the_fit_predicts_worse_and_refuses_bad_input() -> None:
    proc = small_bench()
    params = programmed(proc, 0)
    hist = _history(proc, params, n=3)
    before = proc.model.gain.copy()
    proc.model.fit_gain = lambda *a, **k: np.full(proc.topology.n_edges, 2.0)   # a bad fit is rejected
    out = proc.refine_model(hist)
    assert out["accepted"] == 0.0 and out["prediction_error_after"] == out["prediction_error_before"]
    np.testing.assert_array_equal(proc.model.gain, before)
    with pytest.raises(ConfigError, match="at least one forward batch"):
        proc.refine_model([])
    with pytest.raises(ConfigError, match="refine mode must be 'edge' or 'global'"):
        FlowModel(proc.topology).fit_gain([], [], [], mode="rows")
    with pytest.raises(ConfigError, match="gain must be finite and > 0"):
        proc.model.set_gain(-1.0)


def test_trainer_steps_like_chemical_signaling_with_one_acquisition(tmp_path) -> None:
    data = load_dataset("iris")
    runs = {}
    for name in ("chemical_signaling", "physics_aware"):
        proc = small_bench(n_side=6, ideal=True, n_in=4, n_cls=3)
        method = make_gradient(name)
        tr = Trainer(proc, method, make_optimizer("sgd", 3e-3),
                     TrainSettings(epochs=2, batch_size=1, seed=0, progress=False), out_dir=tmp_path / name)
        method.loss = FlowCost()    # the flow cost, as the flow rules map the Trainer's 'mse'
        runs[name] = (tr.fit(data), proc.network.conductances)
    (rc, wc), (rp, wp) = runs["chemical_signaling"], runs["physics_aware"]
    np.testing.assert_allclose(wp, wc, rtol=1e-5)
    assert rp.history[-1]["train_loss"] == pytest.approx(rc.history[-1]["train_loss"], rel=1e-4)
    assert (rp.history[-1]["measurements_per_step"], rc.history[-1]["measurements_per_step"]) == (1.0, 2.0)


def test_trainer_mse_maps_onto_the_flow_cost_and_cross_entropy_is_refused(tmp_path):
    """physics_aware descends the flow cost like chemical signalling (same conductances); cross entropy is refused."""
    from lightloop.training.losses import SoftmaxCrossEntropyLoss

    data = load_dataset("iris")
    w = {}
    for name in ("chemical_signaling", "physics_aware"):
        proc = small_bench(n_side=6, ideal=True, n_in=4, n_cls=3)
        r = Trainer(proc, make_gradient(name), make_optimizer("sgd", 3e-3),
                    TrainSettings(epochs=2, batch_size=1, seed=0, progress=False), out_dir=tmp_path / name).fit(data)
        w[name] = (proc.network.conductances, r.history[-1]["test_loss"])
    np.testing.assert_allclose(w["physics_aware"][0], w["chemical_signaling"][0], rtol=1e-5)
    assert w["physics_aware"][1] == pytest.approx(w["chemical_signaling"][1], rel=1e-6)
    proc = small_bench(n_side=4)
    with pytest.raises(ConfigError, match="descends its flow_cost"):
        Trainer(proc, make_gradient("physics_aware"), make_optimizer("sgd", 3e-3),
                TrainSettings(epochs=1, batch_size=1, seed=0, loss="cross_entropy", progress=False))
    m = make_gradient("physics_aware")
    m.loss = SoftmaxCrossEntropyLoss()
    with pytest.raises(ConfigError, match="descends its flow_cost"):
        m.check(proc)
