"""Calibration routines of the integrated MZI-mesh chip, acting only through the HAL (ChipProcessor).

Routines:

  phase_shifters   EVERY heater of every unitary mesh layer (theta and phi of all MZIs, the output screen
                   if present): phi0 and P_pi, plus the thermal crosstalk coefficients of the designed
                   pattern and both coupler errors of every MZI, from ONE global model fit
                   (lightloop.calibration.mesh_fit) of coherent-receiver sweeps.
  crosstalk        independent tap-based check of the crosstalk rows of the FIRST-column theta heaters
                   (neighbour held at a fixed power, the victim's fringe shift on a tap monitor).
  mesh             (lightloop.calibration.chip_mesh) programs Haar-random unitaries from the calibrated
                   model and by sequential nulling, and reports the fidelity measured through the HAL.

Why a global model fit (phase_shifters): a phi (external) shifter changes only the relative phase of the
light at an MZI's inputs, so its offset is visible only through interference with light that crossed
other, uncalibrated shifters; column-by-column sweeps must route light through earlier columns and
inherit their errors, and the rectangular mesh's taps (one per shifter, on top arms) do not see every
dropped port. Measuring the whole complex matrix M = diag(g_out) U diag(g_in) on the output coherent
receivers (reference-LO interferometer) while every heater is swept, and fitting one physical model of
the mesh to all acquisitions, identifies every offset, P_pi, crosstalk coefficient and coupler error at
once, with no error propagation from column to column; the fit is float64 Levenberg-Marquardt with
analytic Jacobians, a continuation over the sweep range and restarts from jittered guesses. The sweeps run
over a background with every theta heater at pi/2 (by the current estimate); if the first fit leaves a
designed coupling >= 1 % with a relative uncertainty above 8 % (or a phi0 above 10 mrad) - an MZI that
the nominal background left near bar or cross hides its neighbours - the layer is measured and fitted
once more with the background from the first fit (ps_max_passes, default 2).

Known state: every routine first closes the forward gate, writes a zero input pattern (no batch of an earlier
forward pass stays on the modulators) and darkens every injector and adjoint source unconditionally
(_all_sources_dark), so a calibration after any forward pass equals one on a fresh processor.
Option ps_method: columns runs the experimental column-wise engine (lightloop.calibration.chip_columns).

Gauge (what is identifiable): the injectors' phases push exactly through the mesh into the phi offsets
(MZI (m, m+1) sees phi + psi_m - psi_{m+1}) and an output diagonal; the output phases are absorbed by the
receivers' complex gains (free when the layer has no screen; with a screen the receivers are the phase
reference and the screen offsets are receiver-referenced). So phi offsets are INJECTOR-REFERENCED
(the injector is the only phase reference at a hidden layer's inputs); theta offsets, P_pi, crosstalk
and couplers are gauge-invariant. The grader (chip_report) compares in the same gauge.

Tap scheme (crosstalk, first_column_plan): the forward source is dark; the layer's input injector lights
only the TOP input of the MZIs under test. An MZI with one lit input sends to its outputs powers
A +- B cos(theta) with B > 0 whatever its coupler errors, read on a tap of the next column that sees that
output alone; I = a + s b cos(phi0 + P / P_pi) is fitted with restarts (fit_cosine).

P and R: the fits identify V^2 / (R P_pi); the bank keeps its nominal R and receives the P_pi that
reproduces the measured phase per volt^2 (so the product R P_pi is what is calibrated and graded), and
crosstalk coefficients are the effective C_ij R_i / R_j the bank needs to compensate.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from lightloop.calibration.base import CalibrationResult, Counts, Routine, RunContext, register_routine
from lightloop.calibration.chip_columns import initial_state, refine_columns, state_residual
from lightloop.calibration.mesh_fit import SweepData, fit_mesh, heater_groups, measure_sweeps
from lightloop.calibration.mesh_model import MeshModel
from lightloop.errors import CalibrationError
from lightloop.physics.mzi import mesh_heater_positions, mesh_layout, thermal_crosstalk

__all__ = ["PhaseShifterRoutine", "CrosstalkRoutine", "first_column_plan", "fit_cosine", "layer_model"]

TWO_PI = 2 * np.pi


def _is_chip(proc: Any) -> str | None:
    layers = getattr(proc, "layers", None)
    if not layers or not all(hasattr(l, "bank") and hasattr(l, "monitor") and hasattr(l, "injector") for l in layers):
        return "not an integrated chip processor (needs mesh layers with heater banks, tap monitors, injectors)"
    if any(getattr(l, "kind", "") != "unitary" for l in layers):
        return "phase_shifters supports 'unitary' mesh layers only"
    return None


def first_column_plan(n: int, mesh: str, crosstalk: Any) -> list[list[tuple[int, int, int, int]]]:
    """Groups of (theta channel, input mode, tap channel, sign) for the first-column MZIs of a mesh.

    Within a group the heaters have no designed crosstalk coupling and every tap sees one MZI only."""
    lay = mesh_layout(n, mesh)
    k = lay.n_mzi
    if lay.n_columns < 2:
        return []
    c0 = [int(m) for m in lay.columns[0]]
    off1 = int(lay.offsets[1]) if hasattr(lay, "offsets") else len(c0)
    c1 = {int(m): off1 + i for i, m in enumerate(lay.columns[1])}   # top mode -> flat MZI index
    items = []
    for i, m in enumerate(c0):
        if m + 1 in c1:
            items.append((i, m, k + c1[m + 1], +1, None))          # phi tap of next MZI: bottom output
        elif m in c1:
            items.append((i, m, k + c1[m], -1, None))              # phi tap: top output
        elif m - 1 in c1:
            items.append((i, m, c1[m - 1], -1, m - 1))             # theta tap: top output, mode m-1 dark
    xt = None
    if crosstalk is not None:
        from scipy import sparse

        xt = sparse.csr_matrix(crosstalk)
    groups: list[list[tuple[int, int, int, int, int | None]]] = []
    for it in items:
        placed = False
        for g in groups:
            lit = {o[1] for o in g} | {o[1] + 1 for o in g}
            if it[4] is not None and it[4] in lit:
                continue
            if any(o[4] is not None and o[4] in (it[1], it[1] + 1) for o in g):
                continue
            if xt is None:
                continue                                             # unknown coupling: one at a time
            if any(xt[it[0], o[0]] != 0 or xt[o[0], it[0]] != 0 for o in g):
                continue
            g.append(it)
            placed = True
            break
        if not placed:
            groups.append([it])
    return [[(a, b, c, d) for a, b, c, d, _ in g] for g in groups]


def fit_cosine(p: NDArray, y: NDArray, sign: int, p_pi0: float, rng: np.random.Generator,
               threshold: float = 0.02, tries: int = 8) -> tuple[dict[str, float], bool]:
    """Fit y = a + sign b cos(phi0 + p / p_pi) (b > 0) in float64; restarts from new guesses until the rms
    residual over the data half-range is <= threshold (and b, p_pi are plausible)."""
    p = np.asarray(p, np.float64)
    y = np.asarray(y, np.float64)
    s = float(sign)
    a0, b0 = 0.5 * (y.max() + y.min()), 0.5 * (y.max() - y.min()) or 1.0
    best = None
    for t in range(tries):
        # starting guesses: nominal slope (then spread +-20 %), phi0 from a grid of 8 values
        q = p_pi0 * (1.0 if t == 0 else float(rng.uniform(0.8, 1.25)))
        ph = TWO_PI * t / tries if t else 0.0
        x0 = np.array([a0, b0, ph, np.log(q)])

        def resid(x: NDArray) -> NDArray:
            return x[0] + s * x[1] * np.cos(x[2] + p / np.exp(x[3])) - y

        r = least_squares(resid, x0, method="lm", x_scale="jac", max_nfev=2000)
        x = r.x.copy()
        if x[1] < 0:
            x[1], x[2] = -x[1], x[2] + np.pi
        rms = float(np.sqrt(np.mean(r.fun ** 2)))
        q_rel = rms / max(b0, 1e-30)          # residual against the measured fringe half-range
        # a plausible fringe: amplitude not beyond the data range, P_pi within 0.5 - 2 x the prior value
        if not (x[1] <= 2 * b0 and 0.5 <= np.exp(x[3]) / p_pi0 <= 2.0):
            q_rel = np.inf
        if best is None or q_rel < best[1]:
            best = (x, q_rel)
        if q_rel <= threshold:
            break
    x, q_rel = best
    q_rel = float(q_rel) if np.isfinite(q_rel) else float("inf")
    out = {"a": float(x[0]), "b": float(x[1]), "phi0": float(np.mod(x[2], TWO_PI)), "p_pi_w": float(np.exp(x[3])),
           "rms_over_range": float(q_rel), "restarts": t}
    return out, q_rel <= threshold


def _all_sources_dark(proc: Any) -> None:
    """The known optical state every routine starts from, whatever ran before (a forward pass of any batch,
    an interrupted gradient): forward gate closed, input modulators at a zero pattern (no batch left on
    them), every injector and adjoint source dark - written unconditionally, not from the roles' flags."""
    src = proc.source
    src.port.set_enabled(False)
    src.enabled = False
    src.port.write_fields(np.zeros((1, src.n_ports), src.cdtype))
    for lay in proc.layers:
        for inj in (lay.injector, lay.adjoint_source):
            inj.port.write_fields(None)
            inj.active = False


def _theta_background(st: Any, p_max: NDArray, k: int) -> NDArray:
    """Heater powers (W) putting every theta heater at pi/2 by the estimate st (crosstalk included), phi at 0."""
    p = np.zeros(st.phi0.size)
    for _ in range(6):
        other = (st.drive(p[None])[0] - p)[:k]
        p[:k] = np.mod(np.pi / 2 - st.phi0[:k] - other / st.p_pi[:k], TWO_PI) * st.p_pi[:k]
    return np.minimum(p, 0.95 * p_max)


def layer_model(lay: Any) -> MeshModel:
    """The HAL's model of a unitary layer: calibrated couplers if present, else ideal; nominal loss."""
    eta_total = float(lay.detector_gain) ** -0.5
    lay_out = mesh_layout(lay.n_ports, lay.mesh)
    eta = eta_total ** (1.0 / max(lay_out.n_columns, 1))
    m = MeshModel.nominal(lay.n_ports, lay.mesh, eta, bool(lay.screen))
    if getattr(lay, "couplers", None) is not None:
        m.alpha1, m.alpha2 = np.asarray(lay.couplers[0], np.float64), np.asarray(lay.couplers[1], np.float64)
    return m


def _xt_pattern(cal: Any) -> tuple[NDArray, NDArray, NDArray]:
    """Off-diagonal entries (rows, cols, values) of the bank's designed crosstalk matrix."""
    if cal.crosstalk is None:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
    from scipy import sparse

    c = sparse.coo_matrix(cal.crosstalk)
    off = c.row != c.col
    return c.row[off].astype(np.intp), c.col[off].astype(np.intp), c.data[off].astype(np.float64)


#: what the phase_shifters fit can and cannot determine (recorded with every result)
GAUGE = ("phi offsets referenced to the layer injectors' phases; output phases absorbed by the receivers (free "
         "without a screen); theta offsets, R P_pi, crosstalk, couplers invariant")


def _ps_options(ctx: RunContext) -> tuple[int, float, float, float]:
    """(sweep steps, fit-residual threshold, max phi0 sd (rad), max relative crosstalk sd) of phase_shifters."""
    o = ctx.options
    return (int(o.get("ps_steps", 8)), float(o.get("ps_fit_threshold", 0.02)), float(o.get("ps_sigma_max_rad", 0.01)),
            float(o.get("xt_rel_sigma_max", 0.08)))   # the crosstalk sd is flagged (reported), not failed


def channel_report(res: CalibrationResult, li: int, phi0: NDArray, p_pi: NDArray, sigma_phi0: NDArray,
                   sigma_p_pi_rel: NDArray, grp_of: NDArray, q: NDArray, threshold: float, sigma_max: float,
                   how: str = "") -> dict[str, dict[str, Any]]:
    """Per-heater fit record {channel: phi0 (rad), P_pi (W/rad), uncertainties, group residual, ok}; a channel whose
    residual or phi0 uncertainty is above its limit fails the result."""
    per = {}
    for ch in range(len(phi0)):
        ok = bool(q[ch] <= threshold and sigma_phi0[ch] <= sigma_max)
        per[str(ch)] = {"phi0": float(phi0[ch]), "p_pi_w": float(p_pi[ch]), "sigma_phi0_rad": float(sigma_phi0[ch]),
                        "sigma_p_pi_rel": float(sigma_p_pi_rel[ch]), "group": int(grp_of[ch]),
                        "group_rms_over_rms": float(q[ch]), "ok": ok}
        if not ok:
            res.fail(f"layer {li} channel {ch}: residual {q[ch]:.3g} of the field rms (threshold {threshold}) or phi0 "
                     f"uncertainty {sigma_phi0[ch]:.3g} rad (max {sigma_max}){how}")
    return per


@register_routine
class PhaseShifterRoutine(Routine):
    """phi0, P_pi of every heater, crosstalk and coupler errors of every unitary layer (global model fit)."""

    name = "phase_shifters"
    version = "0.2"
    order = 10
    summary = "phi0 and P_pi of every heater + crosstalk + coupler errors (coherent-receiver sweeps, global fit)"

    def applicable(self, proc: Any) -> str | None:
        why = _is_chip(proc)
        if why:
            return why
        if any(not hasattr(l, "out_receiver") for l in proc.layers):
            return "phase_shifters needs coherent receivers at the layer outputs"
        return None

    def instruments(self, proc: Any) -> dict[str, str]:
        return {f"layer{i}.bank": l.bank.name for i, l in enumerate(proc.layers)}

    def layout(self, proc: Any) -> dict[str, Any]:
        return {"ports": [int(l.n_ports) for l in proc.layers], "mesh": [l.mesh for l in proc.layers],
                "channels": [int(l.bank.n_channels) for l in proc.layers]}

    def run(self, proc: Any, ctx: RunContext) -> CalibrationResult:
        if ctx.options.get("ps_method", "global") == "columns":
            return self._run_columns(proc, ctx)
        res, t0 = self.new_result(proc), time.perf_counter()
        steps, threshold, sigma_max, xt_sigma_max = _ps_options(ctx)
        tries = int(ctx.options.get("ps_tries", 3))
        max_iter = int(ctx.options.get("ps_max_iter", 40))
        max_passes = int(ctx.options.get("ps_max_passes", 2))
        rng = ctx.rng(11)
        acq = writes = 0
        _all_sources_dark(proc)
        res.meta["layers"] = {}
        res.meta["gauge"] = GAUGE
        for li, lay in enumerate(proc.layers):
            bank, cal = lay.bank, lay.bank.cal
            model0 = layer_model(lay)
            k = model0.layout.n_mzi
            # far-apart heaters are swept together; without a designed crosstalk matrix the mesh geometry
            # (heaters within 3 pitches) decides who is a neighbour
            pattern = cal.crosstalk if cal.crosstalk is not None else thermal_crosstalk(
                mesh_heater_positions(model0.layout, out_phase=bool(lay.screen)), 1.0)
            groups = heater_groups(pattern, bank.n_channels)
            rows, cols, vals = _xt_pattern(cal)
            big = np.abs(vals) >= 0.01                       # designed couplings >= 1 % (graded ones)
            phi0, p_pi, xt = cal.phi0, cal.p_pi_w, vals
            n_pass = 0
            for n_pass in range(1, max_passes + 1):
                # background: theta heaters at pi/2 by the present estimate (every MZI mixes, so every phi
                # shifter is seen); pass 2 re-measures with the background refined by the pass-1 fit
                bg = np.zeros(bank.n_channels)
                bg[:k] = np.minimum(np.mod(np.pi / 2 - phi0[:k], 2 * np.pi) * p_pi[:k], 0.5 * bank.p_max_w[:k])
                data = measure_sweeps(lay, groups, steps, ctx, f"phase_shifters layer {li} pass {n_pass}", [bg])
                acq += data.acquisitions
                writes += data.writes
                fit = fit_mesh(model0, data, phi0, p_pi, rows, cols, xt, rng, threshold, tries, max_iter=max_iter)
                phi0, p_pi, xt = fit.phi0, fit.p_pi_w, fit.xt_vals
                rel_sd = fit.sigma_xt / np.maximum(np.abs(fit.xt_vals), 1e-12)
                uncertain = np.flatnonzero(big & (rel_sd > xt_sigma_max))
                if uncertain.size == 0 and fit.sigma_phi0.max() <= sigma_max:
                    break
            grp_of = np.zeros(bank.n_channels, np.intp)
            for g, members in enumerate(groups):
                grp_of[members] = g
            q = fit.group_nrms[grp_of]
            per = channel_report(res, li, fit.phi0, fit.p_pi_w, fit.sigma_phi0, fit.sigma_p_pi_rel, grp_of, q,
                                 threshold, sigma_max, f" after {fit.restarts + 1} start(s)")
            res.arrays[f"channels_{li}"] = np.arange(bank.n_channels, dtype=np.float64)
            res.arrays[f"phi0_{li}"] = fit.phi0
            res.arrays[f"p_pi_w_{li}"] = fit.p_pi_w
            res.arrays[f"fit_rms_{li}"] = q
            res.arrays[f"sigma_phi0_{li}"] = fit.sigma_phi0
            res.arrays[f"alpha_{li}"] = np.stack([fit.model.alpha1, fit.model.alpha2])
            res.arrays[f"xt_rows_{li}"] = fit.xt_rows.astype(np.float64)
            res.arrays[f"xt_cols_{li}"] = fit.xt_cols.astype(np.float64)
            res.arrays[f"xt_vals_{li}"] = fit.xt_vals
            res.arrays[f"xt_sigma_{li}"] = fit.sigma_xt
            res.arrays[f"g_out_{li}"] = np.stack([fit.g_out.real, fit.g_out.imag])
            res.arrays[f"g_in_{li}"] = fit.g_in
            res.meta["layers"][str(li)] = {
                "passes": n_pass,
                "xt_rel_sigma_max": float(rel_sd[big].max()) if big.any() else 0.0,
                "xt_uncertain": [[int(fit.xt_rows[u]), int(fit.xt_cols[u]), float(rel_sd[u])] for u in uncertain],
                "channels": per, "groups": len(groups), "steps": steps, "calibrated": int(bank.n_channels),
                "of": int(bank.n_channels), "rms_over_rms": fit.nrms, "restarts": fit.restarts,
                "iterations": fit.iterations, **fit.info}
            res.plots.append((f"phase_shifters_layer{li}", _plot_fit(fit, groups, li)))
            if fit.nrms > threshold:
                res.fail(f"layer {li}: global fit residual {fit.nrms:.3g} of the field rms above {threshold} "
                         f"after {fit.restarts + 1} start(s)")
        res.counts = Counts(acquisitions=acq, frames=acq, writes=writes)
        res.seconds = time.perf_counter() - t0
        return res

    def _run_columns(self, proc: Any, ctx: RunContext) -> CalibrationResult:
        """EXPERIMENTAL (ps_method: columns): data-driven start + column-wise refinement
        (lightloop.calibration.chip_columns); see its docstring for what does not converge yet."""
        res, t0 = self.new_result(proc), time.perf_counter()
        steps, threshold, sigma_max, xt_sigma_max = _ps_options(ctx)
        max_sweeps = int(ctx.options.get("ps_max_sweeps", 12))
        global_max_n = int(ctx.options.get("ps_global_max_n", 0))        # global LM polish up to this N
        acq = writes = 0
        _all_sources_dark(proc)
        res.meta["layers"] = {}
        res.meta["gauge"] = GAUGE
        for li, lay in enumerate(proc.layers):
            if lay.screen:
                raise CalibrationError(f"phase_shifters: layer {li} has an output phase screen; the column-wise "
                                       "calibration supports unitary layers without one")
            tl = time.perf_counter()
            bank, cal = lay.bank, lay.bank.cal
            model0 = layer_model(lay)
            layout, k = model0.layout, model0.layout.n_mzi
            h = bank.n_channels
            # far-apart heaters are swept together (one kind per group: theta or phi); without a designed
            # crosstalk matrix the mesh geometry (heaters within 3 pitches) decides who is a neighbour
            pattern = cal.crosstalk if cal.crosstalk is not None else thermal_crosstalk(
                mesh_heater_positions(layout, out_phase=False), 1.0)
            groups = heater_groups(pattern, h, kinds=np.arange(h) >= k)
            rows, cols, vals = _xt_pattern(cal)
            big = np.abs(vals) >= 0.01                       # designed couplings >= 1 % (graded ones)
            p_nom = cal.p_pi_w.copy()
            # pass 1: every heater at 0 W between sweeps -> theta heaters (|theta| is robust to the gauge)
            d1 = measure_sweeps(lay, groups, steps, ctx, f"phase_shifters layer {li} pass 1", [np.zeros(h)])
            st1 = initial_state(layout, model0.eta, d1.m, d1.powers, p_nom, rows, cols, vals, theta_only=True)
            # pass 2: theta heaters at pi/2 by the pass-1 estimate (every MZI mixes, every phi is seen)
            bg = _theta_background(st1, bank.p_max_w, k)
            d2 = measure_sweeps(lay, groups, steps, ctx, f"phase_shifters layer {li} pass 2", [bg])
            acq += d1.acquisitions + d2.acquisitions
            writes += d1.writes + d2.writes
            st = initial_state(layout, model0.eta, d2.m, d2.powers, p_nom, rows, cols, vals,
                               theta_prior=(st1.phi0[:k].copy(), st1.p_pi[:k].copy()))
            m_all, p_all = np.concatenate([d1.m, d2.m]), np.concatenate([d1.powers, d2.powers])
            grp = np.concatenate([d1.group, d2.group])
            t_init = time.perf_counter() - tl
            refine_columns(st, m_all, p_all, max_sweeps=max_sweeps)
            polished = False
            if lay.n_ports <= global_max_n:
                data = SweepData(p_all, m_all, grp, np.concatenate([d1.frac, d2.frac]), groups)
                fit = fit_mesh(st.model(), data, st.phi0, st.p_pi, st.xt_rows, st.xt_cols, st.xt_vals, ctx.rng(11),
                               threshold, 1, stages=(1.0,), max_iter=20, gains=(st.g_out, st.g_in))
                st.phi0, st.p_pi, st.xt_vals = fit.phi0, fit.p_pi_w, fit.xt_vals
                st.alpha1, st.alpha2, st.g_out, st.g_in = fit.model.alpha1, fit.model.alpha2, fit.g_out, fit.g_in
                st.sigma_phi0, st.sigma_p_pi_rel, st.sigma_xt = fit.sigma_phi0, fit.sigma_p_pi_rel, fit.sigma_xt
                polished = True
            r = state_residual(st, m_all, p_all)
            scale = float(np.sqrt(np.mean(np.abs(m_all) ** 2)))
            nrms = float(np.sqrt(np.mean(np.abs(r) ** 2))) / scale
            group_nrms = np.array([float(np.sqrt(np.mean(np.abs(r[grp == g]) ** 2))) / scale
                                   for g in range(len(groups))])
            rel_sd = st.sigma_xt / np.maximum(np.abs(st.xt_vals), 1e-12)
            uncertain = np.flatnonzero(big & (rel_sd > xt_sigma_max))
            grp_of = np.zeros(h, np.intp)
            for g, members in enumerate(groups):
                grp_of[members] = g
            q = group_nrms[grp_of]
            per = channel_report(res, li, st.phi0, st.p_pi, st.sigma_phi0, st.sigma_p_pi_rel, grp_of, q, threshold,
                                 sigma_max)
            res.arrays[f"channels_{li}"] = np.arange(h, dtype=np.float64)
            res.arrays[f"phi0_{li}"] = st.phi0.copy()
            res.arrays[f"p_pi_w_{li}"] = st.p_pi.copy()
            res.arrays[f"fit_rms_{li}"] = q
            res.arrays[f"sigma_phi0_{li}"] = st.sigma_phi0.copy()
            res.arrays[f"alpha_{li}"] = np.stack([st.alpha1, st.alpha2])
            res.arrays[f"xt_rows_{li}"] = st.xt_rows.astype(np.float64)
            res.arrays[f"xt_cols_{li}"] = st.xt_cols.astype(np.float64)
            res.arrays[f"xt_vals_{li}"] = st.xt_vals.copy()
            res.arrays[f"xt_sigma_{li}"] = st.sigma_xt.copy()
            res.arrays[f"g_out_{li}"] = np.stack([st.g_out.real, st.g_out.imag])
            res.arrays[f"g_in_{li}"] = st.g_in.copy()
            res.meta["layers"][str(li)] = {
                "passes": 2, "method": "data-driven start + column-wise refinement" + (" + global" if polished else ""),
                "xt_rel_sigma_max": float(rel_sd[big].max()) if big.any() else 0.0,
                "xt_uncertain": [[int(st.xt_rows[u]), int(st.xt_cols[u]), float(rel_sd[u])] for u in uncertain],
                "channels": per, "groups": len(groups), "steps": steps, "calibrated": int(h), "of": int(h),
                "rms_over_rms": nrms, "seconds": round(time.perf_counter() - tl, 2), "start_seconds": round(t_init, 2),
                **st.info}
            fit_view = SimpleNamespace(phi0=st.phi0, sigma_phi0=st.sigma_phi0, group_nrms=group_nrms, nrms=nrms)
            res.plots.append((f"phase_shifters_layer{li}", _plot_fit(fit_view, groups, li)))
            if nrms > threshold:
                res.fail(f"layer {li}: fit residual {nrms:.3g} of the field rms above {threshold}")
        res.counts = Counts(acquisitions=acq, frames=acq, writes=writes)
        res.seconds = time.perf_counter() - t0
        return res

    def apply(self, proc: Any, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        from scipy import sparse

        from lightloop.hal.phase_shifters import ThermoOpticCalibration

        for li, lay in enumerate(proc.layers):
            ch, phi0, p_pi = (arrays.get(f"{k}_{li}") for k in ("channels", "phi0", "p_pi_w"))
            if ch is None or phi0 is None or p_pi is None:
                continue
            ch = np.asarray(ch).astype(np.intp)
            ok = np.isfinite(phi0) & np.isfinite(p_pi) & (p_pi > 0)
            old = lay.bank.cal
            new_phi0, new_p_pi = old.phi0.copy(), old.p_pi_w.copy()
            new_phi0[ch[ok]], new_p_pi[ch[ok]] = phi0[ok], p_pi[ok]
            c = old.crosstalk
            if c is not None and f"xt_vals_{li}" in arrays:
                c = sparse.lil_matrix(c)
                for i, j, v in zip(arrays[f"xt_rows_{li}"], arrays[f"xt_cols_{li}"], arrays[f"xt_vals_{li}"]):
                    c[int(i), int(j)] = float(v)
                c = c.tocsr()
            lay.bank.cal = ThermoOpticCalibration(new_phi0, new_p_pi, old.resistance_ohm, c)
            if f"alpha_{li}" in arrays:
                lay.couplers = np.asarray(arrays[f"alpha_{li}"], np.float64).copy()


def _plot_fit(fit: Any, groups: list[list[int]], li: int) -> Any:
    """PNG drawer: fitted phi0 (+- 1 sigma) per channel and the residual of every sweep group."""
    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        ch = np.arange(fit.phi0.size)
        ax1.errorbar(ch, _wrap(fit.phi0), yerr=fit.sigma_phi0, fmt=".", ms=3)
        ax1.set(xlabel="channel [theta..., phi...]", ylabel="phi0 (rad)", title=f"layer {li}: offsets")
        ax2.bar(np.arange(len(groups)), fit.group_nrms)
        ax2.set(xlabel="sweep group", ylabel="rms residual / rms |M|", title=f"fit residual (all: {fit.nrms:.4f})")
    return draw


def _wrap(x: NDArray) -> NDArray:
    return (x + np.pi) % TWO_PI - np.pi


def _sweep(proc: Any, li: int, group: list[tuple[int, int, int, int]], powers: NDArray,
           hold: dict[int, float], ctx: RunContext, desc: str) -> NDArray:
    """Sweep the group's heaters together (equal power steps) with other heaters held at fixed volts;
    returns the group's tap readings (steps, len(group))."""
    lay = proc.layers[li]
    bank = lay.bank
    chans = np.array([g[0] for g in group])
    field = np.zeros((1, lay.n_ports), np.complex64)
    field[0, [g[1] for g in group]] = 1.0
    lay.injector.inject(field)
    taps = np.array([g[2] for g in group])
    reads = np.empty((powers.size, len(group)))
    for si, pw in enumerate(ctx.bar(powers, desc=desc, total=powers.size)):
        v = np.zeros(bank.n_channels)
        for ch, volts in hold.items():
            v[ch] = volts
        v[chans] = np.minimum(np.sqrt(pw * bank.cal.resistance_ohm[chans]), bank.v_max[chans])
        bank.set_voltages(v)
        reads[si] = np.asarray(lay.monitor.acquire(), np.float64)[taps]
    lay.injector.off()
    return reads


@register_routine
class CrosstalkRoutine(Routine):
    """Thermal crosstalk C_ij onto the first-column theta heaters: each neighbour j driven at a fixed power
    while the victims' fringes are swept; C_ij = (fitted phi0 shift) P_pi_i / P_j.

    Identifiable quantity: with V the only actuator, the shift is C_ij V_j^2 / (R_j P_pi_i); in the HAL's
    convention (nominal R, calibrated P_pi) this gives the EFFECTIVE coefficient C_ij R_i / R_j, which is
    what the bank needs to compensate; it differs from the physical C_ij by the resistance spread (~3 %).
    An independent, tap-based check of the rows phase_shifters fits for these heaters (it overwrites them with
    its own estimates); the other rows keep the values phase_shifters gave them."""

    name = "crosstalk"
    version = "0.1"
    order = 20
    summary = "tap-based check of the crosstalk onto the first-column theta heaters (neighbour driven, fringe shift)"

    def applicable(self, proc: Any) -> str | None:
        why = _is_chip(proc)
        if why:
            return why
        if all(l.bank.cal.crosstalk is None for l in proc.layers):
            return "the HAL has no designed crosstalk matrix (no neighbours to test)"
        return None

    def instruments(self, proc: Any) -> dict[str, str]:
        return {f"layer{i}.bank": l.bank.name for i, l in enumerate(proc.layers)}

    def layout(self, proc: Any) -> dict[str, Any]:
        return PhaseShifterRoutine().layout(proc)

    def run(self, proc: Any, ctx: RunContext) -> CalibrationResult:
        res, t0 = self.new_result(proc), time.perf_counter()
        steps = int(ctx.options.get("xt_steps", 24))
        threshold = float(ctx.options.get("ps_fit_threshold", 0.02))
        rng = ctx.rng(23)
        acq = writes = 0
        _all_sources_dark(proc)
        res.meta["layers"] = {}
        from scipy import sparse

        for li, lay in enumerate(proc.layers):
            bank, cal = lay.bank, lay.bank.cal
            if cal.crosstalk is None:
                continue
            design = sparse.csr_matrix(cal.crosstalk)
            rows, cols, vals = [], [], []
            plan = first_column_plan(lay.n_ports, lay.mesh, cal.crosstalk)
            for gi, group in enumerate(plan):
                chans = [g[0] for g in group]
                p_top = 0.98 * float(np.min(bank.p_max_w[chans]))
                powers = np.linspace(0.0, p_top, steps)
                base = _sweep(proc, li, group, powers, {}, ctx, f"crosstalk layer {li} group {gi} base")
                acq += steps
                writes += steps
                fits0 = [fit_cosine(powers, base[:, k], g[3], float(cal.p_pi_w[g[0]]), rng, threshold)[0]
                         for k, g in enumerate(group)]
                aggressors = sorted({int(j) for i in chans for j in design[i].indices} - set(chans))
                for j in aggressors:
                    p_j = 0.98 * float(bank.p_max_w[j])
                    v_j = float(np.sqrt(p_j * cal.resistance_ohm[j]))
                    reads = _sweep(proc, li, group, powers, {j: v_j}, ctx, f"crosstalk layer {li} aggressor {j}")
                    acq += steps
                    writes += steps
                    for k, g in enumerate(group):
                        i = g[0]
                        if design[i, j] == 0:
                            continue
                        fit, ok = fit_cosine(powers, reads[:, k], g[3], float(cal.p_pi_w[i]), rng, threshold)
                        if not ok or not np.isfinite(fits0[k]["phi0"]):
                            res.fail(f"layer {li}: crosstalk fit {j} -> {i} did not converge")
                            continue
                        shift = float(_wrap(np.array(fit["phi0"] - fits0[k]["phi0"])))
                        # the victim's own fitted slope (rad per W at nominal R) from the baseline sweep
                        rows.append(i)
                        cols.append(j)
                        vals.append(shift * fits0[k]["p_pi_w"] / p_j)
            bank.set_voltages(np.zeros(bank.n_channels))
            writes += 1
            res.arrays[f"xt_rows_{li}"] = np.asarray(rows, np.float64)
            res.arrays[f"xt_cols_{li}"] = np.asarray(cols, np.float64)
            res.arrays[f"xt_vals_{li}"] = np.asarray(vals, np.float64)
            res.meta["layers"][str(li)] = {"coefficients": len(vals), "groups": len(plan), "steps": steps,
                                           "victims": sorted({int(r) for r in rows})}
        res.counts = Counts(acquisitions=acq, frames=acq, writes=writes)
        res.meta["scope"] = "rows of the first-column theta heaters only; the others keep the phase_shifters fit"
        res.seconds = time.perf_counter() - t0
        return res

    def apply(self, proc: Any, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        from scipy import sparse

        from lightloop.hal.phase_shifters import ThermoOpticCalibration

        for li, lay in enumerate(proc.layers):
            if f"xt_vals_{li}" not in arrays or lay.bank.cal.crosstalk is None:
                continue
            c = sparse.lil_matrix(lay.bank.cal.crosstalk)
            for i, j, v in zip(arrays[f"xt_rows_{li}"], arrays[f"xt_cols_{li}"], arrays[f"xt_vals_{li}"]):
                c[int(i), int(j)] = float(v)
            old = lay.bank.cal
            lay.bank.cal = ThermoOpticCalibration(old.phi0, old.p_pi_w, old.resistance_ohm, c.tocsr())
