"""MZI meshes: transfer matrices, unitarity, decomposition round trips, SVD layers, in-situ gradient formula,
thermo-optic crosstalk and drift statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightloop.physics.mzi import (
    attenuator_transmission,
    decompose,
    eo_activation,
    eo_activation_slope,
    insitu_gradient,
    mesh_heater_positions,
    mesh_layout,
    mesh_matrix,
    mzi_transfer,
    random_unitary,
    svd_decompose,
    svd_matrix,
    thermal_crosstalk,
    thermo_optic_phase,
)
from lightloop.physics.mesh import MeshErrors, MeshLayer
from lightloop.simulators.thermo_optic import HeaterArrayTruth, ThermoOpticVariation

KINDS = ("rectangular", "triangular")


def test_mzi_closed_form_and_states():
    th, ph = 0.7, 1.9
    t = mzi_transfer(th, ph)
    ref = 1j * np.exp(1j * th / 2) * np.array([[np.exp(1j * ph) * np.sin(th / 2), np.cos(th / 2)],
                                                [np.exp(1j * ph) * np.cos(th / 2), -np.sin(th / 2)]])
    np.testing.assert_allclose(t, ref, atol=1e-15)
    assert abs(mzi_transfer(0.0, 0.0)[0, 0]) < 1e-15          # theta = 0: cross
    assert abs(abs(mzi_transfer(np.pi, 0.0)[0, 0]) - 1) < 1e-15  # theta = pi: bar
    np.testing.assert_allclose(abs(attenuator_transmission(np.array([0.0, np.pi / 2, np.pi]), 0.3)),
                               [0.0, np.sin(np.pi / 4), 1.0], atol=1e-15)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 3, 4, 7, 16, 64])
def test_layout_counts(kind, n):
    lay = mesh_layout(n, kind)
    assert lay.n_mzi == n * (n - 1) // 2
    expected_columns = (1 if n == 2 else n) if kind == "rectangular" else 2 * n - 3
    assert lay.n_columns == expected_columns
    for c, modes in enumerate(lay.columns):       # MZIs of a column touch disjoint mode pairs
        assert len(set(modes) | set(modes + 1)) == 2 * modes.size
        assert modes.max(initial=0) + 1 < n
        if kind == "rectangular":
            assert np.all(modes % 2 == c % 2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 17, 32, 64])
def test_decomposition_round_trip(kind, n):
    rng = np.random.default_rng(n)
    u = random_unitary(n, rng)
    p = decompose(u, kind)
    v = mesh_matrix(mesh_layout(n, kind), p.theta, p.phi, p.out_phase)
    np.testing.assert_allclose(v, u, atol=1e-10)
    # and back: phases of the rebuilt matrix rebuild it again
    p2 = decompose(v, kind)
    np.testing.assert_allclose(mesh_matrix(mesh_layout(n, kind), p2.theta, p2.phi, p2.out_phase), u, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(KINDS))
def test_decomposition_round_trip_property(n, seed, kind):
    u = random_unitary(n, np.random.default_rng(seed))
    p = decompose(u, kind)
    assert np.all((p.theta >= 0) & (p.theta <= np.pi + 1e-12))
    np.testing.assert_allclose(mesh_matrix(mesh_layout(n, kind), p.theta, p.phi, p.out_phase), u, atol=1e-10)


def test_decompose_rejects_non_unitary():
    with pytest.raises(ValueError, match="not unitary"):
        decompose(np.ones((3, 3)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [3, 8, 64])
def test_mesh_unitarity_with_coupler_errors_and_uniform_loss(kind, n):
    rng = np.random.default_rng(0)
    lay = mesh_layout(n, kind)
    th, ph = rng.uniform(0, 2 * np.pi, (2, lay.n_mzi))
    a1, a2 = 0.05 * rng.standard_normal((2, lay.n_mzi))
    u = mesh_matrix(lay, th, ph, rng.uniform(0, 6, n), a1, a2)
    np.testing.assert_allclose(u.conj().T @ u, np.eye(n), atol=1e-12)
    eta = 10 ** (-0.1 / 20)
    layer = MeshLayer.build("unitary", n, kind, [MeshErrors(a1, a2, np.full((lay.n_columns, n), eta))],
                            dtype=np.complex128)
    layer.set_phases(np.concatenate([th, ph, np.zeros(n)]))
    m = layer.matrix()
    np.testing.assert_allclose(m.conj().T @ m, eta ** (2 * lay.n_columns) * np.eye(n), atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_simulator_layer_equals_physics_matrix(kind):
    rng = np.random.default_rng(3)
    n = 9
    lay = mesh_layout(n, kind)
    err = MeshErrors(0.03 * rng.standard_normal(lay.n_mzi), 0.03 * rng.standard_normal(lay.n_mzi),
                     np.ones((lay.n_columns, n)))
    layer = MeshLayer.build("unitary", n, kind, [err], dtype=np.complex128)
    ph = rng.uniform(0, 2 * np.pi, layer.n_shifters)
    layer.set_phases(ph)
    k = lay.n_mzi
    ref = mesh_matrix(lay, ph[:k], ph[k:2 * k], ph[2 * k:], err.alpha1, err.alpha2)
    np.testing.assert_allclose(layer.matrix(), ref, atol=1e-13)
    x = rng.standard_normal((5, n)) + 1j * rng.standard_normal((5, n))
    y_rec, taps = layer.forward(x, record=True)
    np.testing.assert_allclose(y_rec, x @ ref.T, atol=1e-13)
    assert taps.shape == (5, layer.n_shifters)
    single = MeshLayer.build("unitary", n, kind, [err], dtype=np.complex64)
    single.set_phases(ph)
    assert single.forward(x.astype(np.complex64))[0].dtype == np.complex64
    np.testing.assert_allclose(single.forward(x.astype(np.complex64))[0], x @ ref.T, atol=1e-5)


@pytest.mark.parametrize("kind", ["unitary", "svd"])
def test_insitu_formula_equals_finite_differences(kind):
    """dL/dphi = -2 Im(u v) at every shifter of a lossy mesh with coupler errors (Hughes 2018)."""
    rng = np.random.default_rng(5)
    n = 5
    lay = mesh_layout(n)
    errs = [MeshErrors(0.05 * rng.standard_normal(lay.n_mzi), 0.05 * rng.standard_normal(lay.n_mzi),
                       rng.uniform(0.9, 1.0, (lay.n_columns, n))) for _ in range(2)]
    att = (0.05 * rng.standard_normal(n), 0.05 * rng.standard_normal(n), rng.uniform(0.9, 1, (2, n)))
    layer = MeshLayer.build(kind, n, errors=errs, attenuator=att, gain=1.7, dtype=np.complex128)
    ph = rng.uniform(0, 2 * np.pi, layer.n_shifters)
    x = rng.standard_normal((4, n)) + 1j * rng.standard_normal((4, n))
    w = rng.uniform(0, 1, n)

    def loss(phases):
        layer.set_phases(phases)
        y, _ = layer.forward(x)
        return float(np.sum(w * np.abs(y) ** 2))

    layer.set_phases(ph)
    y, u = layer.forward(x, record=True)
    _, v = layer.backward(w * np.conj(y), record=True)
    g = (-2 * np.imag(u * v)).sum(0)
    h = 1e-6
    fd = np.array([(loss(ph + h * e) - loss(ph - h * e)) / (2 * h) for e in np.eye(ph.size)])
    assert np.linalg.norm(g - fd) / np.linalg.norm(fd) < 1e-7
    # three intensities: |u + i conj(v)|^2 - |u|^2 - |v|^2 = -2 Im(u v)
    tr = -1j * np.conj(v)
    np.testing.assert_allclose(insitu_gradient(abs(u) ** 2, abs(tr) ** 2, abs(u + tr) ** 2).sum(0), g, atol=1e-10)


@pytest.mark.parametrize("shape", [(3, 5), (6, 6), (8, 2)])
def test_svd_layer_realises_real_matrix(shape):
    rng = np.random.default_rng(sum(shape))
    w = rng.standard_normal(shape)
    p = svd_decompose(w)
    assert p.gain == pytest.approx(max(1.0, np.linalg.svd(w, compute_uv=False)[0]))
    np.testing.assert_allclose(svd_matrix(p, shape=shape), w, atol=1e-10)
    small = 0.2 * w / np.linalg.norm(w, 2)
    assert svd_decompose(small).gain == 1.0            # passive suffices: no amplifier
    layer = MeshLayer.build("svd", p.n, gain=p.gain, dtype=np.complex128)
    layer.set_phases(p.flat())
    np.testing.assert_allclose(layer.matrix()[: shape[0], : shape[1]], w, atol=1e-10)


def test_eo_activation_slope_matches_derivative():
    p = np.linspace(0.0, 2.0, 41)
    for det, k, tmin in [(0.0, 3.0, 0.0), (-0.5, 2.0, 0.1), (0.3, 1.0, 0.2)]:
        h = 1e-6
        fd = (eo_activation(p + h, det, k, tmin, 1.3) - eo_activation(p - h, det, k, tmin, 1.3)) / (2 * h)
        ok = np.abs(det + k * p) > 1e-3
        np.testing.assert_allclose(eo_activation_slope(p, det, k, tmin, 1.3)[ok], fd[ok], rtol=1e-5, atol=1e-8)


def test_thermal_crosstalk_matrix():
    lay = mesh_layout(8)
    pos = mesh_heater_positions(lay)
    c = thermal_crosstalk(pos, 0.05).toarray()
    assert np.all(np.diag(c) == 1) and np.allclose(c, c.T)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    off = ~np.eye(len(pos), dtype=bool)
    assert np.all(c[off & (d > 3)] == 0)
    near, far = c[off & (np.abs(d - 1) < 1e-9)], c[off & (d > 2.5) & (d < 3)]
    assert near.size and far.size and near.min() > far.max()


def test_thermo_optic_phase_law():
    v = np.array([0.0, 3.0, 5.0])
    np.testing.assert_allclose(thermo_optic_phase(v, 0.1, 0.008, 1000.0), 0.1 + v**2 / 1000.0 / 0.008)


def test_crosstalk_statistics_over_chips():
    """Per-chip crosstalk strength is nominal on average, with the configured relative spread."""
    pos = mesh_heater_positions(mesh_layout(6))
    nominal = thermal_crosstalk(pos, 0.04)
    var = ThermoOpticVariation(crosstalk_scale_sd=0.2, crosstalk_pair_sd=0.0)
    nz = nominal.nonzero()
    off = nz[0] != nz[1]
    ratios = []
    for seed in range(300):
        t = HeaterArrayTruth.draw(pos, np.random.default_rng(seed), var, p_pi_w=0.008, resistance_ohm=1e3,
                                  crosstalk_nearest=0.04)
        ratios.append(np.median(np.asarray(t.crosstalk[nz[0][off], nz[1][off]]).ravel()
                                / np.asarray(nominal[nz[0][off], nz[1][off]]).ravel()))
        assert np.allclose(t.crosstalk.diagonal(), 1.0)
        assert abs(t.crosstalk - t.crosstalk.T).max() < 1e-15
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.04)
    assert np.std(ratios) == pytest.approx(0.2, rel=0.15)


def test_drift_is_a_wiener_process():
    n = 4000
    pos = np.stack([np.arange(n, dtype=float) * 10, np.zeros(n)], 1)
    sigma = 2e-3
    var = ThermoOpticVariation(0.0, 0.0, 0.0, 0.0, 0.0, sigma)
    t = HeaterArrayTruth.draw(pos, np.random.default_rng(0), var, p_pi_w=0.008, resistance_ohm=1e3,
                              crosstalk_nearest=0.0)
    rng = np.random.default_rng(1)
    t.advance(10.0, rng)
    first = t.drift.copy()
    assert first.mean() == pytest.approx(0.0, abs=4 * sigma * np.sqrt(10 / n))
    assert first.var() == pytest.approx(sigma**2 * 10, rel=0.1)
    t.advance(30.0, rng)
    assert t.drift.var() == pytest.approx(sigma**2 * 40, rel=0.1)          # variance grows linearly in time
    inc = t.drift - first
    assert abs(np.corrcoef(first, inc)[0, 1]) < 0.06                        # independent increments
    np.testing.assert_allclose(t.phases(np.zeros(n)), t.phi0 + t.drift)
