"""Vapor-cell set-points (K) during sweeps: wait for the controllers, hold cells and restore them."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from lightloop.calibration.base import RunContext
from lightloop.errors import CalibrationError
from lightloop.hal.free_space import FreeSpaceProcessor


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
