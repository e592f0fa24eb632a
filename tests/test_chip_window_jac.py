"""Analytic window Jacobian of the progressive chip calibration (chip_window_jac) against central differences."""

from __future__ import annotations

import numpy as np
import pytest

from lightloop.calibration import chip_progressive as cp
from lightloop.calibration.chip_columns import ColumnState
from lightloop.calibration.chip_window_jac import blocks, dblocks, window_jac
from lightloop.physics.mzi import mesh_heater_positions, mesh_layout, thermal_crosstalk


def _stage(n: int = 16, c: int = 4, seed: int = 0, backgrounds: int = 2, steps: int = 4):
    """A synthetic column-c stage of an n-port rectangular mesh at 3x spreads, uniform phi0, random powers."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    lay = mesh_layout(n, "rectangular")
    k = lay.n_mzi
    xt = sparse.coo_matrix(thermal_crosstalk(mesh_heater_positions(lay, out_phase=False), 0.04))
    off = xt.row != xt.col
    rows, cols = xt.row[off].astype(np.intp), xt.col[off].astype(np.intp)
    vals = xt.data[off] * (1 + 0.6 * rng.standard_normal(off.sum()))
    p_nom = np.full(2 * k, 0.025 / np.pi)
    st = ColumnState(lay, 1.0, rng.uniform(0, 2 * np.pi, 2 * k), p_nom * np.exp(0.3 * rng.standard_normal(2 * k)),
                     rows, cols, vals, 0.06 * rng.standard_normal(k), 0.06 * rng.standard_normal(k),
                     np.ones(n, complex), np.ones(n))
    groups, powers = [], []
    for b in range(backgrounds):                      # the off and a random background, like remeasure
        bg = rng.uniform(0, 3, 2 * k) * p_nom * b
        for cc in range(lay.n_columns):
            fl = np.arange(lay.offsets[cc], lay.offsets[cc + 1])
            for kind in (0, 1):
                for r in range(min(6, fl.size)):
                    idx = np.arange(len(powers), len(powers) + steps)
                    for f in np.linspace(0, 1, steps):
                        p = bg.copy()
                        p[fl[r::6] + kind * k] = f * 9 * p_nom[fl[r::6]]
                        powers.append(p)
                    groups.append((cc, kind, fl[r::6], idx))
    powers = np.array(powers)
    data = cp.ProgressiveData(powers, np.zeros((len(powers), n, n), np.complex64), groups, np.zeros((0, n, n)),
                              np.zeros((0, 2 * k)), len(powers), len(powers))
    stage = cp._Stage(st, data, c, 2, vals / p_nom[rows])
    return stage, rng


def _central(stage, x, h: float, i: int) -> np.ndarray:
    """Central difference of _resid by parameter i of every row (zero data: the Jacobian is data-free)."""
    yd = np.zeros((stage.K, stage.sett.shape[1], 10, 10), complex)
    xp, xm = x.copy(), x.copy()
    xp[:, i] += h
    xm[:, i] -= h
    return (cp._resid(stage, yd, xp) - cp._resid(stage, yd, xm)) / (2 * h)


def test_dblocks_are_the_derivatives_of_blocks():
    rng = np.random.default_rng(1)
    th, ph, a1, a2 = rng.uniform(-3, 3, (4, 5))
    d = dblocks(th, ph, a1, a2)
    h = 1e-6
    for i in range(4):
        e = np.zeros((4, 1))
        e[i] = h
        fd = (blocks(*(np.array([th, ph, a1, a2]) + e)) - blocks(*(np.array([th, ph, a1, a2]) - e))) / (2 * h)
        assert np.abs(fd - d[i]).max() < 1e-8


@pytest.mark.parametrize("c", [1, 4])
def test_window_jacobian_matches_central_differences_for_every_parameter_kind(c):
    stage, rng = _stage(c=c)
    x = stage.pack() + 0.05 * rng.standard_normal((stage.K, stage.npar)) * stage.active
    jac = window_jac(stage, x)
    jac = np.swapaxes(jac, 1, 2)
    assert jac.shape == (stage.K, 2 * stage.sett.shape[1] * 100, stage.npar)
    kinds = {"phi0": [0], "alpha1": [1], "log P_pi": [2, 3], "upstream theta0": [4, 6], "upstream alpha2": [5, 7],
             "crosstalk": list(range(8, stage.npar))}
    assert stage.active[:, 4:8].any() and stage.npar > 8          # u1 / u2 and crosstalk parameters exist
    for name, cols in kinds.items():
        for i in cols:
            h = 1e-5 if i < 8 else 1e-5 / float(stage.p.max())
            fd = _central(stage, x, h, i) * stage.active[:, i:i + 1]
            scale = np.abs(fd).max()
            assert scale > 0 or not stage.active[:, i].any(), (name, i)
            err = np.abs(jac[:, :, i] - fd).max()
            assert err <= 1e-6 * max(scale, 1e-12), (name, i, err, scale)
    assert not jac[~stage.active[:, None, :].repeat(jac.shape[1], 1)].any()   # inactive parameters: zero


def test_window_jacobian_detects_a_wrong_model_parameter():
    # the check can fail: a Jacobian at a shifted coupler (alpha1 of j off by 0.02 rad) differs from the differences
    stage, _ = _stage(c=4)
    x = stage.pack()
    xs = x.copy()
    xs[:, 1] += 0.02
    fd = _central(stage, x, 1e-5, 0)
    assert np.abs(window_jac(stage, xs)[:, 0] - fd).max() > 1e-4 * np.abs(fd).max()


def test_lm_with_the_analytic_jacobian_recovers_a_stage():
    # a stage fitted from 0.03-rad-off starts with the analytic Jacobian reaches the synthetic truth's residual
    stage, rng = _stage(c=4, seed=2)
    truth = stage.pack()
    yd = stage.model(truth)
    x0 = truth + 0.03 * rng.standard_normal(truth.shape) * stage.active
    x0[:, 8:] = truth[:, 8:]
    steps = np.full(stage.npar, 1e-6)
    x, cost, _ = cp._lm(lambda z: cp._resid(stage, yd, z), x0, stage.active, steps, 20,
                        jac=lambda z: window_jac(stage, z))
    assert cost.max() < 1e-12
    assert np.abs(x - truth)[:, :8][stage.active[:, :8]].max() < 1e-5
