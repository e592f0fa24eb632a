"""Instrument twins on the wire: each answers its driver's own protocol (see the driver docstrings).

* :class:`ScpiDevice` - newline-terminated SCPI with compound commands (``a;b?``), ``*IDN?``, ``*OPC?``,
  an error queue for ``SYST:ERR?``; subclasses: :class:`TemperatureControllerTwin`,
  :class:`LaserControllerTwin`, :class:`PowerMeterTwin`, :class:`ScpiSourceTwin`, :class:`DigitizerTwin`
  (IEEE 488.2 definite-length blocks for ``WAV:DATA?``).
* :class:`SLMTwin` - the SLM TCP frame protocol (``INFO?``, ``FRAME h w bits n`` + payload).
* :class:`QontrolTwin` - the Qontrol-style ASCII heater protocol (pipelined ``V3=1.2500`` lines).

Devices know nothing about a bench: physics reaches them through callbacks (``on_frame``,
``acquire``, ``on_change``, a cell port). Each device may carry a *safety envelope* (the configured
limits); every received value outside it is recorded with :meth:`Endpoint.violation`.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.simulators.wire.server import DropConnection, Endpoint, Session

__all__ = [
    "ScpiDevice",
    "TemperatureControllerTwin",
    "LaserControllerTwin",
    "PowerMeterTwin",
    "ScpiSourceTwin",
    "DigitizerTwin",
    "SLMTwin",
    "QontrolTwin",
    "ieee_block",
]

Reply = str | bytes | None


def ieee_block(payload: bytes) -> bytes:
    """IEEE 488.2 definite-length block ``#<n><len><payload>``."""
    length = str(len(payload)).encode("ascii")
    return b"#" + str(len(length)).encode("ascii") + length + payload


def _fmt(x: float) -> str:
    return repr(float(x))


def _parse_bool(text: str) -> bool:
    t = text.strip().upper()
    if t in ("ON", "1", "+1"):
        return True
    if t in ("OFF", "0", "+0"):
        return False
    raise ValueError(text)


def _split_compound(line: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in line:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == ";" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [c.strip() for c in out if c.strip()]


class _LineSession(Session):
    """Newline-framed commands; one reply line per query (compound replies joined by ';')."""

    def __init__(self, device: "ScpiDevice", max_line: int = 1 << 16) -> None:
        self.device, self.buf, self.max_line = device, bytearray(), max_line

    def feed(self, data: bytes) -> bytes:
        self.buf.extend(data)
        out = bytearray()
        while True:
            idx = self.buf.find(b"\n")
            if idx < 0:
                if len(self.buf) > self.max_line:
                    raise DropConnection("line too long")
                return bytes(out)
            raw = bytes(self.buf[:idx]).decode("latin-1").rstrip("\r")
            del self.buf[: idx + 1]
            reply = self.device.handle_line(raw)
            if reply is not None:
                filtered = self.device.filter_reply(reply)
                if filtered is not None:
                    out.extend(filtered)


class ScpiDevice(Endpoint):
    """Generic SCPI instrument: properties (``NAME value`` / ``NAME?``) and regex commands."""

    transport = "visa"
    idn = "lightloop,WIRE-TWIN,0,1.0"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        vendor, model, _, firmware = (type(self).idn.split(",") + ["", "", "", ""])[:4]
        self.idn = f"{vendor},{model},{name},{firmware}"   # serial = the instrument's name in the config
        self.errors: deque[str] = deque(maxlen=32)
        self._props: dict[str, tuple[Callable[[], str] | None, Callable[[str], None] | None]] = {}
        self._patterns: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Reply]]] = []
        self.prop("*IDN", get=lambda: self.idn)
        self.prop("*OPC", get=lambda: "1")
        self.prop("SYST:ERR", get=self._pop_error)
        for cmd in ("*RST", "*CLS"):
            self.pattern(re.escape(cmd), self._common)

    def session(self) -> Session:
        return _LineSession(self)

    # --- table ------------------------------------------------------------------------------------------
    def prop(self, name: str, get: Callable[[], str] | None = None, set: Callable[[str], None] | None = None) -> None:
        """Register ``NAME?`` (get -> reply text) and/or ``NAME <arg>`` (set(arg))."""
        self._props[name.upper()] = (get, set)

    def pattern(self, regex: str, fn: Callable[[re.Match[str]], Reply]) -> None:
        """Register a command matched (case-insensitively, whole text without a leading ':') by regex."""
        self._patterns.append((re.compile(regex, re.IGNORECASE), fn))

    def error(self, code: int, text: str) -> None:
        """Queue an SCPI error for ``SYST:ERR?``."""
        self.errors.append(f'{code},"{text}"')

    def _pop_error(self) -> str:
        return self.errors.popleft() if self.errors else '+0,"No error"'

    def _common(self, m: re.Match[str]) -> Reply:
        if m.group(0).upper() == "*CLS":
            self.errors.clear()
        else:
            self.reset()
        return None

    def reset(self) -> None:
        """``*RST``: subclasses restore defaults."""

    # --- dispatch ---------------------------------------------------------------------------------------
    def handle_line(self, line: str) -> bytes | None:
        """Handle one received line (maybe compound); the reply line or None."""
        replies: list[bytes] = []
        self.log(line)   # one record per message line (= one transaction of the client)
        for cmd in _split_compound(line):
            try:
                r = self.handle(cmd)
            except ValueError:
                self.error(-104, "Data type error")
                r = None
            if isinstance(r, str):
                replies.append(r.encode("latin-1"))
            elif isinstance(r, bytes):
                replies.append(r)
        if not replies:
            return None
        return b";".join(replies) + b"\n"

    def handle(self, cmd: str) -> Reply:
        """One simple command -> reply text/bytes or None."""
        key = cmd.strip().lstrip(":")
        head, _, arg = key.partition(" ")
        name = head.upper()
        if name.endswith("?") and not arg:
            entry = self._props.get(name[:-1])
            if entry is not None and entry[0] is not None:
                return entry[0]()
        elif arg:
            entry = self._props.get(name)
            if entry is not None and entry[1] is not None:
                entry[1](arg.strip())
                return None
        for regex, fn in self._patterns:
            m = regex.fullmatch(key)
            if m:
                return fn(m)
        self.error(-113, "Undefined header")
        return None


# --- temperature controller -----------------------------------------------------------------------------
class TemperatureControllerTwin(ScpiDevice):
    """Vapor-cell heater controller: a perfect ramping controller with a twin clock.

    While the output is on, the reading moves toward the set-point at the ramp rate (or jumps when the
    ramp is off); while off it relaxes toward ambient at `cool_rate_k_per_min`. `time_scale` twin
    seconds pass per wall second. Every change of the reading is pushed to `on_temperature(kelvin)`.
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
        self._t = self._clock()

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
        if on and not self.output and self.envelope is not None:
            if self.max_ramp_envelope is not None and (not self.ramp_on or self.ramp_rate > self.max_ramp_envelope + 1e-9):
                self.violation(f"output on with ramp {'off' if not self.ramp_on else f'at {self.ramp_rate} K/min'}")
            # the ramp must start from a read-back: the set-point equals the last reading this device reported
            # (clamped into the configured limits)
            seen = self.last_reported
            origin = None if seen is None else min(max(seen, self.envelope[0]), self.envelope[1])
            if origin is None or abs(self.setpoint - origin) > 1e-3 + 1e-6 * abs(origin):
                self.violation(f"output on with set-point {self.setpoint} K but the last reported reading is {seen} K "
                               "(the ramp would not start from the read-back)")
        self.output = on


# --- laser and power meter ------------------------------------------------------------------------------
class LaserControllerTwin(ScpiDevice):
    """Laser diode current source + TEC; optical power from a linear P-I model; `on_change()` after any change."""

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


class PowerMeterTwin(ScpiDevice):
    """Optical power meter reading `power()` (W) of a light source, optionally through a tap fraction."""

    idn = "lightloop,WIRE-TWIN-PM,0,1.0"

    def __init__(self, name: str, power: Callable[[], float], fraction: float = 1.0) -> None:
        super().__init__(name)
        self._power, self.fraction = power, float(fraction)
        self.wavelength, self.auto, self.range, self.averaging = 780.0, True, 0.01, 1
        self.prop("SENS:POW:UNIT", set=lambda a: None)
        self.prop("MEAS:POW", get=lambda: _fmt(self.fraction * self._power()))
        self.prop("SENS:CORR:WAV", get=lambda: _fmt(self.wavelength), set=lambda a: setattr(self, "wavelength", float(a)))
        self.prop("SENS:POW:RANG:AUTO", get=lambda: "1" if self.auto else "0",
                  set=lambda a: setattr(self, "auto", _parse_bool(a)))
        self.prop("SENS:POW:RANG", get=lambda: _fmt(self.range), set=lambda a: setattr(self, "range", float(a)))
        self.prop("SENS:AVER:COUN", get=lambda: str(self.averaging), set=lambda a: setattr(self, "averaging", int(a)))
        self.pattern(r"SENS:CORR:COLL:ZERO", lambda m: None)


# --- multichannel voltage source ------------------------------------------------------------------------
_CHLIST = r"\(@([0-9,\s]+)\)"


class ScpiSourceTwin(ScpiDevice):
    """Multichannel voltage source (channels from 1); `on_change(channel, volts_at_output)` on every change."""

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


# --- digitiser ------------------------------------------------------------------------------------------
class DigitizerTwin(ScpiDevice):
    """Multichannel digitiser: each CHAN is an array of detectors; one record = `points` samples per detector.

    ``DIG CHANa,CHANb`` calls ``acquire(channels, points)`` which returns volts per channel, shape
    (points, detectors) - drawn in the order the channels are listed. ``WAV:DATA?`` sends the record of
    ``WAV:SOUR`` as int8/int16 codes, row-major (sample, detector): volts = code * yinc + yorig with
    yinc = range / 2**bits and yorig = the channel offset.
    """

    idn = "lightloop,WIRE-TWIN-DIGITIZER,0,1.0"

    def __init__(self, name: str, n_channels: int,
                 acquire: Callable[[list[int], int], dict[int, NDArray[np.floating[Any]]]],
                 detectors: dict[int, int] | None = None, max_points: int = 10_000_000) -> None:
        super().__init__(name)
        self.n, self.acquire, self.max_points = int(n_channels), acquire, int(max_points)
        self.detectors = dict(detectors or {})
        self.reset()
        self.prop("WAV:BYT", set=lambda a: None if a.upper() == "LSBF" else self.error(-224, "Illegal parameter value"))
        self.prop("WAV:UNS", set=lambda a: None if not _parse_bool(a) else self.error(-224, "Illegal parameter value"))
        self.prop("ACQ:SRAT", get=lambda: _fmt(self.srate), set=lambda a: setattr(self, "srate", float(a)))
        self.prop("ACQ:POIN", get=lambda: str(self.points), set=self._set_points)
        self.prop("WAV:FORM", get=lambda: self.form, set=self._set_form)
        self.prop("TRIG:SOUR", get=lambda: self.trig, set=lambda a: setattr(self, "trig", a.upper()))
        self.prop("TRIG:LEV", get=lambda: _fmt(self.level), set=lambda a: setattr(self, "level", float(a)))
        self.prop("WAV:SOUR", get=lambda: f"CHAN{self.source}", set=self._set_source)
        self.prop("WAV:PRE", get=self._preamble)
        self.prop("WAV:DATA", get=self._data)  # type: ignore[arg-type]
        p = self.pattern
        p(r"CHAN(\d+):DISP\s+(\S+)", lambda m: self._chset(m, "disp", _parse_bool))
        p(r"CHAN(\d+):DISP\?", lambda m: "1" if self.disp[self._ch(m.group(1))] else "0")
        p(r"CHAN(\d+):RANG\s+(\S+)", lambda m: self._chset(m, "rang", float))
        p(r"CHAN(\d+):RANG\?", lambda m: _fmt(self.rang[self._ch(m.group(1))]))
        p(r"CHAN(\d+):OFFS\s+(\S+)", lambda m: self._chset(m, "offs", float))
        p(r"CHAN(\d+):OFFS\?", lambda m: _fmt(self.offs[self._ch(m.group(1))]))
        p(r"CHAN(\d+):COUP\s+(DC|AC)", lambda m: self._chset(m, "coup", str.upper))
        p(r"CHAN(\d+):COUP\?", lambda m: self.coup[self._ch(m.group(1))])
        p(r"DIG\s+(CHAN\d+(?:\s*,\s*CHAN\d+)*)", self._digitize)

    def reset(self) -> None:
        self.srate, self.points, self.form, self.trig, self.level, self.source = 1e6, 1000, "WORD", "EXT", 0.0, 1
        self.disp = [True] * self.n
        self.rang = [20.0] * self.n
        self.offs = [0.0] * self.n
        self.coup = ["DC"] * self.n
        self.records: dict[int, NDArray[np.floating[Any]]] = {}

    def _ch(self, text: str) -> int:
        c = int(text)
        if not 1 <= c <= self.n:
            raise ValueError(text)
        return c - 1

    def _chset(self, m: re.Match[str], attr: str, cast: Callable[[str], Any]) -> Reply:
        getattr(self, attr)[self._ch(m.group(1))] = cast(m.group(2))
        return None

    def _set_points(self, arg: str) -> None:
        n = int(float(arg))
        if not 16 <= n <= self.max_points:
            self.error(-222, "Data out of range")
            return
        self.points = n

    def _set_form(self, arg: str) -> None:
        if arg.upper() not in ("WORD", "BYTE"):
            self.error(-224, "Illegal parameter value")
            return
        self.form = arg.upper()

    def _set_source(self, arg: str) -> None:
        m = re.fullmatch(r"CHAN(\d+)", arg.strip(), re.IGNORECASE)
        if not m:
            raise ValueError(arg)
        self.source = self._ch(m.group(1)) + 1

    def _digitize(self, m: re.Match[str]) -> Reply:
        channels = [self._ch(t.strip()[4:]) + 1 for t in m.group(1).split(",")]
        self.records = {c: np.asarray(v) for c, v in self.acquire(channels, self.points).items()}
        return None

    def _bits(self) -> int:
        return 16 if self.form == "WORD" else 8

    def _scale(self, c: int) -> tuple[float, float]:
        return self.rang[c - 1] / 2.0 ** self._bits(), self.offs[c - 1]

    def _npoints(self, c: int) -> int:
        rec = self.records.get(c)
        return int(rec.size) if rec is not None else self.points * self.detectors.get(c, 1)

    def _preamble(self) -> str:
        c = self.source
        yinc, yorig = self._scale(c)
        fmt = 1 if self.form == "WORD" else 0
        return f"{fmt},0,{self._npoints(c)},1,{_fmt(1.0 / self.srate)},0,0,{_fmt(yinc)},{_fmt(yorig)},0"

    def _data(self) -> bytes:
        c = self.source
        rec = self.records.get(c)
        if rec is None:
            self.error(-230, "Data corrupt or stale")
            rec = np.zeros((self.points, self.detectors.get(c, 1)))
        yinc, yorig = self._scale(c)
        bits = self._bits()
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        codes = np.clip(np.rint((np.asarray(rec, np.float64).reshape(-1) - yorig) / yinc), lo, hi)
        dtype = "<i2" if bits == 16 else "i1"
        return ieee_block(codes.astype(dtype).tobytes())


# --- SLM frame server -----------------------------------------------------------------------------------
class _SLMSession(Session):
    def __init__(self, device: "SLMTwin") -> None:
        self.device, self.buf = device, bytearray()
        self.pending: tuple[str, int, int, int, int] | None = None

    def feed(self, data: bytes) -> bytes:
        self.buf.extend(data)
        out = bytearray()
        dev = self.device
        while True:
            if self.pending is None:
                idx = self.buf.find(b"\n")
                if idx < 0:
                    if len(self.buf) > 4096:
                        raise DropConnection("header too long")
                    return bytes(out)
                header = bytes(self.buf[:idx]).decode("latin-1").strip()
                del self.buf[: idx + 1]
                dev.log(header)
                if header == "INFO?":
                    reply = f"OK {dev.height} {dev.width} {dev.bits}\n".encode()
                else:
                    parts = header.split()
                    try:
                        if parts[0] != "FRAME" or len(parts) != 5:
                            raise ValueError
                        h, w, bits, n = (int(p) for p in parts[1:])
                    except (ValueError, IndexError):
                        reply = b"ERR bad header\n"
                    else:
                        if n < 0 or n > 1 << 28:
                            raise DropConnection("absurd frame size")
                        self.pending = (header, h, w, bits, n)
                        continue
                filtered = dev.filter_reply(reply)
                if filtered:
                    out.extend(filtered)
            else:
                header, h, w, bits, n = self.pending
                if len(self.buf) < n:
                    return bytes(out)
                payload = bytes(self.buf[:n])
                del self.buf[:n]
                self.pending = None
                reply = dev.frame(h, w, bits, payload).encode() + b"\n"
                filtered = dev.filter_reply(reply)
                if filtered:
                    out.extend(filtered)


class SLMTwin(Endpoint):
    """SLM frame sink: (height, width) panel of `bits`-bit pixels; `on_frame(frame)` for every accepted frame."""

    transport = "slm"

    def __init__(self, name: str, height: int, width: int, bits: int,
                 on_frame: Callable[[NDArray[np.integer[Any]]], None] | None = None) -> None:
        super().__init__(name)
        self.height, self.width, self.bits, self.on_frame = int(height), int(width), int(bits), on_frame
        self.frames = 0
        self.last: NDArray[np.integer[Any]] | None = None

    def session(self) -> Session:
        return _SLMSession(self)

    def frame(self, h: int, w: int, bits: int, payload: bytes) -> str:
        """Accept one frame; the reply line."""
        if (h, w, bits) != (self.height, self.width, self.bits):
            return f"ERR geometry {h}x{w}@{bits} does not match the panel {self.height}x{self.width}@{self.bits}"
        dtype = np.dtype(np.uint8) if bits <= 8 else np.dtype("<u2")
        if len(payload) != h * w * dtype.itemsize:
            return f"ERR {len(payload)} payload bytes for a {h}x{w}@{bits} frame"
        frame = np.frombuffer(payload, dtype=dtype).reshape(h, w)
        if frame.size and int(frame.max()) >= 2**bits:
            return f"ERR gray level {int(frame.max())} exceeds {bits} bits"
        self.frames += 1
        self.last = frame
        if self.on_frame is not None:
            self.on_frame(frame)
        return "OK"


# --- Qontrol-style heater driver ------------------------------------------------------------------------
class QontrolTwin(ScpiDevice):
    """Qontrol-style heater driver: ``V3=1.2500`` -> ``OK``; currents (mA) from heater resistances.

    `on_change(volts)` receives the whole voltage vector (V) after every accepted voltage write.
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
        self.vmax = np.full(self.n, float(vmax))
        self.imax = np.full(self.n, float(imax_ma))
        self.on_change, self.identity = on_change, identity
        self.envelope, self.max_step_envelope = envelope, max_step_envelope

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
