"""Chip calibration (lightloop.calibration.chip) recovers the twin's hidden heater truth through the HAL alone.

Scope under test: the `phase_shifters` routine calibrates the theta (internal) heaters of the first MZI
column of every mesh layer; tolerance phi0 <= 0.02 rad, R * P_pi <= 1 % (max over calibrated channels).
"""

from __future__ import annotations

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.calibration.base import RunContext, get_routine, routines_for
from lightloop.calibration.chip import first_column_plan, fit_cosine
from lightloop.calibration.report import TOLERANCES, twin_truth_report
from lightloop.calibration.runner import calibrate
from lightloop.config import load_config
from lightloop.physics.mzi import mesh_layout

from conftest import REPO

CONFIG = REPO / "lightloop" / "lab_configs" / "integrated_chip.yaml"


def _chip(seed, n_in=6, n_out=4, mesh="rectangular", hidden=None):
    cfg = load_config(CONFIG)
    cfg.processor.mesh = mesh
    ov = BuildOverrides(hidden=hidden, extra={"chip_seed": seed, "noise_seed": seed + 1000})
    return build_processor(cfg, n_in, n_out, ov)


def _wrap(x):
    return (x + np.pi) % (2 * np.pi) - np.pi


@pytest.mark.parametrize("seed,n_in,mesh", [(1, 6, "rectangular"), (2, 6, "rectangular"), (3, 5, "rectangular"),
                                            (4, 6, "triangular"), (5, 5, "triangular")])
def test_phase_shifters_recover_hidden_phi0_and_p_pi(seed, n_in, mesh):
    proc = _chip(seed, n_in=n_in, mesh=mesh)
    emu = proc.emulator
    assert "phase_shifters" in [r.name for r in routines_for(proc)]
    before = []
    for li, lay in enumerate(proc.layers):
        h = emu.truth.layers[li].heaters
        before.append(np.abs(_wrap(lay.bank.cal.phi0 - h.phi0)))
    outcomes = calibrate(proc, ["phase_shifters"], RunContext(seed=seed))
    assert [o.status for o in outcomes] == ["ok"], [(o.routine, o.reason) for o in outcomes]
    res = outcomes[0].result
    assert res.ok and not res.problems
    rep = twin_truth_report(proc, outcomes)["phase_shifters"]
    assert all(rep["within_tolerance"].values()), rep
    assert TOLERANCES["phase_shifters.phi0_max_abs_rad"] == 0.02
    # independent check straight against the hidden truth (not through the grader)
    n_cal = 0
    for li, lay in enumerate(proc.layers):
        h = emu.truth.layers[li].heaters
        sel = np.zeros(lay.bank.n_channels, bool)
        sel[res.arrays[f"channels_{li}"].astype(int)] = True
        k = lay.bank.n_channels // 2
        n_first = int(np.count_nonzero(mesh_layout(lay.n_ports, mesh).col == 0))
        assert sel.sum() == n_first and np.all(np.flatnonzero(sel) < k)   # the first-column theta heaters
        err = np.abs(_wrap(lay.bank.cal.phi0 - (h.phi0 + h.drift)))[sel]
        assert err.max() < 0.02, err
        assert np.abs(lay.bank.cal.p_pi_w * lay.bank.cal.resistance_ohm / (h.p_pi_w * h.resistance_ohm) - 1)[sel].max() < 0.01
        # the HAL's phase prediction now matches the true phase for these heaters
        assert before[li][sel].max() > 0.05            # the nominal calibration really was off
        n_cal += int(sel.sum())
    assert n_cal > 0
    # parallel sweeps: fewer acquisitions than one sweep per heater
    steps = res.meta["layers"]["0"]["steps"]
    assert res.counts.acquisitions == steps * sum(m["groups"] for m in res.meta["layers"].values())
    assert res.counts.acquisitions <= steps * n_cal
    if mesh == "rectangular":   # several first-column MZIs per layer: swept together
        assert res.counts.acquisitions < steps * n_cal


def test_heaters_programmed_after_calibration_reach_the_true_phase():
    proc = _chip(7)
    emu = proc.emulator
    calibrate(proc, ["phase_shifters"], RunContext(seed=7))
    lay = proc.layers[0]
    lay_plan = first_column_plan(lay.n_ports, lay.mesh, lay.bank.cal.crosstalk)
    chans = [g[0] for grp in lay_plan for g in grp]
    # one heater at a time (no crosstalk from the others): the HAL's predicted phase vs the realised one
    for ch in chans:
        for extra in (0.5, 2.0, 5.0):
            v = np.zeros(lay.bank.n_channels)
            v[ch] = np.sqrt(extra * lay.bank.cal.p_pi_w[ch] * lay.bank.cal.resistance_ohm[ch])
            lay.bank.set_voltages(v)
            predicted = lay.bank.read_phases()[ch]
            assert abs(_wrap(emu.true_phases(0)[ch] - predicted)) < 0.03, (ch, extra)
    assert len(chans) == 4


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


def test_routine_is_not_applicable_to_free_space(free_space_cfg):
    from lightloop.bench import build_processor as bp

    proc = bp(free_space_cfg, 8, 3, BuildOverrides(hidden=[6]))
    assert get_routine("phase_shifters").applicable(proc) is not None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crosstalk_onto_first_column_heaters_within_10_percent(seed):
    proc = _chip(seed)
    emu = proc.emulator
    outcomes = calibrate(proc, ["phase_shifters", "crosstalk"], RunContext(seed=seed))
    assert [o.status for o in outcomes] == ["ok", "ok"], [(o.routine, o.reason) for o in outcomes]
    res = outcomes[1].result
    assert res.ok, res.problems
    rep = twin_truth_report(proc, outcomes)["crosstalk"]
    assert rep["significant"] >= 20 and rep["within_tolerance"]["significant_max_rel"], rep
    # independent check of the applied HAL matrix against the hidden one (effective coefficient C_ij R_i / R_j)
    for li, lay in enumerate(proc.layers):
        h = emu.truth.layers[li].heaters
        c_true, c_hal = h.crosstalk.tocsr(), lay.bank.cal.crosstalk.tocsr()
        for i, j in zip(res.arrays[f"xt_rows_{li}"].astype(int), res.arrays[f"xt_cols_{li}"].astype(int)):
            t = c_true[i, j] * h.resistance_ohm[i] / h.resistance_ohm[j]
            if abs(c_true[i, j]) >= 0.01:
                assert abs(c_hal[i, j] / t - 1) < 0.10, (li, i, j, c_hal[i, j], t)
    # the bank still solves phases with the measured matrix
    proc.program(proc.init_parameters(np.random.default_rng(0), 1.0))


def test_results_round_trip_through_the_store(tmp_path):
    from lightloop.calibration import CalibrationStore, load_into_processor

    store = CalibrationStore(tmp_path)
    proc = _chip(4)
    out = calibrate(proc, ["all"], RunContext(seed=4), store=store, bench="chip")
    assert [(o.routine, o.status) for o in out] == [("phase_shifters", "ok"), ("crosstalk", "ok")]
    fresh = _chip(4)
    load_into_processor(fresh, store, "chip")
    for a, b in zip(proc.layers, fresh.layers):
        assert np.array_equal(a.bank.cal.phi0, b.bank.cal.phi0)
        assert np.array_equal(a.bank.cal.p_pi_w, b.bank.cal.p_pi_w)
        assert abs(a.bank.cal.crosstalk - b.bank.cal.crosstalk).max() == 0
