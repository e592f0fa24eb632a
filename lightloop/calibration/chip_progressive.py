"""Progressive (column-by-column) heater calibration of a rectangular MZI mesh, HAL data only; scales to N = 64.

Measurement (measure_columns): the forward source is dark, the injector lights the N unit vectors at once and
the output coherent receivers give M(s) = diag(g_out) U(s) diag(g_in) per setting. Every setting sweeps a group
of heaters of ONE column (theta or phi heaters of MZIs 6 apart, i.e. 12 modes) in equal power steps from the
all-off background, so no prior on phi0 is needed (it may be anywhere in [0, 2 pi)). One Sinkhorn scaling of
the mean |M|^2 removes the gain magnitudes: W(s) ~ P_out U(s) P_in is unitary.

Why it is local: for settings that change only columns <= c + 2 (a column-c sweep and its thermal crosstalk
victims), Z(s) = W(ref)^-1 W(s) = V^-1 X_ref^-1 X(s) V does not depend on the downstream columns at all
(static; exact even with their uneven loss, unlike the Gram W(ref)^H W(s), which needs them unitary: window
residual 0.053 -> 0.024 at N = 64), and V = T_{c-3} ... T_0 is known from the earlier stages, so
Y(s) = V Z(s) V^H = X_ref^H X(s) with X = T_{c+2} ... T_{c-2}. Far-apart aggressors act on disjoint mode
windows, so each MZI j of column c is fitted on a 10 x 10 block of Y around its modes, batched over the column
(Levenberg-Marquardt, analytic rank-2 Jacobian: chip_window_jac): its phi0, alpha1, P_pi of both heaters, the
crosstalk of both heaters onto every designed victim, and theta0 and alpha2 of the column-(c-1) MZI it images
(theta0 and alpha2 of column c cancel in its own Gram: T_ref^H T(s) = D(-phi) B1^H D(dtheta) B1 D(phi + dphi)).
Starts come from grids (P_pi from the eigenphases of Y, theta0 and phi0 from the residual over a phase
grid), so uniform offsets are no harder than small ones. Pass 1 models the victims up to column c (the
downstream ones are not known yet); later passes model them up to c + 2 with the earlier estimates. The
last column's theta0 and alpha2 come from W(s) R(s)^H = P_out T_last(s) (R: the calibrated rest of the mesh;
receiver-phase-free features). Heater phases are modelled from the full power vectors, so any background works
(remeasure: a second data set over a background with every theta at pi/2, fitted jointly with the first).
Known limits: the per-waveguide loss spread is not modelled (~3e-3 rms residual at 3x spread); a victim behind an
MZI left at bar / cross by the all-off background is weakly identified (a few crosstalk pairs 10-40 % off).
Receiver and injector gains are solved in closed form at the end. Gauge as in mesh_model (phi offsets
injector-referenced). Cost: ~10 groups x steps acquisitions per column; O(N) stages of O(N) work each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.chip_columns import ColumnState, _update_gains
from lightloop.calibration.chip_window_jac import blocks as _blocks
from lightloop.calibration.chip_window_jac import sweep, window_jac
from lightloop.calibration.mesh_model import MeshModel, propagate
from lightloop.physics.mzi import MeshLayout

__all__ = ["ProgressiveData", "calibrate_progressive", "measure_columns"]

TWO_PI = 2 * np.pi
_CORE = (-4, 6)          # core window rows m-4 .. m+5 around an MZI's top mode m (aggressors 12 modes apart)
_SUB, _WD = 9, 18        # sub-mesh rows m-9 .. m+8: every MZI in the light cone of the core
_NC = (_CORE[1] - _CORE[0]) ** 2
_GRAM_INVERSE = True     # Y from W(ref)^-1 W(s) (exact for any downstream loss) instead of W(ref)^H W(s)
_JAC_BATCH = 16         # (MZI, parameter) perturbations per batched model call of the finite-difference Jacobian
_ANALYTIC_JAC = True     # stage fits use chip_window_jac's analytic Jacobian (False: batched finite differences)


@dataclass
class ProgressiveData:
    """Column sweeps: powers (S, H) W (nominal R), unitary-normalised W (S, N, N), raw M of the group ends,
    per group (column, kind 0 theta / 1 phi, MZI members, setting indices)."""

    powers: NDArray[np.float64]
    w: NDArray[np.complex64]
    groups: list[tuple[int, int, NDArray, NDArray]]
    m_raw: NDArray[np.complex128]
    p_raw: NDArray[np.float64]
    acquisitions: int
    writes: int


def _sinkhorn(a: NDArray, iters: int = 200) -> tuple[NDArray, NDArray]:
    """Row and column scalings r, c making r_i a_ij c_j doubly stochastic."""
    r, c = np.ones(a.shape[0]), np.ones(a.shape[1])
    for _ in range(iters):
        r = 1.0 / np.maximum(a @ c, 1e-300)
        c = 1.0 / np.maximum(a.T @ r, 1e-300)
    return r, c


def measure_columns(lay: Any, layout: MeshLayout, ctx: Any, steps: int = 8, range_rad: float = 9.0,
                    stride: int = 6, desc: str = "phase_shifters", background: NDArray | None = None) -> ProgressiveData:
    """Sweep every column's theta and phi heaters in groups of MZIs `stride` apart (module docstring); each
    heater from 0 to range_rad at its nominal P_pi (at most 98 % of its limit), the others at `background` (W,
    default all off)."""
    bank, n, k = lay.bank, lay.n_ports, layout.n_mzi
    r_nom, p_nom = bank.cal.resistance_ohm, bank.cal.p_pi_w
    off = layout.offsets
    plan = []
    for c in range(layout.n_columns):
        fl = np.arange(off[c], off[c + 1])
        g = max(1, min(stride, fl.size))
        for kind in (0, 1):
            for r in range(g):
                if fl[r::g].size:
                    plan.append((c, kind, fl[r::g]))
    bg = np.zeros(bank.n_channels) if background is None else np.asarray(background, np.float64)
    v_bg = np.minimum(np.sqrt(bg * r_nom), bank.v_max)
    lay.injector.inject(np.eye(n, dtype=np.complex64))
    s_tot = len(plan) * steps
    w = np.empty((s_tot, n, n), np.complex64)
    powers = np.zeros((s_tot, 2 * k))
    acc = np.zeros((n, n))
    groups, raw_i = [], []
    si = 0
    for c, kind, mem in ctx.bar(plan, desc=desc, total=len(plan)):
        h = mem + kind * k
        top = np.minimum(0.98 * bank.p_max_w[h], range_rad * p_nom[h])
        idx = []
        for f in np.linspace(0.0, 1.0, steps):
            v = v_bg.copy()
            v[h] = np.minimum(np.sqrt(f * top * r_nom[h]), bank.v_max[h])
            bank.set_voltages(v)
            m = np.asarray(lay.out_receiver.acquire(), np.complex128).T
            w[si] = m
            acc += np.abs(m) ** 2
            powers[si] = v * v / r_nom
            idx.append(si)
            si += 1
        groups.append((c, kind, mem, np.array(idx)))
        raw_i += [idx[0], idx[-1]]
    lay.injector.off()
    bank.set_voltages(np.zeros(bank.n_channels))
    m_raw = w[raw_i].astype(np.complex128)
    r, cc = _sinkhorn(acc / s_tot)
    w *= (np.sqrt(r)[:, None] * np.sqrt(cc)[None, :]).astype(np.complex64)
    return ProgressiveData(powers, w, groups, m_raw, powers[raw_i].copy(), s_tot, s_tot + 1)


class _Stage:
    """Index tables and the batched window model of the MZIs of column c (window columns c-2 .. c+hi)."""

    def __init__(self, st: ColumnState, data: ProgressiveData, c: int, hi: int, kappa: NDArray):
        lay = st.layout
        n, k, off = lay.n, lay.n_mzi, lay.offsets
        self.st, self.c, self.k, self.kappa = st, c, k, kappa
        self.jf = np.arange(off[c], off[c + 1])
        m = lay.columns[c]
        K = self.K = m.size
        self.wd = wd = min(_WD, n)
        self.lo = lo = np.clip(m - _SUB, 0, n - wd)
        fs, ms = [], []
        for cc in range(max(c - 2, 0), min(c + hi, lay.n_columns - 1) + 1):
            mm, fl = lay.columns[cc], np.arange(off[cc], off[cc + 1])
            inside = (mm[None, :] >= lo[:, None]) & (mm[None, :] + 1 < lo[:, None] + wd)
            ns = int(inside.sum(1).max())
            f, ml = np.full((K, ns), -1), np.zeros((K, ns), np.intp)
            for j in range(K):
                ii = np.flatnonzero(inside[j])
                f[j, :ii.size], ml[j, :ii.size] = fl[ii], mm[ii] - lo[j]
            fs.append(f)
            ms.append(ml)
        self.F, self.M = np.concatenate(fs, 1), np.concatenate(ms, 1)
        ends = np.cumsum([0] + [f.shape[1] for f in fs])
        self.col_slots = [slice(int(ends[i]), int(ends[i + 1])) for i in range(len(fs))]
        free = np.ones((K, len(fs), wd), bool)                  # rows of each window column no MZI touches
        for ci, (f, ml) in enumerate(zip(fs, ms)):
            for j in range(K):
                ok = f[j] >= 0
                free[j, ci, ml[j, ok]] = free[j, ci, ml[j, ok] + 1] = False
        self.free_mask = free
        self.valid = self.F >= 0
        fz = np.where(self.valid, self.F, 0)
        self.fz = fz
        self.heat = np.stack([fz, fz + k], -1)                                  # (K, NS, 2) heater index
        kk = np.arange(K)
        prev = {int(mu): int(f) for f, mu in zip(range(off[c - 1], off[c]), lay.columns[c - 1])} if c else {}
        cur = {int(x) for x in m}
        u1 = np.array([prev.get(int(mj) - 1, -1) for mj in m])
        u2 = np.array([prev.get(int(mj) + 1, -1) if (int(mj) + 2) not in cur else -1 for mj in m])
        self.u = np.stack([u1, u2], 1)
        slot_of = lambda target: np.array([int(np.flatnonzero(self.F[j] == target[j])[0]) if target[j] >= 0 else -1
                                           for j in kk])
        self.jslot, self.uslot = slot_of(self.jf), np.stack([slot_of(u1), slot_of(u2)], 1)
        # crosstalk onto every window heater (slot, t) from its designed aggressors b; j's own two heaters'
        # entries are local parameters (8 + ...), the others come from the state
        nb = getattr(st, "_nb_cache", None)             # the crosstalk pattern is fixed: pad its rows once
        if nb is None or nb[0] is not st.xt_rows or nb[1] is not st.xt_cols:
            nb = st._nb_cache = (st.xt_rows, st.xt_cols, st.neighbours())
        agg_all, ent_all, msk_all = nb[2]
        self.nb_agg, self.nb_e = agg_all[self.heat], ent_all[self.heat]               # (K, NS, 2, B)
        self.nb_m = msk_all[self.heat] & self.valid[:, :, None, None]
        nb_p = np.full(self.nb_e.shape, -1)
        npx = np.zeros(K, np.intp)
        for j in kk:
            mine = self.nb_m[j] & np.isin(self.nb_agg[j], [self.jf[j], self.jf[j] + k])
            for ii in zip(*np.nonzero(mine)):
                nb_p[(j, *ii)] = 8 + npx[j]
                npx[j] += 1
        self.nb_p = nb_p
        loc = np.full(self.heat.shape + (2,), -1)                 # (K, NS, 2 victim kind, 2 aggressor kind)
        for j, sl_, t, b in zip(*np.nonzero(nb_p >= 0)):
            loc[j, sl_, t, int(self.nb_agg[j, sl_, t, b] != self.jf[j])] = nb_p[j, sl_, t, b]
        self.loc = loc
        self.npar = 8 + int(npx.max(initial=0))
        self.active = np.zeros((K, self.npar), bool)
        self.active[:, :4] = True
        self.active[:, 4:6] = (u1 >= 0)[:, None]
        self.active[:, 6:8] = (u2 >= 0)[:, None]
        for j in kk:
            self.active[j, 8: 8 + npx[j]] = True
        # data: settings of both groups of each MZI (first the theta sweep, then the phi sweep), their refs
        gt: dict = {}
        for cg, kind, mem, idx in data.groups:          # per MZI: its sweeps, theta then phi, per background
            if cg == c:
                for f in mem:
                    gt.setdefault(int(f), []).append((kind, idx))
        blocks = [gt[int(f)] for f in self.jf]
        self.sett = np.array([np.concatenate([b[1] for b in bl]) for bl in blocks])      # (K, S)
        steps = blocks[0][0][1].size
        kinds = np.array([b[0] for b in blocks[0]])
        self.half = np.repeat(np.arange(kinds.size), steps)                        # block of each setting
        self.kind = kinds[self.half]                                               # 0: theta sweep, 1: phi sweep
        self.p_s = data.powers[self.sett]                                          # (K, S, H)
        self.p_r = data.powers[self.sett[:, ::steps]]                              # (K, blocks, H) their refs
        self.p = np.take_along_axis(self.p_s, np.stack([self.jf, self.jf + k], 1)[:, self.kind][:, :, None], 2)[..., 0]
        rows = m[:, None] + np.arange(*_CORE)[None, :]
        self.cvalid = (rows >= 0) & (rows < n)
        self.rows = np.clip(rows, 0, n - 1)
        self.lrows = self.rows - lo[:, None]
        self.cmask = (self.cvalid[:, :, None] & self.cvalid[:, None, :]).reshape(K, -1)
        self.refresh()

    def data(self, data: ProgressiveData) -> NDArray:
        """Y(s) core blocks (K, S, 6, 6) of the measured Gram, peeled by the calibrated columns <= c-3."""
        st, c = self.st, self.c
        ss = np.unique(self.sett)
        lay = st.layout
        refs = {}
        for cg, kind, mem, idx in data.groups:
            if cg == c:
                refs.update({int(i): int(idx[0]) for i in idx})
        wr = data.w[[refs[int(s)] for s in ss]].astype(np.complex128)
        if _GRAM_INVERSE:        # W(ref)^-1 W(s): the downstream columns cancel even when lossy (not unitary)
            z = np.linalg.solve(wr, data.w[ss].astype(np.complex128))
        else:
            z = np.conj(np.swapaxes(wr, 1, 2)) @ data.w[ss].astype(np.complex128)
        if c >= 3:                                       # peel the calibrated columns <= c-3 (static per group)
            off = lay.offsets
            sub = MeshLayout(lay.n, lay.kind, lay.columns[: c - 2])
            q = int(off[c - 2])
            mdl = MeshModel(sub, st.alpha1[:q], st.alpha2[:q], 1.0, False)
            rr = np.array([refs[int(s_)] for s_ in ss])
            for r0 in np.unique(rr):
                ph = st.phases(data.powers[[int(r0)]])[0]
                v = mdl.matrix(np.concatenate([ph[:q], ph[self.k: self.k + q]]))
                z[rr == r0] = v[None] @ z[rr == r0] @ v.conj().T[None]
        pos = {int(s): i for i, s in enumerate(ss)}
        zi = z[np.vectorize(pos.get)(self.sett)]                               # (K, S, N, N)
        kk = np.arange(self.K)[:, None, None, None]
        return zi[kk, np.arange(zi.shape[1])[None, :, None, None], self.rows[:, None, :, None],
                  self.rows[:, None, None, :]]

    def pack(self) -> NDArray:
        """Local parameter vectors (K, npar) from the state."""
        st, k = self.st, self.k
        x = np.zeros((self.K, self.npar))
        x[:, 0], x[:, 1] = st.phi0[k + self.jf], st.alpha1[self.jf]
        x[:, 2], x[:, 3] = np.log(st.p_pi[self.jf]), np.log(st.p_pi[k + self.jf])
        for i in (0, 1):
            u = np.where(self.u[:, i] >= 0, self.u[:, i], 0)
            x[:, 4 + 2 * i], x[:, 5 + 2 * i] = st.phi0[u], st.alpha2[u]
        ok = self.nb_p >= 0
        x[np.nonzero(ok)[0], self.nb_p[ok]] = self.kappa[self.nb_e[ok]]
        return x

    def unpack(self, x: NDArray) -> None:
        """Write the local parameters back to the state (and the crosstalk rates)."""
        st, k = self.st, self.k
        st.phi0[k + self.jf], st.alpha1[self.jf] = x[:, 0], x[:, 1]
        st.p_pi[self.jf], st.p_pi[k + self.jf] = np.exp(x[:, 2]), np.exp(x[:, 3])
        for i in (0, 1):
            ok = self.u[:, i] >= 0
            st.phi0[self.u[ok, i]], st.alpha2[self.u[ok, i]] = x[ok, 4 + 2 * i], x[ok, 5 + 2 * i]
        ok = self.nb_p >= 0
        self.kappa[self.nb_e[ok]] = x[np.nonzero(ok)[0], self.nb_p[ok]]
        self.refresh()

    def phases(self, x: NDArray, sel: NDArray | None = None, rows: NDArray | None = None) -> tuple[NDArray, ...]:
        """Heater phases (R, S, NS, 2) of the settings and (R, blocks, NS, 2) of their refs (rad), couplers a1, a2
        (R, NS) for local parameters x (R, npar) of the MZIs rows (default all K; repeats allowed)."""
        st = self.st
        r_ = np.arange(self.K) if rows is None else np.asarray(rows)
        kk = np.arange(r_.size)
        heat, fz = self.heat[r_], self.fz[r_]
        jslot, uslot, loc = self.jslot[r_], self.uslot[r_], self.loc[r_]
        phi0 = st.phi0[heat]                                                      # (R, NS, 2)
        pp = st.p_pi[heat]
        a1, a2 = st.alpha1[fz], st.alpha2[fz]
        phi0[kk, jslot, 1], a1[kk, jslot] = x[:, 0], x[:, 1]
        pp[kk, jslot, 0], pp[kk, jslot, 1] = np.exp(x[:, 2]), np.exp(x[:, 3])
        for i in (0, 1):
            ok = uslot[:, i] >= 0
            phi0[kk[ok], uslot[ok, i], 0] = x[ok, 4 + 2 * i]
            a2[kk[ok], uslot[ok, i]] = x[ok, 5 + 2 * i]
        kl = np.zeros(loc.shape)
        ok = loc >= 0
        kl[ok] = x[np.nonzero(ok)[0], loc[ok]]
        (own_s, xt_s, pj_s), (own_r, xt_r, pj_r) = self.pre
        own_s, xt_s, pj_s, own_r, xt_r, pj_r = (a[r_] for a in (own_s, xt_s, pj_s, own_r, xt_r, pj_r))
        if sel is not None:
            own_s, xt_s, pj_s = own_s[:, sel], xt_s[:, sel], pj_s[:, sel]
        ipp = 1.0 / pp[:, None]
        klx = kl[:, None]                                                         # (R, 1, NS, 2, 2)
        ph = phi0[:, None] + own_s * ipp + xt_s + (klx[..., 0] * pj_s[:, :, None, None, 0]
                                                   + klx[..., 1] * pj_s[:, :, None, None, 1])
        ph0 = phi0[:, None] + own_r * ipp + xt_r + (klx[..., 0] * pj_r[:, :, None, None, 0]
                                                    + klx[..., 1] * pj_r[:, :, None, None, 1])
        return ph, ph0, a1, a2

    def model(self, x: NDArray, sel: NDArray | None = None, rows: NDArray | None = None) -> NDArray:
        """Model core blocks (R, S, 10, 10) of X_ref^H X(s) for local parameters x (R, npar) of the MZIs rows
        (default all K; repeats allowed: a batched finite-difference Jacobian)."""
        r_ = np.arange(self.K) if rows is None else np.asarray(rows)
        ph, ph0, a1, a2 = self.phases(x, sel, rows)
        half = self.half if sel is None else self.half[sel]
        x_s = sweep(self, _blocks(ph[..., 0], ph[..., 1], a1[:, None], a2[:, None]), r_)[0][:, :self.wd]
        x_r = sweep(self, _blocks(ph0[..., 0], ph0[..., 1], a1[:, None], a2[:, None]), r_)[0][:, :self.wd, half]
        return np.conj(np.moveaxis(x_r, 1, 3)) @ np.moveaxis(x_s, 1, 2)          # (R, S, nc, nc)

    def refresh(self) -> None:
        """Per-round constants: own heater powers, crosstalk from every aggressor but j's heaters, j's powers."""
        kk = np.arange(self.K)
        kap = np.where(self.nb_m & (self.nb_p < 0), self.kappa[self.nb_e], 0.0)          # (K, NS, 2, B)
        hj = np.stack([self.jf, self.jf + self.k], 1)
        self.pre = []
        for pw in (self.p_s, self.p_r):
            kq, sq = kk[:, None, None, None], np.arange(pw.shape[1])[None, :, None, None]
            own = pw[kq, sq, self.heat[:, None]]
            xt = (kap[:, None] * pw[kq[..., None], sq[..., None], self.nb_agg[:, None]]).sum(-1)
            self.pre.append((own, xt, pw[kk[:, None, None], np.arange(pw.shape[1])[None, :, None], hj[:, None, :]]))


def _resid(stage: _Stage, yd: NDArray, x: NDArray, sel: NDArray | None = None,
           rows: NDArray | None = None) -> NDArray:
    """Real residual (R, 2 * S * 100; re, im interleaved) of the core blocks of the MZIs rows (default all;
    invalid entries zero)."""
    r_ = np.arange(stage.K) if rows is None else rows
    y = yd[r_] if sel is None else yd[r_][:, sel]
    d = (stage.model(x, sel, rows) - y).reshape(r_.size, -1, _NC)
    d = d * stage.cmask[r_][:, None, :]
    return np.ascontiguousarray(d).view(np.float64).reshape(r_.size, -1)        # (re, im) interleaved


def _lm(fun: Any, x: NDArray, active: NDArray, steps: NDArray, iters: int = 12,
        jac_fresh: int = 3, fun_rows: Any = None, jac: Any = None) -> tuple[NDArray, NDArray, NDArray]:
    """Batched Levenberg-Marquardt (independent problems per row), Jacobian jac(x) (rows, params, residuals; zero
    for inactive parameters) or forward differences (with fun_rows(x, rows) every active (row, parameter)
    perturbation is evaluated in batched calls); fresh in the first jac_fresh iterations, every 4th and after a
    rejected step, else re-used; returns x, cost, J^T J."""
    r = fun(x)
    cost = (r * r).sum(1)
    lam = np.full(x.shape[0], 1e-3)
    cols = np.flatnonzero(active.any(0))
    a = np.zeros((x.shape[0], x.shape[1], x.shape[1]))
    fresh = 0
    for it in range(iters):
        if it < jac_fresh or it % 4 == 0 or fresh:       # the Jacobian is re-used between refreshes (chord steps)
            if jac is not None:
                jt = jac(x)                                # zero for inactive parameters
            else:
                j = np.zeros(r.shape + (x.shape[1],))
                if fun_rows is None:
                    for i in cols:
                        xp = x.copy()
                        xp[:, i] += steps[i]
                        j[:, :, i] = (fun(xp) - r) / steps[i]
                else:
                    pr, pc = np.nonzero(active)
                    for c0 in range(0, pr.size, _JAC_BATCH):
                        rr, cc = pr[c0: c0 + _JAC_BATCH], pc[c0: c0 + _JAC_BATCH]
                        xp = x[rr].copy()
                        xp[np.arange(rr.size), cc] += steps[cc]
                        j[rr, :, cc] = (fun_rows(xp, rr) - r[rr]) / steps[cc][:, None]
                jt = np.swapaxes(j * active[:, None, :], 1, 2)
            a = jt @ np.swapaxes(jt, 1, 2)                 # J^T J per row (batched BLAS, not einsum)
        g = (jt @ r[..., None])[..., 0]
        dg = np.maximum(np.diagonal(a, axis1=1, axis2=2), 1e-12)
        moved, prev = np.zeros(x.shape[0]), cost.copy()
        for _t in range(5):
            lhs = a + lam[:, None, None] * dg[:, :, None] * np.eye(x.shape[1]) + np.diag(~active.any(0) * 1.0)
            lhs = lhs + (~active)[:, :, None] * np.eye(x.shape[1])
            d = -np.linalg.solve(lhs, g[..., None])[..., 0] * active
            xn = x + d
            rn = fun(xn)
            cn = (rn * rn).sum(1)
            ok = cn < cost
            x[ok], r[ok], cost[ok] = xn[ok], rn[ok], cn[ok]
            moved = np.where(ok, np.abs(d).max(1), moved)
            lam = np.where(ok, np.maximum(lam / 5, 1e-9), lam * 8)
            if ok.all():
                break
        fresh = int(not ok.all())
        if moved.max(initial=0.0) < 1e-6 or np.all(prev - cost <= 1e-7 * prev):
            break
    return x, cost, a


def _grid(stage: _Stage, yd: NDArray, x: NDArray, col: int, sel: NDArray, pts: int = 24) -> None:
    """Set parameter col of every row of x to the best of a phase grid (residual over settings sel)."""
    best = np.full(stage.K, np.inf)
    val = x[:, col].copy()
    for g in np.linspace(0, TWO_PI, pts, endpoint=False):
        xt = x.copy()
        xt[:, col] = g
        c = (_resid(stage, yd, xt, sel) ** 2).sum(1)
        better = c < best
        best[better], val[better] = c[better], g
    use = stage.active[:, col]
    x[use, col] = val[use]


def _p_from_eigs(stage: _Stage, yd: NDArray, x: NDArray, p_nom: NDArray) -> None:
    """Each swept heater's P_pi from the eigenphases of its Y core blocks (grid of 0.45 - 2.2 x nominal)."""
    y = yd.copy()
    inval = ~stage.cvalid
    eye = np.eye(_CORE[1] - _CORE[0], dtype=bool)
    y[np.broadcast_to((inval[:, :, None] | inval[:, None, :])[:, None], y.shape)] = 0
    y = y + (inval[:, None, :, None] & eye[None, None]) * 1.0
    lam = np.linalg.eigvals(y)                                                     # (K, S, 6)
    grid = np.geomspace(0.45, 2.2, 121)
    for a in (0, 1):
        s = stage.kind == a
        pn = p_nom[stage.jf + a * stage.k]
        pred = np.exp(1j * stage.p[:, s][:, None, :] / (grid[None, :, None] * pn[:, None, None]))   # (K, G, S)
        dist = np.abs(lam[:, None, s, :] - pred[..., None]).min(-1) ** 2
        best = grid[np.argmin(dist.sum(-1), 1)]
        x[:, 2 + a] = np.log(best * pn)


def _stage_fit(st: ColumnState, data: ProgressiveData, c: int, hi: int, kappa: NDArray, p_nom: NDArray,
               grid: bool, rounds: int, iters: int, qual: dict) -> None:
    """Fit column c (and theta0 / alpha2 of column c-1) on its Gram windows; records quality in qual."""
    stage = _Stage(st, data, c, hi, kappa)
    yd = stage.data(data)
    steps = np.full(stage.npar, 1e-6)
    steps[8:] = 1e-6 / max(float(stage.p.max()), 1e-12)
    x = stage.pack()
    if grid:
        _p_from_eigs(stage, yd, x, p_nom)
        x[:, [1, 5, 7]] = 0.0
        for col, kind in ((4, 1), (0, 0), (6, 0)):
            _grid(stage, yd, x, col, stage.kind == kind)
            stage.unpack(x)
            x = stage.pack()
    cost, a = np.zeros(stage.K), None
    for r in range(rounds):
        x = stage.pack() if r else x
        x, cost, a = _lm(lambda z: _resid(stage, yd, z), x, stage.active, steps, iters,
                         fun_rows=lambda z, rr: _resid(stage, yd, z, rows=rr),
                         jac=(lambda z: window_jac(stage, z)) if _ANALYTIC_JAC else None)
        stage.unpack(x)
    n_res = 2 * stage.cmask.sum(1) * yd.shape[1]
    scale = np.sqrt(np.mean(np.abs(yd) ** 2, axis=(1, 2, 3)))
    q = np.sqrt(cost / np.maximum(n_res, 1)) / np.maximum(scale, 1e-30)
    reg = (~stage.active)[:, :, None] * np.eye(stage.npar) + 1e-12 * np.eye(stage.npar)
    cov = np.linalg.inv(a + reg) * (cost / np.maximum(n_res - stage.active.sum(1), 1))[:, None, None]
    sd = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))
    k = stage.k
    for j, f in enumerate(stage.jf):
        qual[int(k + f)] = (q[j], sd[j, 0], sd[j, 3])
        qual.setdefault(int(f), (q[j], np.inf, np.inf))
        qual[int(f)] = (q[j], qual[int(f)][1], sd[j, 2])
        for i in (0, 1):
            u = int(stage.u[j, i])
            if u >= 0:
                qual[u] = (max(q[j], qual.get(u, (0, 0, 0))[0]), sd[j, 4 + 2 * i], qual.get(u, (0, 0, np.inf))[2])
    ok = stage.nb_p >= 0
    e = stage.nb_e[ok]
    qual.setdefault("xt", {}).update({int(ei): float(s) for ei, s in zip(e, sd[np.nonzero(ok)[0], stage.nb_p[ok]])})


def _fit_last(st: ColumnState, data: ProgressiveData, qual: dict, iters: int = 12) -> None:
    """theta0 and alpha2 of the last column's MZIs from |W(s) R(s)^H| = |T_last(s)| (R: the rest of the model)."""
    lay, k = st.layout, st.layout.n_mzi
    c = lay.n_columns - 1
    if c < 0:
        return
    idx = np.concatenate([g[3] for g in data.groups if g[0] >= c - 1])
    ph = st.phases(data.powers[idx])
    q0 = int(lay.offsets[c])
    if c > 0:
        sub = MeshLayout(lay.n, lay.kind, lay.columns[:c])
        mdl = MeshModel(sub, st.alpha1[:q0], st.alpha2[:q0], 1.0, False)
        r_s, _, _ = propagate(mdl, np.concatenate([ph[:, :q0], ph[:, k: k + q0]], 1))
        qm = data.w[idx].astype(np.complex128) @ np.conj(np.swapaxes(r_s, 1, 2))
    else:
        qm = data.w[idx].astype(np.complex128)
    fl = np.arange(q0, k)
    m = lay.columns[c]
    def feats(b00: NDArray, b01: NDArray, b10: NDArray, b11: NDArray) -> NDArray:
        """Receiver-phase-free features of a block: |row 0|^2 entries and the row products b_r0 conj(b_r1)."""
        z = np.stack([np.abs(b00) ** 2 + 0j, np.abs(b11) ** 2 + 0j, b00 * np.conj(b01), b10 * np.conj(b11)], -1)
        return np.concatenate([z.real, z.imag[..., 2:]], -1)

    meas = np.moveaxis(feats(qm[:, m, m], qm[:, m, m + 1], qm[:, m + 1, m], qm[:, m + 1, m + 1]), 0, 1)
    dth = (ph[:, fl] - st.phi0[fl]).T                                                  # (Kf, S)
    phs = ph[:, k + fl].T

    def fun(x: NDArray) -> NDArray:
        t = _blocks(x[:, :1] + dth, phs, st.alpha1[fl][:, None], x[:, 1:2])
        return (feats(t[..., 0, 0], t[..., 0, 1], t[..., 1, 0], t[..., 1, 1]) - meas).reshape(fl.size, -1)

    x = np.stack([st.phi0[fl], st.alpha2[fl]], 1)
    best = np.full(fl.size, np.inf)
    for g in np.linspace(0, TWO_PI, 48, endpoint=False):
        xt = x.copy()
        xt[:, 0], xt[:, 1] = g, 0.0
        cst = (fun(xt) ** 2).sum(1)
        better = cst < best
        best[better], x[better, 0], x[better, 1] = cst[better], g, 0.0
    x, cost, a = _lm(fun, x, np.ones_like(x, bool), np.full(2, 1e-7), iters)
    st.phi0[fl], st.alpha2[fl] = x[:, 0], x[:, 1]
    dof = max(meas[0].size - 2, 1)
    sd = np.sqrt(np.maximum(np.diagonal(np.linalg.inv(a + 1e-12 * np.eye(2)), axis1=1, axis2=2), 0)
                 * (cost / dof)[:, None])
    q = np.sqrt(cost / meas[0].size) / np.sqrt(np.mean(meas ** 2))
    for i, f in enumerate(fl):
        old = qual.get(int(f), (0.0, np.inf, np.inf))
        qual[int(f)] = (max(old[0], q[i]), sd[i, 0], old[2])


def calibrate_progressive(lay: Any, model0: MeshModel, xt: tuple[NDArray, NDArray, NDArray], ctx: Any,
                          steps: int = 8, passes: int = 2, rounds: int = 2, iters: int = 10,
                          desc: str = "phase_shifters", remeasure: bool = False, min_passes: int = 3,
                          pass_tol_rad: float = 0.003) -> tuple[ColumnState, ProgressiveData, dict]:
    """Measure (measure_columns) and fit one rectangular layer (module docstring); up to `passes` passes, stopping
    after min_passes once a pass moves no phi0 by pass_tol_rad (rad; deep meshes converge slower: at N = 64 the
    phi0 error after 2 / 3 / 4 passes is 0.31 / 0.26 / 0.09 rad max); returns the state (phi0, P_pi, crosstalk,
    couplers, gains), the data and quality {heater: (residual, sd phi0, sd log P), 'xt': sd}."""
    layout = model0.layout
    k, n = layout.n_mzi, layout.n
    rows, cols, vals = (np.asarray(a) for a in xt)
    p_nom = np.asarray(lay.bank.cal.p_pi_w, np.float64).copy()
    data = measure_columns(lay, layout, ctx, steps=steps, desc=desc)
    acq = data.acquisitions
    st = ColumnState(layout, model0.eta, np.zeros(2 * k), p_nom.copy(), rows.astype(np.intp), cols.astype(np.intp),
                     vals.astype(np.float64).copy(), np.zeros(k), np.zeros(k), np.ones(n, np.complex128), np.ones(n))
    kappa = vals / p_nom[rows] if rows.size else np.zeros(0)
    qual: dict = {}
    done = 0
    for ps in range(passes):
        before = st.phi0.copy()
        if ps == 1 and remeasure:          # re-measure over a background with every theta at pi/2: every MZI mixes
            d2 = measure_columns(lay, layout, ctx, steps=steps, desc=desc + " (mixing background)",
                                 background=_mixing_background(st, lay.bank.p_max_w))
            acq += d2.acquisitions
            data = _merge(data, d2)
        for c in range(layout.n_columns):
            _stage_fit(st, data, c, 0 if ps == 0 else 2, kappa, p_nom, ps == 0, rounds if ps == 0 else 1, iters, qual)
            st.xt_vals = kappa * st.p_pi[st.xt_rows]
        _fit_last(st, data, qual)
        done = ps + 1
        step = float(np.abs(np.mod(st.phi0 - before + np.pi, TWO_PI) - np.pi).max(initial=0.0))
        if done >= min_passes and step < pass_tol_rad:     # Gauss-Seidel over the columns has converged
            break
    st.phi0 = np.mod(st.phi0, TWO_PI)
    st.xt_vals = kappa * st.p_pi[st.xt_rows]
    xs = qual.get("xt", {})
    st.sigma_xt = np.array([xs.get(e, np.inf) for e in range(rows.size)]) * st.p_pi[st.xt_rows]
    st.sigma_phi0 = np.array([qual.get(h, (0, np.inf, np.inf))[1] for h in range(2 * k)])
    st.sigma_p_pi_rel = np.array([qual.get(h, (0, np.inf, np.inf))[2] for h in range(2 * k)])
    _update_gains(st, data.m_raw, data.p_raw)
    data.acquisitions, data.writes = acq, acq + min(done, 2)
    st.info.update({"backgrounds": 2 if done > 1 and remeasure else 1, "stages": done * layout.n_columns,
                    "passes": done, "last_pass_phi0_step_rad": round(step, 5)})
    return st, data, qual


def _merge(a: ProgressiveData, b: ProgressiveData) -> ProgressiveData:
    """Both data sets as one (the off background keeps phi0 direct, the mixing one breaks bar / cross ties)."""
    o = a.powers.shape[0]
    return ProgressiveData(np.concatenate([a.powers, b.powers]), np.concatenate([a.w, b.w]),
                           a.groups + [(c, kd, mem, idx + o) for c, kd, mem, idx in b.groups],
                           np.concatenate([a.m_raw, b.m_raw]), np.concatenate([a.p_raw, b.p_raw]),
                           a.acquisitions + b.acquisitions, a.writes + b.writes)


def _mixing_background(st: ColumnState, p_max: NDArray) -> NDArray:
    """Heater powers (W) putting every theta at pi/2 or 3 pi/2 (the cheaper) by the estimate st (crosstalk
    included), phi heaters off."""
    k = st.layout.n_mzi
    p = np.zeros(st.phi0.size)
    for _ in range(6):
        other = (st.drive(p[None])[0] - p)[:k]
        p[:k] = np.mod(np.pi / 2 - st.phi0[:k] - other / st.p_pi[:k], np.pi) * st.p_pi[:k]      # pi/2 or 3 pi/2
    return np.minimum(p, 0.95 * p_max)
