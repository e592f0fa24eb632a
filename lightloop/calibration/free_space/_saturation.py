"""Saturation sweeps: input power ramps through the lit chain and fits of the cells' transmission (field units)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import RunContext
from lightloop.calibration.fits import fit_saturable_absorber
from lightloop.calibration.free_space._light import (
    V_HOT,
    _binary,
    _fringe_matrix,
    _input_amplitude,
    _k_hal,
    _read,
    _setup_chain,
    _show,
)
from lightloop.calibration.free_space._thermal import _cells, _settle
from lightloop.hal.free_space import FreeSpaceProcessor


def _drive(proc: FreeSpaceProcessor, layer: int, inputs: NDArray, post_prev: NDArray | None,
           a0_cold: float = 0.0) -> NDArray:
    """Summed field per frame entering each row of an all-ones block of `layer` (fringing from the HAL)."""
    n_in = proc.weights[layer].shape[1]
    c = _fringe_matrix(np.ones((1, n_in)), proc.weights[layer].fringing)[0]
    if layer == 0:
        return np.asarray(inputs, np.float64) @ c
    u = np.asarray(post_prev, np.float64)
    # the earlier cells are cold (nearly transparent): each lit field entering the layer is
    # u(a) = g(lam a; a0_cold) = lam a exp(-(a0_cold / 2) / (1 + (lam a)^2)), one scale lam per channel;
    # fitting lam over all frames removes the detector noise that would otherwise enter the saturation
    # fit as errors in the drive. The dark channels' small leak is fitted by a straight line.
    a = np.asarray(inputs, np.float64).max(1)
    a0c = float(a0_cold)
    peak = np.abs(u).max(0)
    lit = peak > 0.1 * peak.max(initial=0.0)
    drive = np.zeros_like(a)
    for i in np.flatnonzero(lit):
        lam = float(a @ u[:, i]) / max(float(a @ a), 1e-30)
        for _ in range(4):
            shape = a * np.exp(-0.5 * a0c / (1.0 + (lam * a) ** 2))
            lam = float(shape @ u[:, i]) / max(float(shape @ shape), 1e-30)
        drive += c[i] * lam * a * np.exp(-0.5 * a0c / (1.0 + (lam * a) ** 2))
    if (~lit).any():
        line = np.stack([np.ones_like(a), a], 1)
        coef, *_ = np.linalg.lstsq(line, u[:, ~lit] @ c[~lit], rcond=None)
        drive = drive + line @ coef
    return drive


def _forward_sweep(proc: FreeSpaceProcessor, layer: int, frames: int, ctx: RunContext) -> dict[str, NDArray]:
    """All-ones block on `layer`, lit chain before it (earlier cells cold: a linear path), input power sweep.

    Returns raw pre/post volts of the layer, the post volts of the layer before, and the inputs.
    """
    saved = [a.setpoint_k for a in proc.absorbers[:layer]]
    for a in proc.absorbers[:layer]:
        a.set_temperature(a.limits.t_min_k)
    if layer:
        _settle(proc, ctx)
    try:
        _setup_chain(proc, layer)
        _binary(proc.weights[layer], np.ones(proc.weights[layer].shape, bool))
        e_target = V_HOT / _k_hal(proc.pre_taps[layer])
        a_max = _input_amplitude(proc, layer, e_target / proc.weights[layer].max_weight, hot=False)
        s = np.repeat(np.linspace(0.0, 1.0, frames), 2)  # two frames per amplitude
        inputs = np.outer(s * a_max, np.ones(proc.weights[0].shape[1])).astype(np.float32)
        _show(proc, inputs)
        keys = [f"pre{layer}"]
        if layer < len(proc.weights) - 1:
            keys.append(f"post{layer}")
        if layer > 0:
            keys.append(f"post{layer - 1}")
        out = _read(proc, keys)
        out["inputs"] = inputs.astype(np.float64)
        out["a0_cold"] = np.float64(sum(a.optical_depth for a in proc.absorbers[:layer]))
    finally:
        for a, t in zip(proc.absorbers[:layer], saved):
            a.set_temperature(t)
    return out


def _forward_fits(proc: FreeSpaceProcessor, ctx: RunContext, desc: str,
                  setpoints: list[list[float]] | None = None) -> list[dict[str, Any]]:
    """Saturation sweeps of every layer (at one or more cell set-points); SA fits of hidden layers.

    Returns per layer: drive, raw volts, and (hidden) the FitReport with alpha, a0, K_pre, K_post;
    (output) the straight-line slope and offset of the output tap against the drive.
    """
    frames = int(ctx.options.get("sweep_frames", 64))
    n_layers = len(proc.weights)
    sets = setpoints or [None]  # type: ignore[list-item]
    data: list[list[dict[str, NDArray]]] = [[] for _ in range(n_layers)]
    bar = ctx.bar(range(len(sets) * n_layers), desc=desc, total=len(sets) * n_layers)
    for sp in sets:
        with _cells(proc, ctx, sp):
            for layer in range(n_layers):
                data[layer].append(_forward_sweep(proc, layer, frames, ctx))
                next(bar, None)
    out: list[dict[str, Any]] = []
    for layer in range(n_layers):
        rec: dict[str, Any] = {"layer": layer, "raw": data[layer]}
        drives = []
        for d in data[layer]:
            post_prev = None
            if layer > 0:
                prev = out[layer - 1]["fit"].params
                post_prev = (d[f"post{layer - 1}"] - prev["offset_post"]) / prev["k_post"]
            drives.append(_drive(proc, layer, d["inputs"], post_prev, float(d["a0_cold"])))
        rec["drive"] = drives
        alpha_nom = proc.weights[layer].max_weight
        if layer < n_layers - 1:
            a0_guess = [proc.absorbers[layer].map.optical_depth(t[layer]) if t is not None
                        else proc.absorbers[layer].optical_depth for t in sets]
            rec["fit"] = fit_saturable_absorber(drives, [d[f"pre{layer}"] for d in data[layer]],
                                                [d[f"post{layer}"] for d in data[layer]], alpha_nom, a0_guess)
        else:
            x = np.concatenate(drives)
            v = np.concatenate([d[f"pre{layer}"] for d in data[layer]])
            basis = np.stack([x, np.ones_like(x)], 1)
            coef, *_ = np.linalg.lstsq(basis, v, rcond=None)
            r = v - basis @ coef
            norm = np.sqrt(np.mean(r * r, 0)) / np.maximum(np.abs(coef[0]) * np.abs(x).max(initial=1.0), 1e-12)
            rec["slope"], rec["offset"], rec["norm_rms"] = coef[0], coef[1], norm
            rec["alpha"] = alpha_nom
        out.append(rec)
    return out
