"""Chip calibration (lightloop.calibration.chip) recovers the twin's hidden heater truth through the HAL alone.

`phase_shifters` calibrates EVERY heater of every unitary layer from one global model fit of coherent-receiver
sweeps. Tolerances (max over channels): phi0 <= 0.02 rad (phi shifters in the injector-referenced gauge),
R * P_pi <= 1 %, crosstalk coefficients |C| >= 0.01 within 10 %, coupler errors within 5 mrad.
Single-layer chips (hidden=[]) keep the tests fast; the mesh has n_in + 2 bias ports.
"""

from __future__ import annotations

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.calibration.base import RunContext, get_routine, routines_for
from lightloop.calibration.chip import first_column_plan, fit_cosine
from lightloop.calibration.mesh_model import input_gauge_phi_shift
from lightloop.calibration.report import TOLERANCES, twin_truth_report
from lightloop.calibration.runner import calibrate, select_routines
from lightloop.config import load_config
from lightloop.errors import CalibrationError
from lightloop.physics.mzi import mesh_layout

from conftest import REPO

CONFIG = REPO / "lightloop" / "lab_configs" / "integrated_chip.yaml"


def _chip(seed, n_in=6, n_out=4, mesh="rectangular", hidden=()):
    cfg = load_config(CONFIG)
    cfg.processor.mesh = mesh
    ov = BuildOverrides(hidden=None if hidden is None else list(hidden),
                        extra={"chip_seed": seed, "noise_seed": seed + 1000})
    return build_processor(cfg, n_in, n_out, ov)


def _wrap(x):
    return (x + np.pi) % (2 * np.pi) - np.pi


def _truth_in_gauge(proc, li):
    """Hidden phi0 with the phi shifters shifted by the injectors' phases pushed through the mesh."""
    lay, lt = proc.layers[li], proc.emulator.truth.layers[li]
    layout = mesh_layout(lay.n_ports, lay.mesh)
    k = layout.n_mzi
    exp = (lt.heaters.phi0 + lt.heaters.drift).copy()
    exp[k: 2 * k] += input_gauge_phi_shift(layout, np.angle(lt.injector))[0]
    return exp


@pytest.mark.parametrize("seed,n_in,mesh", [(1, 6, "rectangular"), (3, 5, "rectangular"), (4, 4, "triangular")])
def test_phase_shifters_recover_every_heater(seed, n_in, mesh):
    proc = _chip(seed, n_in=n_in, mesh=mesh)
    emu = proc.emulator
    assert {"phase_shifters", "crosstalk", "mesh"} <= {r.name for r in routines_for(proc)}
    lay = proc.layers[0]
    h = emu.truth.layers[0].heaters
    exp = _truth_in_gauge(proc, 0)
    before = np.abs(_wrap(lay.bank.cal.phi0 - exp))
    outcomes = calibrate(proc, ["phase_shifters"], RunContext(seed=seed))
    assert [o.status for o in outcomes] == ["ok"], [(o.routine, o.reason) for o in outcomes]
    res = outcomes[0].result
    rep = twin_truth_report(proc, outcomes)["phase_shifters"]
    assert all(rep["within_tolerance"].values()), rep
    assert TOLERANCES["phase_shifters.phi0_max_abs_rad"] == 0.02
    # independent check straight against the hidden truth (not through the grader)
    n_ch = lay.bank.n_channels
    assert res.arrays["channels_0"].size == n_ch == 2 * mesh_layout(lay.n_ports, mesh).n_mzi   # every heater
    err = np.abs(_wrap(lay.bank.cal.phi0 - exp))
    assert err.max() < 0.02, err
    assert before.max() > 0.3                    # the nominal calibration really was off
    rp = lay.bank.cal.p_pi_w * lay.bank.cal.resistance_ohm / (h.p_pi_w * h.resistance_ohm)
    assert np.abs(rp - 1).max() < 0.01
    me = emu.truth.layers[0].mesh_errors[0]
    assert np.abs(lay.couplers[0] - me.alpha1).max() < 0.005 and np.abs(lay.couplers[1] - me.alpha2).max() < 0.005
    c_true, c_hal = h.crosstalk.tocsr(), lay.bank.cal.crosstalk.tocsr()
    n_sig = 0
    for i, j in zip(res.arrays["xt_rows_0"].astype(int), res.arrays["xt_cols_0"].astype(int)):
        if abs(c_true[i, j]) >= 0.01:
            t = c_true[i, j] * h.resistance_ohm[i] / h.resistance_ohm[j]
            assert abs(c_hal[i, j] / t - 1) < 0.10, (i, j, c_hal[i, j], t)
            n_sig += 1
    assert n_sig > 2 * n_ch
    # parallel sweeps: one acquisition per step per group of far-apart heaters
    meta = res.meta["layers"]["0"]
    if meta.get("method", "").startswith("progressive"):   # default for rectangular meshes: every group holds
        lay_ = mesh_layout(lay.n_ports, mesh)                 # heaters of one kind of one column, 12 modes apart
        assert res.counts.acquisitions == meta["groups"] * meta["steps"]
        assert meta["groups"] <= meta["backgrounds"] * 2 * 6 * lay_.n_columns
    else:                                            # global fit: far fewer groups than heaters
        assert res.counts.acquisitions == meta["groups"] * meta["steps"] * meta["passes"] and meta["passes"] in (1, 2)
        assert meta["groups"] < n_ch / 2


def test_theta_heaters_programmed_after_calibration_reach_the_true_phase():
    proc = _chip(7)
    emu = proc.emulator
    calibrate(proc, ["phase_shifters"], RunContext(seed=7))
    lay = proc.layers[0]
    k = lay.bank.n_channels // 2
    rng = np.random.default_rng(0)
    # all heaters at once through the bank (crosstalk compensated): theta phases are gauge-invariant
    for _ in range(3):
        want = rng.uniform(0, 2 * np.pi, lay.bank.n_channels)
        lay.bank.set_phases(want)
        got = emu.true_phases(0)
        assert np.abs(_wrap(got[:k] - want[:k])).max() < 0.03


def test_fit_restarts_from_new_guesses_and_flags_bad_fits():
    rng = np.random.default_rng(0)
    p = np.linspace(0, 0.08, 48)
    p_pi = 0.0072
    y = 0.5 + 0.4 * np.cos(2.5 + p / p_pi)
    fit, ok = fit_cosine(p, y, +1, 0.0079577, rng)
    assert ok and abs(_wrap(fit["phi0"] - 2.5)) < 1e-6 and abs(fit["p_pi_w"] / p_pi - 1) < 1e-6
    fit, ok = fit_cosine(p, 0.5 - 0.4 * np.cos(1.0 + p / p_pi), -1, 0.0079577, rng)
    assert ok and abs(_wrap(fit["phi0"] - 1.0)) < 1e-6
    noise, ok = fit_cosine(p, rng.standard_normal(p.size), +1, 0.0079577, rng, tries=3)
    assert not ok and noise["restarts"] == 2


def test_chip_routines_refuse_free_space_with_one_line(free_space_cfg):
    proc = build_processor(free_space_cfg, 8, 3, BuildOverrides(hidden=[6]))
    for name in ("phase_shifters", "crosstalk", "mesh"):
        why = get_routine(name).applicable(proc)
        assert why and "\n" not in why
        with pytest.raises(CalibrationError) as exc:
            select_routines(proc, [name])
        assert "not an integrated chip processor" in str(exc.value) and "\n" not in str(exc.value)


def test_crosstalk_tap_check_of_first_column_within_10_percent():
    proc = _chip(2)
    emu = proc.emulator
    outcomes = calibrate(proc, ["phase_shifters", "crosstalk"], RunContext(seed=2))
    assert [o.status for o in outcomes] == ["ok", "ok"], [(o.routine, o.reason) for o in outcomes]
    res = outcomes[1].result
    rep = twin_truth_report(proc, outcomes)["crosstalk"]
    assert rep["significant"] >= 10 and rep["within_tolerance"]["significant_max_rel"], rep
    lay, h = proc.layers[0], emu.truth.layers[0].heaters
    c_true, c_hal = h.crosstalk.tocsr(), lay.bank.cal.crosstalk.tocsr()
    plan = first_column_plan(lay.n_ports, lay.mesh, lay.bank.cal.crosstalk)
    victims = {g[0] for grp in plan for g in grp}
    for i, j in zip(res.arrays["xt_rows_0"].astype(int), res.arrays["xt_cols_0"].astype(int)):
        assert i in victims
        if abs(c_true[i, j]) >= 0.01:
            assert abs(c_hal[i, j] / (c_true[i, j] * h.resistance_ohm[i] / h.resistance_ohm[j]) - 1) < 0.10
    proc.program(proc.init_parameters(np.random.default_rng(0), 1.0))   # the bank still solves phases


def test_results_round_trip_through_the_store(tmp_path):
    from lightloop.calibration import CalibrationStore, load_into_processor

    store = CalibrationStore(tmp_path)
    proc = _chip(4, n_in=3)
    out = calibrate(proc, ["all"], RunContext(seed=4, options={"mesh_targets": 1}), store=store, bench="chip")
    ours = [(o.routine, o.status) for o in out if o.routine in ("phase_shifters", "crosstalk", "mesh")]
    assert ours == [("phase_shifters", "ok"), ("crosstalk", "ok"), ("mesh", "ok")]
    assert all(o.status == "ok" for o in out), [(o.routine, o.reason) for o in out]
    fresh = _chip(4, n_in=3)
    assert fresh.layers[0].couplers is None
    load_into_processor(fresh, store, "chip")
    for a, b in zip(proc.layers, fresh.layers):
        assert np.array_equal(a.bank.cal.phi0, b.bank.cal.phi0)
        assert np.array_equal(a.bank.cal.p_pi_w, b.bank.cal.p_pi_w)
        assert abs(a.bank.cal.crosstalk - b.bank.cal.crosstalk).max() == 0
        assert np.array_equal(a.couplers, b.couplers)
