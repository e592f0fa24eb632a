"""Window model of the progressive chip calibration (chip_progressive._Stage) and its analytic Jacobian.

Every local parameter of MZI j acts on ONE 2 x 2 block T of the window (its own phi0, alpha1 and both P_pi; theta0
and alpha2 of the upstream MZIs u1 / u2; each crosstalk rate onto one victim heater), in X(s) and in X_ref. With
the prefix P (window columns before the block's) and the suffix S (columns after), dX = S[:, m:m+2] dT P[m:m+2, :],
so d(X_ref^H X_s) = (S_s^H X_ref)[m:m+2]^H dT_s P_s[m:m+2] + P_ref[m:m+2]^H dT_ref^H (S_ref^H X_s)[m:m+2]: four
sweeps over the window per Jacobian (two forward with the prefixes kept, two backward) instead of one model
evaluation per (MZI, parameter) of a finite-difference Jacobian. Duck-typed on the stage (no import cycle).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["blocks", "sweep", "window_jac"]

_PI4 = np.pi / 4


def blocks(th: NDArray, ph: NDArray, a1: NDArray, a2: NDArray) -> NDArray:
    """2 x 2 transfers (..., 2, 2) of MZIs (unit loss) at phases th, ph (...) and coupler errors a1, a2 (rad)."""
    a1, a2 = a1 + _PI4, a2 + _PI4
    c1, s1, c2, s2 = np.cos(a1), 1j * np.sin(a1), np.cos(a2), 1j * np.sin(a2)
    et, ep = np.exp(1j * th), np.exp(1j * ph)
    t = np.empty(np.broadcast(th, ph, a1, a2).shape + (2, 2), np.complex128)
    t[..., 0, 0] = (c2 * et * c1 + s2 * s1) * ep
    t[..., 0, 1] = c2 * et * s1 + s2 * c1
    t[..., 1, 0] = (s2 * et * c1 + c2 * s1) * ep
    t[..., 1, 1] = s2 * et * s1 + c2 * c1
    return t


def dblock(v: int, th: NDArray, ph: NDArray, a1: NDArray, a2: NDArray) -> NDArray:
    """Derivative (..., 2, 2) of blocks() by th, ph, a1 or a2 (v = 0 .. 3; per rad): exact identities."""
    if v == 0:
        return 0.5j * (blocks(th, ph, a1, a2) - blocks(th + np.pi, ph, a1, a2))   # the exp(i th) part, times i
    if v == 1:
        return blocks(th, ph, a1, a2) * np.array([1j, 0.0])                       # exp(i ph): the first column
    q = np.pi / 2                                                # (cos, i sin) is linear in the coupler: shift
    return blocks(th, ph, a1 + q, a2) if v == 2 else blocks(th, ph, a1, a2 + q)


def dblocks(th: NDArray, ph: NDArray, a1: NDArray, a2: NDArray) -> NDArray:
    """Derivatives (4, ..., 2, 2) of blocks() by th, ph, a1, a2 (per rad)."""
    return np.stack([dblock(v, th, ph, a1, a2) for v in range(4)])


def _apply(u: NDArray, b: NDArray, m: NDArray, m1: NDArray, ki: NDArray, adjoint: bool) -> None:
    """u[rows m, m1] <- b u[rows m, m1] per slot (or b^H) in place; u (R, rows, S, nc), b (R, ns, S, 2, 2)."""
    top, bot = u[ki, m], u[ki, m1]                                          # (R, ns, S, nc)
    if adjoint:
        b = np.conj(np.swapaxes(b, -1, -2))
    u[ki, m] = b[..., 0, 0, None] * top + b[..., 0, 1, None] * bot
    u[ki, m1] = b[..., 1, 0, None] * top + b[..., 1, 1, None] * bot


def _rows(stage: Any, r_: NDArray, sl: slice) -> tuple[NDArray, NDArray]:
    """Window rows m, m + 1 of the slots sl (dummy row wd for empty slots)."""
    valid, wd = stage.valid[r_, sl], stage.wd
    m = np.where(valid, stage.M[r_, sl], wd)
    return m, np.where(valid, m + 1, wd)


def sweep(stage: Any, b: NDArray, r_: NDArray, keep: bool = False,
          mask: bool = False) -> tuple[NDArray, NDArray | None]:
    """X (R, wd + 1, S, nc) of the blocks b (R, S, NS, 2, 2) applied to the core columns (row wd: dummy; with
    mask, core columns outside the mesh are zero); with keep, also the prefix before every window column
    (R, C, wd + 1, S, nc)."""
    K, wd, lrows = r_.size, stage.wd, stage.lrows[r_]
    nc, ki = lrows.shape[1], np.arange(K)[:, None]
    u = np.zeros((K, wd + 1, b.shape[1], nc), np.complex128)
    u[ki, lrows, :, np.arange(nc)[None, :]] = stage.cvalid[r_][:, :, None] if mask else 1.0
    pre = np.empty((K, len(stage.col_slots), wd + 1, b.shape[1], nc), np.complex128) if keep else None
    for ci, sl in enumerate(stage.col_slots):
        if pre is not None:
            pre[:, ci] = u
        m, m1 = _rows(stage, r_, sl)
        _apply(u, np.moveaxis(b[:, :, sl], 1, 2), m, m1, ki, False)
    return u, pre


def _back(stage: Any, b: NDArray, g: NDArray, r_: NDArray) -> NDArray:
    """S_ci^H g for every window column ci (R, C, wd + 1, S, nc): S_ci the columns after ci of the blocks b."""
    u, ki = g.copy(), np.arange(r_.size)[:, None]
    out = np.empty((g.shape[0], len(stage.col_slots)) + g.shape[1:], np.complex128)
    for ci in range(len(stage.col_slots) - 1, -1, -1):
        out[:, ci] = u
        sl = stage.col_slots[ci]
        m, m1 = _rows(stage, r_, sl)
        _apply(u, np.moveaxis(b[:, :, sl], 1, 2), m, m1, ki, True)
    return out


def _terms(stage: Any) -> tuple[NDArray, ...]:
    """(row j, parameter p, slot, variable 0 th / 1 ph / 2 a1 / 3 a2, factor kind) of every active local
    parameter; factor kind 0: 1, 1 / 2: -own power / P_pi of j's theta / phi heater, 3 / 4: the power of j's
    theta / phi heater (a crosstalk rate)."""
    if getattr(stage, "_jac_terms", None) is not None:
        return stage._jac_terms
    out = []
    for j in range(stage.K):
        js, (u1, u2) = int(stage.jslot[j]), (int(s) for s in stage.uslot[j])
        out += [(j, 0, js, 1, 0), (j, 1, js, 2, 0), (j, 2, js, 0, 1), (j, 3, js, 1, 2)]
        for i, us in enumerate((u1, u2)):
            if us >= 0 and stage.active[j, 4 + 2 * i]:
                out += [(j, 4 + 2 * i, us, 0, 0), (j, 5 + 2 * i, us, 3, 0)]
    for j, sl, t, a in zip(*np.nonzero(stage.loc >= 0)):
        out.append((int(j), int(stage.loc[j, sl, t, a]), int(sl), int(t), 3 + int(a)))
    terms = [np.array(c, np.intp) for c in zip(*out)]
    unique = np.unique(terms[0] * stage.npar + terms[1]).size == terms[0].size
    stage._jac_terms = (*terms, unique)
    return stage._jac_terms


def _factors(stage: Any, x: NDArray, tj: NDArray, tp: NDArray, tsl: NDArray, kind: NDArray, i: int) -> NDArray:
    """Phase per parameter (T, S) of every term for the settings (i = 0) or their references (i = 1)."""
    own, _, pj = stage.pre[i]                            # (K, S, NS, 2), _, (K, S, 2)
    f = np.ones((tj.size, own.shape[1]))
    for kd in (1, 2):
        s = kind == kd
        f[s] = -own[tj[s], :, tsl[s], kd - 1] * np.exp(-x[tj[s], tp[s]])[:, None]
    for kd in (3, 4):
        s = kind == kd
        f[s] = pj[tj[s], :, kd - 3]
    return f


def _dterms(stage: Any, x: NDArray, p: NDArray, a1: NDArray, a2: NDArray, terms: tuple, i: int) -> NDArray:
    """dT (T, S, 2, 2) of every term at the phases p (K, S, NS, 2) of the settings (i = 0) or refs (i = 1)."""
    tj, tp, tsl, var, kind = terms[:5]
    th, ph = p[tj, :, tsl, 0], p[tj, :, tsl, 1]
    b1, b2 = a1[tj, tsl][:, None], a2[tj, tsl][:, None]
    d = np.empty(th.shape + (2, 2), np.complex128)
    for v in range(4):
        s = var == v
        if s.any():
            d[s] = dblock(v, th[s], ph[s], b1[s], b2[s])
    return d * _factors(stage, x, tj, tp, tsl, kind, i)[..., None, None]


def window_jac(stage: Any, x: NDArray) -> NDArray:
    """Transposed Jacobian (K, npar, 2 * S * nc^2) of chip_progressive._resid (all rows, all settings; real and
    imaginary parts interleaved) by the local parameters x (K, npar); zero for inactive parameters."""
    r_ = np.arange(stage.K)
    ph, ph0, a1, a2 = stage.phases(x)
    half = stage.half
    t_s = blocks(ph[..., 0], ph[..., 1], a1[:, None], a2[:, None])                 # (K, S, NS, 2, 2)
    t_r = blocks(ph0[..., 0], ph0[..., 1], a1[:, None], a2[:, None])               # (K, B, NS, 2, 2)
    x_s, p_s = sweep(stage, t_s, r_, keep=True, mask=True)           # masked core columns: masked residuals
    x_r, p_r = sweep(stage, t_r, r_, keep=True, mask=True)
    x_r[:, -1] = x_s[:, -1] = 0.0                                                   # dummy row
    g_s = _back(stage, t_s, x_r[:, :, half], r_)                                    # S_s^H X_ref
    h_r = _back(stage, t_r[:, half], x_s, r_)                                       # S_ref^H X_s
    terms = _terms(stage)
    tj, tp, tsl, unique = terms[0], terms[1], terms[2], terms[5]
    ci = np.zeros(stage.F.shape[1], np.intp)
    for i, sl in enumerate(stage.col_slots):
        ci[sl] = i
    tc, mm = ci[tsl][:, None], stage.M[tj, tsl][:, None] + np.arange(2)

    def two(a: NDArray) -> NDArray:
        """Rows m, m + 1 of window column tc of a (K, C, wd + 1, S, nc) per term: (T, S, 2, nc)."""
        return np.moveaxis(a[tj[:, None], tc, mm], 1, 2)

    d_s, d_r = _dterms(stage, x, ph, a1, a2, terms, 0), _dterms(stage, x, ph0, a1, a2, terms, 1)
    left_r = np.conj(np.swapaxes(d_r @ two(p_r), -1, -2))                          # P_r^H dT_r^H (T, B, nc, 2)
    left = np.concatenate([np.swapaxes(np.conj(two(g_s)), -1, -2) @ d_s, left_r[:, half]], -1)   # rank 4
    right = np.concatenate([two(p_s), two(h_r)], -2)                                # (T, S, 4, nc)
    K, S, nc = stage.K, ph.shape[1], left.shape[-2]
    jc = np.zeros((K, stage.npar, S, nc, nc), np.complex128)
    if unique:
        jc[tj, tp] = left @ right                                                      # (T, S, nc, nc)
    else:
        np.add.at(jc, (tj, tp), left @ right)
    return jc.view(np.float64).reshape(K, stage.npar, -1)                             # (re, im) interleaved
