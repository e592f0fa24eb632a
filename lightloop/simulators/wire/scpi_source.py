"""Wire twin of ``lightloop.drivers.scpi_source``: a multichannel voltage source (SCPI, channel lists ``(@1,2)``)."""

from __future__ import annotations

import re
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lightloop.simulators.wire._scpi import Reply, ScpiDevice, _fmt, _parse_bool

__all__ = ["ScpiSourceTwin"]

_CHLIST = r"\(@([0-9,\s]+)\)"


class ScpiSourceTwin(ScpiDevice):
    """Multichannel voltage source (channels from 1); `on_change(channel, volts_at_output)` on every change.

    Monitors: set-points outside the envelope; steps larger than the ramp step measured from the channel's
    present set-point while its relay is closed; relays closed above one step. `reboot()` = power cycle,
    `front_panel(channel, volts, output)` moves a channel behind the HAL's back.
    """

    idn = "lightloop,WIRE-TWIN-SOURCE,0,1.0"

    def __init__(self, name: str, n_channels: int = 4, v_max: float = 20.0, i_max: float = 0.1,
                 load_ohm: float = 1e4, on_change: Callable[[int, float], None] | None = None,
                 envelope: tuple[float, float] | None = None, max_step_envelope: float | None = None) -> None:
        super().__init__(name)
        self.n, self.v_max, self.i_max, self.load = int(n_channels), float(v_max), float(i_max), float(load_ohm)
        self.on_change, self.envelope, self.max_step_envelope = on_change, envelope, max_step_envelope
        self.reset()
        p = self.pattern
        p(r"SOUR(\d+):VOLT\s+(\S+)", lambda m: self._set([int(m.group(1))], [float(m.group(2))]))
        p(r"SOUR(\d+):VOLT\?", lambda m: _fmt(self.volts[self._ch(m.group(1))]))
        p(r"SOUR(\d+):CURR:LIM\s+(\S+)", lambda m: self._set_ilim(int(m.group(1)), float(m.group(2))))
        p(r"SOUR(\d+):CURR:LIM\?", lambda m: _fmt(self.ilim[self._ch(m.group(1))]))
        p(r"OUTP(\d+)\s+(\S+)", lambda m: self._set_outputs([int(m.group(1))], _parse_bool(m.group(2))))
        p(r"OUTP(\d+)\?", lambda m: "1" if self.outputs[self._ch(m.group(1))] else "0")
        p(r"MEAS(\d+):VOLT\?", lambda m: _fmt(self.output_volts(self._ch(m.group(1)))))
        p(r"MEAS(\d+):CURR\?", lambda m: _fmt(self.output_current(self._ch(m.group(1)))))
        p(r"SOUR:VOLT\s+([^(]+),\s*" + _CHLIST, self._batch_set)
        p(r"SOUR:VOLT\?\s*" + _CHLIST, lambda m: ",".join(_fmt(self.volts[c]) for c in self._chs(m.group(1))))
        p(r"MEAS:CURR\?\s*" + _CHLIST, lambda m: ",".join(_fmt(self.output_current(c)) for c in self._chs(m.group(1))))
        p(r"OUTP\s+(ON|OFF|1|0)\s*,\s*" + _CHLIST, lambda m: self._set_outputs(
            [c + 1 for c in self._chs(m.group(2))], _parse_bool(m.group(1))))

    def reset(self) -> None:
        self.volts = np.zeros(self.n)
        self.ilim = np.full(self.n, min(0.01, self.i_max))
        self.outputs = np.zeros(self.n, dtype=bool)
        if self.on_change is not None:
            for c in range(self.n):
                self.on_change(c + 1, 0.0)

    def _locked(self) -> Any:
        return self.server.lock if self.server is not None else contextlib.nullcontext()

    def reboot(self) -> None:
        """Power cycle: every channel 0 V with its relay open, compliance back to the hardware maximum."""
        with self._locked():
            self.reset()
            self.ilim[:] = self.i_max

    def front_panel(self, channel: int, volts: float | None = None, output: bool | None = None) -> None:
        """Change channel `channel` (from 1) by hand (not on the wire: no monitor sees it)."""
        with self._locked():
            c = self._ch(str(channel))
            if volts is not None:
                self.volts[c] = float(volts)
            if output is not None:
                self.outputs[c] = bool(output)
            if self.on_change is not None:
                self.on_change(c + 1, self.output_volts(c))

    def _ch(self, text: str) -> int:
        c = int(text)
        if not 1 <= c <= self.n:
            raise ValueError(text)
        return c - 1

    def _chs(self, text: str) -> list[int]:
        return [self._ch(t) for t in text.split(",") if t.strip()]

    def output_volts(self, c: int) -> float:
        """Voltage at output c (0-based): the set-point if the relay is closed, else 0."""
        return float(self.volts[c]) if self.outputs[c] else 0.0

    def output_current(self, c: int) -> float:
        """Load current (A) of output c (0-based), limited by the compliance."""
        return float(min(abs(self.output_volts(c)) / self.load, self.ilim[c]))

    def _set(self, channels: Sequence[int], values: Sequence[float]) -> None:
        idx = [self._ch(str(c)) for c in channels]
        if len(idx) != len(values):
            self.error(-109, "Missing parameter")
            return
        for c, v in zip(idx, values):
            env = self.envelope
            if env is not None and not env[0] - 1e-9 <= v <= env[1] + 1e-9:
                self.violation(f"channel {c + 1} voltage {v} V outside the configured limit [{env[0]}, {env[1]}] V")
            if (self.max_step_envelope is not None and self.outputs[c] and v != 0.0   # 0 V is the safe value
                    and abs(v - self.volts[c]) > self.max_step_envelope * (1 + 1e-6) + 1e-9):
                self.violation(f"channel {c + 1} voltage step {self.volts[c]} -> {v} V exceeds the ramp step "
                               f"{self.max_step_envelope} V")
            if abs(v) > self.v_max:
                self.error(-222, "Data out of range")
                continue
            self.volts[c] = v
            if self.on_change is not None:
                self.on_change(c + 1, self.output_volts(c))

    def _batch_set(self, m: re.Match[str]) -> Reply:
        values = [float(t) for t in m.group(1).split(",") if t.strip()]
        self._set([c + 1 for c in self._chs(m.group(2))], values)
        return None

    def _set_ilim(self, channel: int, amps: float) -> Reply:
        c = self._ch(str(channel))
        if not 0 <= amps <= self.i_max:
            self.error(-222, "Data out of range")
        else:
            self.ilim[c] = amps
        return None

    def _set_outputs(self, channels: Sequence[int], on: bool) -> Reply:
        for ch in channels:
            c = self._ch(str(ch))
            if (on and not self.outputs[c] and self.max_step_envelope is not None
                    and abs(self.volts[c]) > self.max_step_envelope * (1 + 1e-6) + 1e-9):
                self.violation(f"channel {c + 1} relay closed at {self.volts[c]} V (a jump larger than the ramp step)")
            self.outputs[c] = on
            if self.on_change is not None:
                self.on_change(c + 1, self.output_volts(c))
        return None
