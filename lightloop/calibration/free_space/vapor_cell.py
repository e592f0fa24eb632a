"""vapor_cell: each cell's controller temperature (K) -> optical depth map (sigma*L in m^3, thermometer offset in K)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import CalibrationResult, RunContext, count_hal, register_routine
from lightloop.calibration.fits import fit_vapor_map
from lightloop.calibration.free_space._light import _is_free_space
from lightloop.calibration.free_space._routine import _FreeSpaceRoutine
from lightloop.calibration.free_space._saturation import _forward_fits
from lightloop.hal.calibration_maps import VaporCellMap
from lightloop.hal.free_space import FreeSpaceProcessor


@register_routine
class VaporCellRoutine(_FreeSpaceRoutine):
    """Temperature sweep: a0 at each set-point from the saturation curve, then the (sigma*L, offset) map."""

    name = "vapor_cell"
    version = "1.0"
    order = 50
    summary = "vapor-cell temperature -> a0 map (sigma*L and thermometer offset) per cell"

    def applicable(self, proc: Any) -> str | None:
        return _is_free_space(proc) or (None if proc.absorbers else "no vapor cells (no hidden layer)")

    def run(self, proc: FreeSpaceProcessor, ctx: RunContext) -> CalibrationResult:
        res, c0, t0 = self.new_result(proc), count_hal(proc), time.perf_counter()
        n_cells = len(proc.absorbers)
        n_t = int(ctx.options.get("temperatures", 6))
        lo, hi = ctx.options.get("a0_range", (2.0, 40.0))
        targets = np.geomspace(lo, hi, n_t)
        temps = [[a.map.temperature_for(float(t), a.limits.t_min_k, a.limits.t_max_k) for a in proc.absorbers]
                 for t in targets]
        fw = _forward_fits(proc, ctx, "vapor_cell", setpoints=temps)
        sigma, offset = np.zeros(n_cells), np.zeros(n_cells)
        t_arr = np.array(temps).T  # (cells, set-points)
        a0_arr = np.zeros_like(t_arr)
        res.meta["cells"] = {}
        for rec in fw[:n_cells]:
            c, fit = rec["layer"], rec["fit"]
            a0_arr[c] = fit.params["a0"]
            vm = fit_vapor_map(t_arr[c], fit.params["a0"], fit.stderr["a0_rel"], proc.absorbers[c].map.sigma_l_m3)
            sigma[c], offset[c] = vm.params["sigma_l_m3"], vm.params["thermometer_offset_k"]
            res.meta["cells"][str(c)] = {"saturation_fit": {k: v for k, v in fit.meta().items() if k != "params"},
                                         "map_fit": vm.meta(), "alpha": fit.params["alpha"]}
            if not fit.ok:
                res.fail(f"cell {c}: {fit.message}")
            if not vm.ok:
                res.fail(f"cell {c}: {vm.message}")

            def draw(fig: Any, c=c, t=t_arr[c], a=fit.params["a0"], s=sigma[c], o=offset[c]) -> None:
                ax = fig.subplots()
                ax.semilogy(t, a, "o", label="measured a0")
                tt = np.linspace(t.min() - 3, t.max() + 3, 100)
                m = VaporCellMap(s, o)
                ax.semilogy(tt, [m.optical_depth(x) for x in tt], "-",
                            label=f"sigma*L = {s:.4g} m^3, offset {o:+.3f} K")
                ax.set(xlabel="controller temperature (K)", ylabel="optical depth a0", title=f"vapor cell {c + 1} (after weight layer {c + 1})")
                ax.legend(fontsize=7)
            res.plots.append((f"vapor_cell{c}", draw))
        res.arrays["sigma_l_m3"] = sigma
        res.arrays["thermometer_offset_k"] = offset
        res.arrays["temperature_k"] = t_arr
        res.arrays["a0"] = a0_arr
        return self._finish(res, proc, c0, t0)

    def apply(self, proc: FreeSpaceProcessor, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        for i, sa in enumerate(proc.absorbers):
            sa.set_map(VaporCellMap(float(arrays["sigma_l_m3"][i]), float(arrays["thermometer_offset_k"][i])))
