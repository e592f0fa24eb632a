"""Readout calibration (lightloop.calibration.chip_readout) makes the in-situ adjoint gradient exact on an
imperfect chip: receivers, injectors, adjoint sources, tap monitors, photodiode and slope gains measured
through the HAL against the heater-calibrated mesh model, then used by the ChipProcessor's adjoint.

One calibrated 2 -> 4 -> 2 chip (every imperfection on, noise and drift off, complex128) is shared by the
tests (module fixture, ~5-8 s): chip seed 2, whose uneven per-waveguide loss left 1.3 % of error before the
readout fitted a loss-aware mesh model (lightloop.calibration.chip_losses) and the processor added the model's
time-reversal bias (ChipProcessor._loss_bias); with it the error is ~6e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from lightloop.bench import BuildOverrides, build_processor
from lightloop.calibration.base import RunContext, routines_for
from lightloop.calibration.chip_report import GRADERS
from lightloop.calibration.runner import calibrate
from lightloop.config import parse_config
from lightloop.errors import SafetyLimitError
from lightloop.hal.chip_roles import MeshLossModel
from lightloop.training.datasets import one_hot
from lightloop.training.gradients import make_gradient, mse_loss

from conftest import REPO

CONFIG = REPO / "lightloop" / "lab_configs" / "integrated_chip.yaml"


def _chip(seed: int = 2, hidden: int = 4):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["processor"]["hidden"] = [hidden]
    raw["processor"]["chip"]["noise"] = {k: 0.0 for k in raw["processor"]["chip"]["noise"]}
    raw["processor"]["chip"]["variation"]["drift_rad_per_sqrt_s"] = 0.0
    cfg = parse_config(raw, str(CONFIG))
    return build_processor(cfg, 2, 2, BuildOverrides(extra={"chip_seed": seed, "precision": "double"}))


def _fd(proc, params, x, t, h=1e-4):
    out = []
    for l, p in enumerate(params):
        for j in range(p.size):
            vals = []
            for sgn in (1, -1):
                ps = [q.copy() for q in params]
                ps[l][j] += sgn * h
                proc.program(ps)
                vals.append(mse_loss(proc.forward(x).output, t))
            out.append((vals[0] - vals[1]) / (2 * h))
    proc.program(params)
    return np.array(out)


def _relerr(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def calibrated():
    """Heater-calibrated chip; gradients before and after `readout`; finite differences of the HAL loss."""
    proc = _chip()
    assert "readout" in {r.name for r in routines_for(proc)}
    heaters = calibrate(proc, ["phase_shifters", "crosstalk"], RunContext(seed=2))
    assert all(o.status == "ok" for o in heaters)
    rng = np.random.default_rng(1)
    x, t = rng.uniform(0, 1, (8, 2)), one_hot(rng.integers(0, 2, 8), 2)
    params = [rng.uniform(0, 2 * np.pi, s) for s in proc.parameter_shapes()]
    proc.program(params)
    g_heaters = np.concatenate(make_gradient("adjoint")(proc, params, x, t).grads)
    out = calibrate(proc, ["readout"], RunContext(seed=2))
    proc.program(params)
    g_readout = np.concatenate(make_gradient("adjoint")(proc, params, x, t).grads)
    models = [lay.loss_model for lay in proc.layers]
    for lay in proc.layers:
        lay.loss_model = None
    g_no_loss = np.concatenate(make_gradient("adjoint")(proc, params, x, t).grads)
    for lay, m in zip(proc.layers, models):
        lay.loss_model = m
    return {"proc": proc, "outcome": out[0], "params": params, "x": x, "t": t, "g_heaters": g_heaters,
            "g_readout": g_readout, "g_no_loss": g_no_loss, "fd": _fd(proc, params, x, t)}


def test_adjoint_on_calibrated_imperfect_chip_matches_finite_differences_within_1_percent(calibrated):
    c = calibrated
    assert c["outcome"].status == "ok", c["outcome"].result.problems
    err_before, err_after = _relerr(c["g_heaters"], c["fd"]), _relerr(c["g_readout"], c["fd"])
    assert err_before > 0.05                    # receiver / injector / tap / photodiode errors were in the path
    assert err_after < 0.01                     # issue 13 target
    assert err_after < 1e-3                     # in fact exact up to the finite-difference error (~6e-5)
    # the uneven waveguide loss is what the loss model removes: without its bias term the error is ~0.6 % here
    # (1.3 % on the benchmark's batch), >= 10x the error with it
    err_no_loss = _relerr(c["g_no_loss"], c["fd"])
    assert err_no_loss > 0.003 and err_no_loss > 10 * err_after
    # layer by layer: the hidden layer's error (g_in, activation frame, slope gain) is calibrated too
    n0 = c["params"][0].size
    assert _relerr(c["g_readout"][:n0], c["fd"][:n0]) < 0.01
    assert _relerr(c["g_readout"][n0:], c["fd"][n0:]) < 0.01


def test_loss_bias_vanishes_for_uniform_loss_and_follows_the_fitted_uneven_loss(calibrated):
    proc = calibrated["proc"]
    proc.program(calibrated["params"])
    lay = proc.layers[0]
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, lay.n_ports)) + 1j * rng.standard_normal((6, lay.n_ports))
    s = rng.standard_normal((6, lay.n_ports)) + 1j * rng.standard_normal((6, lay.n_ports))
    fitted = lay.loss_model
    assert fitted is not None and np.std(np.log(fitted.eta)) > 1e-4       # the readout found uneven loss
    b = proc._loss_bias(lay, z, s)
    scale = np.linalg.norm(-2 * np.imag(np.sum(z * s, 0)))
    assert 1e-3 * scale < np.linalg.norm(b) < 0.1 * scale                 # a small, first-order correction
    # uniform loss (the nominal eta in every waveguide): time reversal is exact, the bias is zero
    lay.loss_model = MeshLossModel(fitted.mesh, fitted.alpha1, fitted.alpha2, np.full_like(fitted.eta, proc.eta),
                                   fitted.phase_offset, fitted.screen)
    try:
        assert np.linalg.norm(proc._loss_bias(lay, z, s)) < 1e-12 * scale
    finally:
        lay.loss_model = fitted
    # the routine graded against the twin: the fitted uneven loss correlates with the true one
    grade = GRADERS["readout"][0](proc, calibrated["outcome"].result)
    assert all(grade["layers"][k]["loss_correlation"] > 0.7 for k in grade["layers"])


def test_readout_recovers_the_gradient_products_of_the_twin_truth(calibrated):
    proc, res = calibrated["proc"], calibrated["outcome"].result
    grader, tol = GRADERS["readout"]
    grade = grader(proc, res)
    for figure, limit in tol.items():
        assert grade[figure] <= limit, (figure, grade[figure], limit)
    # the free gauge is fixed: geometric-mean |injector gain| = 1 on layer 0; the receivers really were off
    t_inj = res.arrays["t_inj_0"][0] + 1j * res.arrays["t_inj_0"][1]
    assert np.exp(np.mean(np.log(np.abs(t_inj)))) == pytest.approx(1.0, abs=1e-9)
    truth = proc.emulator.truth.layers[0]
    assert np.max(np.abs(truth.out_receiver - 1)) > 0.01
    for li in range(len(proc.layers)):
        meta = res.meta["layers"][str(li)]
        assert meta["forward_rms_rel"] < 0.02 and meta["backward_rms_rel"] < 0.02 and meta["taps_rms_rel"] < 0.02


def test_uncalibrated_roles_are_unity_and_compensation_is_checked_before_writing():
    proc = _chip(seed=3, hidden=3)
    lay = proc.layers[0]
    assert np.all(lay.injector.gain == 1) and np.all(lay.out_receiver.gain == 1) and lay.power_gain is None
    fields = np.zeros((1, lay.n_ports), np.complex128)
    fields[0, 0] = 0.9 * lay.injector.max_field
    lay.injector.set_gain(np.full(lay.n_ports, 0.5))      # pre-compensation doubles the commanded field
    writes = []
    lay.injector.port.write_fields = lambda f: writes.append(f)  # type: ignore[method-assign]
    with pytest.raises(SafetyLimitError, match="exceeds max_field"):
        lay.injector.inject(fields)
    assert writes == []
    lay.injector.inject(fields / 2)
    np.testing.assert_allclose(writes[0], fields, rtol=1e-12)


def test_averaging_multiplies_the_adjoint_reads_and_keeps_noise_free_results():
    proc = _chip(seed=3, hidden=3)
    rng = np.random.default_rng(0)
    params = [rng.uniform(0, 2 * np.pi, s) for s in proc.parameter_shapes()]
    proc.program(params)
    x, t = rng.uniform(0, 1, (4, 2)), one_hot(rng.integers(0, 2, 4), 2)
    r1 = make_gradient("adjoint")(proc, params, x, t)
    proc.averages = 3
    r3 = make_gradient("adjoint")(proc, params, x, t)
    np.testing.assert_allclose(np.concatenate(r3.grads), np.concatenate(r1.grads), rtol=1e-9, atol=1e-12)
    fwd = len(proc.activations) + 1
    assert r3.measurements - fwd == 3 * (r1.measurements - fwd)


def _synthetic_layer(n: int, seed: int, col_mean_sd: float):
    """Readout data of one imperfect layer from the mesh model itself: uneven loss with per-column means away
    from the nominal one, coupler errors, phase offsets, complex gains, tap gains; noise-free."""
    from lightloop.physics.mesh import MeshErrors, MeshLayer
    from lightloop.physics.mzi import mesh_layout

    rng = np.random.default_rng(seed)
    lo = mesh_layout(n, "rectangular")
    eta0, k = 0.99, lo.n_mzi
    le = rng.normal(0, 0.006, (lo.n_columns, n)) + rng.normal(0, col_mean_sd, (lo.n_columns, 1))
    a1, a2 = rng.normal(0, 0.03, k), rng.normal(0, 0.03, k)
    mesh = MeshLayer.build("unitary", n, "rectangular", [MeshErrors(a1, a2, eta0 * np.exp(le))],
                           dtype=np.complex128, screen=False)
    cg = lambda: rng.uniform(0.8, 1.2, n) * np.exp(1j * rng.uniform(-np.pi, np.pi, n))  # noqa: E731
    go, ti, gi, ta = cg(), cg(), cg(), cg()
    m_true = rng.uniform(0.8, 1.2, 2 * k)
    phases, zf, zb, tf, tb = [], [], [], [], []
    for _ in range(6):
        ph = rng.uniform(0, 2 * np.pi, 2 * k)
        mesh.set_phases(ph)
        u = mesh.matrix()
        phases.append(ph)
        zf.append(go[:, None] * u * ti[None, :])
        zb.append(gi[:, None] * u.T * ta[None, :])
        tf.append(m_true * np.abs(mesh.forward(np.diag(ti), record=True)[1]) ** 2)
        tb.append(m_true * np.abs(mesh.backward(np.diag(ta), record=True)[1]) ** 2)
    near = lambda g: g * (1 + 0.01 * rng.normal(size=n))  # noqa: E731 - a rank-one fit's start values
    nominal = {"g_out": near(go), "t_inj": near(ti), "g_in": near(gi), "t_adj": near(ta)}
    return lo, eta0, le, (np.zeros(k), np.zeros(k)), phases, zf, zb, tf, tb, nominal, m_true


def test_backward_taps_pin_the_column_loss_that_forward_taps_leave_to_the_tap_gains():
    """Forward taps and receivers leave each column's mean loss (and the edge columns' per-MZI loss) to the tap
    gains and sources: fitted without the adjoint-lit taps the tap gains carry the columns' loss (3x spreads,
    N = 6); with them the tap gains and the column losses are recovered (what made the 3x-spread readout at
    N = 8-16 miss its 0.02 gradient-factor tolerance by the column-mean gauge)."""
    from lightloop.calibration.chip_losses import fit_layer_losses

    lo, eta0, le, alpha, phases, zf, zb, tf, tb, start, m_true = _synthetic_layer(6, 3, 0.006)
    spreads = {}
    for name, back in (("forward", None), ("both", tb)):
        f = fit_layer_losses(6, "rectangular", False, eta0, alpha, phases, zf, zb, tf, start, 1.0,
                             jacobians=3, taps_b=back)
        r = m_true / f["m"]
        spreads[name] = float(np.max(np.abs(r / np.mean(r) - 1)))
        if back is not None:
            assert f["field_rms_rel"] < 1e-4 and f["taps_rms_rel"] < 1e-4
            fit_mean = np.log(f["eta"] / eta0).mean(1)[1:-1]   # edge columns: gauges of the sources/receivers
            true_mean = le.mean(1)[1:-1]
            d = (fit_mean - fit_mean.mean()) - (true_mean - true_mean.mean())
            assert np.max(np.abs(d)) < 1e-3 < np.max(np.abs(true_mean - true_mean.mean()))
    assert spreads["both"] < 2e-3 < spreads["forward"], spreads


@pytest.mark.parametrize("n, screen, back", [(5, True, True), (4, False, False)])
def test_loss_fit_jacobian_products_equal_finite_differences_of_the_residual(n, screen, back):
    """The loss-aware fit never forms its Jacobian: J v (forward mode) and J^T u (reverse mode) through the
    column-local propagation must equal central finite differences of the residual (every parameter block:
    waveguide loss with its gauge, couplers, heater offsets incl. the screen, the four gains, tap gains)."""
    from lightloop.calibration.chip_losses import LossProblem
    from lightloop.physics.mzi import mesh_layout

    rng = np.random.default_rng(4)
    k = mesh_layout(n, "rectangular").n_mzi
    nch = 2 * k + (n if screen else 0)
    cplx = lambda *s: rng.normal(size=s) + 1j * rng.normal(size=s)
    data = {"phases": [rng.uniform(0, 2 * np.pi, nch) for _ in range(3)], "zf": [cplx(n, n) for _ in range(3)],
            "zb": [cplx(n, n) for _ in range(3)], "taps": [rng.uniform(0, 1, (n, nch)) for _ in range(3)]}
    prob = LossProblem(n, "rectangular", screen, 0.99, (rng.normal(0, .03, k), rng.normal(0, .03, k)), amp=1.3,
                       taps_b=[rng.uniform(0, 1, (n, nch)) for _ in range(3)] if back else None, tap_weight=0.7,
                       **data)
    p = rng.normal(0, 0.05, prob.n_params)
    r = prob.linearize(p)
    jac = np.stack([prob.jvp(e) for e in np.eye(prob.n_params)], 1)
    h, fd = 1e-6, np.empty_like(jac)
    for i in range(prob.n_params):
        q = p.copy()
        q[i] += h
        rp = prob.residual(q)
        q[i] -= 2 * h
        fd[:, i] = (rp - prob.residual(q)) / (2 * h)
    prob.linearize(p)
    assert r.size == fd.shape[0] and np.abs(jac).max() > 0.1
    assert np.abs(jac - fd).max() < 1e-7 * np.abs(jac).max()
    u = rng.normal(size=r.size)
    np.testing.assert_allclose(prob.vjp(u), jac.T @ u, rtol=1e-10, atol=1e-10 * np.abs(jac.T @ u).max())
    # the gauge: a uniform shift of every waveguide's log transmission is no parameter (whole mesh with
    # backward taps, per column without)
    shift = np.zeros(prob.n_params)
    shift[: prob.ncol * n] = 1.0
    assert np.abs(prob.jvp(shift)).max() < 1e-12
