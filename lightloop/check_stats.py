"""Statistics of one error-budget path (`lightloop check`): the PathResult, its systematic / random error and verdict.

A linear fit measured = gain * model + offset (on the mean of two repeated measurements) gives the systematic
error (gain error, phase of a complex gain, offset); their difference / sqrt 2 the noise; the rms of mean - fit
less the noise the model error. Bounds (``CheckBounds``) are relative to the rms of the path's model signal.
"""

from __future__ import annotations

import fnmatch
from typing import Any
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from lightloop.schema import CheckBounds, CheckSettings

__all__ = ["PathResult", "path_stats", "judge", "bounds_for", "rms", "private_copy", "repeat_passes"]


@dataclass
class PathResult:
    """One optical path: measured vs model arrays (physical units), a repeat measurement, stats and the verdict."""

    name: str
    kind: str                       # 'real' | 'complex' | 'dark'
    unit: str
    measured: NDArray
    model: NDArray
    repeat: NDArray | None = None
    ref_rms: float | None = None    # dark paths: the detector's signal rms the offset and noise are relative to
    stats: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every bounded figure is within its bound."""
        return not self.failures


def rms(a: NDArray) -> float:
    """Root mean square of |a| (0 for an empty array)."""
    return float(np.sqrt(np.mean(np.abs(a) ** 2))) if a.size else 0.0


def path_stats(res: PathResult) -> dict[str, float]:
    """Systematic (gain, phase, offset) and random (residual, noise) error of one path, in its physical units."""
    cplx = res.kind == "complex" or np.iscomplexobj(res.measured)
    y = np.asarray(res.measured, np.complex128 if cplx else np.float64).ravel()
    m = np.asarray(res.model, y.dtype).ravel()
    out: dict[str, float] = {}
    if res.kind == "dark":   # a complex reading: the offset's magnitude
        scale, mean = float(res.ref_rms or 0.0), np.mean(y) if y.size else 0.0
        out.update(offset=float(abs(mean) if cplx else mean), noise_rms=rms(y - mean), signal_rms=scale)
        out["offset_rel"] = abs(out["offset"]) / scale if scale > 0 else math.inf
        out["noise_rel"] = out["noise_rms"] / scale if scale > 0 else math.inf
        return out
    scale = rms(m)
    noise2 = 0.0
    if res.repeat is not None:   # fit the mean of the two measurements; their difference is pure noise
        r = np.asarray(res.repeat, y.dtype).ravel()
        noise2 = rms(r - y) ** 2 / 2.0
        out["noise_rms"] = math.sqrt(noise2)
        out["noise_rel"] = out["noise_rms"] / scale if scale > 0 else math.inf
        y = 0.5 * (y + r)
    a = np.stack([m, np.ones_like(m)], axis=1)
    (g, b), *_ = np.linalg.lstsq(a, y, rcond=None)
    fit2 = rms(y - (g * m + b)) ** 2
    out.update(signal_rms=scale, residual_rms=rms(y - m), fit_residual_rms=math.sqrt(fit2))
    if res.kind == "complex":
        out.update(gain=float(abs(g)), gain_error=float(abs(g) - 1.0), phase_error_rad=float(np.angle(g)),
                   offset=float(abs(b)))
    else:
        out.update(gain=float(g.real), gain_error=float(g.real - 1.0), offset=float(b.real))
    out["offset_rel"] = abs(out["offset"]) / scale if scale > 0 else math.inf
    # model error: the fit residual of the mean less its noise (variance noise^2 / 2 = s2); judged only beyond two
    # standard errors (2 s2 / sqrt(N) each) of that difference of two variance estimates: noise never fails it
    mean_noise2 = noise2 / 2.0
    out["model_error_rms"] = math.sqrt(max(fit2 - mean_noise2, 0.0))
    significant = math.sqrt(max(fit2 - mean_noise2 - 4.0 * mean_noise2 / math.sqrt(max(y.size, 1)), 0.0))
    out["residual_rel"] = significant / scale if scale > 0 else math.inf
    return out


def judge(stats: dict[str, float], bounds: CheckBounds) -> list[str]:
    """Failures of one path's stats against its bounds, one short text each (empty: the path passes)."""
    checks = [("gain_error", bounds.max_gain_error, True), ("phase_error_rad", bounds.max_phase_error_rad, True),
              ("offset_rel", bounds.max_offset, True), ("residual_rel", bounds.max_residual, True),
              ("noise_rel", bounds.max_noise, True)]
    fails = []
    for key, bound, absolute in checks:
        if key in stats:
            v = abs(stats[key]) if absolute else stats[key]
            if not v <= bound:   # NaN fails
                fails.append(f"{key} {stats[key]:.4g} exceeds {bound:g}")
    return fails


def bounds_for(settings: CheckSettings, name: str) -> CheckBounds:
    """Bounds of a path: the first override whose fnmatch pattern matches its name, else the section's bounds."""
    for pattern, b in settings.overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            return b
    return settings.bounds


def private_copy(x: NDArray) -> NDArray:
    """A private copy of a reading (ports may hand out buffers they reuse)."""
    return np.array(x, copy=True)


def repeat_passes(proc: Any, x: NDArray, delta: NDArray) -> list[tuple[list, list, NDArray, list]]:
    """Two forward + backward passes of the same batch: per pass (pre taps, post taps, inputs, backward errors)."""
    runs = []
    for _ in range(2):
        t = proc.forward(x)
        runs.append(([private_copy(a) for a in t.pre], [private_copy(a) for a in t.post], private_copy(t.inputs),
                     [private_copy(e) for e in proc.backward(delta)]))
    return runs
