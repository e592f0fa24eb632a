"""Scalable mesh calibration: a data-driven start from the sweeps, then column-by-column refinement (HAL data only).

Data: the coherent-receiver sweeps of lightloop.calibration.mesh_fit (complex M(s) = diag(g_out) U(s) diag(g_in)
for every heater setting s). Model: the same physical mesh as mesh_model (per heater phi0, P_pi and designed
crosstalk entries, both coupler errors of every MZI, receiver gains g_out, injector gains g_in > 0).

Start (no prior on phi0, which may be anywhere in [0, 2 pi)): every measured matrix is made unitary (polar
factor) and decomposed into ideal Clements / Reck phases (batched over settings). The decomposition returns
theta in [0, pi] (|theta| of the realised phase): each theta heater's fringe cos(theta(s)) is fitted over a grid
of P_pi with a linear solve for phi0. A phi heater's realised phase is read only in settings where every MZI
mixes (theta away from bar/cross, predicted from the theta start), and fitted by the circular coherence
|sum_s exp(i (phi_hat(s) - x(s) / P_pi))| over the same grid; then a few Gauss-Newton steps on wrapped
residuals fit phi0, 1/P_pi and the heater's crosstalk row (linear in them).

Refinement (Gauss-Seidel over columns): with the others held at their estimates, M = G_out L_c T_c R_c G_in,
so Q_c = L_c^-1 G_out^-1 M G_in^-1 R_c^-1 is block diagonal with the 2x2 transfers of column c's MZIs. Q_{c+1}
= T_{c+1} Q_c T_c^-1 costs O(N^2) per setting, so a sweep over all columns costs O(S N^3) and each MZI is
fitted alone (batched Levenberg-Marquardt, 6 + crosstalk parameters). Sweeps repeat until phi0 moves less
than a tolerance; receiver and injector gains are re-solved (closed form) between sweeps.

Programming (program_phases): the same column-wise local fit with a target U_t in place of M - the ideal
decomposition corrected MZI by MZI for the fitted coupler errors; output phases free without a screen.

STATUS (experimental, PhaseShifterRoutine with option ps_method: columns; the default is chip_progressive):
the model is exact - started at the hidden truth the sweeps stay within ~9 mrad of it (the unmodelled per-
waveguide loss spread; tests/test_calibration_chip_state.py) - and a sweep costs O(S N^3). Two things are
missing: (1) the decomposition start is ill-conditioned when any MZI of a setting sits near bar/cross (with
uniform phi0 that is most settings of pass 1: a 0.002 perturbation of M moved decomposed thetas by 1.4 rad),
so it only starts well near phi0 = 0; (2) the sweeps converge linearly and slowly along coupled
phi/coupler directions (from the truth + 0.05 rad: phi error 0.06 rad after 12 Anderson-mixed sweeps at N = 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.mesh_model import MeshModel, _w, propagate
from lightloop.physics.mzi import MeshLayout, _clements_sequence, _reck_sequence, _schedule, mzi_transfer

__all__ = ["decompose_batch", "ColumnState", "initial_state", "refine_columns", "program_phases", "state_residual"]

TWO_PI = 2 * np.pi
_PI4 = np.pi / 4


def _wrap(x: NDArray) -> NDArray:
    return (x + np.pi) % TWO_PI - np.pi


# --- batched ideal decomposition --------------------------------------------------------------------------
def decompose_batch(u: NDArray, kind: str) -> tuple[NDArray, NDArray]:
    """Ideal-mesh (theta, phi) in flat MZI order (S, K) of unitaries u (S, N, N); Clements / Reck, batched."""
    u = np.array(u, np.complex128, copy=True)
    s_n, n = u.shape[0], u.shape[1]
    _, step_of = _schedule(kind, n)
    steps = _clements_sequence(n)[0] if kind == "rectangular" else _reck_sequence(n)
    theta = np.zeros((s_n, len(steps)))
    phi = np.zeros((s_n, len(steps)))
    lefts = []
    for k, (side, r, c, m) in enumerate(steps):
        if side == "R":
            a, b = u[:, r, c], u[:, r, c + 1]
            th = 2 * np.arctan2(np.abs(b), np.abs(a))
            ph = np.where(np.abs(b) > 0, np.angle(a) - np.angle(b) + np.pi, 0.0)
            t = mzi_transfer(th, ph)
            cols = np.einsum("snk,sjk->snj", u[:, :, m: m + 2], t.conj())
            u[:, :, m: m + 2] = cols
            theta[:, k], phi[:, k] = th, ph
        else:
            a, b = u[:, m, c], u[:, m + 1, c]
            th = 2 * np.arctan2(np.abs(a), np.abs(b))
            ph = np.where(np.abs(a) > 0, np.angle(b) - np.angle(a), 0.0)
            t = mzi_transfer(th, ph)
            u[:, m: m + 2, :] = np.einsum("sjk,skn->sjn", t, u[:, m: m + 2, :])
            theta[:, k] = th
            lefts.append((k, m, th, ph))
    d = np.diagonal(u, axis1=1, axis2=2).copy()
    for k, m, th, ph in reversed(lefts):
        d1, d2 = d[:, m].copy(), d[:, m + 1].copy()
        phi[:, k] = np.angle(d1) - np.angle(d2)
        d[:, m] = -np.exp(-1j * (th + ph)) * d2
        d[:, m + 1] = -np.exp(-1j * th) * d2
    return theta[:, step_of], np.mod(phi[:, step_of], TWO_PI)


def _polar(m: NDArray) -> NDArray:
    """Nearest unitary of each matrix (S, N, N) after Sinkhorn scaling of |M|^2 to a doubly stochastic matrix:
    a unitary's |U|^2 is doubly stochastic, so the scaling removes the receivers' and injectors' gain errors
    (the decomposition amplifies what the polar factor alone leaves of them)."""
    a = np.abs(m) ** 2
    r = np.ones(m.shape[:2])
    c = np.ones(m.shape[:2])
    for _ in range(60):
        r = 1.0 / np.maximum((a * c[:, None, :]).sum(2), 1e-300)
        c = 1.0 / np.maximum((a * r[:, :, None]).sum(1), 1e-300)
    w, _, vh = np.linalg.svd(m * np.sqrt(r)[:, :, None] * np.sqrt(c)[:, None, :])
    return w @ vh


# --- state ---------------------------------------------------------------------------------------------
@dataclass
class ColumnState:
    """Estimates of one layer: heater phi0 (rad), P_pi (W/rad), crosstalk entries, couplers, gains."""

    layout: MeshLayout
    eta: float
    phi0: NDArray[np.float64]
    p_pi: NDArray[np.float64]
    xt_rows: NDArray[np.intp]
    xt_cols: NDArray[np.intp]
    xt_vals: NDArray[np.float64]
    alpha1: NDArray[np.float64]
    alpha2: NDArray[np.float64]
    g_out: NDArray[np.complex128]
    g_in: NDArray[np.float64]
    sigma_phi0: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]
    sigma_p_pi_rel: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]
    sigma_xt: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]
    info: dict[str, Any] = field(default_factory=dict)

    def neighbours(self) -> tuple[NDArray, NDArray, NDArray]:
        """Padded crosstalk rows: (H, B) aggressor index, (H, B) entry index into xt_*, (H, B) mask."""
        h = self.phi0.size
        counts = np.bincount(self.xt_rows, minlength=h) if self.xt_rows.size else np.zeros(h, np.intp)
        b = max(int(counts.max(initial=0)), 1)
        agg, ent, mask = np.zeros((h, b), np.intp), np.zeros((h, b), np.intp), np.zeros((h, b), bool)
        order = np.argsort(self.xt_rows, kind="stable")
        fill = np.zeros(h, np.intp)
        for e in order:
            r = self.xt_rows[e]
            agg[r, fill[r]], ent[r, fill[r]], mask[r, fill[r]] = self.xt_cols[e], e, True
            fill[r] += 1
        return agg, ent, mask

    def drive(self, powers: NDArray) -> NDArray:
        """x = C P per setting (S, H): own power plus the crosstalk entries (W, nominal R)."""
        x = powers.copy()
        if self.xt_rows.size:
            np.add.at(x.T, self.xt_rows, self.xt_vals[:, None] * powers[:, self.xt_cols].T)
        return x

    def phases(self, powers: NDArray) -> NDArray:
        """Heater phases (S, H) (rad)."""
        return self.phi0 + self.drive(powers) / self.p_pi

    def model(self) -> MeshModel:
        """The mesh model of these estimates."""
        return MeshModel(self.layout, self.alpha1.copy(), self.alpha2.copy(), self.eta, False)


def _fit_theta(th_hat: NDArray, x: NDArray, p_nom: NDArray, grid: NDArray) -> tuple[NDArray, NDArray]:
    """cos(theta_hat) = cos(phi0 + x / P): grid over P, phi0 from a linear solve; returns (phi0, P)."""
    y = np.cos(th_hat)                                              # (S, H)
    best = np.full(x.shape[1], np.inf)
    phi0, pp = np.zeros(x.shape[1]), p_nom.copy()
    for g in grid:
        u = x / (g * p_nom)
        a, b = np.cos(u), -np.sin(u)                                # y = cos(phi0) a + sin(phi0) b
        aa, ab, bb = (a * a).sum(0), (a * b).sum(0), (b * b).sum(0)
        ya, yb = (y * a).sum(0), (y * b).sum(0)
        det = aa * bb - ab * ab + 1e-12
        c0, s0 = (bb * ya - ab * yb) / det, (aa * yb - ab * ya) / det
        ph = np.arctan2(s0, c0)
        r = ((y - np.cos(ph + u)) ** 2).sum(0)
        better = r < best
        best[better], phi0[better], pp[better] = r[better], ph[better], g * p_nom[better]
    return phi0, pp


def _fit_circular(ph_hat: NDArray, w: NDArray, x: NDArray, p_nom: NDArray, grid: NDArray) -> tuple[NDArray, NDArray]:
    """Max over P of |sum_s w exp(i (ph_hat - x / P))|; phi0 = its angle."""
    z = w * np.exp(1j * ph_hat)
    best = np.full(x.shape[1], -1.0)
    phi0, pp = np.zeros(x.shape[1]), p_nom.copy()
    for g in grid:
        c = (z * np.exp(-1j * x / (g * p_nom))).sum(0)
        a = np.abs(c)
        better = a > best
        best[better], phi0[better], pp[better] = a[better], np.angle(c[better]), g * p_nom[better]
    return phi0, pp


def _circular_regression(st: ColumnState, ph_hat: NDArray, w: NDArray, powers: NDArray, sel: NDArray,
                         iters: int = 4) -> None:
    """Gauss-Newton on wrapped phase residuals of the heaters `sel`: phi0, 1/P_pi and crosstalk row (linear)."""
    agg, ent, mask = st.neighbours()
    for _ in range(iters):
        pred = st.phases(powers)
        r = _wrap(ph_hat[:, sel] - pred[:, sel]) * np.sqrt(w[:, sel])                    # (S, h)
        x = st.drive(powers)[:, sel]
        cols = [np.ones_like(x), x] + [powers[:, agg[sel, b]] * mask[sel, b] for b in range(agg.shape[1])]
        j = np.stack(cols, -1) * np.sqrt(w[:, sel])[:, :, None]                           # (S, h, 2 + B)
        # parameters: phi0, 1/P (as d(1/P)), c_b / P
        a = np.einsum("shi,shj->hij", j, j) + 1e-9 * np.eye(j.shape[-1])
        g = np.einsum("shi,sh->hi", j, r)
        d = np.linalg.solve(a, g[..., None])[..., 0]
        inv_p = 1.0 / st.p_pi[sel] + d[:, 1]
        ok = inv_p > 0
        hs = sel[ok]
        st.phi0[hs] = st.phi0[hs] + d[ok, 0]
        new_p = 1.0 / inv_p[ok]
        for b in range(agg.shape[1]):
            m = mask[hs, b]
            e = ent[hs[m], b]
            # c / P moves by d_b: new c = (c / P_old + d_b) * P_new
            st.xt_vals[e] = (st.xt_vals[e] / st.p_pi[hs[m]] + d[ok, 2 + b][m]) * new_p[m]
        st.p_pi[hs] = new_p


def initial_state(layout: MeshLayout, eta: float, m: NDArray, powers: NDArray, p_nom: NDArray,
                  xt_rows: NDArray, xt_cols: NDArray, xt_vals: NDArray, theta_only: bool = False,
                  theta_prior: tuple[NDArray, NDArray] | None = None) -> ColumnState:
    """Start from the data alone (module docstring): phi0 and P_pi of every heater, designed crosstalk,
    ideal couplers, gains from the measured matrices."""
    k, n = layout.n_mzi, layout.n
    h = 2 * k
    u = _polar(m)
    th_hat, ph_hat = decompose_batch(u, layout.kind)
    grid = np.geomspace(0.55, 1.8, 121)
    st = ColumnState(layout, eta, np.zeros(h), np.asarray(p_nom, np.float64).copy(), np.asarray(xt_rows, np.intp),
                     np.asarray(xt_cols, np.intp), np.asarray(xt_vals, np.float64).copy(), np.zeros(k), np.zeros(k),
                     np.ones(n, np.complex128), np.ones(n))
    x = st.drive(powers)
    ph0, pp = _fit_theta(th_hat, x[:, :k], st.p_pi[:k], grid)
    st.phi0[:k], st.p_pi[:k] = ph0, pp
    if theta_prior is not None:       # theta heaters known from an earlier pass: keep the better-determined start
        st.phi0[:k], st.p_pi[:k] = theta_prior
    if theta_only:
        return st
    th_pred = np.mod(st.phases(powers)[:, :k], TWO_PI)
    clean = np.all((th_pred > 0.2) & (th_pred < np.pi - 0.2), axis=1).astype(np.float64)   # no MZI flipped
    w_phi = clean[:, None] * np.sin(th_hat) ** 2
    ph0, pp = _fit_circular(ph_hat, w_phi, x[:, k:], st.p_pi[k:], grid)
    st.phi0[k:], st.p_pi[k:] = ph0, pp
    ph_all = np.concatenate([th_hat, ph_hat], 1)
    # theta: the sign-free realised phase equals the phase where the prediction lies in (0, pi)
    in_range = ((th_pred > 0.1) & (th_pred < np.pi - 0.1)).astype(np.float64)
    w_all = np.concatenate([in_range, w_phi], 1) + 1e-9
    _circular_regression(st, ph_all, w_all, powers, np.arange(h))
    st.phi0 = np.mod(st.phi0, TWO_PI)
    # gains: output magnitudes and phases from the measurement against the start model
    _update_gains(st, m, powers)
    return st


# --- column sweeps -------------------------------------------------------------------------------------
def _blocks(st: ColumnState, ph: NDArray, idx: NDArray, derivs: bool = False) -> Any:
    """2x2 transfers eta T (S, len(idx), 2, 2) of MZIs idx at heater phases ph (S, H); with derivs also
    d/dtheta, d/dphi, d/dalpha1, d/dalpha2."""
    k = st.layout.n_mzi
    th, phs = ph[:, idx], ph[:, k + idx]
    a1, a2 = st.alpha1[idx] + _PI4, st.alpha2[idx] + _PI4
    c1, s1, c2, s2 = np.cos(a1), 1j * np.sin(a1), np.cos(a2), 1j * np.sin(a2)
    et, ep = np.exp(1j * th), np.exp(1j * phs)
    eta = st.eta

    def assemble(w00, w01, w10, w11, with_phi=True):
        out = np.empty(th.shape + (2, 2), np.complex128)
        f = ep if with_phi else 1.0
        out[..., 0, 0], out[..., 0, 1], out[..., 1, 0], out[..., 1, 1] = w00 * f, w01, w10 * f, w11
        return eta * out

    t = assemble(*_w(c1, s1, c2, s2, et))
    if not derivs:
        return t
    iet = 1j * et
    d_th = assemble(c2 * iet * c1, c2 * iet * s1, s2 * iet * c1, s2 * iet * s1)
    d_ph = t.copy()
    d_ph[..., :, 0] *= 1j
    d_ph[..., :, 1] = 0
    dc1, ds1, dc2, ds2 = -np.sin(a1), 1j * np.cos(a1), -np.sin(a2), 1j * np.cos(a2)
    d_a1 = assemble(*_w(dc1, ds1, c2, s2, et))
    d_a2 = assemble(*_w(c1, s1, dc2, ds2, et))
    return t, d_th, d_ph, d_a1, d_a2


def _inv2(b: NDArray) -> NDArray:
    det = b[..., 0, 0] * b[..., 1, 1] - b[..., 0, 1] * b[..., 1, 0]
    out = np.empty_like(b)
    out[..., 0, 0], out[..., 1, 1] = b[..., 1, 1] / det, b[..., 0, 0] / det
    out[..., 0, 1], out[..., 1, 0] = -b[..., 0, 1] / det, -b[..., 1, 0] / det
    return out


def _left(q: NDArray, b: NDArray, m: NDArray, unpaired: NDArray, u: float) -> None:
    """q <- (column operator with blocks b on modes (m, m+1), u on unpaired modes) @ q, in place."""
    top, bot = q[:, m, :], q[:, m + 1, :]
    q[:, m, :] = b[..., 0, 0, None] * top + b[..., 0, 1, None] * bot
    q[:, m + 1, :] = b[..., 1, 0, None] * top + b[..., 1, 1, None] * bot
    if unpaired.size:
        q[:, unpaired, :] *= u


def _right(q: NDArray, b: NDArray, m: NDArray, unpaired: NDArray, u: float) -> None:
    """q <- q @ (column operator), in place."""
    a, c = q[:, :, m], q[:, :, m + 1]
    q[:, :, m] = a * b[:, None, :, 0, 0] + c * b[:, None, :, 1, 0]
    q[:, :, m + 1] = a * b[:, None, :, 0, 1] + c * b[:, None, :, 1, 1]
    if unpaired.size:
        q[:, :, unpaired] *= u


def _unpaired(layout: MeshLayout, c: int) -> NDArray:
    paired = np.zeros(layout.n, bool)
    m = layout.columns[c]
    paired[m] = paired[m + 1] = True
    return np.flatnonzero(~paired)


def _fit_column(st: ColumnState, y: NDArray, powers: NDArray, idx: NDArray, nb: tuple, iters: int,
                fit_xt: bool = True) -> float:
    """Batched Levenberg-Marquardt of the MZIs idx to their measured blocks y (S, kc, 2, 2); returns the
    largest phi0 step (rad)."""
    k = st.layout.n_mzi
    agg, ent, mask = nb
    hs = np.stack([idx, k + idx], 1)                          # (kc, 2) theta, phi heaters
    b = agg.shape[1] if fit_xt else 0
    npar = 6 + 2 * b
    lam = np.full(idx.size, 1e-3)
    start = st.phi0[hs].copy()

    def unpack_apply(p_old: dict, d: NDArray) -> dict:
        new = {key: v.copy() for key, v in p_old.items()}
        new["phi0"] = p_old["phi0"] + d[:, [0, 2]]
        new["lp"] = p_old["lp"] + d[:, [1, 3]]
        new["a1"], new["a2"] = p_old["a1"] + d[:, 4], p_old["a2"] + d[:, 5]
        if b:
            new["c"] = p_old["c"] + np.stack([d[:, 6: 6 + b], d[:, 6 + b:]], 1) * mask[hs]
        return new

    def write(p: dict, sel: NDArray) -> None:
        st.phi0[hs[sel]] = p["phi0"][sel]
        st.p_pi[hs[sel]] = np.exp(p["lp"][sel])
        st.alpha1[idx[sel]], st.alpha2[idx[sel]] = p["a1"][sel], p["a2"][sel]
        if b:
            m = mask[hs[sel]]
            st.xt_vals[ent[hs[sel]][m]] = p["c"][sel][m]

    def current() -> dict:
        p = {"phi0": st.phi0[hs].copy(), "lp": np.log(st.p_pi[hs]), "a1": st.alpha1[idx].copy(),
             "a2": st.alpha2[idx].copy()}
        if b:
            p["c"] = np.where(mask[hs], st.xt_vals[ent[hs]], 0.0)
        return p

    def cost_of() -> NDArray:
        t = _blocks(st, st.phases(powers), idx)
        return (np.abs(t - y) ** 2).sum(axis=(0, 2, 3))

    p = current()
    cost = cost_of()
    a_last = None
    for _ in range(iters):
        ph = st.phases(powers)
        x = st.drive(powers)
        t, d_th, d_ph, d_a1, d_a2 = _blocks(st, ph, idx, derivs=True)
        r = (t - y).reshape(y.shape[0], idx.size, 4)
        pp = st.p_pi[hs]                                      # (kc, 2)
        cols = []
        for hi, dd in ((0, d_th), (1, d_ph)):
            dd = dd.reshape(r.shape)
            cols += [dd, dd * (-x[:, hs[:, hi]] / pp[:, hi])[..., None]]
        cols += [d_a1.reshape(r.shape), d_a2.reshape(r.shape)]
        for hi, dd in ((0, d_th), (1, d_ph))[: 2 if b else 0]:
            dd = dd.reshape(r.shape)
            for bb in range(b):
                fac = powers[:, agg[hs[:, hi], bb]] * mask[hs[:, hi], bb] / pp[:, hi]
                cols.append(dd * fac[..., None])
        j = np.stack(cols, -1)                                # (S, kc, 4, npar)
        a = np.einsum("skri,skrj->kij", j.conj(), j).real
        g = np.einsum("skri,skr->ki", j.conj(), r).real
        a_last = a
        dg = np.maximum(np.diagonal(a, axis1=1, axis2=2), 1e-12)
        for _try in range(6):
            lhs = a + lam[:, None, None] * dg[:, :, None] * np.eye(npar) + 1e-12 * np.eye(npar)
            d = -np.linalg.solve(lhs, g[..., None])[..., 0]
            trial = unpack_apply(p, d)
            write(trial, np.ones(idx.size, bool))
            c_new = cost_of()
            ok = c_new < cost
            write(p, ~ok)                                     # reject per MZI
            p = {key: np.where(ok.reshape((-1,) + (1,) * (v.ndim - 1)), trial[key], v) for key, v in p.items()}
            cost = np.where(ok, c_new, cost)
            lam = np.where(ok, np.maximum(lam / 5, 1e-9), lam * 8)
            if ok.all():
                break
    write(p, np.ones(idx.size, bool))
    # uncertainties (per MZI): cov = inv(A) * cost / dof
    if a_last is not None:
        dof = max(8 * y.shape[0] - npar, 1)
        try:
            cov = np.linalg.inv(a_last + 1e-12 * np.eye(npar)) * (cost / dof)[:, None, None]
            sd = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))
            st.sigma_phi0[hs] = sd[:, [0, 2]]
            st.sigma_p_pi_rel[hs] = sd[:, [1, 3]]
            if b:
                sdc = np.stack([sd[:, 6: 6 + b], sd[:, 6 + b:]], 1)
                m = mask[hs]
                st.sigma_xt[ent[hs][m]] = sdc[m]
        except np.linalg.LinAlgError:
            pass
    return float(np.max(np.abs(_wrap(st.phi0[hs] - start)), initial=0.0))


def _update_gains(st: ColumnState, m: NDArray, powers: NDArray) -> None:
    """Closed-form receiver (complex) and injector (real, geometric mean 1) gains for the present model."""
    u, _, _ = propagate(st.model(), st.phases(powers))
    for _ in range(3):
        ug = u * st.g_in[None, None, :]
        st.g_out = (np.conj(ug) * m).sum((0, 2)) / np.maximum((np.abs(ug) ** 2).sum((0, 2)), 1e-300)
        uo = u * st.g_out[None, :, None]
        st.g_in = np.maximum((np.conj(uo) * m).sum((0, 1)).real / np.maximum((np.abs(uo) ** 2).sum((0, 1)), 1e-300),
                             1e-6)
        gm = float(np.exp(np.mean(np.log(st.g_in))))
        st.g_in, st.g_out = st.g_in / gm, st.g_out * gm


def state_residual(st: ColumnState, m: NDArray, powers: NDArray) -> NDArray:
    """Complex residual M_model - M (S, N, N)."""
    u, _, _ = propagate(st.model(), st.phases(powers))
    return st.g_out[None, :, None] * u * st.g_in[None, None, :] - m


def _pack(st: ColumnState) -> NDArray:
    return np.concatenate([st.phi0, np.log(st.p_pi), st.alpha1, st.alpha2, st.xt_vals, st.g_out.real, st.g_out.imag,
                           np.log(st.g_in)])


def _unpack(st: ColumnState, x: NDArray) -> None:
    h, k, nx, n = st.phi0.size, st.alpha1.size, st.xt_vals.size, st.g_in.size
    o = np.cumsum([0, h, h, k, k, nx, n, n, n])
    st.phi0, st.p_pi = x[o[0]: o[1]].copy(), np.exp(x[o[1]: o[2]])
    st.alpha1, st.alpha2, st.xt_vals = x[o[2]: o[3]].copy(), x[o[3]: o[4]].copy(), x[o[4]: o[5]].copy()
    st.g_out, st.g_in = x[o[5]: o[6]] + 1j * x[o[6]: o[7]], np.exp(x[o[7]: o[8]])


def _sweep(st: ColumnState, m: NDArray, powers: NDArray, nb: tuple, iters: int, fit_xt: bool) -> float:
    """One Gauss-Seidel sweep over the columns (input to output) and a gain update; the largest phi0 step."""
    lay = st.layout
    off = lay.offsets
    ph = st.phases(powers)
    old = [_blocks(st, ph, np.arange(off[c], off[c + 1])) for c in range(lay.n_columns)]
    unp = [_unpaired(lay, c) for c in range(lay.n_columns)]
    q = m / st.g_out[None, :, None] / st.g_in[None, None, :]
    for c in range(lay.n_columns - 1, 0, -1):
        _left(q, _inv2(old[c]), lay.columns[c], unp[c], 1.0 / st.eta)
    worst = 0.0
    for c in range(lay.n_columns):
        mm = lay.columns[c]
        idx = np.arange(off[c], off[c + 1])
        if idx.size:
            y = np.empty((q.shape[0], idx.size, 2, 2), np.complex128)
            y[..., 0, 0], y[..., 0, 1] = q[:, mm, mm], q[:, mm, mm + 1]
            y[..., 1, 0], y[..., 1, 1] = q[:, mm + 1, mm], q[:, mm + 1, mm + 1]
            worst = max(worst, _fit_column(st, y, powers, idx, nb, iters, fit_xt))
        if c + 1 < lay.n_columns:
            new = _blocks(st, st.phases(powers), idx)
            _left(q, old[c + 1], lay.columns[c + 1], unp[c + 1], st.eta)
            _right(q, _inv2(new), mm, unp[c], 1.0 / st.eta)
    _update_gains(st, m, powers)
    return worst


def refine_columns(st: ColumnState, m: NDArray, powers: NDArray, max_sweeps: int = 12, tol_rad: float = 2e-4,
                   iters: int = 4, progress: Any = None, history: int = 5) -> ColumnState:
    """Gauss-Seidel sweeps over the columns (module docstring) until phi0 moves less than tol_rad; the sweeps
    are a fixed-point map, accelerated by Anderson mixing of the last `history` iterates (reset when the data
    residual grows)."""
    h = 2 * st.layout.n_mzi
    for name in ("sigma_phi0", "sigma_p_pi_rel"):
        if getattr(st, name) is None:
            setattr(st, name, np.full(h, np.inf))
    if st.sigma_xt is None:
        st.sigma_xt = np.full(st.xt_vals.size, np.inf)
    nb = st.neighbours()
    steps: list[float] = []
    xs: list[NDArray] = []
    gs: list[NDArray] = []
    best = (np.inf, _pack(st))
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):
        fit_xt = sweeps > 1                                   # first sweep: phases and couplers only
        x0 = _pack(st)
        worst = _sweep(st, m, powers, nb, iters, fit_xt)
        gx = _pack(st)
        cost = float(np.mean(np.abs(state_residual(st, m, powers)) ** 2))
        if cost < best[0]:
            best = (cost, gx.copy())
        elif history:
            xs.clear()
            gs.clear()
        xs.append(x0)
        gs.append(gx)
        if history and len(xs) >= 2 and fit_xt:
            xs, gs = xs[-(history + 1):], gs[-(history + 1):]
            f = [g - x for g, x in zip(gs, xs)]
            d_f = np.stack([f[i + 1] - f[i] for i in range(len(f) - 1)], 1)
            d_g = np.stack([gs[i + 1] - gs[i] for i in range(len(gs) - 1)], 1)
            gam = np.linalg.lstsq(d_f, f[-1], rcond=None)[0]
            _unpack(st, gx - d_g @ gam)
        steps.append(worst)
        if progress is not None:
            progress(sweeps, worst)
        if worst < tol_rad and fit_xt:
            break
    cost = float(np.mean(np.abs(state_residual(st, m, powers)) ** 2))
    if cost > best[0]:
        _unpack(st, best[1])
    st.phi0 = np.mod(st.phi0, TWO_PI)
    st.info.update({"sweeps": sweeps, "phi0_step_per_sweep": [float(s) for s in steps]})
    return st


# --- programming -----------------------------------------------------------------------------------------
def program_phases(model: MeshModel, u_target: NDArray, start: NDArray, sweeps: int = 4,
                   iters: int = 6) -> tuple[NDArray, float]:
    """Phases (rad, channel order [theta, phi]) realising U_t on the model, from `start` (the ideal
    decomposition): column-wise local fits of every MZI to its block of L^-1 D^H U_t R^-1; output phases D
    free. Returns (phases, model fidelity)."""
    from lightloop.calibration.mesh_model import gauge_fidelity

    lay = model.layout
    k = lay.n_mzi
    st = ColumnState(lay, 1.0, np.zeros(2 * k), np.ones(2 * k), np.zeros(0, np.intp), np.zeros(0, np.intp),
                     np.zeros(0), model.alpha1, model.alpha2, np.ones(lay.n, np.complex128), np.ones(lay.n))
    st.phi0 = np.asarray(start, np.float64)[: 2 * k].copy()
    ut = np.asarray(u_target, np.complex128)[None]
    off = lay.offsets
    unp = [_unpaired(lay, c) for c in range(lay.n_columns)]
    for _ in range(sweeps):
        u0, _, _ = propagate(MeshModel(lay, model.alpha1, model.alpha2, 1.0, False), st.phi0[None])
        d = np.exp(1j * np.angle(np.sum(ut[0] * u0[0].conj(), axis=1)))      # best output phases
        q = ut / d[None, :, None]
        old = [_blocks(st, st.phi0[None], np.arange(off[c], off[c + 1])) for c in range(lay.n_columns)]
        for c in range(lay.n_columns - 1, 0, -1):
            _left(q, _inv2(old[c]), lay.columns[c], unp[c], 1.0)
        for c in range(lay.n_columns):
            mm = lay.columns[c]
            idx = np.arange(off[c], off[c + 1])
            if idx.size:
                y = np.empty((1, idx.size, 2, 2), np.complex128)
                y[..., 0, 0], y[..., 0, 1] = q[:, mm, mm], q[:, mm, mm + 1]
                y[..., 1, 0], y[..., 1, 1] = q[:, mm + 1, mm], q[:, mm + 1, mm + 1]
                _fit_phases(st, y, idx, iters)
            if c + 1 < lay.n_columns:
                new = _blocks(st, st.phi0[None], idx)
                _left(q, old[c + 1], lay.columns[c + 1], unp[c + 1], 1.0)
                _right(q, _inv2(new), mm, unp[c], 1.0)
    phases = np.mod(st.phi0, TWO_PI)
    u = model.matrix(phases) / model.eta ** lay.n_columns
    return phases, gauge_fidelity(u_target, u, False)


def _fit_phases(st: ColumnState, y: NDArray, idx: NDArray, iters: int) -> None:
    """Gauss-Newton of (theta, phi) of MZIs idx to target blocks y (1, kc, 2, 2) (couplers fixed)."""
    k = st.layout.n_mzi
    lam = np.full(idx.size, 1e-6)
    cost = (np.abs(_blocks(st, st.phi0[None], idx) - y) ** 2).sum((0, 2, 3))
    for _ in range(iters):
        t, d_th, d_ph, _, _ = _blocks(st, st.phi0[None], idx, derivs=True)
        r = (t - y).reshape(idx.size, 4)
        j = np.stack([d_th.reshape(idx.size, 4), d_ph.reshape(idx.size, 4)], -1)
        a = np.einsum("kri,krj->kij", j.conj(), j).real + lam[:, None, None] * np.eye(2)
        g = np.einsum("kri,kr->ki", j.conj(), r).real
        d = -np.linalg.solve(a + 1e-12 * np.eye(2), g[..., None])[..., 0]
        old = st.phi0[[*idx, *(k + idx)]].copy()
        st.phi0[idx] += d[:, 0]
        st.phi0[k + idx] += d[:, 1]
        c_new = (np.abs(_blocks(st, st.phi0[None], idx) - y) ** 2).sum((0, 2, 3))
        bad = ~(c_new <= cost)
        st.phi0[idx[bad]] = old[: idx.size][bad]
        st.phi0[k + idx[bad]] = old[idx.size:][bad]
        cost = np.where(bad, cost, c_new)
        lam = np.where(bad, lam * 10, lam / 3)
