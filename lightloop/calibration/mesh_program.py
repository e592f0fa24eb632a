"""Programming a target unitary on an MZI mesh with known coupler errors, in seconds up to N = 64.

Two steps, both on the calibrated MeshModel (couplers alpha1/alpha2; the uniform loss eta only scales U):

1. Error-corrected decomposition (Bandyopadhyay et al., Optica 8, 1247 (2021)): the ideal Clements / Reck
   decomposition gives every MZI an ideal 2x2 block T_id(theta, phi). In light order (input columns first)
   each IMPERFECT MZI is solved exactly for T(theta', phi') = D' T_id D^-1, where D is the diagonal phase
   error the earlier MZIs left on its two inputs and D' the one it leaves on its outputs (carried on):
   |T_00|^2 = c1^2 c2^2 + s1^2 s2^2 - 2 c1 c2 s1 s2 cos(theta') fixes theta', the row phase ratio fixes phi'.
   The reachable range is sin^2(alpha1 + alpha2) <= |T_00|^2 <= cos^2(alpha1 - alpha2): near-cross or
   near-bar targets outside it get the nearest reachable theta' (best achievable, never NaN). The phase
   error left at the outputs goes into the screen (if any) or the free output gauge. O(N^2).
2. Global refinement: L-BFGS on the gauge-fixed fidelity F = sum_i |<row_i U_t, row_i U>| / N (output
   phases free) with its analytic gradient by one forward and one backward sweep (O(N^3) per step, ~7 ms
   at N = 64). What step 1 leaves comes from the unreachable MZIs (Haar targets put more near-cross MZIs
   in the mesh centre as N grows; Hamerly et al., Phys. Rev. Applied 18, 024019 (2022)); the polish
   spreads their error over the other phases. With a screen, its phases are then set to the optimal gauge.
   Measured at 0.06 rad coupler sd, 1 - F: N = 16 ~1e-4 (step 1 ~1e-3), N = 64 ~1.2e-3 after 1000
   iterations (step 1 ~1.5e-2, ideal decomposition ~0.19); benchmarks/mesh_programming.py.

Channel order [theta (K), phi (K), psi (N if screen)] as MeshModel; phases returned in [0, 2 pi).
"""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.mesh_model import MeshModel, gauge_fidelity
from lightloop.errors import ConfigError
from lightloop.physics.mzi import decompose

__all__ = ["corrected_decomposition", "refine_global", "program_unitary", "ideal_decomposition"]

TWO_PI = 2 * np.pi
_PI4 = np.pi / 4
_WHERE = "lightloop/calibration/mesh_program.py"


def _check_target(model: MeshModel, u_target: NDArray) -> NDArray[np.complex128]:
    """U_t as complex128 (N, N); ConfigError (a ValueError) naming the field when the shape or unitarity is wrong."""
    ut = np.asarray(u_target, np.complex128)
    n = model.layout.n
    if ut.shape != (n, n):
        raise ConfigError(f"{_WHERE}: u_target: expected shape ({n}, {n}) for this {n}-port mesh, got {ut.shape}")
    err = float(np.abs(ut @ ut.conj().T - np.eye(n)).max()) if np.all(np.isfinite(ut)) else float("inf")
    if not err <= 1e-8:
        raise ConfigError(f"{_WHERE}: u_target: expected a unitary matrix (max |U U^H - I| <= 1e-8), got {err:.3g}")
    return ut


def ideal_decomposition(model: MeshModel, u_target: NDArray) -> NDArray[np.float64]:
    """Phases (rad) of the uncorrected ideal decomposition, channel order (screen phases if the model has one)."""
    d = decompose(_check_target(model, u_target), model.layout.kind)
    return np.concatenate([d.theta, d.phi] + ([d.out_phase] if model.screen else []))


def _mzi_w(a1: NDArray, a2: NDArray, theta: NDArray) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """W = B(a2) diag(e^{i theta}, 1) B(a1) entries (w00, w01, w10, w11) per MZI."""
    c1, s1 = np.cos(a1 + _PI4), 1j * np.sin(a1 + _PI4)
    c2, s2 = np.cos(a2 + _PI4), 1j * np.sin(a2 + _PI4)
    et = np.exp(1j * theta)
    return c2 * et * c1 + s2 * s1, c2 * et * s1 + s2 * c1, s2 * et * c1 + c2 * s1, s2 * et * s1 + c2 * c1


def _solve_mzi(a1: NDArray, a2: NDArray, m: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """Imperfect MZIs closest to the target 2x2 blocks m (kc, 2, 2) up to output phases: (theta', phi',
    output phase (kc, 2) of D' with T(theta', phi') ~= D' m); exact when |m00|^2 is reachable."""
    c1, s1 = np.cos(a1 + _PI4), np.sin(a1 + _PI4)
    c2, s2 = np.cos(a2 + _PI4), np.sin(a2 + _PI4)
    p = np.abs(m[:, 0, 0]) ** 2 / np.maximum(np.sum(np.abs(m[:, 0]) ** 2, axis=1), 1e-300)
    den = 2 * c1 * c2 * s1 * s2
    cos_t = np.clip((c1 ** 2 * c2 ** 2 + s1 ** 2 * s2 ** 2 - p) / np.where(np.abs(den) > 1e-12, den, 1e-12), -1, 1)
    theta = np.arccos(cos_t)
    w00, w01, w10, w11 = _mzi_w(a1, a2, theta)
    # phi' aligns both rows' phase ratio: max_phi sum_r |<m_r, T_r>| (exact when reachable)
    z = m[:, 0, 0] * np.conj(m[:, 0, 1]) * np.conj(w00) * w01 + m[:, 1, 0] * np.conj(m[:, 1, 1]) * np.conj(w10) * w11
    phi = np.where(np.abs(z) > 1e-300, np.angle(z), 0.0)
    ep = np.exp(1j * phi)
    t = np.stack([np.stack([w00 * ep, w01], -1), np.stack([w10 * ep, w11], -1)], -2)
    ov = np.sum(np.conj(m) * t, axis=2)                                  # <m_r, T_r> per row
    return theta, phi, np.angle(ov)


def corrected_decomposition(model: MeshModel, u_target: NDArray) -> NDArray[np.float64]:
    """Phases (rad, channel order) of the error-corrected decomposition (step 1 of the module docstring)."""
    ut = _check_target(model, u_target)
    lay = model.layout
    k, n = lay.n_mzi, lay.n
    d = decompose(ut, lay.kind)
    ep = np.exp(1j * d.phi)
    # ideal T = i e^{i th/2} [[e^{i ph} sin(th/2), cos(th/2)], [e^{i ph} cos(th/2), -sin(th/2)]]
    g = 1j * np.exp(0.5j * d.theta)
    sn, cs = np.sin(d.theta / 2), np.cos(d.theta / 2)
    t_id = np.stack([np.stack([g * ep * sn, g * cs], -1), np.stack([g * ep * cs, -g * sn], -1)], -2)
    theta, phi = np.zeros(k), np.zeros(k)
    delta = np.zeros(n)                   # realised prefix = diag(e^{i delta}) ideal prefix
    off = lay.offsets
    for c, mm in enumerate(lay.columns):
        sl = slice(off[c], off[c + 1])
        if mm.size == 0:
            continue
        dinv = np.exp(-1j * np.stack([delta[mm], delta[mm + 1]], -1))         # (kc, 2)
        m = t_id[sl] * dinv[:, None, :]
        theta[sl], phi[sl], out = _solve_mzi(model.alpha1[sl], model.alpha2[sl], m)
        delta[mm], delta[mm + 1] = out[:, 0], out[:, 1]
    phases = [theta, phi]
    if model.screen:
        phases.append(d.out_phase - delta)
    return np.mod(np.concatenate(phases), TWO_PI)


def _column_slices(lay) -> list[tuple[slice, object, object]]:
    """Per column: (flat MZI slice, top-mode index, bottom-mode index); strided slices when the modes step by 2."""
    out, off = [], lay.offsets
    for c, m in enumerate(lay.columns):
        if m.size and np.all(np.diff(m) == 2):
            t, b = slice(int(m[0]), int(m[-1]) + 1, 2), slice(int(m[0]) + 1, int(m[-1]) + 2, 2)
        else:
            t, b = m, m + 1
        out.append((slice(int(off[c]), int(off[c + 1])), t, b))
    return out


def _fidelity_and_grad(model: MeshModel, ut: NDArray, x: NDArray, cols: list | None = None) -> tuple[float, NDArray]:
    """Gauge-fixed F (output phases free, lossless scale) and dF/d[theta, phi] (2K,) by adjoint sweeps."""
    lay = model.layout
    k, n = lay.n_mzi, lay.n
    cols = cols or _column_slices(lay)
    th, ph = x[:k], x[k: 2 * k]
    c1, s1 = np.cos(model.alpha1 + _PI4), 1j * np.sin(model.alpha1 + _PI4)
    c2, s2 = np.cos(model.alpha2 + _PI4), 1j * np.sin(model.alpha2 + _PI4)
    e, ep = np.exp(1j * th), np.exp(1j * ph)
    w00, w01, w10, w11 = c2 * e * c1 + s2 * s1, c2 * e * s1 + s2 * c1, s2 * e * c1 + c2 * s1, s2 * e * s1 + c2 * c1
    t00, t10 = (w00 * ep)[:, None], (w10 * ep)[:, None]
    t01, t11 = w01[:, None], w11[:, None]
    u = np.eye(n, dtype=np.complex128)            # rows: output modes of the prefix
    pre = []
    for sl, it, ib in cols:
        pre.append(u.copy())
        top, bot = u[it], u[ib]
        u[it], u[ib] = t00[sl] * top + t01[sl] * bot, t10[sl] * top + t11[sl] * bot
    ov = np.sum(np.conj(ut) * u, axis=1)
    f = float(np.sum(np.abs(ov)) / n)
    gph = np.where(np.abs(ov) > 1e-300, np.exp(-1j * np.angle(ov)), 1.0)
    hr = np.conj(ut) * gph[:, None]               # H^T = S_c^T G (rows: the modes H's columns index)
    d00, d01 = 1j * c2 * e * c1 * ep, 1j * c2 * e * s1
    d10, d11 = 1j * s2 * e * c1 * ep, 1j * s2 * e * s1
    g_th, g_ph = np.zeros(k), np.zeros(k)
    for c in range(len(cols) - 1, -1, -1):
        sl, it, ib = cols[c]
        if sl.start == sl.stop:
            continue
        p = pre[c]
        pt, pb, ht, hb = p[it], p[ib], hr[it], hr[ib]             # (kc, N) each
        # Q[b, a] = sum_j P[b, j] H[j, a] = sum_j P[b, j] H^T[a, j], b, a in {m, m+1}
        q00, q01 = np.sum(pt * ht, 1), np.sum(pt * hb, 1)
        q10, q11 = np.sum(pb * ht, 1), np.sum(pb * hb, 1)
        # dF = Re sum_{ab} Q[b, a] dT[a, b]
        g_th[sl] = np.real(q00 * d00[sl] + q10 * d01[sl] + q01 * d10[sl] + q11 * d11[sl])
        g_ph[sl] = np.real(1j * (q00 * t00[sl, 0] + q01 * t10[sl, 0]))
        hr[it], hr[ib] = t00[sl] * ht + t10[sl] * hb, t01[sl] * ht + t11[sl] * hb
    return f, np.concatenate([g_th, g_ph]) / n


def refine_global(model: MeshModel, u_target: NDArray, start: NDArray, max_iter: int = 1000,
                  target_infidelity: float = 1e-7, max_seconds: float = 60.0) -> NDArray[np.float64]:
    """L-BFGS on the gauge-fixed fidelity from start (channel order), stopped at max_iter iterations,
    1 - F <= target_infidelity or max_seconds (s); screen phases set to the optimal output gauge."""
    from scipy.optimize import minimize

    ut = _check_target(model, u_target)
    k = model.layout.n_mzi
    x0 = np.asarray(start, np.float64)[: 2 * k]
    cols = _column_slices(model.layout)
    best = [np.inf, x0]
    t_end = time.perf_counter() + float(max_seconds)

    def fun(x: NDArray) -> tuple[float, NDArray]:
        f, g = _fidelity_and_grad(model, ut, x, cols)
        if np.isfinite(f) and 1.0 - f < best[0]:
            best[0], best[1] = 1.0 - f, x.copy()
        return 1.0 - f, -g

    def stop(intermediate_result: object) -> None:
        if best[0] <= target_infidelity or time.perf_counter() > t_end:
            raise StopIteration

    if max_iter > 0:
        minimize(fun, x0, jac=True, method="L-BFGS-B", callback=stop,
                 options={"maxiter": int(max_iter), "ftol": 1e-12, "gtol": 1e-12})
    return _with_screen(model, ut, best[1])


def _with_screen(model: MeshModel, ut: NDArray, x: NDArray) -> NDArray[np.float64]:
    """[theta, phi] plus, with a screen, psi = the optimal output gauge; all wrapped to [0, 2 pi)."""
    parts = [np.asarray(x, np.float64)[: 2 * model.layout.n_mzi]]
    if model.screen:
        bare = MeshModel(model.layout, model.alpha1, model.alpha2, 1.0, False)
        u = bare.matrix(parts[0])
        parts.append(np.angle(np.sum(ut * np.conj(u), axis=1)))
    return np.mod(np.concatenate(parts), TWO_PI)


def program_unitary(model: MeshModel, u_target: NDArray, refine: bool = True, max_iter: int = 1000,
                    max_seconds: float = 60.0) -> tuple[NDArray[np.float64], float]:
    """Phases (rad, channel order) realising U_t on the model: corrected decomposition, then (refine) the
    global L-BFGS polish (max_iter iterations, max_seconds s); returns (phases, model F_unit, output gauge free)."""
    ut = _check_target(model, u_target)
    x = corrected_decomposition(model, ut)
    if refine:
        x = refine_global(model, ut, x, max_iter=max_iter, max_seconds=max_seconds)
    u = model.matrix(x)
    return x, gauge_fidelity(ut, u, model.screen, unit=True)
