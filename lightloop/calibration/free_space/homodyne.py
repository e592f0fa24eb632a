"""homodyne: every detector channel's offset (V, dark frames) and gain (V per saturation-field unit)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import CalibrationResult, RunContext, count_hal, register_routine
from lightloop.calibration.free_space._light import (
    _binary,
    _fringe_matrix,
    _is_free_space,
    _pilot,
    _read,
    _setup_chain,
    _show,
    taps,
)
from lightloop.calibration.free_space._plots import _plot_sa
from lightloop.calibration.free_space._routine import _FreeSpaceRoutine
from lightloop.calibration.free_space._saturation import _forward_fits
from lightloop.calibration.free_space._thermal import _cells
from lightloop.hal.calibration_maps import HomodyneMap
from lightloop.hal.free_space import FreeSpaceProcessor


@register_routine
class HomodyneRoutine(_FreeSpaceRoutine):
    """Per-channel offset (dark frames) and gain (saturation-referenced forward, cold-cell backward)."""

    name = "homodyne"
    version = "1.0"
    order = 30
    summary = "homodyne offsets and gains of every channel (LO phases come from slm_lut)"

    def applicable(self, proc: Any) -> str | None:
        return _is_free_space(proc)

    def run(self, proc: FreeSpaceProcessor, ctx: RunContext) -> CalibrationResult:
        res, c0, t0 = self.new_result(proc), count_hal(proc), time.perf_counter()
        n_layers = len(proc.weights)
        n_in, n_out = proc.layer_sizes[0], proc.layer_sizes[-1]
        dark_frames = int(ctx.options.get("dark_frames", 1024))
        frames = int(ctx.options.get("sweep_frames", 64))
        all_taps = taps(proc)
        # 1. dark frames: offsets and noise of every channel in one acquisition per array
        _show(proc, np.zeros((dark_frames, n_in), np.float32), np.zeros((dark_frames, n_out), np.float32))
        dark = _read(proc, list(all_taps))
        offsets = {k: v.mean(0) for k, v in dark.items()}
        noise = {k: v.std(0) for k, v in dark.items()}
        # 2. forward taps: saturation sweeps (absolute field scale from the vapor cells)
        fw = _forward_fits(proc, ctx, "homodyne forward")
        k_eff: dict[str, NDArray] = {}
        alpha: list[float] = []
        res.meta["forward"] = {}
        for rec in fw:
            layer = rec["layer"]
            if "fit" in rec:
                fit = rec["fit"]
                k_eff[f"pre{layer}"] = fit.params["k_pre"]
                k_eff[f"post{layer}"] = fit.params["k_post"]
                alpha.append(fit.params["alpha"])
                meta = fit.meta()
                meta["params"] = {"alpha": fit.params["alpha"], "a0": fit.params["a0"]}
                res.meta["forward"][str(layer)] = meta
                if not fit.ok:
                    res.fail(f"layer {layer} saturation fit: {fit.message}")
                res.plots.append((f"homodyne_saturation_layer{layer}",
                                  _plot_sa(layer, rec["drive"], [d[f"pre{layer}"] for d in rec["raw"]],
                                           [d[f"post{layer}"] for d in rec["raw"]], fit)))
            else:
                k_eff[f"pre{layer}"] = rec["slope"] / rec["alpha"]
                alpha.append(rec["alpha"])
                nr = float(np.max(rec["norm_rms"]))
                res.meta["forward"][str(layer)] = {"norm_rms_residual_max": nr, "convention": "output layer: "
                                                   "efficiency nominal, gains absorb the product"}
                if nr > 0.02:
                    res.fail(f"output tap straight-line fit residual {nr:.3g}")
        # 3. backward taps: cells cold (transparent), probe sweep through lit columns
        res.meta["backward"] = {}
        with _cells(proc, ctx, "cold"):
            for tap in ctx.bar(range(n_layers - 2, -1, -1), desc="homodyne backward", total=n_layers - 1):
                # every block all-ones (exact on every device, no zeros); the cold path is linear in the probe
                _setup_chain(proc, tap + 1, ones=True)
                _binary(proc.weights[tap + 1], np.ones(proc.weights[tap + 1].shape, bool))
                blk = proc.weights[tap + 1]
                w = alpha[tap + 1] * _fringe_matrix(np.ones(blk.shape, bool), blk.fringing)
                t_cold = float(np.exp(-0.5 * proc.absorbers[tap].optical_depth))
                bframes = int(ctx.options.get("backward_frames", 4 * frames))
                zeros_in = np.zeros((bframes, n_in), np.float32)
                ramp = np.outer(np.linspace(0.0, 1.0, bframes), np.ones(n_out)).astype(np.float32)
                b_unit = None
                if tap < n_layers - 2:
                    # (a) field arriving at block tap+1 per unit probe, measured by the error tap behind it
                    # (already calibrated) with a probe scaled to that tap's range
                    behind = f"error{tap + 1}"
                    _, pa = _pilot(proc, [], [behind], zeros_in, ramp)
                    _show(proc, zeros_in, pa)
                    b_raw = (_read(proc, [behind])[behind] - offsets[behind]) / k_eff[behind]
                    pb = pa[:, 0].astype(np.float64)
                    coef, *_ = np.linalg.lstsq(np.stack([pb, np.ones_like(pb)], 1), b_raw, rcond=None)
                    b_unit = coef[0]
                # (b) the tap itself, probe scaled to its range
                _, probe = _pilot(proc, [], [f"error{tap}"], zeros_in, ramp)
                _show(proc, zeros_in, probe)
                v = _read(proc, [f"error{tap}"])[f"error{tap}"]
                pb = probe[:, 0].astype(np.float64)
                b_in = probe.astype(np.float64) if b_unit is None else np.outer(pb, b_unit)
                field = (b_in @ w) * t_cold
                fc = field - field.mean(0)
                vc = v - v.mean(0)
                kk = (fc * vc).sum(0) / np.maximum((fc * fc).sum(0), 1e-30)
                r = vc - fc * kk
                norm = np.sqrt(np.mean(r * r, 0)) / np.maximum(np.abs(kk) * np.abs(field).max(0), 1e-12)
                k_eff[f"error{tap}"] = kk
                res.meta["backward"][str(tap)] = {"norm_rms_residual_max": float(norm.max())}
                if norm.max() > 0.02:
                    res.fail(f"error tap {tap}: straight-line residual {norm.max():.3g}")
        # 4. gains: K = gain * cos(theta) with the LO phase the HAL knows (from slm_lut)
        res.meta["channels"] = {}
        for key, det in all_taps.items():
            theta = np.asarray(det.cal.lo_phase_rad, float)
            gain = k_eff[key] / np.cos(theta)
            if np.any(~np.isfinite(gain)) or np.any(gain <= 0):
                res.fail(f"{key}: non-positive or undefined gain (LO phase near pi/2?)")
            res.arrays[f"{key}.gain_v"] = gain
            res.arrays[f"{key}.offset_v"] = offsets[key]
            res.arrays[f"{key}.lo_phase_rad"] = theta
            res.arrays[f"{key}.noise_v"] = noise[key]
            res.meta["channels"][key] = {"gain_v_min": float(np.min(gain)), "gain_v_max": float(np.max(gain)),
                                         "offset_v_max_abs": float(np.max(np.abs(offsets[key]))),
                                         "noise_v_median": float(np.median(noise[key]))}

        def draw(fig: Any) -> None:
            keys = list(all_taps)
            axes = np.atleast_1d(fig.subplots(1, len(keys)))
            for ax, key in zip(axes, keys):
                ax.plot(res.arrays[f"{key}.gain_v"], ".")
                ax.set(title=key, xlabel="channel", ylabel="gain (V / field)")
        res.plots.append(("homodyne_gains", draw))
        return self._finish(res, proc, c0, t0)

    def apply(self, proc: FreeSpaceProcessor, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        for key, det in taps(proc).items():
            if f"{key}.gain_v" in arrays:
                det.set_calibration(HomodyneMap(np.asarray(arrays[f"{key}.gain_v"], float),
                                                np.asarray(arrays[f"{key}.offset_v"], float),
                                                np.asarray(arrays[f"{key}.lo_phase_rad"], float)))
