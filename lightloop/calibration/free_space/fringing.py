"""fringing: row-neighbour field leak f (fraction of a neighbour's field) per weight block, pre-compensated."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import CalibrationResult, RunContext, count_hal, register_routine
from lightloop.calibration.fits import fit_fringing
from lightloop.calibration.free_space._light import (
    V_COLD,
    _binary,
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
from lightloop.hal.free_space import FreeSpaceProcessor


@register_routine
class FringingRoutine(_FreeSpaceRoutine):
    """Row-neighbour fringing f of each weight block, from a comb of lit columns and combs of lit inputs."""

    name = "fringing"
    version = "1.0"
    order = 20
    summary = "weight-block fringing (neighbour leak) per layer, pre-compensated by the HAL"

    def applicable(self, proc: Any) -> str | None:
        return _is_free_space(proc) or (None if device_kind(proc) != "analog" else "analog modulators do not fringe")

    def run(self, proc: FreeSpaceProcessor, ctx: RunContext) -> CalibrationResult:
        res, c0, t0 = self.new_result(proc), count_hal(proc), time.perf_counter()
        frames = int(ctx.options.get("fringing_frames", 64))
        n_layers = len(proc.weights)
        n_in = proc.layer_sizes[0]
        res.meta["layers"] = {}
        fr = np.zeros(n_layers)
        with _cells(proc, ctx, "cold"):
            for m in ctx.bar(range(n_layers), desc="fringing", total=n_layers):
                # inputs lit on every third column (i = 0 mod 3); the block shows combs of lit columns at
                # offsets 0, 1, 2 and all-off: the same lit inputs serve the direct and the neighbour
                # signals, so per-channel detector errors of the measured inputs cancel in f
                block = proc.weights[m]
                n_o, n_i = block.shape
                cols = np.arange(n_i)
                combs = []
                for k in range(3):
                    mk = np.zeros((n_o, n_i), bool)
                    mk[:, cols % 3 == k] = True
                    combs.append(mk)
                zero = np.zeros((n_o, n_i), bool)
                keys = [f"pre{m}"] + ([f"post{m}"] if m < n_layers - 1 else [])
                lit = (cols % 3 == 0).sum()
                if m == 0:
                    a = min(V_COLD / _k_hal(proc.pre_taps[0]) / block.max_weight / lit, 0.95 * proc.encoder.max_field)
                    inputs = np.zeros((frames, n_in), np.float32)
                    inputs[:, cols % 3 == 0] = a
                    extra: list[str] = []
                else:
                    _setup_chain(proc, m, skip=(m - 1,))
                    prev = proc.weights[m - 1]
                    rows = np.zeros(prev.shape, bool)
                    rows[np.arange(prev.shape[0]) % 3 == 0, :] = True
                    _binary(prev, rows)
                    a = _input_amplitude(proc, m, V_COLD / _k_hal(proc.pre_taps[m]) / block.max_weight / lit, False)
                    # half the frames dark: the measured inputs are lit-minus-dark (detector offsets cancel;
                    # the dark rows' small leak through the previous block's zeros is then measured too)
                    inputs = np.zeros((2 * frames, n_in), np.float32)
                    inputs[:frames] = a
                    extra = [f"post{m - 1}"]
                _binary(block, combs[0])
                inputs, _ = _pilot(proc, keys, [], inputs, None)
                got = {}
                for name, pattern in (("c0", combs[0]), ("c1", combs[1]), ("c2", combs[2]), ("off", zero)):
                    _binary(block, pattern)
                    _show(proc, inputs)
                    got[name] = _read(proc, keys + extra)
                lit_f = slice(0, frames)
                dark_f = slice(frames, 2 * frames) if m > 0 else None
                if m == 0:
                    u = inputs.mean(0).astype(np.float64)
                else:
                    cal = proc.post_taps[m - 1].cal
                    raw = np.mean([got[n][f"post{m - 1}"][lit_f].mean(0) - got[n][f"post{m - 1}"][dark_f].mean(0)
                                   for n in got], axis=0)
                    u = raw / cal.effective_gain_v

                def sig(name: str, q: str) -> NDArray:
                    v = got[name][q]
                    return v[lit_f].mean(0) - (v[dark_f].mean(0) if dark_f is not None else 0.0)

                direct, neigh, v_rows = [], [], []
                for k, name in enumerate(("c0", "c1", "c2")):
                    mvec = combs[k][0].astype(np.float64)
                    nb = np.zeros_like(mvec)
                    nb[1:] += mvec[:-1]
                    nb[:-1] += mvec[1:]
                    direct.append(mvec @ u)
                    neigh.append(nb @ u)
                    v_rows.append(np.hstack([sig(name, q) - sig("off", q) for q in keys]))
                fit = fit_fringing(np.array(direct), np.array(neigh), np.stack(v_rows))
                fr[m] = max(fit.params["fringing"], 0.0)
                meta = fit.meta()
                meta["params"] = {"fringing": fit.params["fringing"],
                                  "per_channel_sd": float(np.std(fit.params["per_channel"]))}
                res.meta["layers"][str(m)] = meta
                if not fit.ok:
                    res.fail(f"layer {m}: {fit.message}")
        res.arrays["fringing"] = fr

        def draw(fig: Any) -> None:
            ax = fig.subplots()
            ax.bar(np.arange(n_layers), fr)
            ax.set(xlabel="weight layer", ylabel="fringing f", title="row-neighbour fringing per weight block")
        res.plots.append(("fringing", draw))
        return self._finish(res, proc, c0, t0)

    def apply(self, proc: FreeSpaceProcessor, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        for block, f in zip(proc.weights, np.asarray(arrays["fringing"], float)):
            block.set_fringing(float(min(max(f, 0.0), 0.19)))
