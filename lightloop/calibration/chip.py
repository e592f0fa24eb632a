"""Calibration routines of the integrated MZI-mesh chip, acting only through the HAL (ChipProcessor).

Routines:

  phase_shifters   EVERY heater of every unitary mesh layer (theta and phi of all MZIs, the output screen
                   if present): phi0 and P_pi, plus the thermal crosstalk coefficients of the designed
                   pattern and both coupler errors of every MZI, from coherent-receiver sweeps. Default
                   for rectangular layers without a screen above 8 ports (and ps_method: progressive, the
                   choice for real chips whose phi0 spread over the period): the PROGRESSIVE engine
                   (lightloop.calibration.chip_progressive: one column's heaters per sweep, Gram matrices
                   W(ref)^H W(s) that cancel the uncalibrated downstream columns, local batched fits column
                   by column; no prior on phi0, so offsets uniform on [0, 2 pi) work; scales to N = 64).
                   Otherwise (N <= 8, triangular, screens; ps_method: global) ONE global model fit
                   (lightloop.calibration.mesh_fit), reliable only for small N and phi0 near 0.
  crosstalk        independent tap-based check of the crosstalk rows of the FIRST-column theta heaters
                   (neighbour held at a fixed power, the victim's fringe shift on a tap monitor).
  mesh             (lightloop.calibration.chip_mesh) programs Haar-random unitaries from the calibrated
                   model and by sequential nulling, and reports the fidelity measured through the HAL.

Why a global model fit (phase_shifters, ps_method: global): a phi (external) shifter changes only the relative phase of the
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
Options: ps_method progressive | global | columns (experimental, lightloop.calibration.chip_columns);
ps_passes (progressive, default 8: the most passes; it stops after 3 once no phi0 moves 3 mrad),
ps_mixing_background (progressive, default on: passes 2+ fit the all-off sweeps jointly with sweeps over a
background putting every theta at pi/2 or 3 pi/2 - without it an MZI left at bar / cross by the off background
hides its neighbours' crosstalk, e.g. every MZI when phi0 is near 0).

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

from lightloop.calibration.base import (
    CalibrationResult,
    Counts,
    RunContext,
    register_routine,
)
from lightloop.calibration.chip_columns import (
    initial_state,
    refine_columns,
    state_residual,
)
from lightloop.calibration.chip_common import (  # noqa: F401
    GAUGE,
    HeaterBankRoutine,
    TWO_PI,
    _all_sources_dark,
    _is_chip,
    _ps_options,
    _theta_background,
    _wrap,
    _xt_pattern,
    channel_report,
    layer_model,
)
from lightloop.calibration.chip_crosstalk import (
    CrosstalkRoutine,
    first_column_plan,
    fit_cosine,
)
from lightloop.calibration.chip_progressive import calibrate_progressive
from lightloop.calibration.mesh_fit import (
    SweepData,
    fit_mesh,
    heater_groups,
    measure_sweeps,
)
from lightloop.errors import CalibrationError
from lightloop.physics.mzi import mesh_heater_positions, thermal_crosstalk

__all__ = ["CrosstalkRoutine", "PhaseShifterRoutine", "first_column_plan", "fit_cosine", "layer_model"]


def default_method(proc: Any) -> str:
    """phase_shifters engine by default: progressive for rectangular layers without a screen above 8 ports (the
    global fit is impractical there), else the global fit (at default spreads and N <= 8 it is ~2x more accurate:
    phi0 1.7 vs 3.8 mrad, couplers 0.6 vs 1.4 mrad; but it fails when phi0 is uniform - pass ps_method: progressive)."""
    ok = all(getattr(l, "mesh", "") == "rectangular" and not getattr(l, "screen", False) and l.n_ports > 8
             for l in proc.layers)
    return "progressive" if ok else "global"   # global falls back to progressive when its fit fails (run)


def _progressive_fits(proc: Any) -> bool:
    """Whether every layer is one the progressive engine calibrates (rectangular, no output screen)."""
    return all(getattr(l, "mesh", "") == "rectangular" and not getattr(l, "screen", False) for l in proc.layers)


def progressive_threshold(n_ports: int) -> float:
    """Default residual limit (fraction of the field rms) of the progressive engine for an N-port layer: 0.05 up to
    16 ports, growing as (N / 16)^0.7 above - the unmodelled per-waveguide loss spread alone leaves a residual that
    grows with the mesh depth (the twin's exact parameters at 3x spread: 0.012, 0.021, 0.033, 0.053 at N = 8, 16,
    32, 64), so the limit stays ~2.4x that floor instead of failing every deep mesh (0.13 at N = 64)."""
    return 0.05 * max(1.0, n_ports / 16) ** 0.7


@register_routine
class PhaseShifterRoutine(HeaterBankRoutine):
    """phi0, P_pi of every heater, crosstalk and coupler errors of every unitary layer (global or progressive fit)."""

    name = "phase_shifters"
    version = "0.2"
    order = 10
    summary = "phi0 and P_pi of every heater + crosstalk + coupler errors (receiver sweeps; global or progressive fit)"

    def applicable(self, proc: Any) -> str | None:
        why = _is_chip(proc)
        if why:
            return why
        if any(not hasattr(l, "out_receiver") for l in proc.layers):
            return "phase_shifters needs coherent receivers at the layer outputs"
        return None

    def run(self, proc: Any, ctx: RunContext) -> CalibrationResult:
        method = ctx.options.get("ps_method", default_method(proc))
        if method in ("columns", "progressive"):
            return self._run_columns(proc, ctx, method)
        res = self._run_global(proc, ctx)
        if res.ok or "ps_method" in ctx.options or not _progressive_fits(proc):
            return res
        # the default global fit starts near phi0 = 0: on a chip whose offsets sit anywhere in the period it fails
        # its residual check; the progressive engine needs no prior, so it takes over (its result is recorded)
        first = "; ".join(res.problems)[:300] or "residual check"
        out = self._run_columns(proc, ctx, "progressive")
        out.meta["fallback"] = f"global fit failed ({first}); progressive engine used"
        out.counts = Counts(acquisitions=out.counts.acquisitions + res.counts.acquisitions,
                            frames=out.counts.frames + res.counts.frames, writes=out.counts.writes + res.counts.writes)
        out.seconds += res.seconds
        return out

    def _run_global(self, proc: Any, ctx: RunContext) -> CalibrationResult:
        """The global model fit of every layer (mesh_fit); fails when the start is far from the truth."""
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

    def _run_columns(self, proc: Any, ctx: RunContext, method: str = "columns") -> CalibrationResult:
        """State-based engines: progressive (default for rectangular layers, lightloop.calibration.chip_progressive)
        or EXPERIMENTAL columns (data-driven start + column-wise refinement, lightloop.calibration.chip_columns)."""
        res, t0 = self.new_result(proc), time.perf_counter()
        steps, threshold, sigma_max, xt_sigma_max = _ps_options(ctx)
        if method == "progressive":                                               # phi0 sd limit = its tolerance
            sigma_max = float(ctx.options.get("ps_sigma_max_rad", 0.02))
        max_sweeps = int(ctx.options.get("ps_max_sweeps", 12))
        global_max_n = int(ctx.options.get("ps_global_max_n", 0))        # global LM polish up to this N
        steps_p, passes = int(ctx.options.get("ps_steps", 8)), int(ctx.options.get("ps_passes", 8))
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
            rows, cols, vals = _xt_pattern(cal)
            big = np.abs(vals) >= 0.01                       # designed couplings >= 1 % (graded ones)
            qual = None
            if method == "progressive":
                threshold = float(ctx.options.get("ps_fit_threshold", progressive_threshold(lay.n_ports)))
            if method == "progressive":
                st, pd, qual = calibrate_progressive(lay, model0, (rows, cols, vals), ctx, steps=steps_p, passes=passes,
                                                     desc=f"phase_shifters layer {li}",
                                                     remeasure=bool(ctx.options.get("ps_mixing_background", True)))
                acq, writes, t_init = acq + pd.acquisitions, writes + pd.writes, 0.0
                m_all, p_all = pd.m_raw, pd.p_raw
                groups = [[int(f) + kd * k for f in mem] for _, kd, mem, _ in pd.groups]
                grp, polished = np.repeat(np.arange(len(groups)), 2), False
            else:
                # far-apart heaters are swept together (one kind per group: theta or phi); without a designed
                # crosstalk matrix the mesh geometry (heaters within 3 pitches) decides who is a neighbour
                pattern = cal.crosstalk if cal.crosstalk is not None else thermal_crosstalk(
                    mesh_heater_positions(layout, out_phase=False), 1.0)
                groups = heater_groups(pattern, h, kinds=np.arange(h) >= k)
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
            q = group_nrms[grp_of] if qual is None else np.array([qual.get(c, (np.inf,))[0] for c in range(h)])
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
                "passes": passes if qual is not None else 2, "method": ("progressive (column windows of W(ref)^-1 W(s))" if qual is not None
                                                                        else "data-driven start + column-wise refinement")
                + (" + global" if polished else ""),
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

