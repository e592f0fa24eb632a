"""Calibration routines of the free-space SA bench (Guo et al. 2021), acting only through the HAL.

Routines (in `calibrate all` order; later ones use what earlier ones put into the HAL):

  slm_lut            per SLM weight block: gray level -> phase LUT (joint fit with every channel's
                     LO phase, kept as a diagnostic)
  lo_phase           every homodyne channel's LO phase, from a short phase sweep through the
                     calibrated LUT (only complex fields reveal it); where the LO path has a phase
                     actuator, the array is locked (its mean LO phase set to zero)
  dmd_fill           per DMD weight block: mirror count -> amplitude map
  fringing           per weight block: row-neighbour field leak f (pre-compensated by the HAL)
  homodyne           every detector channel: offset (dark frames), gain (absolute, in saturation-
                     field units, from the vapor cell's saturation curve; backward taps with the
                     cells cold and transparent)
  saturable_absorber per vapor cell: transmission against input power gives a0 and the saturation
                     level (field per unit drive: the weight block's efficiency)
  vapor_cell         per vapor cell: temperature sweep -> (sigma*L, thermometer offset) map

Test patterns use exact device states where physics gives them (SLM gray 0/0 is a field of exactly
1; DMD all-on and all-off are exact). Light is routed to one layer at a time through single lit
rows (forward) or columns (backward) of the other layers, so every measured field stays inside
the detectors' range. Many frames (a power sweep) go into one acquisition, and every channel of
a detector array is fitted in parallel: the number of acquisitions does not grow with channels.

Degeneracy: the output layer has no saturable absorber after it, so its weight efficiency and
the output (and backward) detector gains are only known as products; by convention the output
layer keeps its nominal efficiency and the detectors absorb the product, which is what training
needs (readings consistent with the programmed weights).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq

from lightloop.calibration.base import CalibrationResult, Routine, RunContext, count_hal, register_routine
from lightloop.calibration.fits import (
    fit_fill,
    fit_fringing,
    fit_lut,
    fit_saturable_absorber,
    fit_vapor_map,
)
from lightloop.errors import CalibrationError
from lightloop.hal.calibration_maps import DMDFillMap, GrayLevelLUT, HomodyneMap, VaporCellMap
from lightloop.hal.free_space import FreeSpaceProcessor
from lightloop.hal.free_space_roles import (
    DMDWeightBlock,
    HomodyneDetector,
    SLMWeightBlock,
    WeightBlock,
)
from lightloop.physics.saturable_absorber import sa_forward

__all__ = [
    "SLMLutRoutine",
    "DMDFillRoutine",
    "FringingRoutine",
    "HomodyneRoutine",
    "SaturableAbsorberRoutine",
    "VaporCellRoutine",
    "taps",
    "device_kind",
]

V_COLD = 3.0   # target reading (V) of the measured tap in linear (cold-cell) sweeps
V_HOT = 5.0    # target peak reading (V) at the pre-absorber tap in saturation sweeps
LIT_ROWS = 8   # lit rows of the block feeding the layer under test


# --- HAL access helpers -------------------------------------------------------------------------
def taps(proc: FreeSpaceProcessor) -> dict[str, HomodyneDetector]:
    """Every homodyne array by key: pre<l>, post<l>, error<l>."""
    out: dict[str, HomodyneDetector] = {}
    for name, group in (("pre", proc.pre_taps), ("post", proc.post_taps), ("error", proc.error_taps)):
        for i, d in enumerate(group):
            out[f"{name}{i}"] = d
    return out


def device_kind(proc: FreeSpaceProcessor) -> str:
    """'slm', 'dmd' or 'analog' (the weight devices of the bench)."""
    w = proc.weights[0]
    return "slm" if isinstance(w, SLMWeightBlock) else "dmd" if isinstance(w, DMDWeightBlock) else "analog"


def _layout(proc: FreeSpaceProcessor) -> dict[str, Any]:
    return {"processor": "free_space", "layer_sizes": list(proc.layer_sizes), "device": device_kind(proc)}


def _is_free_space(proc: Any) -> str | None:
    return None if isinstance(proc, FreeSpaceProcessor) else "needs a free-space processor"


def _binary(block: WeightBlock, mask: NDArray) -> None:
    """Exact 1 on mask, 0 elsewhere (SLM zeros through the LUT: gray levels whose phases differ by pi)."""
    mask = np.asarray(mask, bool)
    if isinstance(block, SLMWeightBlock):
        zp, zm = block.gray_levels(np.zeros(block.shape, np.float32))
        block.write_gray_levels(np.where(mask, 0, zp), np.where(mask, 0, zm))
    elif isinstance(block, DMDWeightBlock):
        block.write_counts(np.where(mask, block.block_pixels**2, 0), np.zeros(block.shape, int))
    else:
        block.write_passive(mask.astype(np.float32))


def _fringe_matrix(mask: NDArray, f: float) -> NDArray:
    """Block transmissions after row-neighbour fringing: (1 - 2f) t + f (t_left + t_right)."""
    t = np.asarray(mask, np.float64)
    out = (1 - 2 * f) * t
    out[:, 1:] += f * t[:, :-1]
    out[:, :-1] += f * t[:, 1:]
    return out


def _lit_rows(n: int) -> NDArray:
    """Rows lit in a chain block: up to LIT_ROWS spread over the block (their detector errors average)."""
    m = min(LIT_ROWS, n)
    return np.unique(np.rint(np.linspace(0, n - 1, m + 2)[1:-1]).astype(int)) if n > 2 else np.arange(n)


def _setup_chain(proc: FreeSpaceProcessor, target: int, skip: tuple[int, ...] = (), ones: bool = False) -> None:
    """Route light to layer `target`: a few lit rows in each earlier layer, one lit column in each later one.

    ones=True: every other block all-ones instead (exact on every device, no zeros needed; for linear
    cold-cell sweeps, where a pilot acquisition scales the light to the measured tap's range).
    """
    for k, block in enumerate(proc.weights):
        if k == target or k in skip:
            continue
        n_out, n_in = block.shape
        mask = np.zeros((n_out, n_in), bool)
        if ones:
            mask[:] = True
        elif k == target - 1:
            mask[_lit_rows(n_out), :] = True
        elif k < target:
            mask[n_out // 2, :] = True
        else:
            mask[:, n_in // 2] = True
        _binary(block, mask)


def _show(proc: FreeSpaceProcessor, inputs: NDArray, probe: NDArray | None = None) -> None:
    proc.encoder.display_fields(inputs)
    if probe is not None:
        proc.probe.display_fields(probe)


def _read(proc: FreeSpaceProcessor, keys: list[str]) -> dict[str, NDArray]:
    t = taps(proc)
    return {k: t[k].acquire_volts().astype(np.float64) for k in keys}


def _k_hal(det: HomodyneDetector) -> float:
    """Mean effective gain (V per unit field) the HAL currently assumes for a detector array."""
    k = float(np.mean(np.abs(det.cal.effective_gain_v)))
    return k if k > 0 else 1.0


def _settle(proc: FreeSpaceProcessor, ctx: RunContext, tol_k: float = 0.05) -> None:
    """Wait until every cell's controller reads its set-point (instant on the twin)."""
    timeout = float(ctx.options.get("settle_timeout_s", 900.0))
    t0 = time.monotonic()
    while True:
        if all(abs(a.read_temperature() - a.setpoint_k) <= tol_k for a in proc.absorbers):
            return
        if time.monotonic() - t0 > timeout:
            raise CalibrationError(f"vapor cells did not settle within {timeout:.0f} s")
        time.sleep(0.5)


@contextmanager
def _cells(proc: FreeSpaceProcessor, ctx: RunContext, kelvin: list[float] | str | None) -> Iterator[None]:
    """Hold the cells at given set-points ('cold': the lower limit, transparent) and restore them after."""
    saved = [a.setpoint_k for a in proc.absorbers]
    try:
        if kelvin is not None:
            for i, a in enumerate(proc.absorbers):
                a.set_temperature(a.limits.t_min_k if kelvin == "cold" else float(kelvin[i]))  # type: ignore[index]
            _settle(proc, ctx)
        yield
    finally:
        for a, t in zip(proc.absorbers, saved):
            if a.setpoint_k != t:
                a.set_temperature(t)


def _ginv(y: float, a0: float) -> float:
    """Field E with g(E) = y (g is monotonic)."""
    if y <= 0:
        return 0.0
    return float(brentq(lambda e: float(sa_forward(e, a0)) - y, 0.0, y + 60.0, xtol=1e-9))


def _input_amplitude(proc: FreeSpaceProcessor, target: int, drive: float, hot: bool, ones: bool = False) -> float:
    """Uniform input amplitude that sends `drive` (summed field) into layer `target` through the lit chain
    (ones=True: through all-ones blocks, cold cells)."""
    max_w = [w.max_weight for w in proc.weights]
    d = drive
    if target > 0 and not ones:
        d /= len(_lit_rows(proc.weights[target - 1].shape[0]))
    for k in range(target - 1, -1, -1):  # d: field on the lit input of layer k+1 = post-cell k field
        a0 = proc.absorbers[k].optical_depth
        e = _ginv(d, a0) if hot else d / float(np.exp(-0.5 * a0))
        d = e / max_w[k]
        if ones:  # every input of layer k+1 is lit: the drive is their sum
            d /= proc.weights[k + 1].shape[1]
    n0 = proc.weights[0].shape[1]
    a = d / n0
    return float(min(a, 0.95 * proc.encoder.max_field))


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


def _pilot(proc: FreeSpaceProcessor, fwd: list[str], bwd: list[str], inputs: NDArray,
           probe: NDArray | None, target_v: float = V_COLD) -> tuple[NDArray, NDArray | None]:
    """Linear (cold) paths: rescale the input and probe so the measured taps peak near target_v volts."""
    for _ in range(8):
        _show(proc, inputs, probe)
        v = _read(proc, fwd + bwd)
        done = True
        for keys, is_fwd in ((fwd, True), (bwd, False)):
            if not keys or (not is_fwd and probe is None):
                continue
            peak = max(float(np.abs(v[k].mean(0)).max()) for k in keys)
            factor = float(np.clip(target_v / max(peak, 1e-9), 0.05, 20.0))
            if abs(factor - 1) > 0.25:
                done = False
                if is_fwd:
                    limit = 0.95 * proc.encoder.max_field / max(float(np.abs(inputs).max()), 1e-12)
                    inputs = (inputs * min(factor, limit)).astype(np.float32)
                else:
                    probe = (probe * factor).astype(np.float32)  # type: ignore[operator]
        if done:
            break
    return inputs, probe


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


# --- plots ------------------------------------------------------------------------------------
def _plot_lut(layer: int, gray: NDArray, volts: NDArray, fit: Any) -> Any:
    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        p = fit.params
        g = np.arange(256)
        phi = p["phase_max_rad"] * (g / 255.0) ** p["gamma"]
        amp, th, off = p["amplitude_v"], p["lo_phase_rad"], p["offset_v"]
        norm = (volts - off) / amp
        for j in range(min(norm.shape[1], 8)):
            ax1.plot(gray, norm[:, j], ".", ms=3, alpha=0.5)
            ax1.plot(g, np.cos(phi - th[j]), "-", lw=0.5, alpha=0.5)
        ax1.set(xlabel="gray level", ylabel="(V - offset) / amplitude", title=f"layer {layer}: phase sweep")
        ax2.plot(g, phi, "k-")
        ax2.set(xlabel="gray level", ylabel="phase (rad)",
                title=f"LUT: phi_max {p['phase_max_rad']:.3f}, gamma {p['gamma']:.3f}")
    return draw


def _plot_sa(layer: int, drive: list[NDArray], pre: list[NDArray], post: list[NDArray], fit: Any) -> Any:
    def draw(fig: Any) -> None:
        ax = fig.subplots()
        p = fit.params
        for s, (d, vp) in enumerate(zip(drive, post)):
            e = p["alpha"] * d
            y = (vp - p["offset_post"]) / p["k_post"]
            ax.plot(e, y[:, : min(y.shape[1], 16)], ".", ms=2, alpha=0.4, color=f"C{s}")
            ee = np.linspace(0, e.max(), 200)
            ax.plot(ee, sa_forward(ee, p["a0"][s]), "-", color=f"C{s}", label=f"a0 = {p['a0'][s]:.3f}")
        ax.set(xlabel="pump field E (saturation units)", ylabel="transmitted field g(E)",
               title=f"vapor cell {layer}: saturation level alpha = {p['alpha']:.4f} field/drive")
        ax.legend(fontsize=7)
    return draw


# --- routines ---------------------------------------------------------------------------------
class _FreeSpaceRoutine(Routine):
    def layout(self, proc: Any) -> dict[str, Any]:
        return _layout(proc)

    def instruments(self, proc: Any) -> dict[str, str]:
        if _is_free_space(proc):
            return {}
        out = {f"weights{i}": w.identity for i, w in enumerate(proc.weights)}
        out.update({k: d.identity for k, d in taps(proc).items()})
        out.update({f"cell{i}": a.identity for i, a in enumerate(proc.absorbers)})
        out["source"] = proc.encoder.identity
        return out

    def _finish(self, res: CalibrationResult, proc: Any, c0: Any, t0: float) -> CalibrationResult:
        res.counts = count_hal(proc) - c0
        res.seconds = time.perf_counter() - t0
        return res


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


def _circmean(x: NDArray) -> float:
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
                ax.set(xlabel="controller temperature (K)", ylabel="optical depth a0", title=f"vapor cell {c}")
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
