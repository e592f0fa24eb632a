"""Twin refinement of a weight-matrix model from forward taps (issue 16, part 1): row gains, offsets, slope scale.

The model of weight layer l predicts the measured pre-activations from the measured inputs of the layer,

    z_pred(l) = g(l) * u(l) + c(l),      u(l) = a_meas(l-1) @ W_model(l)^T      (g, c: one per output row)

and `refit` chooses g, c per row by least squares over the recent forward batches (the window), the gains
regularised toward 1: minimise sum_b (z_meas - g u - c)^2 + lam (g - 1)^2 with lam = ridge * sum_b (u - <u>)^2
averaged over the layer's rows (dimensionless ridge; a row the window did not excite keeps g = 1).
The backward pass then uses diag(g) W_model. The forward measurements are already in every step's taps,
so refinement costs no acquisition.

Nonlinearity (optional, `fit_slope`): per hidden layer one scale s of the calibrated slope, fitted from the
measured (z, a) pairs as a_meas ~= s * F(z_meas) + c_j with F(z) = integral_0^z activation_slope (the processor
exposes only its slope model; F is its trapezoid integral on a grid spanning the window's z), regularised
toward 1 like the gains; the backward pass then uses s * activation_slope.

Prediction error: relative rms sqrt(sum (z_meas - z_pred)^2 / sum z_meas^2) per layer, and in total pooled over
the layers, of the model in use at that step (before it sees the step's batch) - dimensionless.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["fit_row_gains", "fit_slope_scale", "relative_rms", "WeightModelRefiner", "RIDGE"]

#: default ridge (dimensionless) pulling the fitted gains and slope scales toward 1
RIDGE = 1e-3
#: grid points on which the slope model is integrated for the nonlinearity fit
_GRID = 257


def fit_row_gains(u: NDArray, z: NDArray, ridge: float = RIDGE) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per row j of z (samples, rows): gain g_j and offset c_j (field units) with z ~= g u + c, gains ridged toward 1."""
    u64, z64 = np.asarray(u, np.float64), np.asarray(z, np.float64)
    if u64.dtype.kind == "c" or z64.dtype.kind == "c":
        u64, z64 = u64.real, z64.real
    um, zm = u64.mean(0), z64.mean(0)
    uc, zc = u64 - um, z64 - zm
    suu = np.einsum("bj,bj->j", uc, uc)
    suz = np.einsum("bj,bj->j", uc, zc)
    lam = ridge * float(suu.mean()) if suu.size else 0.0
    den = suu + lam
    g = np.where(den > 0, (suz + lam) / np.where(den > 0, den, 1.0), 1.0)
    return g, zm - g * um


def fit_slope_scale(z: NDArray, a: NDArray, slope: Callable[[NDArray], NDArray],
                    ridge: float = RIDGE) -> tuple[float, NDArray[np.float64]]:
    """One scale s of the slope model and per-neuron offsets c (field units): a ~= s F(z) + c, F = integral of slope."""
    z64, a64 = np.asarray(z, np.float64).real, np.asarray(a, np.float64).real
    lo, hi = float(min(z64.min(), 0.0)), float(max(z64.max(), 0.0))
    if hi <= lo:
        return 1.0, a64.mean(0)
    grid = np.linspace(lo, hi, _GRID)
    n = z64.shape[1]
    sl = np.asarray(slope(np.repeat(grid[:, None], n, 1).astype(np.float32)), np.float64).real
    sl = np.broadcast_to(sl, (_GRID, n))
    cum = np.concatenate([np.zeros((1, n)), np.cumsum(0.5 * (sl[1:] + sl[:-1]) * np.diff(grid)[:, None], 0)])
    cols = np.arange(n)

    def integral(e: NDArray) -> NDArray:
        pos = np.clip((e - lo) / (hi - lo) * (_GRID - 1), 0.0, _GRID - 1.0)
        i0 = np.minimum(pos.astype(np.int64), _GRID - 2)
        frac = pos - i0
        return cum[i0, cols] * (1.0 - frac) + cum[i0 + 1, cols] * frac

    f = integral(z64) - integral(np.zeros((1, n)))                  # F(z) = integral from 0 to z
    fc, ac = f - f.mean(0), a64 - a64.mean(0)
    sff, sfa = float(np.sum(fc * fc)), float(np.sum(fc * ac))
    lam = ridge * sff
    s = (sfa + lam) / (sff + lam) if sff + lam > 0 else 1.0
    return float(s), a64.mean(0) - s * f.mean(0)


def relative_rms(pred: Sequence[NDArray], meas: Sequence[NDArray]) -> tuple[list[float], float]:
    """Relative rms error of predictions per layer and pooled over the layers (dimensionless)."""
    num, den = [], []
    for p, m in zip(pred, meas):
        e = np.asarray(m, np.float64).real - np.asarray(p, np.float64).real
        num.append(float(np.sum(e * e)))
        den.append(float(np.sum(np.square(np.asarray(m, np.float64).real))))
    per = [float(np.sqrt(n / d)) if d > 0 else float("nan") for n, d in zip(num, den)]
    total = float(np.sqrt(sum(num) / sum(den))) if sum(den) > 0 else float("nan")
    return per, total


class WeightModelRefiner:
    """Row gains g(l), offsets c(l) and slope scales s(l) of a weight-matrix model, fitted over a window of batches."""

    def __init__(self, n_layers: int, window: int, ridge: float = RIDGE, fit_slope: bool = True):
        self.n_layers, self.ridge, self.fit_slope = n_layers, float(ridge), bool(fit_slope)
        self.gains: list[NDArray | None] = [None] * n_layers          # None: 1 (not fitted yet)
        self.offsets: list[NDArray | None] = [None] * n_layers        # None: 0
        self.slope_scales: list[float] = [1.0] * max(n_layers - 1, 0)
        self.history: deque[tuple[list[NDArray], list[NDArray], list[NDArray]]] = deque(maxlen=int(window))
        self.refits = 0

    def unrefined(self, w_model: Sequence[NDArray], taps) -> list[NDArray]:
        """u(l) = a_meas(l-1) @ W_model(l)^T per layer (the nominal model's prediction, field units)."""
        return [taps.activations(i) @ np.asarray(w).T for i, w in enumerate(w_model)]

    def predict(self, u: Sequence[NDArray]) -> list[NDArray]:
        """z_pred(l) = g(l) u(l) + c(l) with the current fit."""
        out = []
        for ui, g, c in zip(u, self.gains, self.offsets):
            p = ui if g is None else ui * g.astype(np.float32)
            out.append(p if c is None else p + c.astype(np.float32))
        return out

    def record(self, u: Sequence[NDArray], taps, sizes: Sequence[int]) -> None:
        """Keep one batch: (u, z_meas) per layer and the hidden activations a_meas (bias unit dropped)."""
        hidden = [np.asarray(taps.post[i])[:, : sizes[i + 1]] for i in range(self.n_layers - 1)]
        self.history.append(([np.asarray(x) for x in u], [np.asarray(z) for z in taps.pre], hidden))

    def refit(self, slope: Callable[[int, NDArray], NDArray] | None = None) -> dict[str, float]:
        """Fit g, c per layer (and s per hidden layer when a slope model is given) over the window; fit figures."""
        if not self.history:
            return {}
        figures: dict[str, float] = {}
        for i in range(self.n_layers):
            u = np.concatenate([h[0][i] for h in self.history])
            z = np.concatenate([h[1][i] for h in self.history])
            g, c = fit_row_gains(u, z, self.ridge)
            self.gains[i], self.offsets[i] = g, c
            figures[f"gain_mean_{i}"] = float(g.mean())
            figures[f"gain_sd_{i}"] = float(g.std())
        if self.fit_slope and slope is not None:
            for i in range(self.n_layers - 1):
                z = np.concatenate([h[1][i] for h in self.history])
                a = np.concatenate([h[2][i] for h in self.history])
                s, _ = fit_slope_scale(z, a, lambda e, i=i: slope(i, e), self.ridge)
                self.slope_scales[i] = s
                figures[f"slope_scale_{i}"] = s
        self.refits += 1
        return figures

    def row_gain(self, layer: int) -> NDArray | None:
        """Fitted gains of a layer's rows as float32 (None: all 1)."""
        g = self.gains[layer]
        return None if g is None else g.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """Fitted gains, offsets (None: not fitted), slope scales, refits and the kept batches, for an exact resume."""
        return {"gains": [None if g is None else g.copy() for g in self.gains],
                "offsets": [None if c is None else c.copy() for c in self.offsets],
                "slope_scales": [float(s) for s in self.slope_scales], "refits": int(self.refits),
                "history": [[list(part) for part in h] for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`; ValueError naming the field if it does not fit this model's layers."""
        n = self.n_layers
        for key, want in (("gains", n), ("offsets", n), ("slope_scales", max(n - 1, 0))):
            v = state.get(key)
            if not isinstance(v, list) or len(v) != want:
                raise ValueError(f"refiner {key}: expected a list of {want} entries, got "
                                 f"{len(v) if isinstance(v, list) else type(v).__name__}")
        hist = state.get("history", [])
        shape = [n, n, max(n - 1, 0)]
        if not isinstance(hist, list) or any(not isinstance(h, list) or [len(p) for p in h] != shape for h in hist):
            raise ValueError(f"refiner history: expected batches of (u, z, hidden) with {shape} arrays each")
        self.gains = [None if g is None else np.asarray(g, np.float64) for g in state["gains"]]
        self.offsets = [None if c is None else np.asarray(c, np.float64) for c in state["offsets"]]
        self.slope_scales = [float(s) for s in state["slope_scales"]]
        self.refits = int(state.get("refits", 0))
        self.history.clear()
        for u, z, a in hist:
            self.history.append(([np.asarray(x) for x in u], [np.asarray(x) for x in z], [np.asarray(x) for x in a]))
