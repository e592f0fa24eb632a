"""Wire twin of ``lightloop.drivers.laser_controller``: laser diode current source + TEC (SCPI)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from lightloop.simulators.wire._scpi import ScpiDevice, _fmt, _parse_bool

__all__ = ["LaserControllerTwin"]


class LaserControllerTwin(ScpiDevice):
    """Laser diode current source + TEC; optical power from a linear P-I model; `on_change()` after any change.

    Monitors: currents (and the current limit) above the envelope, and - while emitting - steps larger than
    the ramp step measured from the present set-point, output switched on above one ramp step. `reboot()` =
    power cycle; `front_panel(...)` moves state behind the HAL's back; `lose_writes = n` ignores n set-points.
    """

    idn = "lightloop,WIRE-TWIN-LASER,0,1.0"

    def __init__(self, name: str, threshold_a: float = 0.0, slope_w_per_a: float = 1.0, i_max: float = 0.5,
                 on_change: Callable[[], None] | None = None, max_current_envelope: float | None = None,
                 max_step_envelope: float | None = None) -> None:
        super().__init__(name)
        self.threshold, self.slope, self.i_max = float(threshold_a), float(slope_w_per_a), float(i_max)
        self.on_change = on_change
        self.max_current_envelope, self.max_step_envelope = max_current_envelope, max_step_envelope
        self.reset()
        self.prop("UNIT:TEMP", set=lambda a: None)
        self.prop("SOUR:CURR", get=lambda: _fmt(self.current), set=self._set_current)
        self.prop("SOUR:CURR:LIM", get=lambda: _fmt(self.limit), set=self._set_limit)
        self.prop("OUTP", get=lambda: "1" if self.output else "0", set=self._set_output)
        self.prop("MEAS:CURR", get=lambda: _fmt(self.emitting_current()))
        self.prop("MEAS:VOLT", get=lambda: _fmt(1.2 + 2.0 * self.emitting_current() if self.output else 0.0))
        self.prop("SOUR2:TEMP", get=lambda: _fmt(self.tec_setpoint), set=lambda a: setattr(self, "tec_setpoint", float(a)))
        self.prop("OUTP2", get=lambda: "1" if self.tec_output else "0",
                  set=lambda a: setattr(self, "tec_output", _parse_bool(a)))
        self.prop("MEAS:TEMP", get=lambda: _fmt(self.tec_setpoint if self.tec_output else 298.2))

    def reset(self) -> None:
        self.current, self.limit, self.output = 0.0, min(0.2, self.i_max), False
        self.tec_setpoint, self.tec_output = 298.15, False
        self.lose_writes = 0
        if self.on_change is not None:
            self.on_change()

    def _locked(self) -> Any:
        return self.server.lock if self.server is not None else contextlib.nullcontext()

    def reboot(self) -> None:
        """Power cycle: output off, set-point 0 A, current limit back to the hardware maximum, TEC off."""
        with self._locked():
            self.current, self.limit, self.output = 0.0, self.i_max, False
            self.tec_setpoint, self.tec_output = 298.15, False
            if self.on_change is not None:
                self.on_change()

    def front_panel(self, current: float | None = None, output: bool | None = None, limit: float | None = None) -> None:
        """Change state by hand (not on the wire: no monitor sees it)."""
        with self._locked():
            if limit is not None:
                self.limit = float(limit)
            if current is not None:
                self.current = float(current)
            if output is not None:
                self.output = bool(output)
            if self.on_change is not None:
                self.on_change()

    def emitting_current(self) -> float:
        """Current through the diode (A): the set-point while the output is on."""
        return self.current if self.output else 0.0

    def power(self) -> float:
        """Optical output power (W)."""
        return self.slope * max(0.0, self.emitting_current() - self.threshold)

    def _set_current(self, arg: str) -> None:
        value = float(arg)
        if self.max_current_envelope is not None and value > self.max_current_envelope + 1e-12:
            self.violation(f"current {value} A above the configured limit {self.max_current_envelope} A")
        if value < 0:
            self.violation(f"negative current {value} A")
        if (self.output and self.max_step_envelope is not None and value != 0.0   # dropping to 0 A is safe
                and abs(value - self.current) > self.max_step_envelope * (1 + 1e-6) + 1e-12):
            self.violation(f"current step {self.current} -> {value} A exceeds the ramp step {self.max_step_envelope} A")
        if not 0 <= value <= min(self.i_max, self.limit):
            self.error(-222, "Data out of range")
            return
        if self.lose_writes > 0:
            self.lose_writes -= 1
            return
        self.current = value
        if self.on_change is not None:
            self.on_change()

    def _set_limit(self, arg: str) -> None:
        value = float(arg)
        if self.max_current_envelope is not None and value > self.max_current_envelope + 1e-12:
            self.violation(f"current limit raised to {value} A above the configured {self.max_current_envelope} A")
        if not 0 <= value <= self.i_max:
            self.error(-222, "Data out of range")
            return
        self.limit = value
        if self.current > value:
            self.current = value
            if self.on_change is not None:
                self.on_change()

    def _set_output(self, arg: str) -> None:
        on = _parse_bool(arg)
        if on and not self.output and self.max_step_envelope is not None and self.current > self.max_step_envelope * (1 + 1e-6):
            self.violation(f"output switched on at {self.current} A (a jump larger than the ramp step)")
        self.output = on
        if self.on_change is not None:
            self.on_change()
