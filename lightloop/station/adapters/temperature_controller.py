"""Temperature-controller port adapter (kelvin, K/min): the hal.safety TemperatureDevice on the driver."""

from __future__ import annotations

from typing import Any

from lightloop.hal.safety import Range, TemperatureState
from lightloop.station._clock import BenchClock
from lightloop.station._link import Link
from lightloop.station.adapters._output import OutputDevice

__all__ = ["TemperatureControllerDevice"]


class TemperatureControllerDevice(OutputDevice):
    """TemperatureDevice (hal.safety) on a TemperatureController driver; one transaction per call."""

    def __init__(self, link: Link, limits: Range, max_ramp_k_per_min: float, clock: BenchClock | None = None) -> None:
        self.link, self.name, self.clock = link, link.name, clock
        self.limits = self._narrow(link.driver, limits, max_ramp_k_per_min)
        self.max_ramp = float(max_ramp_k_per_min)
        link.on_connect(lambda d: self._narrow(d, self.limits, self.max_ramp))

    @property
    def identity(self) -> str:
        """Identity of the controller."""
        return self.link.identity

    def _narrow(self, drv: Any, limits: Range, max_ramp: float) -> Range:
        """Lower the controller's own over-temperature cut-off to our limit (never raise it); narrow validators."""
        from qcodes.validators import Numbers

        device_limit = float(drv.temperature_limit())
        self.link.tick()
        if device_limit > limits.high:
            drv.temperature_limit(limits.high)
            self.link.tick()
            device_limit = limits.high
        eff = Range(limits.low, min(limits.high, device_limit), "K", limits.label)
        drv.setpoint.vals = Numbers(eff.low, eff.high)
        drv.ramp_rate.vals = Numbers(0.0, max_ramp)
        return eff

    def read_temperature(self) -> float:
        """``MEAS:TEMP?`` (K)."""
        return float(self._call("MEAS:TEMP?", lambda d: d.temperature()))

    def read_state(self) -> TemperatureState:
        """``MEAS:TEMP?;OUTP?;SOUR:TEMP:RAMP:STAT?;SOUR:TEMP:RAMP:RATE?;SOUR:TEMP?`` in one transaction."""
        return TemperatureState(**self._call("state?", lambda d: d.read_state()))

    def write_setpoint(self, kelvin: float) -> float:
        """``SOUR:TEMP x;SOUR:TEMP?`` (K): write and read back in one transaction; returns the read-back."""
        got = float(self._call("SOUR:TEMP", lambda d: d.set_setpoint_verified(kelvin)))
        if self.clock is not None:
            self.clock.changed()
        return got

    def configure_ramp(self, k_per_min: float) -> tuple[float, bool]:
        """Program and read back the controller's set-point ramp (rate K/min, enabled)."""
        def op(drv: Any) -> tuple[float, bool]:
            drv.ramp_rate(k_per_min)
            drv.ramp_enabled(True)
            r = (float(drv.ramp_rate()), bool(drv.ramp_enabled()))
            self.link.tick(4)
            return r

        return self.link.run("ramp", op)
