"""Light-path helpers: route light to one layer, show input/probe fields, read taps (volts)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq

from lightloop.hal.free_space import FreeSpaceProcessor
from lightloop.hal.free_space_roles import (
    DMDWeightBlock,
    HomodyneDetector,
    SLMWeightBlock,
    WeightBlock,
)
from lightloop.physics.saturable_absorber import sa_forward

V_COLD = 3.0   # target reading (V) of the measured tap in linear (cold-cell) sweeps
V_HOT = 5.0    # target peak reading (V) at the pre-absorber tap in saturation sweeps
LIT_ROWS = 8   # lit rows of the block feeding the layer under test


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
    """Layout a stored record must match: processor kind, layer sizes, weight device."""
    return {"processor": "free_space", "layer_sizes": list(proc.layer_sizes), "device": device_kind(proc)}


def _is_free_space(proc: Any) -> str | None:
    """None on a free-space processor, else why not."""
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
    """Display input fields (and backward probe fields) in field units, (frames, channels)."""
    proc.encoder.display_fields(inputs)
    if probe is not None:
        proc.probe.display_fields(probe)


def _read(proc: FreeSpaceProcessor, keys: list[str]) -> dict[str, NDArray]:
    """Acquire the named taps: volts (frames, channels), float64."""
    t = taps(proc)
    return {k: t[k].acquire_volts().astype(np.float64) for k in keys}


def _k_hal(det: HomodyneDetector) -> float:
    """Mean effective gain (V per unit field) the HAL currently assumes for a detector array."""
    k = float(np.mean(np.abs(det.cal.effective_gain_v)))
    return k if k > 0 else 1.0


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
