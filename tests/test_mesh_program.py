"""Programming unitaries on meshes with coupler errors (lightloop.calibration.mesh_program); no twin needed.

The model is a random MeshModel with 0.06 rad coupler errors (the twin's 3x default spread); fidelity is
gauge_fidelity (output phases free, unit-normalised) of the model's own matrix.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from lightloop.calibration.mesh_model import MeshModel, gauge_fidelity
from lightloop.calibration.mesh_program import (_fidelity_and_grad, _solve_mzi, corrected_decomposition,
                                                ideal_decomposition, program_unitary)
from lightloop.errors import ConfigError
from lightloop.physics.mzi import mesh_layout, mzi_transfer, random_unitary


def _model(n, sd, seed, kind="rectangular", screen=False, eta=0.99):
    rng = np.random.default_rng(seed)
    lay = mesh_layout(n, kind)
    return MeshModel(lay, sd * rng.standard_normal(lay.n_mzi), sd * rng.standard_normal(lay.n_mzi), eta, screen)


def _loss(m, u, x):
    return 1.0 - gauge_fidelity(u, m.matrix(x), m.screen, unit=True)


@pytest.mark.parametrize("n", [8, 16])
def test_fidelity_above_0p999_and_far_better_than_the_ideal_decomposition(n):
    for seed in range(3):
        m = _model(n, 0.06, 100 * n + seed)
        u = random_unitary(n, np.random.default_rng(seed))
        x, f = program_unitary(m, u, max_iter=200)
        loss_ideal = _loss(m, u, ideal_decomposition(m, u))
        assert abs(f - (1 - _loss(m, u, x))) < 1e-12                  # returned figure = the model's own
        assert f >= 0.999, (n, seed, f)
        assert 1 - f < 0.05 * loss_ideal, (n, seed, f, loss_ideal)     # >= 20x less infidelity
        assert loss_ideal > 0.01                                      # the errors really matter
        assert x.shape == (m.n_channels,) and np.all((x >= 0) & (x < 2 * np.pi))


def test_n32_in_seconds_and_the_correction_alone_helps_at_n64():
    m = _model(32, 0.06, 7)
    u = random_unitary(32, np.random.default_rng(7))
    t0 = time.perf_counter()
    _, f = program_unitary(m, u, max_iter=200)
    assert f > 0.999 and time.perf_counter() - t0 < 20.0
    m64 = _model(64, 0.06, 8)
    u64 = random_unitary(64, np.random.default_rng(8))
    loss_c, loss_i = _loss(m64, u64, corrected_decomposition(m64, u64)), _loss(m64, u64, ideal_decomposition(m64, u64))
    assert loss_i > 0.1 and loss_c < 0.03, (loss_i, loss_c)           # the O(N^2) step alone: > 0.97 at N = 64


@pytest.mark.parametrize("kind", ["rectangular", "triangular"])
@pytest.mark.parametrize("screen", [False, True])
def test_ideal_couplers_reproduce_the_target_exactly(kind, screen):
    m = _model(9, 0.0, 1, kind, screen, eta=0.97)
    u = random_unitary(9, np.random.default_rng(3))
    x = corrected_decomposition(m, u)
    assert _loss(m, u, x) < 1e-12
    if screen:      # with a screen the matrix itself (loss scale aside) is the target
        assert np.abs(m.matrix(x) / 0.97 ** m.layout.n_columns - u).max() < 1e-10
    x2, f = program_unitary(m, u)
    assert f > 1 - 1e-12


def test_screen_and_triangular_with_coupler_errors():
    for kind, screen in (("rectangular", True), ("triangular", False), ("triangular", True)):
        m = _model(10, 0.06, 5, kind, screen)
        u = random_unitary(10, np.random.default_rng(5))
        x, f = program_unitary(m, u, max_iter=200)
        assert f > 0.999 and f > 1 - 0.1 * _loss(m, u, ideal_decomposition(m, u)), (kind, screen, f)
        assert x.shape == (m.n_channels,)


def test_single_mzi_solve_is_exact_when_reachable_and_best_achievable_when_not():
    rng = np.random.default_rng(0)
    a1, a2 = 0.06 * rng.standard_normal(200), 0.06 * rng.standard_normal(200)
    # reachable targets: ideal MZIs away from cross and bar, random input and output phases
    th = rng.uniform(0.5, np.pi - 0.5, 200)
    tgt = np.exp(1j * rng.uniform(0, 6, (200, 2)))[:, :, None] * mzi_transfer(th, rng.uniform(0, 6, 200))
    theta, phi, out = _solve_mzi(a1, a2, tgt)
    real = mzi_transfer(theta, phi, a1, a2)
    assert np.abs(real - np.exp(1j * out)[:, :, None] * tgt).max() < 1e-12
    # a cross-state target (|T00| = 0) is out of reach with alpha1 + alpha2 != 0: the nearest reachable MZI
    a1, a2 = np.array([0.05, 0.1, np.pi / 4]), np.array([0.04, -0.02, np.pi / 4])   # last: degenerate couplers
    cross = np.repeat(mzi_transfer(0.0, 0.0)[None], 3, 0)
    theta, phi, out = _solve_mzi(a1, a2, cross)
    assert np.all(np.isfinite(theta)) and np.all(np.isfinite(phi)) and np.all(np.isfinite(out))
    t00 = np.abs(mzi_transfer(theta, phi, a1, a2)[:, 0, 0]) ** 2
    assert np.allclose(t00[:2], np.sin(a1[:2] + a2[:2]) ** 2)         # the reachable minimum
    m = _model(8, 0.06, 2)
    x, f = program_unitary(m, np.eye(8)[::-1].astype(complex), max_iter=100)       # every MZI near cross: no NaN
    assert np.all(np.isfinite(x)) and 0.9 < f <= 1.0


def test_analytic_gradient_matches_finite_differences():
    for kind in ("rectangular", "triangular"):
        m = _model(6, 0.06, 4, kind)
        u = random_unitary(6, np.random.default_rng(4))
        x = np.random.default_rng(5).uniform(0, 2 * np.pi, 2 * m.layout.n_mzi)
        f, g = _fidelity_and_grad(m, u, x)
        assert abs(f - gauge_fidelity(u, m.matrix(x), unit=True)) < 1e-12
        eye = np.eye(x.size) * 1e-6
        fd = np.array([(_fidelity_and_grad(m, u, x + e)[0] - _fidelity_and_grad(m, u, x - e)[0]) / 2e-6 for e in eye])
        assert np.abs(g - fd).max() < 1e-8


def test_bad_targets_give_one_line_errors():
    m = MeshModel.nominal(4, "rectangular")
    with pytest.raises(ConfigError, match=r"mesh_program.py: u_target: expected shape \(4, 4\)"):
        program_unitary(m, np.eye(3))
    with pytest.raises(ConfigError, match="u_target: expected a unitary matrix"):
        program_unitary(m, np.ones((4, 4)))
    with pytest.raises(ValueError):
        corrected_decomposition(m, np.full((4, 4), np.nan))
