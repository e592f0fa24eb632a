"""dmd_fill: DMD mirror count -> field amplitude (fraction of all mirrors on) per weight block."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import CalibrationResult, RunContext, count_hal, register_routine
from lightloop.calibration.fits import fit_fill
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
from lightloop.calibration.free_space._routine import _FreeSpaceRoutine
from lightloop.calibration.free_space._thermal import _cells
from lightloop.hal.calibration_maps import DMDFillMap
from lightloop.hal.free_space import FreeSpaceProcessor
from lightloop.hal.free_space_roles import DMDWeightBlock


@register_routine
class DMDFillRoutine(_FreeSpaceRoutine):
    """DMD mirror count -> field amplitude per weight block."""

    name = "dmd_fill"
    version = "1.0"
    order = 10
    summary = "DMD fill fraction -> amplitude map per weight block"

    def applicable(self, proc: Any) -> str | None:
        return _is_free_space(proc) or (None if device_kind(proc) == "dmd" else "the weight devices are not DMDs")

    def run(self, proc: FreeSpaceProcessor, ctx: RunContext) -> CalibrationResult:
        res, c0, t0 = self.new_result(proc), count_hal(proc), time.perf_counter()
        n_levels = int(ctx.options.get("fill_levels", 17))
        frames = int(ctx.options.get("frames", 8))
        n_layers = len(proc.weights)
        n_in = proc.layer_sizes[0]
        res.meta["layers"] = {}
        with _cells(proc, ctx, "cold"):
            for m in range(n_layers):
                block = proc.weights[m]
                assert isinstance(block, DMDWeightBlock)
                n_mirrors = block.block_pixels**2
                counts = np.unique(np.rint(np.linspace(0, n_mirrors, n_levels)).astype(int))
                _setup_chain(proc, m, ones=True)
                keys = [f"pre{m}"] + ([f"post{m}"] if m < n_layers - 1 else [])
                a = _input_amplitude(proc, m, V_COLD / _k_hal(proc.pre_taps[m]) / block.max_weight, False, ones=True)
                inputs = np.full((frames, n_in), a, np.float32)
                rows: list[NDArray] = []
                block.write_counts(np.full(block.shape, n_mirrors), np.zeros(block.shape, int))
                inputs, _ = _pilot(proc, keys, [], inputs, None)
                for c in ctx.bar(counts, desc=f"dmd_fill layer {m}", total=counts.size):
                    block.write_counts(np.full(block.shape, c), np.zeros(block.shape, int))
                    _show(proc, inputs)
                    v = _read(proc, keys)
                    rows.append(np.hstack([v[k].mean(0) for k in keys]))
                volts = np.stack(rows)
                fit = fit_fill(counts, n_mirrors, volts)
                res.arrays[f"layer{m}.amplitude"] = DMDFillMap.power_law(block.block_pixels,
                                                                         fit.params["nonlinearity"]).amplitude
                meta = fit.meta()
                meta["params"] = {"nonlinearity": fit.params["nonlinearity"]}
                res.meta["layers"][str(m)] = meta
                if not fit.ok:
                    res.fail(f"layer {m}: {fit.message}")

                def draw(fig: Any, counts=counts, volts=volts, fit=fit, m=m, n=n_mirrors) -> None:
                    ax = fig.subplots()
                    p = fit.params
                    y = (volts - p["offset_v"]) / p["amplitude_v"]
                    ax.plot(counts / n, y[:, :16], ".", ms=3, alpha=0.5)
                    f = np.linspace(0, 1, 200)
                    ax.plot(f, f ** (1 + p["nonlinearity"]), "k-", label=f"nu = {p['nonlinearity']:.4f}")
                    ax.set(xlabel="fill fraction", ylabel="amplitude", title=f"DMD layer {m}")
                    ax.legend()
                res.plots.append((f"dmd_fill_layer{m}", draw))
        return self._finish(res, proc, c0, t0)

    def apply(self, proc: FreeSpaceProcessor, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        for m, block in enumerate(proc.weights):
            if f"layer{m}.amplitude" in arrays and isinstance(block, DMDWeightBlock):
                block.set_fill_map(DMDFillMap(arrays[f"layer{m}.amplitude"]))
