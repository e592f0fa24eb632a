"""saturable_absorber: each cell's optical depth a0 at its set-point, saturation level (field per unit drive)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import CalibrationResult, RunContext, count_hal, register_routine
from lightloop.calibration.free_space._light import _is_free_space
from lightloop.calibration.free_space._plots import _plot_sa
from lightloop.calibration.free_space._routine import _FreeSpaceRoutine
from lightloop.calibration.free_space._saturation import _forward_fits
from lightloop.hal.calibration_maps import VaporCellMap
from lightloop.hal.free_space import FreeSpaceProcessor


@register_routine
class SaturableAbsorberRoutine(_FreeSpaceRoutine):
    """Transmission against input power: a0 of each cell at its set-point, and the saturation level."""

    name = "saturable_absorber"
    version = "1.0"
    order = 40
    summary = "vapor-cell a0 at the set-point and saturation level (weight-block efficiency) per hidden layer"

    def applicable(self, proc: Any) -> str | None:
        return _is_free_space(proc) or (None if proc.absorbers else "no vapor cells (no hidden layer)")

    def run(self, proc: FreeSpaceProcessor, ctx: RunContext) -> CalibrationResult:
        res, c0, t0 = self.new_result(proc), count_hal(proc), time.perf_counter()
        n_cells = len(proc.absorbers)
        probe_a0 = float(ctx.options.get("probe_a0", 8.0))
        op = [a.setpoint_k for a in proc.absorbers]
        sets: list[list[float]] = [op]
        if any(a.optical_depth < 2.0 for a in proc.absorbers):
            # too little absorption to see saturation: add a hotter set-point sharing the saturation level
            sets.append([a.map.temperature_for(probe_a0, a.limits.t_min_k, a.limits.t_max_k) for a in proc.absorbers])
        fw = _forward_fits(proc, ctx, "saturable_absorber", setpoints=sets)
        eff, a0, se = np.zeros(n_cells), np.zeros(n_cells), np.zeros(n_cells)
        res.meta["cells"] = {}
        for rec in fw[:n_cells]:
            layer, fit = rec["layer"], rec["fit"]
            eff[layer] = fit.params["alpha"] / proc.weights[layer].amplifier_gain
            a0[layer] = fit.params["a0"][0]
            se[layer] = fit.stderr["a0_rel"][0] * a0[layer]
            meta = fit.meta()
            meta["params"] = {"alpha": fit.params["alpha"], "a0": a0[layer], "efficiency": eff[layer],
                              "saturation_drive": 1.0 / fit.params["alpha"]}
            res.meta["cells"][str(layer)] = meta
            if not fit.ok:
                res.fail(f"cell {layer}: {fit.message}")
            res.plots.append((f"saturable_absorber_cell{layer}",
                              _plot_sa(layer, rec["drive"], [d[f"pre{layer}"] for d in rec["raw"]],
                                       [d[f"post{layer}"] for d in rec["raw"]], fit)))
        res.arrays["efficiency"] = eff
        res.arrays["a0"] = a0
        res.arrays["a0_stderr"] = se
        res.arrays["setpoint_k"] = np.asarray(op, float)
        res.arrays["reading_k"] = np.array([a.read_temperature() for a in proc.absorbers])
        return self._finish(res, proc, c0, t0)

    def apply(self, proc: FreeSpaceProcessor, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        for i, sa in enumerate(proc.absorbers):
            proc.weights[i].set_efficiency(float(arrays["efficiency"][i]))
            # re-zero the thermometer: keep sigma*L, move the offset so the map gives the measured a0
            t_read = float(arrays["setpoint_k"][i])
            a0 = float(arrays["a0"][i])
            sigma = sa.map.sigma_l_m3
            bare = VaporCellMap(sigma, 0.0)
            t_true = bare.temperature_for(a0, 200.0, 600.0)
            sa.set_map(VaporCellMap(sigma, t_true - t_read))
