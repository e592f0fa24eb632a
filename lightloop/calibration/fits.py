"""Model fits of the calibration routines (float64, scipy least_squares, multi-start, variable projection).

Every fit separates the few shared nonlinear parameters (LUT gamma, optical depth, saturation
scale ...) from the many per-channel linear ones (amplitude, offset), which are solved in closed
form for every trial of the nonlinear ones (variable projection): the outer problem stays small
however many detector channels are calibrated in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from lightloop.hal.calibration_maps import VaporCellMap
from lightloop.physics.saturable_absorber import sa_forward

__all__ = [
    "FitReport",
    "linear_per_channel",
    "multistart",
    "fit_lut",
    "fit_fill",
    "fit_saturable_absorber",
    "fit_vapor_map",
    "fit_fringing",
]


@dataclass
class FitReport:
    """Outcome of one fit: parameters, their standard errors, residual figures, quality verdict."""

    params: dict[str, Any]
    stderr: dict[str, Any] = field(default_factory=dict)
    rms_residual: float = float("nan")
    norm_rms_per_channel: NDArray | None = None
    starts: int = 1
    ok: bool = True
    message: str = ""

    def meta(self) -> dict[str, Any]:
        """JSON-able summary."""
        def conv(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, (np.floating, np.integer)):
                return v.item()
            return v
        out = {"params": {k: conv(v) for k, v in self.params.items()},
               "stderr": {k: conv(v) for k, v in self.stderr.items()},
               "rms_residual": float(self.rms_residual), "starts": self.starts, "ok": self.ok}
        if self.norm_rms_per_channel is not None:
            n = self.norm_rms_per_channel
            out["norm_rms_residual_max"] = float(np.max(n)) if n.size else 0.0
            out["norm_rms_residual_median"] = float(np.median(n)) if n.size else 0.0
        if self.message:
            out["message"] = self.message
        return out


def linear_per_channel(basis: NDArray, data: NDArray) -> tuple[NDArray, NDArray]:
    """Least-squares coefficients (k, channels) of data (samples, channels) on basis (samples, k); residuals."""
    b = np.asarray(basis, np.float64)
    gram = b.T @ b
    try:
        # normal equations on a tiny (k x k) system: far cheaper than an SVD per trial of the outer fit
        coef = np.linalg.solve(gram + 1e-15 * np.trace(gram) * np.eye(gram.shape[0]), b.T @ data)
    except np.linalg.LinAlgError:
        coef, *_ = np.linalg.lstsq(b, data, rcond=None)
    return coef, data - b @ coef


def multistart(residual: Callable[[NDArray], NDArray], starts: Sequence[Sequence[float]],
               bounds: tuple[Sequence[float], Sequence[float]], x_scale: Any = 1.0) -> tuple[Any, int]:
    """Run least_squares from every start (inside the bounds); return the lowest-cost solution and #starts."""
    best = None
    lo, hi = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
    for x0 in starts:
        x0 = np.clip(np.asarray(x0, float), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        try:
            r = least_squares(residual, x0, bounds=(lo, hi), x_scale=x_scale, method="trf",
                              ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=400)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
    if best is None:
        raise FloatingPointError("every start of the fit failed")
    return best, len(starts)


def _stderr(res: Any, n_data: int) -> NDArray:
    """Standard errors of least_squares parameters from the Jacobian at the optimum."""
    j = res.jac
    dof = max(n_data - j.shape[1], 1)
    s2 = 2 * res.cost / dof
    try:
        cov = np.linalg.pinv(j.T @ j) * s2
    except np.linalg.LinAlgError:
        return np.full(j.shape[1], np.nan)
    return np.sqrt(np.clip(np.diag(cov), 0, None))


# --- SLM gray-level LUT and LO phases ------------------------------------------------------
def fit_lut(gray: NDArray, volts: NDArray, max_norm_rms: float = 0.02) -> FitReport:
    """Fit V_j(g) = A_j cos(phi(g) - theta_j) + o_j with phi(g) = phi_max (g/255)^gamma, shared by all channels.

    gray (R,) gray levels shown on every block; volts (R, N) detector readings of N channels.
    Returns phi_max, gamma, and per channel amplitude A, LO phase theta (rad) and offset o.
    """
    g = np.asarray(gray, np.float64) / 255.0
    v = np.asarray(volts, np.float64)

    def design(x: NDArray) -> NDArray:
        phi = x[0] * g ** x[1]
        return np.stack([np.cos(phi), np.sin(phi), np.ones_like(phi)], axis=1)

    # channel weights: 1 / amplitude from a nominal-LUT fit, so every channel counts equally
    c0, _ = linear_per_channel(design(np.array([2 * np.pi * 255 / 256, 1.0])), v)
    amp0 = np.hypot(c0[0], c0[1])
    w = 1.0 / np.maximum(amp0, 1e-12 + 1e-6 * amp0.max(initial=1.0))

    def residual(x: NDArray) -> NDArray:
        _, r = linear_per_channel(design(x), v)
        return (r * w).ravel()

    nominal = 2 * np.pi * 255 / 256
    starts = [(nominal * a, gm) for a in (1.0, 0.85, 1.15) for gm in (1.0, 0.7, 1.4)]
    bounds = ([0.5 * np.pi, 0.25], [4.0 * np.pi, 4.0])
    res, n = multistart(residual, starts[:3], bounds)
    if not _lut_ok(res, v, w, max_norm_rms):
        res, n = multistart(residual, starts, bounds)
    coef, r = linear_per_channel(design(res.x), v)
    amp = np.hypot(coef[0], coef[1])
    theta = np.arctan2(coef[1], coef[0])
    norm = np.sqrt(np.mean(r * r, axis=0)) / np.maximum(amp, 1e-12)
    se = _stderr(res, v.size)
    sigma = np.sqrt(np.mean(r * r, axis=0))
    theta_se = sigma / np.maximum(amp, 1e-12) / np.sqrt(max(v.shape[0] / 2 - 1.5, 1.0))
    ok = bool(np.all(norm < max_norm_rms))
    return FitReport({"phase_max_rad": float(res.x[0]), "gamma": float(res.x[1]), "amplitude_v": amp,
                      "lo_phase_rad": theta, "offset_v": coef[2]},
                     {"phase_max_rad": float(se[0]), "gamma": float(se[1]), "lo_phase_rad": theta_se},
                     float(np.sqrt(np.mean(r * r))), norm, n, ok,
                     "" if ok else f"{int(np.sum(norm >= max_norm_rms))} channels above the residual threshold")


def _lut_ok(res: Any, v: NDArray, w: NDArray, thr: float) -> bool:
    r = res.fun.reshape(v.shape)
    return bool(np.all(np.sqrt(np.mean(r * r, axis=0)) < thr))


# --- DMD fill fraction -> amplitude ---------------------------------------------------------
def fit_fill(counts: NDArray, n_mirrors: int, volts: NDArray, max_norm_rms: float = 0.02) -> FitReport:
    """Fit V_j(c) = A_j (c / N)^(1 + nu) + o_j, shared nonlinearity nu, per-channel A_j, o_j."""
    f = np.asarray(counts, np.float64) / n_mirrors
    v = np.asarray(volts, np.float64)
    amp0 = np.abs(v[-1] - v[0]) if v.shape[0] > 1 else np.ones(v.shape[1])
    w = 1.0 / np.maximum(amp0, 1e-12 + 1e-6 * amp0.max(initial=1.0))

    def design(nu: float) -> NDArray:
        return np.stack([f ** (1.0 + nu), np.ones_like(f)], axis=1)

    def residual(x: NDArray) -> NDArray:
        return (linear_per_channel(design(x[0]), v)[1] * w).ravel()

    res, n = multistart(residual, [(0.0,), (-0.2,), (0.3,)], ([-0.6], [2.0]))
    coef, r = linear_per_channel(design(res.x[0]), v)
    norm = np.sqrt(np.mean(r * r, axis=0)) / np.maximum(np.abs(coef[0]), 1e-12)
    ok = bool(np.all(norm < max_norm_rms))
    return FitReport({"nonlinearity": float(res.x[0]), "amplitude_v": coef[0], "offset_v": coef[1]},
                     {"nonlinearity": float(_stderr(res, v.size)[0])}, float(np.sqrt(np.mean(r * r))), norm, n, ok,
                     "" if ok else "fill-map residuals above threshold")


# --- saturable absorber: transmission against input power ------------------------------------
def fit_saturable_absorber(drive: Sequence[NDArray], pre: Sequence[NDArray], post: Sequence[NDArray],
                           alpha_guess: float, a0_guess: Sequence[float],
                           max_norm_rms: float = 0.02) -> FitReport:
    """Fit one vapor cell seen at S set-points (s = 0..S-1) with a known drive d (B,) per set-point.

    pre tap   V_j = P_j d + p_j                       (P_j = K_j alpha: gain x saturation scale)
    post tap  V'_j = K'_j g(alpha d; a0_s) + o'_j      g(E) = E exp(-(a0/2) / (1 + E^2))  (Guo et al.)
    alpha (field per unit drive: the saturation level) and K', o' are shared by the set-points; a0_s
    per set-point. Returns alpha, a0 (S,), K_pre = P / alpha, K_post, offsets, residuals.
    """
    d = [np.asarray(x, np.float64) for x in drive]
    vpre = [np.asarray(x, np.float64) for x in pre]
    vpost = [np.asarray(x, np.float64) for x in post]
    s_n = len(d)
    d_all = np.concatenate(d)
    vp_all = np.concatenate(vpost)
    # pre tap: per-channel straight line through every set-point's data
    coef_pre, r_pre = linear_per_channel(np.stack([d_all, np.ones_like(d_all)], 1), np.concatenate(vpre))
    scale = np.maximum(np.abs(coef_pre[0]) * np.abs(d_all).max(initial=1.0), 1e-12)

    def design(x: NDArray) -> NDArray:
        alpha = np.exp(x[0])
        cols = [sa_forward(alpha * d[s], float(np.exp(x[1 + s]))) for s in range(s_n)]
        gg = np.concatenate(cols)
        return np.stack([gg, np.ones_like(gg)], 1)

    def residual(x: NDArray) -> NDArray:
        return (linear_per_channel(design(x), vp_all)[1] / scale).ravel()

    la, a0g = np.log(alpha_guess), np.log(np.maximum(np.asarray(a0_guess, float), 0.05))
    starts = [np.r_[la + da, a0g + db] for da in (0.0, -0.4, 0.4) for db in (0.0, -0.7, 0.7)]
    lo = np.r_[la - 3.0, np.full(s_n, np.log(1e-3))]
    hi = np.r_[la + 3.0, np.full(s_n, np.log(500.0))]
    res, n = multistart(residual, starts[:1], (lo, hi))
    if 2 * res.cost / vp_all.size > max_norm_rms**2:
        res, n = multistart(residual, starts, (lo, hi))
    coef, r = linear_per_channel(design(res.x), vp_all)
    alpha = float(np.exp(res.x[0]))
    a0 = np.exp(res.x[1:])
    se = _stderr(res, vp_all.size)
    norm_post = np.sqrt(np.mean(r * r, 0)) / scale
    norm_pre = np.sqrt(np.mean(r_pre * r_pre, 0)) / scale
    norm = np.maximum(norm_post, norm_pre)
    ok = bool(np.all(norm < max_norm_rms))
    return FitReport({"alpha": alpha, "a0": a0, "k_pre": coef_pre[0] / alpha, "offset_pre": coef_pre[1],
                      "k_post": coef[0], "offset_post": coef[1]},
                     {"alpha_rel": float(se[0]), "a0_rel": se[1:]},
                     float(np.sqrt(np.mean(r * r))), norm, n, ok,
                     "" if ok else f"{int(np.sum(norm >= max_norm_rms))} channels above the residual threshold")


# --- vapor cell: temperature -> a0 map ------------------------------------------------------
def fit_vapor_map(temperature_k: NDArray, a0: NDArray, a0_rel_err: NDArray | None = None,
                  sigma_l_guess: float = 1.3e-17, max_rel_rms: float = 0.03) -> FitReport:
    """Fit a0(T) = n_Rb(T + dT) sigma_l (Steck vapour law) to measured optical depths: sigma_l, offset dT."""
    t = np.asarray(temperature_k, np.float64)
    y = np.log(np.asarray(a0, np.float64))
    wt = 1.0 / np.maximum(np.asarray(a0_rel_err, float), 2e-3) if a0_rel_err is not None else np.ones_like(y)

    def model(x: NDArray) -> NDArray:
        m = VaporCellMap(float(np.exp(x[0])), float(x[1]))
        return np.log([m.optical_depth(float(tt)) for tt in t])

    def residual(x: NDArray) -> NDArray:
        return (model(x) - y) * wt

    ls = np.log(sigma_l_guess)
    starts = [(ls, 0.0), (ls + 0.2, 2.0), (ls - 0.2, -2.0)]
    res, n = multistart(residual, starts, ([ls - 3, -30.0], [ls + 3, 30.0]), x_scale=[0.1, 1.0])
    r = model(res.x) - y
    se = _stderr(res, y.size) if y.size > 2 else np.full(2, np.nan)
    rms = float(np.sqrt(np.mean(r * r)))
    ok = rms < max_rel_rms
    return FitReport({"sigma_l_m3": float(np.exp(res.x[0])), "thermometer_offset_k": float(res.x[1])},
                     {"sigma_l_rel": float(se[0]), "thermometer_offset_k": float(se[1])}, rms,
                     np.abs(r), n, ok, "" if ok else f"log a0 residual {rms:.3g} above {max_rel_rms}")


# --- fringing of weight blocks -----------------------------------------------------------------
def fit_fringing(direct: NDArray, neighbour: NDArray, volts: NDArray) -> FitReport:
    """Fit V_jk = s_j (A_k + f (N_k - 2 A_k)): A_k light through on-blocks, N_k light next to them (per pattern k).

    volts (K, channels) are differential readings (pattern minus all-off), one row per input pattern.
    """
    a = np.asarray(direct, np.float64)
    nb = np.asarray(neighbour, np.float64)
    v = np.asarray(volts, np.float64)
    coef, r = linear_per_channel(np.stack([a, nb - 2 * a], 1), v)
    s = coef[0]
    good = np.abs(s) > 1e-3 * np.abs(s).max(initial=0.0)
    f_ch = coef[1][good] / s[good]
    f = float(np.sum(coef[1][good] * np.sign(s[good])) / np.sum(np.abs(s[good]))) if good.any() else float("nan")
    se = float(np.std(f_ch) / np.sqrt(max(f_ch.size - 1, 1))) if f_ch.size > 1 else float("nan")
    norm = np.sqrt(np.mean(r * r, 0)) / np.maximum(np.abs(s) * np.abs(a).max(initial=1.0), 1e-12)
    ok = bool(np.isfinite(f) and -0.01 <= f < 0.2)
    return FitReport({"fringing": f, "per_channel": f_ch, "scale_v": s}, {"fringing": se},
                     float(np.sqrt(np.mean(r * r))), norm, 1, ok, "" if ok else f"fringing {f:.4g} out of range")
