"""Calibrated model of one unitary MZI-mesh layer as the HAL sees it, batched over heater settings, with
analytic derivatives (float64): M_s = diag(g_out) Psi_s T_C(s) ... T_1(s) diag(g_in).

T(theta, phi) = eta B(alpha2) diag(e^{i theta}, 1) B(alpha1) diag(e^{i phi}, 1) (lightloop.physics.mzi), with
the nominal per-column loss eta (uniform loss only scales U; its per-waveguide spread, ~0.2 % in amplitude,
is not modelled). Psi is the output phase screen (if present); g_out (complex, per output port) holds the
coherent receivers' gain and phase; g_in (real, > 0, geometric mean 1) the injectors' gain.

Gauge: the phases of the injectors are not modelled. A diagonal phase at the layer inputs pushes exactly
through the mesh into the phi (external) shifters - MZI (m, m+1) sees phi + psi_m - psi_{m+1}, the common
phase psi_{m+1} passes on - and finally into an output diagonal absorbed by g_out. So the fitted phi offsets
are referenced to the injectors' phases (the only phase reference at the inputs of a hidden layer);
output phases are a free gauge when the layer has no screen (detection is power-only), and with a screen
the receivers are the output reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lightloop.physics.mzi import MeshLayout, decompose, mesh_layout

__all__ = ["MeshModel", "propagate", "jacobians", "gauge_fidelity", "input_gauge_phi_shift", "refine_phases"]

_PI4 = np.pi / 4


@dataclass
class MeshModel:
    """Fitted (or nominal) optics of one layer: coupler errors (rad), nominal amplitude transmission, screen flag."""

    layout: MeshLayout
    alpha1: NDArray[np.float64]
    alpha2: NDArray[np.float64]
    eta: float = 1.0
    screen: bool = False

    @classmethod
    def nominal(cls, n: int, mesh: str, eta: float = 1.0, screen: bool = False) -> "MeshModel":
        """Ideal 50:50 couplers."""
        lay = mesh_layout(n, mesh)
        return cls(lay, np.zeros(lay.n_mzi), np.zeros(lay.n_mzi), float(eta), bool(screen))

    @property
    def n_channels(self) -> int:
        """Phase shifters of the layer: [theta (K), phi (K), psi (N if screen)]."""
        return 2 * self.layout.n_mzi + (self.layout.n if self.screen else 0)

    def matrix(self, phases: NDArray) -> NDArray[np.complex128]:
        """U (N, N) for one phase vector (rad), or (S, N, N) for (S, channels)."""
        p = np.asarray(phases, np.float64)
        u = propagate(self, np.atleast_2d(p))[0]
        return u[0] if p.ndim == 1 else u


def _coeffs(model: MeshModel, theta: NDArray, phi: NDArray) -> tuple:
    a1, a2 = model.alpha1 + _PI4, model.alpha2 + _PI4
    c1, s1, c2, s2 = np.cos(a1), 1j * np.sin(a1), np.cos(a2), 1j * np.sin(a2)
    et, ep = np.exp(1j * theta), np.exp(1j * phi)
    return c1, s1, c2, s2, et, ep


def _w(c1, s1, c2, s2, et):
    """W = B2 diag(e^{i theta}, 1) B1 entries (W00, W01, W10, W11)."""
    return c2 * et * c1 + s2 * s1, c2 * et * s1 + s2 * c1, s2 * et * c1 + c2 * s1, s2 * et * s1 + c2 * c1


def propagate(model: MeshModel, phases: NDArray, keep: bool = False) -> tuple[NDArray, list | None, list | None]:
    """U_s (S, N, N) for phases (S, channels); with keep, the prefix products Pre_c (after column c, Pre_-1 = I)
    and suffix products Suf_c (Psi T_C ... T_{c+1}) for the derivatives."""
    lay, n = model.layout, model.layout.n
    k = lay.n_mzi
    s = phases.shape[0]
    th, ph = phases[:, :k], phases[:, k: 2 * k]
    c1, s1, c2, s2, et, ep = _coeffs(model, th, ph)
    w00, w01, w10, w11 = _w(c1, s1, c2, s2, et)
    t = (w00 * ep, w01, w10 * ep, w11)
    off = lay.offsets
    u = np.broadcast_to(np.eye(n, dtype=np.complex128), (s, n, n)).copy()
    pre = [u.copy()] if keep else None
    for c, m in enumerate(lay.columns):
        sl = slice(off[c], off[c + 1])
        top, bot = u[:, m, :], u[:, m + 1, :]
        t00, t01, t10, t11 = (x[:, sl, None] for x in t)
        u[:, m, :], u[:, m + 1, :] = t00 * top + t01 * bot, t10 * top + t11 * bot
        if keep:
            pre.append(u.copy())
    scale = model.eta ** lay.n_columns
    psi = np.exp(1j * phases[:, 2 * k:]) if model.screen else None
    if psi is not None:
        u = psi[:, :, None] * u
    suf = None
    if keep:
        v = np.broadcast_to(np.eye(n, dtype=np.complex128), (s, n, n)).copy()
        if psi is not None:
            v = v * psi[:, :, None]
        suf = [None] * lay.n_columns
        for c in range(lay.n_columns - 1, -1, -1):
            suf[c] = v.copy()
            m = lay.columns[c]
            sl = slice(off[c], off[c + 1])
            t00, t01, t10, t11 = (x[:, None, sl] for x in t)
            a, b = v[:, :, m], v[:, :, m + 1]
            v[:, :, m], v[:, :, m + 1] = a * t00 + b * t10, a * t01 + b * t11
    return u * scale, pre, suf


def jacobians(model: MeshModel, phases: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """U (S, N, N), dU/dphase (S, channels, N, N) and dU/dalpha (S, 2K, N, N) ([alpha1..., alpha2...])."""
    lay, n = model.layout, model.layout.n
    k = lay.n_mzi
    s = phases.shape[0]
    u, pre, suf = propagate(model, phases, keep=True)
    scale = model.eta ** lay.n_columns
    th, ph = phases[:, :k], phases[:, k: 2 * k]
    c1, s1, c2, s2, et, ep = _coeffs(model, th, ph)
    w00, w01, w10, w11 = _w(c1, s1, c2, s2, et)
    dsin1, dcos1 = np.sin(model.alpha1 + _PI4), np.cos(model.alpha1 + _PI4)
    dsin2, dcos2 = np.sin(model.alpha2 + _PI4), np.cos(model.alpha2 + _PI4)
    dc1, ds1, dc2, ds2 = -dsin1, 1j * dcos1, -dsin2, 1j * dcos2
    d_a1 = _w(dc1, ds1, c2, s2, et)
    d_a2 = _w(c1, s1, dc2, ds2, et)
    n_ch = model.n_channels
    d_ph = np.zeros((s, n_ch, n, n), np.complex128)
    d_al = np.zeros((s, 2 * k, n, n), np.complex128)
    off = lay.offsets
    for c, m in enumerate(lay.columns):
        sl = slice(off[c], off[c + 1])
        L0, L1 = suf[c][:, :, m], suf[c][:, :, m + 1]            # (S, N, kc)
        R0, R1 = pre[c][:, m, :], pre[c][:, m + 1, :]            # (S, kc, N)
        e, f = et[:, sl], ep[:, sl]
        # theta: outer([c2, s2], i e^{i th} [c1 e^{i ph}, s1])
        lt = L0 * c2[sl] + L1 * s2[sl]
        rt = 1j * e[:, :, None] * (c1[sl, None] * f[:, :, None] * R0 + s1[sl, None] * R1)
        d_ph[:, sl] = np.einsum("sik,skj->skij", lt, rt)
        # phi: outer([W00, W10], [i e^{i ph}, 0])
        lp = L0 * w00[:, sl][:, None, :] + L1 * w10[:, sl][:, None, :]
        rp = 1j * f[:, :, None] * R0
        d_ph[:, k + sl.start: k + sl.stop] = np.einsum("sik,skj->skij", lp, rp)
        for dw, dst in ((d_a1, slice(sl.start, sl.stop)), (d_a2, slice(k + sl.start, k + sl.stop))):
            q00, q01, q10, q11 = (x[:, sl] for x in dw)
            a = L0 * (q00 * f)[:, None, :] + L1 * (q10 * f)[:, None, :]      # column from input m
            b = L0 * q01[:, None, :] + L1 * q11[:, None, :]                  # column from input m+1
            d_al[:, dst] = np.einsum("sik,skj->skij", a, R0) + np.einsum("sik,skj->skij", b, R1)
    if model.screen:
        idx = np.arange(n)
        d_ph[:, 2 * k + idx, idx, :] = 1j * u[:, idx, :] / scale
    return u, d_ph * scale, d_al * scale


def gauge_fidelity(u_target: NDArray, u: NDArray, screen: bool = False, unit: bool = False) -> float:
    """|tr(U_t^H U)| / N with a screen; without one the output phases are a free gauge:
    max over diagonal phases D of |tr(U_t^H D U)| / N = sum_i |<row_i U_t, row_i U>| / N.
    unit: divide by ||U||_F / sqrt(N) (loss- and gain-independent, <= 1 by Cauchy-Schwarz)."""
    n = u_target.shape[0]
    if screen:
        f = float(abs(np.trace(u_target.conj().T @ u)) / n)
    else:
        f = float(np.sum(np.abs(np.sum(u_target.conj() * u, axis=1))) / n)
    return f / (float(np.linalg.norm(u)) / np.sqrt(n)) if unit else f


def input_gauge_phi_shift(layout: MeshLayout, input_phase: NDArray) -> tuple[NDArray, NDArray]:
    """Shift of each MZI's phi (K,) when a diagonal phase input_phase (N,) is pushed through the mesh,
    and the output phase (N,) it leaves."""
    psi = np.asarray(input_phase, np.float64).copy()
    shift = np.zeros(layout.n_mzi)
    off = layout.offsets
    for c, m in enumerate(layout.columns):
        shift[off[c]: off[c + 1]] = psi[m] - psi[m + 1]
        psi[m] = psi[m + 1]
    return shift, psi


def refine_phases(model: MeshModel, u_target: NDArray, start: NDArray | None = None,
                  max_nfev: int = 200) -> tuple[NDArray, float]:
    """Phases (rad) realising U_target on the model (coupler errors included): the ideal Clements / Reck
    decomposition refined by least squares on the gauge-fixed mismatch; returns (phases, model fidelity).
    Dense LM, N <= ~16; mesh_program.program_unitary scales to N = 64 and is what the mesh routine uses."""
    from scipy.optimize import least_squares

    lay = model.layout
    if start is None:
        d = decompose(u_target, lay.kind)
        start = np.concatenate([d.theta, d.phi] + ([d.out_phase] if model.screen else []))
    ut = np.asarray(u_target, np.complex128)
    scale = model.eta ** lay.n_columns

    def resid(x: NDArray) -> NDArray:
        u = model.matrix(x) / scale
        if not model.screen:       # best output phases for the present mesh (variable projection)
            ov = np.sum(ut.conj() * u, axis=1)
            u = u * np.exp(-1j * np.angle(ov))[:, None]
        r = (u - ut).ravel()
        return np.concatenate([r.real, r.imag])

    r = least_squares(resid, np.asarray(start, np.float64), method="lm", max_nfev=max_nfev * start.size)
    return r.x, gauge_fidelity(ut, model.matrix(r.x) / scale, model.screen)
