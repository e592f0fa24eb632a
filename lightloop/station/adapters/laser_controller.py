"""Laser-controller port adapter (amperes): the hal.safety LaserDevice on the driver."""

from __future__ import annotations

from typing import Any

from lightloop.hal.safety import Range
from lightloop.station._clock import BenchClock
from lightloop.station._link import Link
from lightloop.station.adapters._output import OutputDevice

__all__ = ["LaserControllerDevice"]


class LaserControllerDevice(OutputDevice):
    """LaserDevice (hal.safety) on a LaserDiodeController driver; one transaction per call."""

    def __init__(self, link: Link, current_limit: Range, clock: BenchClock | None = None) -> None:
        self.link, self.name, self.clock = link, link.name, clock
        self.current_limit = self._narrow(link.driver, current_limit)
        link.on_connect(lambda d: self._narrow(d, self.current_limit))

    def _narrow(self, drv: Any, limit: Range) -> Range:
        """Lower the controller's hardware current limit to ours (never raise it); narrow the validator."""
        from qcodes.validators import Numbers

        device_limit = float(drv.current_limit())
        self.link.tick()
        if device_limit > limit.high:
            drv.current_limit(limit.high)
            self.link.tick()
            device_limit = limit.high
        eff = Range(0.0, min(limit.high, device_limit), "A", limit.label)
        drv.current.vals = Numbers(0.0, eff.high)
        return eff

    def read_current_setpoint(self) -> float:
        """``SOUR:CURR?`` (A)."""
        return float(self._call("SOUR:CURR?", lambda d: d.current()))

    def write_current(self, amps: float) -> float:
        """``SOUR:CURR x;SOUR:CURR?`` (A): write and read back in one transaction; returns the read-back."""
        got = float(self._call("SOUR:CURR", lambda d: d.set_current_verified(amps)))
        if self.clock is not None:
            self.clock.changed()
        return got
