"""Calibration routines of the integrated MZI-mesh chip, acting only through the HAL (ChipProcessor).

Routines:

  phase_shifters   thermo-optic phi0 and P_pi of the INTERNAL (theta) phase shifters of the FIRST MZI
                   column of every mesh layer (see "Scope" below).
  crosstalk        thermal crosstalk C_ij onto those heaters (row i of C for every neighbour j with a
                   designed coupling): neighbour held at a fixed power, the victim's fringe shift.

Measurement (phase_shifters): the forward source is dark; the layer's input injector lights only the
TOP input of the MZIs under test (field 1, one sample). An MZI with one lit input sends to its outputs
powers A +- B cos(theta) with B > 0 whatever its coupler errors (real couplers, no phase term), so
phi0 is identifiable. The output power is read on a tap of the next column that sees that output
ALONE: the phi tap of the next MZI whose top input is the bottom output (I = a + b cos theta), or the
phi tap of the next MZI whose top input is the top output (I = a - b cos theta), or the theta tap of
the next MZI whose bottom input is the top output, when that MZI's other input is dark in the group
(I = a - b cos theta). The heater power is swept in equal steps (V = sqrt(P R)); heaters whose
designed crosstalk coupling (the bank's crosstalk matrix) is zero are swept together, each on its own
tap, so one acquisition serves a whole group. Per channel, I = a + s b cos(phi0 + P / P_pi) (s = +-1
known, b > 0) is fitted in float64 with scipy least squares, restarted from new starting guesses
until the normalised rms residual is below a threshold.

P and R: the fit identifies V^2 / (R P_pi); the bank keeps its nominal R and receives the P_pi that
reproduces the measured phase per volt^2 (so the product R P_pi is what is calibrated and graded).

Scope (NOT calibrated, left nominal): theta shifters of later columns (they need light routed through
calibrated earlier columns), every phi (external) shifter (its offset is degenerate with the phases of
the light arriving at the MZI - with the injector's phase errors for column 0), crosstalk rows of
those heaters. Mesh fidelity |tr(U_target^H U)| / N is not measured here.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from lightloop.calibration.base import CalibrationResult, Counts, Routine, RunContext, register_routine
from lightloop.calibration.report import register_grader
from lightloop.physics.mzi import mesh_layout

__all__ = ["PhaseShifterRoutine", "CrosstalkRoutine", "first_column_plan", "fit_cosine"]

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
    """Forward source dark and every layer's injector and adjoint source off."""
    proc.source.dark()
    for lay in proc.layers:
        lay.injector.off()
        lay.adjoint_source.off()


@register_routine
class PhaseShifterRoutine(Routine):
    """phi0 and P_pi of the first-column theta heaters of every mesh layer (tap-monitor power sweeps)."""

    name = "phase_shifters"
    version = "0.1"
    order = 10
    summary = "thermo-optic phi0 and P_pi per heater (first MZI column: theta shifters) from power sweeps"

    def applicable(self, proc: Any) -> str | None:
        return _is_chip(proc)

    def instruments(self, proc: Any) -> dict[str, str]:
        return {f"layer{i}.bank": l.bank.name for i, l in enumerate(proc.layers)}

    def layout(self, proc: Any) -> dict[str, Any]:
        return {"ports": [int(l.n_ports) for l in proc.layers], "mesh": [l.mesh for l in proc.layers],
                "channels": [int(l.bank.n_channels) for l in proc.layers]}

    def run(self, proc: Any, ctx: RunContext) -> CalibrationResult:
        res, t0 = self.new_result(proc), time.perf_counter()
        steps = int(ctx.options.get("ps_steps", 48))
        threshold = float(ctx.options.get("ps_fit_threshold", 0.02))
        tries = int(ctx.options.get("ps_tries", 8))
        rng = ctx.rng(11)
        acq = writes = 0
        _all_sources_dark(proc)
        res.meta["layers"] = {}
        for li, lay in enumerate(proc.layers):
            bank = lay.bank
            n_ch = bank.n_channels
            cal = bank.cal
            phi0 = np.full(n_ch, np.nan)
            p_pi = np.full(n_ch, np.nan)
            quality = np.full(n_ch, np.nan)
            plan = first_column_plan(lay.n_ports, lay.mesh, cal.crosstalk)
            per: dict[str, Any] = {}
            for gi, group in enumerate(plan):
                chans = np.array([g[0] for g in group])
                # equal power steps up to 98 % of the smallest per-channel limit of the group
                p_top = 0.98 * float(np.min(bank.p_max_w[chans]))
                powers = np.linspace(0.0, p_top, steps)
                field = np.zeros((1, lay.n_ports), np.complex128)
                field[0, [g[1] for g in group]] = 1.0
                lay.injector.inject(field.astype(np.complex64))
                taps = np.array([g[2] for g in group])
                reads = np.empty((steps, len(group)))
                for si, pw in enumerate(ctx.bar(powers, desc=f"phase_shifters layer {li} group {gi}", total=steps)):
                    v = np.zeros(n_ch)
                    v[chans] = np.sqrt(pw * cal.resistance_ohm[chans])
                    bank.set_voltages(np.minimum(v, bank.v_max))
                    writes += 1
                    reads[si] = np.asarray(lay.monitor.acquire(), np.float64)[taps]
                    acq += 1
                lay.injector.off()
                for j, (ch, mode, tap, sign) in enumerate(group):
                    fit, ok = fit_cosine(powers, reads[:, j], sign, float(cal.p_pi_w[ch]), rng, threshold, tries)
                    phi0[ch], p_pi[ch], quality[ch] = fit["phi0"], fit["p_pi_w"], fit["rms_over_range"]
                    per[str(ch)] = {**fit, "tap": int(tap), "sign": int(sign), "input_mode": int(mode),
                                    "group": gi, "ok": bool(ok)}
                    if not ok:
                        res.fail(f"layer {li} channel {ch}: fit residual {fit['rms_over_range']:.3g} of the fringe "
                                 f"amplitude above {threshold} after {tries} starts")
            bank.set_voltages(np.zeros(n_ch))
            writes += 1
            done = np.flatnonzero(np.isfinite(phi0) & np.isfinite(p_pi))
            res.arrays[f"channels_{li}"] = done.astype(np.float64)     # calibrated channels (store: no NaN)
            res.arrays[f"phi0_{li}"] = phi0[done]
            res.arrays[f"p_pi_w_{li}"] = p_pi[done]
            res.arrays[f"fit_rms_{li}"] = np.where(np.isfinite(quality[done]), quality[done], 1e9)
            res.meta["layers"][str(li)] = {"channels": per, "groups": len(plan), "steps": steps,
                                           "calibrated": int(np.isfinite(phi0).sum()), "of": int(n_ch)}
        res.counts = Counts(acquisitions=acq, frames=acq, writes=writes)
        res.meta["not_calibrated"] = ("theta shifters beyond the first MZI column, all phi shifters, crosstalk: "
                                      "left at their previous (nominal) values")
        res.seconds = time.perf_counter() - t0
        return res

    def apply(self, proc: Any, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        for li, lay in enumerate(proc.layers):
            ch, phi0, p_pi = (arrays.get(f"{k}_{li}") for k in ("channels", "phi0", "p_pi_w"))
            if ch is None or phi0 is None or p_pi is None:
                continue
            ch = np.asarray(ch).astype(np.intp)
            ok = np.isfinite(phi0) & np.isfinite(p_pi) & (p_pi > 0)
            lay.bank.cal.phi0[ch[ok]] = phi0[ok]
            lay.bank.cal.p_pi_w[ch[ok]] = p_pi[ok]


def _wrap(x: NDArray) -> NDArray:
    return (x + np.pi) % TWO_PI - np.pi


@register_grader("phase_shifters", {"phi0_max_abs_rad": 0.02, "p_pi_r_max_rel": 0.01})
def _grade_phase_shifters(proc: Any, result: Any) -> dict[str, Any]:
    """HAL phi0 and R P_pi of the calibrated channels vs the twin's hidden heaters (twins only)."""
    emu = getattr(proc, "emulator", None)
    if emu is None:
        return {}
    worst_phi, worst_p, layers = 0.0, 0.0, {}
    for li, lay in enumerate(proc.layers):
        h = emu.truth.layers[li].heaters
        sel = np.zeros(lay.bank.n_channels, bool)
        if result is not None and f"channels_{li}" in result.arrays:
            sel[np.asarray(result.arrays[f"channels_{li}"]).astype(np.intp)] = True
        if not sel.any():
            continue
        e_phi = np.abs(_wrap(lay.bank.cal.phi0 - (h.phi0 + h.drift)))[sel]
        prod_hal = lay.bank.cal.p_pi_w * lay.bank.cal.resistance_ohm
        e_p = np.abs(prod_hal / (h.p_pi_w * h.resistance_ohm) - 1)[sel]
        layers[str(li)] = {"phi0_max_abs_rad": float(e_phi.max()), "phi0_rms_rad": float(np.sqrt(np.mean(e_phi ** 2))),
                           "p_pi_r_max_rel": float(e_p.max()), "channels": int(sel.sum())}
        worst_phi, worst_p = max(worst_phi, float(e_phi.max())), max(worst_p, float(e_p.max()))
    return {"layers": layers, "phi0_max_abs_rad": worst_phi, "p_pi_r_max_rel": worst_p}


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
    Rows of C for other (uncalibrated) heaters keep their designed values."""

    name = "crosstalk"
    version = "0.1"
    order = 20
    summary = "thermal crosstalk onto the first-column theta heaters (neighbour driven, fringe shift)"

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
        res.meta["not_calibrated"] = "crosstalk rows of heaters other than the first-column thetas keep design values"
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


@register_grader("crosstalk", {"significant_max_rel": 0.10})
def _grade_crosstalk(proc: Any, result: Any) -> dict[str, Any]:
    """Measured coefficients vs the twin's hidden C (effective C_ij R_i / R_j, and raw C_ij); significant:
    |C_ij| >= 0.01."""
    emu = getattr(proc, "emulator", None)
    if emu is None or result is None:
        return {}
    worst, worst_raw, n_sig, layers = 0.0, 0.0, 0, {}
    for li, lay in enumerate(proc.layers):
        if f"xt_vals_{li}" not in result.arrays:
            continue
        h = emu.truth.layers[li].heaters
        c = h.crosstalk.tocsr()
        rel, raw = [], []
        for i, j, v in zip(result.arrays[f"xt_rows_{li}"], result.arrays[f"xt_cols_{li}"], result.arrays[f"xt_vals_{li}"]):
            i, j = int(i), int(j)
            t = float(c[i, j])
            if abs(t) < 0.01:
                continue
            eff = t * h.resistance_ohm[i] / h.resistance_ohm[j]
            rel.append(abs(v / eff - 1))
            raw.append(abs(v / t - 1))
        if rel:
            layers[str(li)] = {"significant": len(rel), "max_rel": float(max(rel)), "raw_max_rel": float(max(raw))}
            worst, worst_raw, n_sig = max(worst, max(rel)), max(worst_raw, max(raw)), n_sig + len(rel)
    return {"layers": layers, "significant_max_rel": worst, "raw_c_max_rel": worst_raw, "significant": n_sig}
