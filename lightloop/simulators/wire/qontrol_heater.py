"""Wire twin of ``lightloop.drivers.qontrol_heater``: the Qontrol-style ASCII heater protocol (``V3=1.2500`` lines)."""

from __future__ import annotations

import re
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.simulators.wire._scpi import ScpiDevice

__all__ = ["QontrolTwin"]


class QontrolTwin(ScpiDevice):
    """Qontrol-style heater driver: ``V3=1.2500`` -> ``OK``; currents (mA) from heater resistances.

    `on_change(volts)` receives the whole voltage vector (V) after every accepted voltage write.
    Monitors: voltages outside the envelope, steps larger than the ramp step from the present voltage.
    `reboot()` = power cycle; `front_panel(channel, volts)` moves a channel behind the HAL's back.
    """

    transport = "serial"

    def __init__(self, name: str, n_channels: int, resistance_ohm: float | Sequence[float] = 1000.0,
                 vmax: float = 12.0, imax_ma: float = 24.0, on_change: Callable[[NDArray[np.float64]], None] | None = None,
                 identity: str = "Q8iv-TWIN", envelope: tuple[float, float] | None = None,
                 max_step_envelope: float | None = None) -> None:
        super().__init__(name)
        self.n = int(n_channels)
        self.resistance = np.broadcast_to(np.asarray(resistance_ohm, np.float64), (self.n,)).copy()
        self.volts = np.zeros(self.n)
        self.vmax_hw, self.imax_hw = float(vmax), float(imax_ma)
        self.vmax = np.full(self.n, float(vmax))
        self.imax = np.full(self.n, float(imax_ma))
        self.on_change, self.identity = on_change, identity
        self.envelope, self.max_step_envelope = envelope, max_step_envelope

    def _locked(self) -> Any:
        return self.server.lock if self.server is not None else contextlib.nullcontext()

    def reboot(self) -> None:
        """Power cycle: every channel 0 V, VMAX and IMAX back to the hardware maximum."""
        with self._locked():
            self.volts[:] = 0.0
            self.vmax[:], self.imax[:] = self.vmax_hw, self.imax_hw
            if self.on_change is not None:
                self.on_change(self.volts.copy())

    def front_panel(self, channel: int, volts: float) -> None:
        """Set channel `channel` (from 0) by hand (not on the wire: no monitor sees it)."""
        with self._locked():
            self.volts[self._chan(str(channel))] = float(volts)
            if self.on_change is not None:
                self.on_change(self.volts.copy())

    def handle_line(self, line: str) -> bytes | None:
        self.log(line)
        try:
            reply = self._handle(line.strip())
        except (ValueError, IndexError):
            reply = "E01:syntax"
        return reply.encode("ascii") + b"\n"

    def _chan(self, text: str) -> int:
        c = int(text)
        if not 0 <= c < self.n:
            raise ValueError(text)
        return c

    def _handle(self, cmd: str) -> str:
        if cmd == "ID?":
            return self.identity
        if cmd == "NCHAN?":
            return str(self.n)
        m = re.fullmatch(r"(V|I|VMAX|IMAX)(\d+)(\?|=(.+))", cmd)
        if not m:
            return "E02:unknown command"
        kind, c = m.group(1), self._chan(m.group(2))
        if m.group(3) == "?":
            value = {"V": self.volts[c], "I": self.current_ma(c), "VMAX": self.vmax[c], "IMAX": self.imax[c]}[kind]
            return f"{float(value):.4f}"
        x = float(m.group(4))
        if kind == "V":
            env = self.envelope
            if env is not None and not env[0] - 1e-9 <= x <= env[1] + 1e-9:
                self.violation(f"channel {c} voltage {x} V outside the configured limit [{env[0]}, {env[1]}] V")
            if (self.max_step_envelope is not None and x != 0.0     # a jump to 0 V (the safe value) is allowed
                    and abs(x - self.volts[c]) > self.max_step_envelope * (1 + 1e-6) + 1e-4):
                self.violation(f"channel {c} voltage step {self.volts[c]} -> {x} V exceeds the ramp step "
                               f"{self.max_step_envelope} V")
            if x < 0 or x > self.vmax[c]:
                return "E07:over vmax"
            self.volts[c] = x
            if self.on_change is not None:
                self.on_change(self.volts.copy())
            return "OK"
        if kind == "VMAX":
            self.vmax[c] = x
            return "OK"
        if kind == "IMAX":
            self.imax[c] = x
            return "OK"
        return "E03:read-only"

    def current_ma(self, c: int) -> float:
        """Heater current (mA) = V / R, limited by IMAX."""
        return float(min(self.volts[c] / self.resistance[c] * 1e3, self.imax[c]))
