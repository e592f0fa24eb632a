"""Wire twin of ``lightloop.drivers.temperature_controller``: the vapor-cell heater controller (SCPI)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

from lightloop.simulators.wire._scpi import ScpiDevice, _fmt, _parse_bool

__all__ = ["TemperatureControllerTwin"]


class TemperatureControllerTwin(ScpiDevice):
    """Vapor-cell heater controller: a perfect ramping controller with a twin clock.

    While the output is on, the reading moves toward the set-point at the ramp rate (or jumps when the
    ramp is off); while off it relaxes toward ambient at `cool_rate_k_per_min`. `time_scale` twin
    seconds pass per wall second. Every change of the reading is pushed to `on_temperature(kelvin)`.

    Monitors (with an envelope): set-points and the over-temperature limit outside it, output on or
    set-point writes while the output is on with the ramp off (or faster than allowed), output on away
    from the last reported reading. `reboot()` = power cycle; `front_panel(...)` moves state behind the
    HAL's back; `lose_setpoints = n` silently ignores the next n set-point writes (a lost write).
    """

    idn = "lightloop,WIRE-TWIN-TC,0,1.0"

    def __init__(self, name: str, ambient_k: float = 293.15, on_temperature: Callable[[float], None] | None = None,
                 temperature_range: tuple[float, float] = (273.15, 473.15), max_ramp_rate: float = 20.0,
                 time_scale: float = 1.0, cool_rate_k_per_min: float = 2.0, envelope: tuple[float, float] | None = None,
                 max_ramp_envelope: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name)
        self.ambient, self.range, self.max_ramp = float(ambient_k), temperature_range, float(max_ramp_rate)
        self.time_scale, self.cool_rate, self._clock = float(time_scale), float(cool_rate_k_per_min), clock
        self.on_temperature = on_temperature
        self.envelope, self.max_ramp_envelope = envelope, max_ramp_envelope
        self.reset()
        self.prop("UNIT:TEMP", set=lambda a: None if a.upper() == "K" else self.error(-224, "Illegal parameter value"))
        self.prop("SOUR:TEMP", get=lambda: _fmt(self.setpoint), set=self._set_setpoint)
        self.prop("SOUR:TEMP:LIM", get=lambda: _fmt(self.limit), set=self._set_limit)
        self.prop("SOUR:TEMP:RAMP:RATE", get=lambda: _fmt(self.ramp_rate), set=self._set_rate)
        self.prop("SOUR:TEMP:RAMP:STAT", get=lambda: "1" if self.ramp_on else "0", set=self._set_ramp_on)
        self.prop("OUTP", get=lambda: "1" if self.output else "0", set=self._set_output)
        self.prop("MEAS:TEMP", get=self._report)
        self.prop("MEAS:POW", get=lambda: _fmt(0.05 * max(0.0, self.reading() - self.ambient) if self.output else 0.0))

    def reset(self) -> None:
        self.setpoint, self.limit, self.ramp_rate, self.ramp_on, self.output = self.ambient, 423.15, 5.0, True, False
        self.last_reported: float | None = None
        self.temperature = getattr(self, "temperature", self.ambient)
        self.lose_setpoints = 0
        self._t = self._clock()

    def _locked(self) -> Any:
        return self.server.lock if self.server is not None else contextlib.nullcontext()

    def reboot(self) -> None:
        """Power cycle: output off, set-point = ambient, ramp OFF, over-temperature limit at the hardware maximum."""
        with self._locked():
            self.advance()
            self.output, self.setpoint, self.ramp_on, self.limit = False, self.ambient, False, float(self.range[1])
            self.last_reported = None

    def front_panel(self, setpoint: float | None = None, output: bool | None = None, ramp_on: bool | None = None,
                    ramp_rate: float | None = None, limit: float | None = None) -> None:
        """Change state by hand (not on the wire: no monitor sees it)."""
        with self._locked():
            self.advance()
            for key, value in (("setpoint", setpoint), ("output", output), ("ramp_on", ramp_on),
                               ("ramp_rate", ramp_rate), ("limit", limit)):
                if value is not None:
                    setattr(self, key, value)

    def advance(self) -> float:
        """Move the twin clock to now; returns the reading (K) and pushes changes to the physics."""
        now = self._clock()
        dt_min = max(0.0, now - self._t) * self.time_scale / 60.0
        self._t = now
        before = self.temperature
        if self.output:
            goal, rate = self.setpoint, (self.ramp_rate if self.ramp_on else math.inf)
        else:
            goal, rate = self.ambient, self.cool_rate
        step = rate * dt_min
        if abs(goal - self.temperature) <= step:
            self.temperature = goal
        else:
            self.temperature += math.copysign(step, goal - self.temperature)
        if self.temperature != before and self.on_temperature is not None:
            self.on_temperature(self.temperature)
        return self.temperature

    def reading(self) -> float:
        """Measured temperature (K) now."""
        return self.advance()

    def _report(self) -> str:
        self.last_reported = self.reading()
        return _fmt(self.last_reported)

    def _check_envelope(self, what: str, value: float) -> None:
        env = self.envelope
        if env is not None and not env[0] - 1e-9 <= value <= env[1] + 1e-9:
            self.violation(f"{what} {value} K outside the configured limit [{env[0]}, {env[1]}] K")

    def _set_setpoint(self, arg: str) -> None:
        value = float(arg)
        self.advance()
        self._check_envelope("set-point", value)
        if self.output and (not self.ramp_on or (self.max_ramp_envelope is not None
                                                 and self.ramp_rate > self.max_ramp_envelope + 1e-9)):
            self.violation(f"set-point {value} K written with the output on but the ramp "
                           f"{'off' if not self.ramp_on else f'at {self.ramp_rate} K/min'}")
        if not self.range[0] <= value <= min(self.range[1], self.limit):
            self.error(-222, "Data out of range")
            return
        if self.lose_setpoints > 0:
            self.lose_setpoints -= 1
            return
        self.setpoint = value

    def _set_limit(self, arg: str) -> None:
        value = float(arg)
        if self.envelope is not None and value > self.envelope[1] + 1e-9:
            self.violation(f"over-temperature limit raised to {value} K above the configured {self.envelope[1]} K")
        if not self.range[0] <= value <= self.range[1]:
            self.error(-222, "Data out of range")
            return
        self.limit = value

    def _set_rate(self, arg: str) -> None:
        value = float(arg)
        if self.max_ramp_envelope is not None and value > self.max_ramp_envelope + 1e-9:
            self.violation(f"ramp rate {value} K/min above the configured {self.max_ramp_envelope} K/min")
        if not 0 <= value <= self.max_ramp:
            self.error(-222, "Data out of range")
            return
        self.advance()
        self.ramp_rate = value

    def _set_ramp_on(self, arg: str) -> None:
        self.advance()
        self.ramp_on = _parse_bool(arg)
        if self.output and not self.ramp_on and self.max_ramp_envelope is not None:
            self.violation("ramp switched off while the heater output is on")

    def _set_output(self, arg: str) -> None:
        on = _parse_bool(arg)
        self.advance()
        if on and not self.output and (self.envelope is not None or self.max_ramp_envelope is not None):
            if not self.ramp_on or (self.max_ramp_envelope is not None and self.ramp_rate > self.max_ramp_envelope + 1e-9):
                self.violation(f"output on with ramp {'off' if not self.ramp_on else f'at {self.ramp_rate} K/min'}")
        if on and not self.output and self.envelope is not None:
            # the ramp must start from a read-back: the set-point equals the last reading this device reported
            # (clamped into the configured limits)
            seen = self.last_reported
            origin = None if seen is None else min(max(seen, self.envelope[0]), self.envelope[1])
            if origin is None or abs(self.setpoint - origin) > 1e-3 + 1e-6 * abs(origin):
                self.violation(f"output on with set-point {self.setpoint} K but the last reported reading is {seen} K "
                               "(the ramp would not start from the read-back)")
        self.output = on
