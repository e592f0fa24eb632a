"""physics_aware on the integrated chip (issue 16, part 1): forward measured on the chip, backward through the
calibrated mesh model (lightloop.hal.chip_model); twin refinement of the model's phase offsets from forward batches."""

from __future__ import annotations

import numpy as np
import pytest

from lightloop.errors import ConfigError
from lightloop.hal.chip_model import StackedMesh
from lightloop.hal.chip_roles import MeshLossModel
from lightloop.physics.mzi import mesh_layout
from lightloop.training.gradients import make_gradient
from test_chip import _fd_grads, batch, make_chip

QUIET = {"chip__variation__" + k: 0.0 for k in (
    "phi0_sd_rad", "p_pi_rel_sd", "resistance_rel_sd", "crosstalk_scale_sd", "crosstalk_pair_sd",
    "drift_rad_per_sqrt_s", "ring_detuning_sd", "ring_k_rel_sd", "supply_rel_sd", "gain_rel_sd", "phase_error_sd_rad")}


def _rel(a, b) -> float:
    a, b = np.concatenate([np.ravel(x) for x in a]), np.concatenate([np.ravel(x) for x in b])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _setup(seed=2, **kw):
    proc = make_chip(hidden=[4], **kw)
    rng = np.random.default_rng(seed)
    params = [rng.uniform(0, 2 * np.pi, s) for s in proc.parameter_shapes()]
    proc.program(params)
    x, t = batch(seed=seed + 1)
    return proc, params, x, t


def _pa(proc, params, x, t):
    g = make_gradient("physics_aware")
    g.check(proc)
    return g(proc, params, x, t)


@pytest.mark.parametrize("mesh", ["rectangular", "triangular"])
def test_ideal_chip_equals_adjoint_and_finite_differences(mesh):
    """Model == bench (ideal twin): the model's gradient equals the in-situ adjoint's and central differences of the
    loss measured through the processor; one forward acquisition set per step (1 activation + 1 output read)."""
    proc, params, x, t = _setup(mesh=mesh)
    r = _pa(proc, params, x, t)
    ad = make_gradient("adjoint")(proc, params, x, t)
    fd = _fd_grads(proc, params, x, t)
    assert [g.shape for g in r.grads] == [g.shape for g in fd]
    assert _rel(r.grads, ad.grads) < 1e-6 and _rel(r.grads, fd) < 1e-6
    assert r.loss == pytest.approx(ad.loss, rel=1e-12)
    assert r.measurements == 2 and ad.measurements > 5 * r.measurements
    taps = proc.forward(x)
    for pred, meas in zip(proc.model_prediction(taps), taps.pre):
        np.testing.assert_allclose(pred, meas, rtol=1e-9, atol=1e-12)


def test_coupler_error_in_the_model_changes_the_gradient():
    """A model with an injected coupler error (the bench has none) predicts the powers wrongly and its gradient leaves
    the finite differences; zero couplers are the same model as none."""
    proc, params, x, t = _setup()
    fd = _fd_grads(proc, params, x, t)
    exact = _pa(proc, params, x, t).grads
    lay = proc.layers[1]
    k = mesh_layout(lay.n_ports, lay.mesh).n_mzi
    lay.couplers = np.zeros((2, k))
    np.testing.assert_allclose(np.concatenate(_pa(proc, params, x, t).grads), np.concatenate(exact), rtol=1e-12)
    lay.couplers = 0.15 * np.random.default_rng(9).standard_normal((2, k))
    wrong = _pa(proc, params, x, t).grads
    assert _rel(wrong, fd) > 1e-2
    np.testing.assert_array_equal(wrong[1] == exact[1], False)
    taps = proc.forward(x)
    assert proc.chip_model.prediction_error([taps]) > 1e-3


def test_loss_model_with_the_bench_losses_gives_the_exact_gradient():
    """Noise-free chip whose only imperfections are couplers and uneven waveguide loss: the nominal model (uniform eta,
    no couplers) is off; a loss model holding the twin's losses and couplers (test-only truth) gives the exact
    gradient."""
    proc, params, x, t = _setup(ideal=False, noise=False, **QUIET)
    fd = _fd_grads(proc, params, x, t, h=1e-6)
    nominal = _pa(proc, params, x, t).grads
    for lay, lt in zip(proc.layers, proc.emulator.truth.layers):
        e = lt.mesh_errors[0]
        lay.loss_model = MeshLossModel(lay.mesh, e.alpha1, e.alpha2, e.eta, np.zeros(lay.bank.n_channels))
    model = _pa(proc, params, x, t).grads
    assert _rel(model, fd) < 1e-5 < 1e-3 < _rel(nominal, fd)


def _drifted_history(n_in=6, hidden=(8,), settings=3, drift_rad=0.1):
    """Ideal twin with a known phi0 drift injected into its heaters (test-only truth) and forward batches at several
    parameter settings."""
    proc = make_chip(n_in=n_in, hidden=list(hidden))
    rng = np.random.default_rng(5)
    drift = [drift_rad * rng.standard_normal(l.bank.n_channels) for l in proc.layers]
    for lt, d in zip(proc.emulator.truth.layers, drift):
        lt.heaters.drift = lt.heaters.drift + d
    proc.emulator.advance(0.0)   # the true phases follow the drift
    hist = []
    for s in range(settings):
        proc.program(proc.init_parameters(rng, 1.0))
        hist += [proc.forward(batch(n_in=n_in, b=32, seed=10 * s + b)[0]) for b in range(2)]
    return proc, drift, hist


def test_refinement_recovers_an_injected_drift_and_lowers_the_prediction_error():
    """Layer 0 (every port lit and detected) recovers the injected offsets to 1 mrad; layer 1 (2 of 8 outputs
    detected) recovers them where the data sees them (Jacobian-weighted error < 2 %) and leaves the rest near 0
    (ridge)."""
    proc, drift, hist = _drifted_history()
    cm = proc.chip_model
    out = proc.refine_model(hist)
    assert out["batches"] == 6 and out["prediction_error_before"] > 0.1
    assert out["prediction_error_after"] < 0.01 * out["prediction_error_before"]
    assert cm.prediction_error(hist) == pytest.approx(out["prediction_error_after"])
    np.testing.assert_allclose(cm.correction[0], drift[0], atol=1e-3)   # ridge pull ~0.2 mrad
    # layer 1: J (delta_fit - drift) against J drift, J by central differences of the model's prediction
    corr, s = cm.correction[1], drift[1].size
    base = [c.copy() for c in cm.correction]
    cols = []
    for j in range(s):
        d = np.zeros(s)
        d[j] = 1e-6
        pp = [np.concatenate([cm.prediction(tp, [base[0], corr + d])[1].ravel() for tp in hist[:2]])]
        pm = [np.concatenate([cm.prediction(tp, [base[0], corr - d])[1].ravel() for tp in hist[:2]])]
        cols.append((pp[0] - pm[0]) / 2e-6)
    jac = np.stack(cols, 1)
    assert np.linalg.norm(jac @ (corr - drift[1])) < 0.02 * np.linalg.norm(jac @ drift[1])
    blind = np.linalg.norm(jac, axis=0) < 1e-9 * np.linalg.norm(jac)
    assert blind.any() and np.abs(corr[blind]).max() < 1e-6


def test_refinement_makes_the_gradient_exact_again():
    """With the drift unknown the model's gradient is off; after refinement it equals the finite differences (< 1 %)."""
    proc, _, hist = _drifted_history(n_in=2, hidden=(4,), settings=3, drift_rad=0.2)
    rng = np.random.default_rng(3)
    params = [rng.uniform(0, 2 * np.pi, s) for s in proc.parameter_shapes()]
    proc.program(params)
    x, t = batch(seed=4)
    fd = _fd_grads(proc, params, x, t)
    stale = _rel(_pa(proc, params, x, t).grads, fd)
    hist.append(proc.forward(x))
    proc.refine_model(hist)
    assert _rel(_pa(proc, params, x, t).grads, fd) < 1e-2 < 0.1 < stale


def test_refinement_of_a_noisy_chip_lowers_the_prediction_error():
    """Realistic twin (phi0 unknown to the nominal calibration, noise, crosstalk errors), 16-port meshes: one refit from
    4 batches lowers the model's prediction error at least 3x (its time is a figure, not a test: out["seconds"])."""
    proc = make_chip(n_in=4, hidden=[16], ideal=False, precision="single")
    rng = np.random.default_rng(1)
    proc.program(proc.init_parameters(rng, 1.0))
    hist = [proc.forward(batch(n_in=4, b=32, seed=s)[0]) for s in range(4)]
    out = proc.refine_model(hist)
    assert out["prediction_error_after"] < out["prediction_error_before"] / 3
    assert out["seconds"] > 0
    assert proc.refine_model([]) == {"batches": 0.0}


@pytest.mark.parametrize("screen", [False, True])
@pytest.mark.parametrize("mesh", ["rectangular", "triangular"])
def test_stacked_mesh_equals_the_mesh_layer(mesh, screen):
    """The refit's vectorised propagation (H settings at once) gives MeshLayer's fields and shifter records exactly,
    with coupler errors, uneven loss, phase offsets and an optional screen."""
    rng = np.random.default_rng(0)
    n = 7
    lay = mesh_layout(n, mesh)
    s = 2 * lay.n_mzi + (n if screen else 0)
    lm = MeshLossModel(mesh, 0.05 * rng.standard_normal(lay.n_mzi), 0.05 * rng.standard_normal(lay.n_mzi),
                       0.9 + 0.1 * rng.random((lay.n_columns, n)), 0.1 * rng.standard_normal(s), screen)
    ph = rng.uniform(0, 6, (3, s))
    x = rng.standard_normal((3, 5, n)) + 1j * rng.standard_normal((3, 5, n))
    st = StackedMesh(lm, ph)
    z, fu = st.forward(x, True)
    v, fv = st.backward(x, True)
    for h in range(3):
        m = lm.layer(ph[h])
        want = (*m.forward(x[h], record=True), *m.backward(x[h], record=True))
        for got, ref in zip((z[h], fu[h], v[h], fv[h]), want):
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)


def test_svd_layers_and_bad_layouts_are_one_line_config_errors():
    """'svd' layers have no calibrated model in the HAL; couplers of the wrong shape, taps without the encoded ports:
    one-line ConfigErrors naming what was expected."""
    proc = make_chip(layer="svd", hidden=[4])
    params = proc.init_parameters(np.random.default_rng(0), 1.0)
    proc.program(params)
    x, t = batch()
    with pytest.raises(ConfigError, match=r"layer kind 'svd' has no calibrated model.*expected 'unitary'") as e:
        _pa(proc, params, x, t)
    assert "\n" not in str(e.value)
    before = proc.measurements
    with pytest.raises(ConfigError, match=r"layer kind 'svd'"):   # refused by check(), before any acquisition
        make_gradient("physics_aware").check(proc)
    assert proc.measurements == before

    proc, params, x, t = _setup()
    proc.layers[0].couplers = np.zeros((2, 3))
    with pytest.raises(ConfigError, match=r"layer 0: couplers has shape \(2, 3\); expected \(2, 6\)") as e:
        _pa(proc, params, x, t)
    assert "\n" not in str(e.value)
    proc.layers[0].couplers = None
    taps = proc.forward(x)
    taps.extra.pop("ports")
    with pytest.raises(ConfigError, match=r"no extra\['ports'\]"):
        proc.model_gradients(taps, taps.output - t)
    with pytest.raises(ConfigError, match=r"delta_out has shape \(12, 3\); expected \(12, 2\)"):
        proc.model_gradients(proc.forward(x), np.zeros((12, 3)))


def test_cli_ideal_chip_trains_like_the_adjoint(tmp_path):
    """`lightloop train --gradient physics_aware` on the ideal chip twin follows the in-situ adjoint's run (same losses
    per epoch) with 2 acquisitions per step instead of 13, and reports a model prediction error ~0."""
    import json

    from lightloop.cli import main

    runs = {}
    for g in ("physics_aware", "adjoint"):
        out = tmp_path / g
        assert main(["train", "--config", "lightloop/lab_configs/integrated_chip.yaml", "--gradient", g, "--ideal",
                     "--epochs", "1", "--batch-size", "64", "--no-progress", "--out", str(out)]) == 0
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        runs[g] = (json.loads((out / "summary.json").read_text()), [r["train_loss"] for r in rows])
    (pa, pa_loss), (ad, ad_loss) = runs["physics_aware"], runs["adjoint"]
    assert pa["measurements_per_step"] == 2.0 and ad["measurements_per_step"] == 13.0
    np.testing.assert_allclose(pa_loss, ad_loss, rtol=1e-4)
    assert pa["test_accuracy"] == pytest.approx(ad["test_accuracy"], abs=0.01) and pa["test_accuracy"] > 0.8
    assert pa["prediction_error"]["last"] < 1e-5
