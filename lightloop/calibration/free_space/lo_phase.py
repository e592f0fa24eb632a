"""lo_phase: every homodyne channel's LO phase (rad) from a phase sweep through the calibrated LUT; LO lock."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import CalibrationResult, RunContext, count_hal, register_routine
from lightloop.calibration.free_space._light import (
    V_COLD,
    _input_amplitude,
    _is_free_space,
    _k_hal,
    _pilot,
    _read,
    _setup_chain,
    _show,
    device_kind,
    taps,
)
from lightloop.calibration.free_space._routine import _FreeSpaceRoutine
from lightloop.calibration.free_space._thermal import _cells
from lightloop.hal.calibration_maps import HomodyneMap
from lightloop.hal.free_space import FreeSpaceProcessor
from lightloop.hal.free_space_roles import SLMWeightBlock


def _circmean(x: NDArray) -> float:
    """Circular mean of angles (rad), in (-pi, pi]."""
    return float(np.angle(np.mean(np.exp(1j * np.asarray(x)))))


@register_routine
class LOPhaseRoutine(_FreeSpaceRoutine):
    """LO phase of every homodyne channel; locks arrays that have an LO phase actuator."""

    name = "lo_phase"
    version = "1.0"
    order = 15
    summary = "homodyne LO phases (phase sweep through the calibrated SLM LUT) and LO lock"

    def applicable(self, proc: Any) -> str | None:
        return _is_free_space(proc) or (None if device_kind(proc) == "slm" else
                                        "needs complex fields (phase SLM weights) to see the LO phase")

    def instruments(self, proc: Any) -> dict[str, str]:
        out = {k: d.identity for k, d in taps(proc).items()}
        out.update({f"weights{i}": w.identity for i, w in enumerate(proc.weights)})
        return out

    def run(self, proc: FreeSpaceProcessor, ctx: RunContext) -> CalibrationResult:
        res, c0, t0 = self.new_result(proc), count_hal(proc), time.perf_counter()
        n_levels = int(ctx.options.get("lo_levels", 8))
        frames = int(ctx.options.get("lo_frames", 8))
        n_layers = len(proc.weights)
        n_in, n_out = proc.layer_sizes[0], proc.layer_sizes[-1]
        theta: dict[str, NDArray] = {}
        worst = 0.0
        with _cells(proc, ctx, "cold"):
            for m in ctx.bar(range(n_layers), desc="lo_phase", total=n_layers):
                block = proc.weights[m]
                assert isinstance(block, SLMWeightBlock)
                _setup_chain(proc, m, ones=True)
                fwd = [f"pre{m}"] + ([f"post{m}"] if m < n_layers - 1 else [])
                bwd = [f"error{m - 1}"] if m >= 1 else []
                a = _input_amplitude(proc, m, V_COLD / _k_hal(proc.pre_taps[m]) / block.max_weight, False, ones=True)
                inputs = np.full((frames, n_in), a, np.float32)
                probe = None
                if bwd:
                    gain = np.prod([w.max_weight * w.shape[0] for w in proc.weights[m + 1:]]) * block.max_weight
                    probe = np.full((frames, n_out), V_COLD / _k_hal(proc.error_taps[m - 1]) / (n_out * gain),
                                    np.float32)
                zero = np.zeros(block.shape, int)
                block.write_gray_levels(zero, zero)
                inputs, probe = _pilot(proc, fwd, bwd, inputs, probe)
                grays = block.lut.gray_for_phase(2 * np.pi * np.arange(n_levels) / n_levels)
                phases = block.lut.phase_rad[grays.astype(int)]
                rows: dict[str, list[NDArray]] = {k: [] for k in fwd + bwd}
                for g in grays:
                    full = np.full(block.shape, int(g))
                    block.write_gray_levels(full, full)
                    _show(proc, inputs, probe)
                    v = _read(proc, fwd + bwd)
                    for k in rows:
                        rows[k].append(v[k].mean(0))
                basis = np.stack([np.cos(phases), np.sin(phases), np.ones_like(phases)], 1)
                for k, r in rows.items():
                    coef, resid = np.linalg.lstsq(basis, np.stack(r), rcond=None)[0], None
                    resid = np.stack(r) - basis @ coef
                    amp = np.hypot(coef[0], coef[1])
                    norm = np.sqrt(np.mean(resid * resid, 0)) / np.maximum(amp, 1e-12)
                    worst = max(worst, float(norm.max()))
                    theta[k] = np.arctan2(coef[1], coef[0])
        res.meta["norm_rms_residual_max"] = worst
        if worst > 0.02:
            res.fail(f"LO phase sweep residual {worst:.3g} above 0.02 (LUT not calibrated?)")
        res.meta["locked"] = {}
        for key, det in taps(proc).items():
            th = theta[key]
            shift = det.lo_shift_rad
            if det.has_lo_actuator and bool(ctx.options.get("lock_lo", True)):
                mean = _circmean(th)
                shift = shift - mean
                th = np.angle(np.exp(1j * (th - mean)))
                res.meta["locked"][key] = -mean
            res.arrays[f"{key}.lo_phase_rad"] = th
            res.arrays[f"{key}.lo_shift_rad"] = np.array([shift])

        def draw(fig: Any) -> None:
            ax = fig.subplots()
            for i, key in enumerate(theta):
                ax.plot(np.full(theta[key].size, i), theta[key], ".", alpha=0.5)
            ax.set_xticks(range(len(theta)), list(theta))
            ax.set(ylabel="LO phase before lock (rad)", title="homodyne LO phases")
        res.plots.append(("lo_phase", draw))
        return self._finish(res, proc, c0, t0)

    def apply(self, proc: FreeSpaceProcessor, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        for key, det in taps(proc).items():
            if f"{key}.lo_phase_rad" not in arrays:
                continue
            shift = float(arrays[f"{key}.lo_shift_rad"][0])
            if det.has_lo_actuator:
                det.set_lo_shift(shift)
            old = det.cal
            det.set_calibration(HomodyneMap(np.asarray(old.gain_v, float), np.asarray(old.offset_v, float),
                                            np.asarray(arrays[f"{key}.lo_phase_rad"], float)))
