"""Base class of the free-space routines: layout, instrument identities, HAL counts and seconds."""

from __future__ import annotations

import time
from typing import Any

from lightloop.calibration.base import CalibrationResult, Routine, count_hal
from lightloop.calibration.free_space._light import _is_free_space, _layout, taps


class _FreeSpaceRoutine(Routine):
    """A free-space routine: layout and instruments of the bench; _finish stamps counts and seconds."""

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
