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


def test_approximation_error_grows_with_optical_depth_and_levels(make_bench):
    """1 - S, S = cosine similarity of T(z) and g'(z) over the hidden fields of a network (Fig. 3e shape)."""
    rng = np.random.default_rng(0)
    x = (rng.random((500, 64)) < 0.3).astype(np.float32)
    errs = []
    for a0 in [0.3, 1, 3, 10, 30, 100]:
        proc = make_bench((64, 64, 10), a0=a0)
        proc.program(proc.init_parameters(np.random.default_rng(1), 0.2))
        z = proc.forward(x).pre[0].ravel().astype(np.float64)
        t, g = sa_transmission(z, a0), sa_slope(z, a0)
        errs.append(1 - t @ g / np.linalg.norm(t) / np.linalg.norm(g))
    errs = np.array(errs)
    assert np.all(np.diff(errs[:4]) > 0), errs  # grows with a0
    assert errs[0] < 1e-3 and errs[3] > 5e-3, errs
    assert (errs[5] - errs[4]) < 0.5 * (errs[3] - errs[1]), errs  # levels off at large a0
    assert errs.max() < 0.15, errs


def test_vapor_density_and_optical_depth_inversion():
    # Steck: Rb vapour pressure at 25 C is ~3.9e-7 torr (5.2e-5 Pa) -> n ~ 1.3e16 m^-3
    assert rb_number_density_m3(298.15) == pytest.approx(1.26e16, rel=0.1)
    cell = VaporCellPhysics(1.3e-17)
    for a0 in [0.5, 10.0, 30.0]:
        t = cell.temperature_for(a0)
        assert cell.optical_depth(t) == pytest.approx(a0, rel=1e-8)
    assert cell.optical_depth(360) > cell.optical_depth(350)  # denser vapour when hotter
