"""Loss-aware refinement of one chip layer's readout fit: per-waveguide transmission, couplers and phase offsets.

The heater calibration's mesh model has the nominal, uniform loss per column. A real mesh's waveguides differ by
~0.2 % in amplitude (the twin's loss_sd_db), which is harmless for programming but not for the in-situ adjoint:
the time-reversed adjoint retraces conj(v) only through a unitary-up-to-uniform-loss mesh. The readout routine's
own data pin the uneven loss down physically:

  injector -> output receivers   M_f = diag(g_out) U diag(t_inj)
  adjoint  -> input receivers    M_b = diag(g_in) U^T diag(t_adj)      (reciprocity: the same lossy U)
  injector -> tap monitors       I_t = m_t |(fields at the taps of U for t_inj e_j)|^2

with U = U(phases + offsets; alpha1, alpha2, eta) the lightloop.physics.mesh geometry (loss of each waveguide
per column, after the theta shifter inside an MZI, so a theta tap sees the first coupler but not the arm loss:
the taps separate a coupler error from an arm-loss imbalance, which the receivers alone cannot). Fitted by
Gauss-Newton from the nominal-loss fit; weak priors (design values: nominal loss, the heater fit's couplers,
zero offsets) fix what the data leave free. Gauges: without backward taps, the mean log-transmission of every
column is the nominal one (a uniform column loss only scales the fields after it, absorbed by the tap gains and
the receivers); with them (the taps read with each adjoint source lit, the same tap gains) a column's loss
scales the forward taps after it and the backward taps before it, so only the mean over the mesh is the gauge.
Memory: the finite-difference Jacobian is stored in float32 above JAC_FLOAT32_ABOVE entries and the tap rows
can be thinned (lit_ports); ~0.3 GB at N = 16.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.physics.mesh import MeshErrors, MeshLayer
from lightloop.physics.mzi import mesh_layout

__all__ = ["fit_layer_losses"]

#: prior standard deviations: log-transmission (~0.02 dB), couplers (rad), phase offsets (rad)
PRIOR_SD = {"loss": 0.003, "coupler": 0.01, "phase": 0.01}
#: prior weight against the data (a prior residual of one sd counts as this fraction of a unit reading)
PRIOR_WEIGHT = 1e-3
#: Jacobian entries above which it is stored in float32 (the normal equations are summed in float64)
JAC_FLOAT32_ABOVE = 20_000_000
#: rows per block of the normal-equation sums
JAC_ROWS = 4096


def _gains(g: NDArray) -> NDArray:
    return np.concatenate([np.log(np.abs(g)), np.angle(g)])


def fit_layer_losses(n: int, mesh: str, screen: bool, eta0: float, alpha: tuple[NDArray, NDArray],
                     phases: list[NDArray], zf: list[NDArray], zb: list[NDArray], taps: list[NDArray],
                     gains: dict[str, NDArray], amp: float = 1.0, jacobians: int = 2,
                     iters: int = 8, lit_ports: int = 0, taps_b: list[NDArray] | None = None) -> dict[str, Any]:
    """Fit (eta (columns, n), alpha1, alpha2, phase offsets, g_out, t_inj, g_in, t_adj, tap gains m) to the readout
    data of one layer: zf[s] (k, j) and zb[s] (j, k) per setting s, taps[s] (j, taps) per single lit port j at
    field amp (taps_b[s] (j, taps): the same with adjoint source j lit, same tap gains: they pin the mean loss of
    every interior column, which forward taps and receivers leave to the tap gains); gains: the nominal-loss
    fit's start values. Gauss-Newton (`jacobians` finite-difference Jacobians,
    up to `iters` steps each); lit_ports > 0 fits the taps of that many lit ports per setting only (rotating; the
    tap gains and residuals at the end use every port). Returns the fit and its rms residuals."""
    lo = mesh_layout(n, mesh)
    k, ncol = lo.n_mzi, lo.n_columns
    nch = phases[0].size
    a10, a20 = np.asarray(alpha[0], np.float64), np.asarray(alpha[1], np.float64)
    n_set = len(phases)
    w = PRIOR_WEIGHT
    ref_f = np.sqrt(np.mean([np.mean(np.abs(z) ** 2) for z in zf + zb]))
    ref_t = np.sqrt(np.mean([np.mean(t ** 2) for t in taps]))
    every = [np.arange(n)] * n_set
    sub = every if not 0 < lit_ports < n else [np.arange(s * lit_ports, (s + 1) * lit_ports) % n for s in range(n_set)]
    lit = sub

    def unpack(p: NDArray) -> tuple:
        i = 0
        le = p[i: i + ncol * n].reshape(ncol, n)
        le = le - (le.mean(axis=1, keepdims=True) if taps_b is None else le.mean())     # gauge (see the top)
        i += ncol * n
        a1, a2, d = p[i: i + k], p[i + k: i + 2 * k], p[i + 2 * k: i + 2 * k + nch]
        i += 2 * k + nch
        gs = []
        for _ in range(4):
            gs.append(np.exp(p[i: i + n] + 1j * p[i + n: i + 2 * n]))
            i += 2 * n
        return le, a1, a2, d, gs

    def model(le: NDArray, a1: NDArray, a2: NDArray) -> MeshLayer:
        errs = MeshErrors(a1, a2, eta0 * np.exp(le))
        return MeshLayer.build("unitary", n, mesh, [errs], dtype=np.complex128, screen=screen)

    def predict(p: NDArray) -> tuple:
        le, a1, a2, d, (go, ti, gi, ta) = unpack(p)
        m = model(le, a1, a2)
        rf, pt = [], []
        for s in range(n_set):
            m.set_phases(phases[s] + d)
            u = m.matrix()
            rf.append((zf[s] - go[:, None] * u * ti[None, :]).ravel())
            rf.append((zb[s] - gi[:, None] * u.T * ta[None, :]).ravel())
            _, t = m.forward(np.diag(ti * amp)[lit[s]], record=True)
            pt.append(np.abs(t) ** 2)
            if taps_b is not None:
                _, t = m.backward(np.diag(ta * amp)[lit[s]], record=True)
                pt.append(np.abs(t) ** 2)
        pred = np.concatenate(pt) / ref_t
        meas_t = np.concatenate([q for s in range(n_set) for q in ([taps[s][lit[s]]] if taps_b is None else
                                                                     [taps[s][lit[s]], taps_b[s][lit[s]]])]) / ref_t
        mt = np.sum(pred * meas_t, 0) / np.maximum(np.sum(pred * pred, 0), 1e-300)
        return le, a1, a2, d, np.concatenate(rf) / ref_f, meas_t - mt * pred, mt

    def resid(p: NDArray) -> NDArray:
        le, a1, a2, d, rf, rt, _ = predict(p)
        prior = [w * le.ravel() / PRIOR_SD["loss"], w * (a1 - a10) / PRIOR_SD["coupler"],
                 w * (a2 - a20) / PRIOR_SD["coupler"], w * d / PRIOR_SD["phase"]]
        return np.concatenate([rf.real, rf.imag, rt.ravel()] + prior)

    p0 = np.concatenate([np.zeros(ncol * n), a10, a20, np.zeros(nch)]
                        + [_gains(np.asarray(gains[g], np.complex128)) for g in ("g_out", "t_inj", "g_in", "t_adj")])
    x, _, evals = _gauss_newton(resid, p0, jacobians, iters)
    lit = every                                                 # tap gains and residuals from every lit port
    r0, r = resid(p0), resid(x)
    le, a1, a2, d, rf, rt, mt = predict(x)
    _, _, _, _, (go, ti, gi, ta) = unpack(x)
    c = np.exp(np.mean(np.log(np.abs(ti)))) * np.exp(1j * np.angle(np.sum(ti)))   # gauge of fit_rank_one
    cb = np.exp(np.mean(np.log(np.abs(ta)))) * np.exp(1j * np.angle(np.sum(ta)))
    return {"eta": eta0 * np.exp(le), "alpha1": a1, "alpha2": a2, "phase_offset": d,
            "g_out": go * c, "t_inj": ti / c, "g_in": gi * cb, "t_adj": ta / cb, "m": mt * abs(c) ** 2,
            "field_rms_rel": float(np.sqrt(np.mean(np.abs(rf) ** 2))),
            "taps_rms_rel": float(np.sqrt(np.mean(rt ** 2))),
            "cost_ratio": float(np.sum(r ** 2) / max(np.sum(r0 ** 2), 1e-300)),
            "loss_rms_db": float(20 / np.log(10) * np.std(le)), "evaluations": evals}


def _gauss_newton(resid: Any, p0: NDArray, jacobians: int, iters: int) -> tuple[NDArray, NDArray, int]:
    """Levenberg-Marquardt from p0 with a forward-difference Jacobian computed `jacobians` times (chord steps in
    between: the deviations from the nominal-loss fit are small, so the problem is nearly linear); a step is kept
    only if it lowers the cost. Returns (parameters, residual at p0, residual evaluations)."""
    p = p0.copy()
    r0 = r = resid(p)
    cost, evals = float(r @ r), 1
    for _ in range(jacobians):
        h = 1e-7 * np.maximum(1.0, np.abs(p))
        big = r.size * p.size > JAC_FLOAT32_ABOVE
        jac = np.empty((r.size, p.size), np.float32 if big else np.float64)   # float32: half the memory
        for i in range(p.size):
            q = p.copy()
            q[i] += h[i]
            jac[:, i] = (resid(q) - r) / h[i]
        evals += p.size
        a, g = np.zeros((p.size, p.size)), np.zeros(p.size)
        for i0 in range(0, r.size, JAC_ROWS):                 # normal equations in float64, row blocks
            blk = jac[i0: i0 + JAC_ROWS].astype(np.float64)
            a += blk.T @ blk
            g += blk.T @ r[i0: i0 + JAC_ROWS]
        del jac
        dg = np.diag(a).copy() + 1e-12 * max(float(np.max(np.diag(a))), 1e-300)
        lam, tries = 1e-4, 0
        while tries < iters:
            tries += 1
            step = np.linalg.solve(a + lam * np.diag(dg), -g)
            q = p + step
            rq = resid(q)
            evals += 1
            c = float(rq @ rq) if np.all(np.isfinite(rq)) else np.inf
            if not c < cost:
                lam *= 10.0
                continue
            small = c > cost * (1 - 1e-4)
            p, r, cost, lam = q, rq, c, lam / 10.0
            if small:
                break
    return p, r0, evals
