"""Saturable-absorber physics against its equations (Guo et al. 2021)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightloop.physics.saturable_absorber import (
    gain_forward,
    gain_slope,
    rb_number_density_m3,
    sa_forward,
    sa_slope,
    sa_transmission,
)
from lightloop.physics.vapor_cell import VaporCellPhysics


@pytest.mark.parametrize("a0", [0.0, 0.5, 3.0, 10.0, 30.0, -2.0])
def test_slope_matches_central_finite_difference(a0):
    e = np.linspace(-4, 4, 801)
    h = 1e-6
    fd = (sa_forward(e + h, a0) - sa_forward(e - h, a0)) / (2 * h)
    np.testing.assert_allclose(sa_slope(e, a0), fd, rtol=1e-7, atol=1e-9)


def test_gain_is_absorption_with_negative_depth():
    e = np.linspace(0, 3, 50)
    np.testing.assert_allclose(gain_forward(e, 2.0), sa_forward(e, -2.0))
    np.testing.assert_allclose(gain_slope(e, 2.0), sa_slope(e, -2.0))
    assert np.all(gain_forward(e[1:], 2.0) > e[1:])  # gain amplifies


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 5.0), st.floats(0.01, 100.0))
def test_probe_transmission_bounds_the_exact_slope(e, a0):
    t, g = sa_transmission(e, a0), sa_slope(e, a0)
    assert 0 < t <= 1
    assert g >= t  # g' = T (1 + a0 E^2/(1+E^2)^2) >= T for absorbers
    assert g / t == pytest.approx(1 + a0 * e * e / (1 + e * e) ** 2, rel=1e-9)


def test_complex_field_keeps_phase_and_saturates_on_intensity():
    e = 1.5 * np.exp(1j * 0.7)
    out = sa_forward(np.array([e]), 5.0)[0]
    assert np.angle(out) == pytest.approx(0.7)
    assert abs(out) == pytest.approx(sa_forward(1.5, 5.0))


def _similarity_during_training(make_bench, a0, seed=0):
    """1 - S of the pump-probe gradient (S_all and S_slope) averaged over 3 epochs of digits training."""
    from lightloop.training.datasets import load_dataset, one_hot
    from lightloop.training.diagnostics import GradientSimilarityMonitor
    from lightloop.training.gradients import make_gradient
    from lightloop.training.optimizers import make_optimizer
    from lightloop.training.trainer import Trainer, TrainSettings

    data = load_dataset("digits")
    proc = make_bench((64, 64, 10), a0=a0, error_readout="single")
    mon = GradientSimilarityMonitor(proc, data.x_test, one_hot(data.y_test, 10), every=10)
    Trainer(proc, make_gradient("pump_probe"), make_optimizer("adam", 5e-3),
            TrainSettings(epochs=3, batch_size=32, seed=seed, progress=False), hooks=[mon]).fit(data)
    return 1 - mon.mean("S_all"), 1 - mon.mean("S_slope")


def test_approximation_error_grows_with_optical_depth_and_levels(make_bench):
    """Fig. 3 shape: 1 - S (pump-probe vs exact gradient over all weights, during training) grows with a0, levels off."""
    a0s = [0.3, 1.0, 3.0, 10.0, 30.0, 60.0]
    err = np.array([_similarity_during_training(make_bench, a0)[0] for a0 in a0s])
    assert np.all(np.diff(err) > 0), err                       # grows with a0 ...
    assert err[0] < 1e-3, err                                  # exact in the linear limit
    assert 0.05 < err[3] < 0.2, err                            # ~10% at a0 = 10
    assert err[3] / err[2] > 3 and err[5] / err[4] < 1.6, err  # ... and levels off (growth 5x per 3->10, ~1.2x per 30->60)
    assert err.max() < 0.3, err


def test_gradient_similarity_is_one_when_the_probe_is_exact(make_bench):
    """a0 = 0: T = g' = 1, so pump-probe and exact gradients coincide (S = 1); exact vs itself is 1 at any a0."""
    from lightloop.training.diagnostics import gradient_similarity
    from lightloop.training.gradients import make_gradient
    from lightloop.training.losses import make_loss

    rng = np.random.default_rng(3)
    x, t = rng.random((40, 12)).astype(np.float32), np.eye(5, dtype=np.float32)[rng.integers(0, 5, 40)]
    for a0, method in ((0.0, "pump_probe"), (10.0, "exact")):
        proc = make_bench((12, 8, 5), a0=a0, error_readout="single")
        params = proc.init_parameters(rng, 0.3)
        m, r = make_gradient(method), make_gradient("exact")
        m.loss = r.loss = make_loss("mse")
        s = gradient_similarity(proc, params, x, t, m, r)
        assert s["S_all"] == pytest.approx(1.0, abs=1e-6)
        assert s["S_layer"][-1] == pytest.approx(1.0, abs=1e-6)
    s = gradient_similarity(proc, params, x, t, make_gradient("pump_probe"), r)
    assert s["S_all"] < 1 - 1e-4                               # a0 = 10: the probe is not the exact slope


def test_vapor_density_and_optical_depth_inversion():
    # Steck: Rb vapour pressure at 25 C is ~3.9e-7 torr (5.2e-5 Pa) -> n ~ 1.3e16 m^-3
    assert rb_number_density_m3(298.15) == pytest.approx(1.26e16, rel=0.1)
    cell = VaporCellPhysics(1.3e-17)
    for a0 in [0.5, 10.0, 30.0]:
        t = cell.temperature_for(a0)
        assert cell.optical_depth(t) == pytest.approx(a0, rel=1e-8)
    assert cell.optical_depth(360) > cell.optical_depth(350)  # denser vapour when hotter
