"""slm_lut: SLM gray level (0-255) -> phase (rad) LUT per weight block; LO phases (rad) from the same sweep."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import CalibrationResult, RunContext, count_hal, register_routine
from lightloop.calibration.fits import fit_lut
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
)
from lightloop.calibration.free_space._plots import _plot_lut
from lightloop.calibration.free_space._routine import _FreeSpaceRoutine
from lightloop.calibration.free_space._thermal import _cells
from lightloop.hal.calibration_maps import GrayLevelLUT
from lightloop.hal.free_space import FreeSpaceProcessor
from lightloop.hal.free_space_roles import SLMWeightBlock


@register_routine
class SLMLutRoutine(_FreeSpaceRoutine):
    """SLM gray level -> phase LUT per weight block, and every homodyne channel's LO phase (same sweep)."""

    name = "slm_lut"
    version = "1.0"
    order = 10
    summary = "SLM gray-level -> phase LUT per weight block; homodyne LO phases from the same phase sweep"

    def applicable(self, proc: Any) -> str | None:
        return _is_free_space(proc) or (None if device_kind(proc) == "slm" else "the weight devices are not SLMs")

    def run(self, proc: FreeSpaceProcessor, ctx: RunContext) -> CalibrationResult:
        res, c0, t0 = self.new_result(proc), count_hal(proc), time.perf_counter()
        n_levels = int(ctx.options.get("lut_levels", 33))
        frames = int(ctx.options.get("frames", 8))
        gray = np.unique(np.rint(np.linspace(0, 255, n_levels)).astype(int))
        n_layers = len(proc.weights)
        n_in, n_out = proc.layer_sizes[0], proc.layer_sizes[-1]
        res.meta["layers"] = {}
        saved_luts: dict[int, GrayLevelLUT] = {}
        with _cells(proc, ctx, "cold"):
            for m in range(n_layers):
                _setup_chain(proc, m, ones=True)
                fwd = [f"pre{m}"] + ([f"post{m}"] if m < n_layers - 1 else [])
                bwd = [f"error{m - 1}"] if m >= 1 else []
                a = _input_amplitude(proc, m, V_COLD / _k_hal(proc.pre_taps[m]) / proc.weights[m].max_weight, False,
                                     ones=True)
                inputs = np.full((frames, n_in), a, np.float32)
                probe = None
                if bwd:
                    gain = np.prod([w.max_weight * w.shape[0] for w in proc.weights[m + 1:]]) * proc.weights[m].max_weight
                    p = V_COLD / _k_hal(proc.error_taps[m - 1]) / (n_out * gain)
                    probe = np.full((frames, n_out), p, np.float32)
                rows: dict[str, list[NDArray]] = {k: [] for k in fwd + bwd}
                block = proc.weights[m]
                ones = np.zeros(block.shape, int)
                block.write_gray_levels(ones, ones)
                inputs, probe = _pilot(proc, fwd, bwd, inputs, probe)
                for g in ctx.bar(gray, desc=f"slm_lut layer {m}", total=gray.size):
                    full = np.full(block.shape, g)
                    block.write_gray_levels(full, full)
                    _show(proc, inputs, probe)
                    v = _read(proc, fwd + bwd)
                    for k in rows:
                        rows[k].append(v[k].mean(0))
                keys = list(rows)
                volts = np.hstack([np.stack(rows[k]) for k in keys])
                fit = fit_lut(gray, volts)
                lut = GrayLevelLUT.power_law(fit.params["phase_max_rad"], fit.params["gamma"])
                res.arrays[f"layer{m}.phase_rad"] = lut.phase_rad
                if fit.ok:  # later layers' test patterns use this layer's exact zeros
                    saved_luts.setdefault(m, block.lut)
                    block.set_lut(lut)
                start = 0
                for k in keys:
                    n = len(rows[k][0])
                    res.arrays[f"{k}.lo_phase_fit_rad"] = fit.params["lo_phase_rad"][start:start + n]
                    res.meta.setdefault("lo_phase_stderr_rad", {})[k] = float(
                        np.max(fit.stderr["lo_phase_rad"][start:start + n]))
                    start += n
                res.meta["layers"][str(m)] = {**fit.meta(), "taps": keys}
                res.meta["layers"][str(m)]["params"].pop("amplitude_v", None)
                res.meta["layers"][str(m)]["params"].pop("offset_v", None)
                res.meta["layers"][str(m)]["params"].pop("lo_phase_rad", None)
                if not fit.ok:
                    res.fail(f"layer {m}: {fit.message}")
                res.plots.append((f"slm_lut_layer{m}", _plot_lut(m, gray.astype(float), volts, fit)))
        for m, old in saved_luts.items():  # run() leaves the HAL maps as they were; apply() installs results
            proc.weights[m].set_lut(old)
        return self._finish(res, proc, c0, t0)

    def apply(self, proc: FreeSpaceProcessor, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        for m, block in enumerate(proc.weights):
            if f"layer{m}.phase_rad" in arrays and isinstance(block, SLMWeightBlock):
                block.set_lut(GrayLevelLUT(arrays[f"layer{m}.phase_rad"]))
