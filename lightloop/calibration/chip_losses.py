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
Levenberg-Marquardt from the nominal-loss fit; weak priors (design values: nominal loss, the heater fit's
couplers, zero offsets) fix what the data leave free. Gauges: without backward taps, the mean log-transmission
of every column is the nominal one (a uniform column loss only scales the fields after it, absorbed by the tap
gains and the receivers); with them (the taps read with each adjoint source lit, the same tap gains) a column's
loss scales the forward taps after it and the backward taps before it, so only the mean over the mesh is the gauge.
Scaling: every parameter acts inside one column, so the Jacobian is never formed: exact Jacobian-vector and
vector-Jacobian products (lightloop.calibration.chip_losses_prop, O(S N^3) each) drive LSMR on the column-scaled
normal equations of each step (matrix-free; memory O(S N^3): ~0.4 GB at N = 64). Every lit port's taps are used;
lit_ports > 0 down-weights them by sqrt(lit_ports / N) so the taps weigh against the receivers as when only that
many ports per setting were fitted.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.sparse.linalg import LinearOperator, lsmr

from lightloop.calibration.chip_losses_prop import MeshPropagator

__all__ = ["LossProblem", "fit_layer_losses"]

#: prior standard deviations: log-transmission (~0.02 dB), couplers (rad), phase offsets (rad)
PRIOR_SD = {"loss": 0.003, "coupler": 0.01, "phase": 0.01}
#: prior weight against the data (a prior residual of one sd counts as this fraction of a unit reading)
PRIOR_WEIGHT = 1e-3
#: LSMR iterations per Levenberg-Marquardt step (matrix-free; each costs one JVP and one VJP)
LSMR_ITERS = 300
#: random probes estimating the Jacobian's column norms (the LSMR column scaling)
SCALE_PROBES = 40


def _gains(g: NDArray) -> NDArray:
    return np.concatenate([np.log(np.abs(g)), np.angle(g)])


class LossProblem:
    """Residuals of the loss-aware readout model and their exact Jacobian products (see the module doc).

    Parameters p = [log eta deviations (columns * n), alpha1, alpha2 (n_mzi), offsets d (nch), log|g| and
    arg g of g_out, t_inj, g_in, t_adj (n each), log tap gains (nch)]; residual rows = [receivers (re, im),
    forward taps, backward taps (if measured), priors]."""

    def __init__(self, n: int, mesh: str, screen: bool, eta0: float, alpha: tuple[NDArray, NDArray],
                 phases: list[NDArray], zf: list[NDArray], zb: list[NDArray], taps: list[NDArray],
                 amp: float = 1.0, taps_b: list[NDArray] | None = None, tap_weight: float = 1.0):
        self.prop = MeshPropagator(n, mesh, screen, np.array(phases))
        self.n, self.k, self.ncol, self.nch = n, self.prop.k, self.prop.ncol, self.prop.nch
        self.eta0, self.amp, self.back = float(eta0), float(amp), taps_b is not None
        self.a10, self.a20 = np.asarray(alpha[0], np.float64), np.asarray(alpha[1], np.float64)
        self.zf, self.zb = np.array(zf, np.complex128), np.array(zb, np.complex128)     # (S, n, n)
        self.ref_f = float(np.sqrt(np.mean(np.abs(np.concatenate([self.zf, self.zb])) ** 2)))
        self.ref_t = float(np.sqrt(np.mean(np.array(taps, np.float64) ** 2)))
        self.tf = np.transpose(np.array(taps, np.float64), (0, 2, 1))                   # (S, nch, lit port)
        self.tb = np.transpose(np.array(taps_b, np.float64), (0, 2, 1)) if self.back else None
        self.wt = float(tap_weight)
        self.eye = np.broadcast_to(np.eye(n), (len(phases), n, n))
        sizes = [self.ncol * n, self.k, self.k, self.nch] + [n] * 8 + [self.nch]
        self.bounds = np.concatenate([[0], np.cumsum(sizes)])
        self.n_params = int(self.bounds[-1])
        self.prior = PRIOR_WEIGHT / np.array([PRIOR_SD["loss"], PRIOR_SD["coupler"], PRIOR_SD["coupler"],
                                              PRIOR_SD["phase"]])

    def split(self, p: NDArray) -> list[NDArray]:
        """Parameter blocks: [le (columns, n), a1, a2, d, lgo, pgo, lti, pti, lgi, pgi, lta, pta, log m]."""
        b = self.bounds
        out = [p[b[i]: b[i + 1]] for i in range(len(b) - 1)]
        out[0] = self.gauge(out[0].reshape(self.ncol, self.n))
        return out

    def gauge(self, le: NDArray) -> NDArray:
        """Projection onto the gauge-fixed log transmissions (per-column or whole-mesh mean removed)."""
        return le - (le.mean() if self.back else le.mean(axis=1, keepdims=True))

    def start(self, gains: dict[str, NDArray]) -> NDArray:
        """Start vector: nominal loss, the heater fit's couplers, zero offsets, the given gains, fitted tap gains."""
        p = np.concatenate([np.zeros(self.ncol * self.n), self.a10, self.a20, np.zeros(self.nch)]
                           + [_gains(np.asarray(gains[g], np.complex128)) for g in ("g_out", "t_inj", "g_in", "t_adj")]
                           + [np.zeros(self.nch)])
        self.linearize(p)
        p[self.bounds[-2]:] = np.log(np.maximum(self.tap_gains(), 1e-300))
        return p

    def linearize(self, p: NDArray) -> NDArray:
        """Propagate at p, keep every intermediate field for jvp / vjp; returns the residual."""
        le, a1, a2, d, lgo, pgo, lti, pti, lgi, pgi, lta, pta, lm = self.split(p)
        self.p = p.copy()
        self.prop.set_params(self.eta0 * np.exp(le), a1, a2, d)
        self.g = [np.exp(lgo + 1j * pgo), np.exp(lti + 1j * pti), np.exp(lgi + 1j * pgi), np.exp(lta + 1j * pta)]
        self.mt = np.exp(lm)
        self.xf, self.Tf, self.rec_f = self.prop.run(self.eye * self.g[1][None, None, :], True)
        self.xb, self.Tb, self.rec_b = self.prop.run(self.eye * self.g[3][None, None, :], False)
        self.Pf = self.amp ** 2 * np.abs(self.Tf) ** 2
        self.Pb = self.amp ** 2 * np.abs(self.Tb) ** 2 if self.back else None
        self.le, self.a1, self.a2, self.d = le, a1, a2, d
        self._tap_factors()
        return self.residual_here()

    def _tap_factors(self) -> None:
        """d(tap residual) = -Re(K dT) - (c m dlog m) P: K = c m 2 amp^2 conj(T) as (re, -im) pairs, c = wt / ref_t."""
        c = self.wt / self.ref_t
        self.kf = [None, None]
        for i, t in enumerate((self.Tf, self.Tb if self.back else None)):
            if t is not None:
                kk = (c * 2 * self.amp ** 2) * self.mt[None, :, None] * t
                self.kf[i] = np.stack([kk.real, kk.imag], -1)     # Re(conj(kk) dT) = kk.re dT.re + kk.im dT.im

    def _pieces(self, rf: NDArray, rb: NDArray, rtf: NDArray, rtb: NDArray | None, pri: list[NDArray]) -> NDArray:
        parts = [rf.real.ravel(), rf.imag.ravel(), rb.real.ravel(), rb.imag.ravel(), rtf.ravel()]
        if rtb is not None:
            parts.append(rtb.ravel())
        return np.concatenate(parts + [q.ravel() for q in pri])

    def tap_residuals(self, mt: NDArray | None = None) -> tuple[NDArray, NDArray | None]:
        """Unweighted tap residuals (meas - m P) / ref_t at the linearization point."""
        m = (self.mt if mt is None else mt)[None, :, None]
        rtf = (self.tf - m * self.Pf) / self.ref_t
        return rtf, ((self.tb - m * self.Pb) / self.ref_t if self.back else None)

    def field_residuals(self) -> tuple[NDArray, NDArray]:
        """Receiver residuals / ref_f at the linearization point: (S, n, n) forward and backward."""
        return ((self.zf - self.g[0][None, :, None] * self.xf) / self.ref_f,
                (self.zb - self.g[2][None, :, None] * self.xb) / self.ref_f)

    def tap_gains(self) -> NDArray:
        """Closed-form least-squares tap gains at the linearization point (every lit port)."""
        num = np.sum(self.tf * self.Pf, axis=(0, 2)) + (np.sum(self.tb * self.Pb, axis=(0, 2)) if self.back else 0)
        den = np.sum(self.Pf ** 2, axis=(0, 2)) + (np.sum(self.Pb ** 2, axis=(0, 2)) if self.back else 0)
        return num / np.maximum(den, 1e-300)

    def residual_here(self) -> NDArray:
        """Weighted residual vector at the linearization point."""
        rf, rb = self.field_residuals()
        rtf, rtb = self.tap_residuals()
        w = self.prior
        pri = [w[0] * self.le, w[1] * (self.a1 - self.a10), w[2] * (self.a2 - self.a20), w[3] * self.d]
        return self._pieces(rf, rb, self.wt * rtf, None if rtb is None else self.wt * rtb, pri)

    def residual(self, p: NDArray) -> NDArray:
        """Weighted residual vector at p (relinearizes)."""
        return self.linearize(p)

    def jvp(self, v: NDArray) -> NDArray:
        """J v at the linearization point (exact)."""
        dle, da1, da2, dd, dlgo, dpgo, dlti, dpti, dlgi, dpgi, dlta, dpta, dlm = self.split(np.asarray(v, np.float64))
        go, ti, gi, ta = self.g
        dxf, dtf = self.prop.jvp(self.rec_f, dle, da1, da2, dd, self.eye * (ti * (dlti + 1j * dpti))[None, None, :])
        dxb, dtb = self.prop.jvp(self.rec_b, dle, da1, da2, dd, self.eye * (ta * (dlta + 1j * dpta))[None, None, :])
        drf = -((go * (dlgo + 1j * dpgo))[None, :, None] * self.xf + go[None, :, None] * dxf) / self.ref_f
        drb = -((gi * (dlgi + 1j * dpgi))[None, :, None] * self.xb + gi[None, :, None] * dxb) / self.ref_f
        dm = (-self.wt / self.ref_t * self.mt * dlm)[None, :, None]
        drtf = dm * self.Pf - np.einsum("abci,abci->abc", self.kf[0], dtf.view(np.float64).reshape(self.kf[0].shape))
        drtb = (dm * self.Pb - np.einsum("abci,abci->abc", self.kf[1], dtb.view(np.float64).reshape(self.kf[1].shape))
                if self.back else None)
        w = self.prior
        return self._pieces(drf, drb, drtf, drtb, [w[0] * dle, w[1] * da1, w[2] * da2, w[3] * dd])

    def vjp(self, u: NDArray) -> NDArray:
        """J^T u at the linearization point (exact)."""
        u = np.asarray(u, np.float64)
        s, n = self.zf.shape[0], self.n
        nf = s * n * n
        i = 0

        def take(size: int, shape: tuple) -> NDArray:
            nonlocal i
            out = u[i: i + size].reshape(shape)
            i += size
            return out

        grf = take(nf, (s, n, n)) + 1j * take(nf, (s, n, n))
        grb = take(nf, (s, n, n)) + 1j * take(nf, (s, n, n))
        tsh = self.Tf.shape
        utf = take(self.Tf.size, tsh)
        utb = take(self.Tb.size, tsh) if self.back else None
        ule, ua1 = take(self.ncol * n, (self.ncol, n)), take(self.k, (self.k,))
        ua2, ud = take(self.k, (self.k,)), take(self.nch, (self.nch,))
        go, ti, gi, ta = self.g
        c, w = self.wt / self.ref_t, self.prior
        out = []
        gl_m = -c * self.mt * np.einsum("abc,abc->b", utf, self.Pf)
        g_tf = self._tap_cotangent(utf, 0)
        gx0f, gle, ga1, ga2, gd = self.prop.vjp(self.rec_f, -np.conj(go)[None, :, None] * grf / self.ref_f, g_tf)
        if self.back:
            gl_m += -c * self.mt * np.einsum("abc,abc->b", utb, self.Pb)
            g_tb = self._tap_cotangent(utb, 1)
        else:
            g_tb = np.zeros_like(self.Tf)
        gx0b, gle2, ga12, ga22, gd2 = self.prop.vjp(self.rec_b, -np.conj(gi)[None, :, None] * grb / self.ref_f, g_tb)
        gle = self.gauge(gle + gle2 + w[0] * ule)
        out = [gle.ravel(), ga1 + ga12 + w[1] * ua1, ga2 + ga22 + w[2] * ua2, gd + gd2 + w[3] * ud]
        for gain, grad, x in ((go, grf, self.xf), (gi, grb, self.xb)):
            z = np.conj(grad) * (-gain[None, :, None] * x / self.ref_f)
            sz = np.sum(z, axis=(0, 2))
            out.append(np.real(sz))
            out.append(np.real(1j * sz))
            if gain is go:
                dg = np.sum(np.conj(np.diagonal(gx0f, axis1=1, axis2=2)), axis=0) * ti
                out_src = [np.real(dg), np.real(1j * dg)]
            else:
                dg = np.sum(np.conj(np.diagonal(gx0b, axis1=1, axis2=2)), axis=0) * ta
                out_src = [np.real(dg), np.real(1j * dg)]
            out.extend(out_src)
        return np.concatenate(out + [gl_m])

    def _tap_cotangent(self, u: NDArray, i: int) -> NDArray:
        """Cotangent of the taps T from that of their residuals: -u K^* (see _tap_factors)."""
        g = np.empty(u.shape + (2,))
        np.multiply(self.kf[i], -u[..., None], out=g)
        return g.view(np.complex128)[..., 0]

    def operator(self, scale: NDArray) -> LinearOperator:
        """J diag(1 / scale) as a LinearOperator at the linearization point."""
        m = self.residual_here().size
        return LinearOperator((m, self.n_params), matvec=lambda v: self.jvp(np.ravel(v) / scale),
                              rmatvec=lambda u: self.vjp(np.ravel(u)) / scale, dtype=np.float64)


def _column_scale(prob: LossProblem, rows: int, rng: np.random.Generator) -> NDArray:
    """sqrt(diag J^T J) estimated from random sign probes (E (J^T z)_i^2 = sum_r J_ri^2), floored."""
    acc = np.zeros(prob.n_params)
    for _ in range(SCALE_PROBES):
        acc += prob.vjp(rng.choice([-1.0, 1.0], rows)) ** 2
    sc = np.sqrt(acc / SCALE_PROBES)
    return np.maximum(sc, 1e-6 * max(float(sc.max()), 1e-300))


def _levenberg_marquardt(prob: LossProblem, p0: NDArray, steps: int, tries: int,
                         lsmr_iters: int) -> tuple[NDArray, NDArray, int]:
    """Levenberg-Marquardt from p0: each step linearizes once (exact products), solves the damped, column-scaled
    (scale from p0) normal equations by LSMR and is kept only if it lowers the cost. Returns (parameters, residual at p0,
    Jacobian products used)."""
    p = p0.copy()
    r0 = r = prob.linearize(p)
    cost, products, lam = float(r @ r), 0, 1e-6
    scale = _column_scale(prob, r.size, np.random.default_rng(0))     # kept: the steps are small
    products += SCALE_PROBES
    for _ in range(steps):
        prob.linearize(p)
        op = prob.operator(scale)
        accepted = False
        for _ in range(tries):
            sol = lsmr(op, -r, damp=np.sqrt(lam), atol=1e-12, btol=1e-12, maxiter=lsmr_iters)
            products += 2 * int(sol[2]) + 2
            q = p + sol[0] / scale
            rq = prob.linearize(q)
            c = float(rq @ rq) if np.all(np.isfinite(rq)) else np.inf
            if c < cost:
                small = c > cost * (1 - 1e-3)     # at the noise floor
                p, r, cost, lam, accepted = q, rq, c, lam / 10.0, True
                break
            lam *= 10.0
            prob.linearize(p)
        if not accepted or small:
            break
    prob.linearize(p)
    return p, r0, products


def fit_layer_losses(n: int, mesh: str, screen: bool, eta0: float, alpha: tuple[NDArray, NDArray],
                     phases: list[NDArray], zf: list[NDArray], zb: list[NDArray], taps: list[NDArray],
                     gains: dict[str, NDArray], amp: float = 1.0, jacobians: int = 4,
                     iters: int = 6, lit_ports: int = 0, taps_b: list[NDArray] | None = None,
                     lsmr_iters: int = LSMR_ITERS) -> dict[str, Any]:
    """Fit (eta (columns, n), alpha1, alpha2, phase offsets, g_out, t_inj, g_in, t_adj, tap gains m) to the readout
    data of one layer: zf[s] (k, j) and zb[s] (j, k) per setting s, taps[s] (j, taps) per single lit port j at
    field amp (taps_b[s] (j, taps): the same with adjoint source j lit, same tap gains: they pin the mean loss of
    every interior column, which forward taps and receivers leave to the tap gains); gains: the nominal-loss
    fit's start values. Levenberg-Marquardt with exact matrix-free Jacobian products (up to `jacobians` steps,
    `iters` damping tries each, `lsmr_iters` LSMR iterations per solve); lit_ports > 0 weighs the taps as that
    many lit ports per setting (the tap gains and residuals at the end weigh every port alike). Returns the fit
    and its rms residuals."""
    cpu0 = time.process_time()
    wt = float(np.sqrt(lit_ports / n)) if 0 < lit_ports < n else 1.0
    prob = LossProblem(n, mesh, screen, eta0, alpha, phases, zf, zb, taps, amp, taps_b, wt)
    p0 = prob.start(gains)
    x, _, products = _levenberg_marquardt(prob, p0, jacobians, iters, lsmr_iters)
    prob.wt = 1.0                                               # tap gains and residuals from every lit port alike
    prob.linearize(p0)
    c0 = float(np.sum(prob.residual_here() ** 2))
    prob.linearize(x)
    mt = prob.tap_gains()
    prob.mt = mt
    r = prob.residual_here()
    rf, rb = prob.field_residuals()
    rtf, rtb = prob.tap_residuals(mt)
    rt = rtf if rtb is None else np.concatenate([rtf, rtb])
    le = prob.le
    go, ti, gi, ta = prob.g
    c = np.exp(np.mean(np.log(np.abs(ti)))) * np.exp(1j * np.angle(np.sum(ti)))   # gauge of fit_rank_one
    cb = np.exp(np.mean(np.log(np.abs(ta)))) * np.exp(1j * np.angle(np.sum(ta)))
    rfa = np.concatenate([rf.ravel(), rb.ravel()])
    return {"eta": eta0 * np.exp(le), "alpha1": prob.a1.copy(), "alpha2": prob.a2.copy(), "phase_offset": prob.d.copy(),
            "g_out": go * c, "t_inj": ti / c, "g_in": gi * cb, "t_adj": ta / cb, "m": mt * abs(c) ** 2,
            "field_rms_rel": float(np.sqrt(np.mean(np.abs(rfa) ** 2))),
            "taps_rms_rel": float(np.sqrt(np.mean(rt ** 2))),
            "cost_ratio": float(np.sum(r ** 2) / max(c0, 1e-300)),
            "loss_rms_db": float(20 / np.log(10) * np.std(le)), "evaluations": int(products),
            "cpu_seconds": float(time.process_time() - cpu0)}
