"""Tap-based crosstalk check of the chip's first-column theta heaters (routine `crosstalk`; see lightloop.calibration.chip
for the tap scheme), and the cosine fringe fit it uses."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from lightloop.calibration.base import (
    CalibrationResult,
    Counts,
    RunContext,
    register_routine,
)
from lightloop.calibration.chip_common import TWO_PI, HeaterBankRoutine, _all_sources_dark, _is_chip, _wrap
from lightloop.physics.mzi import mesh_layout

__all__ = ["CrosstalkRoutine", "first_column_plan", "fit_cosine"]


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
class CrosstalkRoutine(HeaterBankRoutine):
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

