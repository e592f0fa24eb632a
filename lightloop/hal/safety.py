"""Safety policy of the HAL: limits that only narrow, ramps from a fresh read-back, verified set-points.

The policy objects wrap *device ports* (protocols in K, A, V that ``lightloop.station.adapters`` or test
fakes implement; nothing here talks to a driver) and refuse every out-of-limit value with
:class:`SafetyLimitError` BEFORE anything is handed to the port (docs/architecture.md, Reliability rules).

* :class:`Range` - a closed interval; :meth:`Range.narrowed_by` accepts a limit only inside the hardware range.
* :class:`RampPolicy` - a finite rate > 0 ("no ramp" cannot be expressed). EVERY ramp begins at a value read
  back in the same call (never a cached one) and moves in steps of at most ``max_rate * interval``.
* Every set-point write returns the device's read-back (one compound transaction); a mismatch is re-planned
  from the read-back, at most :data:`RETRIES` times, then the safe state and a one-line InstrumentError.
  A read-back outside the limits (moved behind the HAL's back) is never ramped through: safe state + error.
* After a reconnect (ports with ``on_reconnect(fn)``) ``restore()`` re-establishes the safety state before any
  other command: ramp on at the limit, the output as the HAL left it, outputs ramped back to their last
  verified values (a laser found dark: 0 A, output on, ramp up).
* :class:`SafeTemperatureControl` (hardware ramp), :class:`SafeLaser` (current and power limits, dark
  turn-on), :class:`SafeVoltageBank` (multichannel source; :meth:`SafeVoltageBank.view` = a channel block).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lightloop.errors import ConfigError, InstrumentError, SafetyLimitError

__all__ = [
    "Range",
    "RampPolicy",
    "ramp_points",
    "RETRIES",
    "TemperatureState",
    "TemperatureDevice",
    "SafeTemperatureControl",
    "LaserDevice",
    "LinearLaserModel",
    "SafeLaser",
    "VoltageDevice",
    "SafeVoltageBank",
    "VoltageBankView",
]


def _fmt(value: float) -> str:
    return f"{value:.6g}"


# --- limits ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """Closed interval [low, high] of one quantity in its base unit (K, A, V, W, K/min ...)."""

    low: float
    high: float
    unit: str = ""
    label: str = "value"

    def __post_init__(self) -> None:
        if math.isnan(self.low) or math.isnan(self.high) or self.low > self.high:
            raise ConfigError(f"{self.label}: limit [{self.low}, {self.high}] {self.unit} is empty; expected low <= high")

    def __str__(self) -> str:
        return f"[{_fmt(self.low)}, {_fmt(self.high)}] {self.unit}".rstrip()

    def contains(self, value: float) -> bool:
        """True when value is finite and inside the interval."""
        return bool(np.isfinite(value)) and self.low <= value <= self.high

    def check(self, value: float, what: str | None = None) -> float:
        """Return value as float, or raise SafetyLimitError (nothing is written) if it is outside or not finite."""
        v = float(value)
        if not self.contains(v):
            raise SafetyLimitError(f"{what or self.label}: {_fmt(v)} {self.unit} outside the limit {self}; nothing written")
        return v

    def check_array(self, values: ArrayLike, what: str | None = None) -> NDArray[np.float64]:
        """Vectorised check; the message names the first offending index."""
        v = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(v) | (v < self.low) | (v > self.high)
        if bad.any():
            k = int(np.flatnonzero(bad.reshape(-1))[0])
            raise SafetyLimitError(
                f"{what or self.label}: element {k} = {_fmt(float(v.reshape(-1)[k]))} {self.unit} outside the limit "
                f"{self} ({int(bad.sum())} element(s) out of range); nothing written")
        return v

    def clamp(self, value: float) -> float:
        """Nearest value inside the interval."""
        return float(min(max(value, self.low), self.high))

    def narrowed_by(self, other: "Range", where: str = "") -> "Range":
        """Return `other` if it lies inside this (hardware) range; a limit that widens it is a ConfigError."""
        if other.low < self.low or other.high > self.high:
            raise ConfigError(f"{where or other.label}: limit {other} widens the hardware range {self}; "
                              f"expected a limit inside {self}")
        return Range(other.low, other.high, self.unit, other.label)

    def intersect(self, other: "Range") -> "Range":
        """The tighter of two binding limits (both apply)."""
        lo, hi = max(self.low, other.low), min(self.high, other.high)
        if lo > hi:
            raise ConfigError(f"{self.label}: limits {self} and {other} do not overlap; expected overlapping limits")
        return Range(lo, hi, self.unit, self.label)


# --- ramps ----------------------------------------------------------------------------------------------
#: a set-point write whose read-back differs is retried at most this many times (then safe state + error)
RETRIES = 3


@dataclass(frozen=True)
class RampPolicy:
    """Set-point rate limit: at most max_rate (unit/s, finite, > 0), one write every interval_s, at most max_steps writes."""

    max_rate: float
    interval_s: float = 0.02
    max_steps: int = 2000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_rate) and self.max_rate > 0) or not 0 < self.interval_s < math.inf \
                or self.max_steps < 1:
            raise ConfigError(f"ramp: rate {self.max_rate}, interval {self.interval_s} s, {self.max_steps} steps; "
                              "expected a finite max_rate > 0, interval_s > 0 and max_steps >= 1 (no unramped outputs)")

    @property
    def max_step(self) -> float:
        """Largest change per write (unit)."""
        return self.max_rate * self.interval_s

    def points(self, start: ArrayLike, target: ArrayLike) -> list[NDArray[np.float64]]:
        """Intermediate set-points from start (excluded) to target (included); each step <= max_step per element."""
        return ramp_points(start, target, self.max_step, self.max_steps)


def ramp_points(start: ArrayLike, target: ArrayLike, max_step: float, max_steps: int = 2000) -> list[NDArray[np.float64]]:
    """Linear ramp start -> target in ceil(max|delta| / max_step) equal steps (start excluded, target included)."""
    if not (math.isfinite(max_step) and max_step > 0):
        raise ConfigError(f"ramp: step {max_step}; expected a finite step > 0")
    a, b = np.asarray(start, np.float64), np.asarray(target, np.float64)
    span = float(np.max(np.abs(b - a))) if a.size else 0.0
    if span == 0.0:
        return [b.copy()] if a.size else []
    n = max(1, math.ceil(span / max_step - 1e-9))
    if n > max_steps:
        raise SafetyLimitError(f"ramp: {n} steps of <= {_fmt(max_step)} needed for a change of {_fmt(span)}; "
                               f"expected at most {max_steps} steps (raise the ramp rate limit or move in smaller moves)")
    return [a + (b - a) * (k / n) for k in range(1, n)] + [b.copy()]


def _close(got: ArrayLike, want: ArrayLike, resolution: float) -> bool:
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return bool(g.shape == w.shape and np.all(np.isfinite(g)) and np.all(np.abs(g - w) <= 1e-6 * np.abs(w) + resolution))


def _drive(name: str, what: str, start: NDArray[np.float64], target: NDArray[np.float64], ramp: RampPolicy,
           write: Callable[[NDArray[np.float64]], ArrayLike], bounds: tuple[ArrayLike, ArrayLike],
           resolution: float, sleep: Callable[[float], None], on_fail: Callable[[], None]) -> NDArray[np.float64]:
    """Ramp start -> target inside bounds; each write returns its read-back; a mismatch re-plans from it (<= RETRIES)."""
    lo, hi = np.asarray(bounds[0], np.float64), np.asarray(bounds[1], np.float64)
    points, k, misses, now = ramp.points(np.clip(start, lo, hi), target), 0, 0, start
    while k < len(points):
        if k or misses:
            sleep(ramp.interval_s)
        want = points[k]
        got = np.asarray(write(want), np.float64).reshape(want.shape)
        if _close(got, want, resolution):
            now, k = got, k + 1
            continue
        misses += 1
        if misses > RETRIES or not _close(np.clip(got, lo, hi), got, resolution):
            on_fail()
            raise InstrumentError(f"{name}: {what} written as {np.round(want, 9).tolist()} read back as "
                                  f"{np.round(got, 9).tolist()} ({misses} mismatching write(s)); expected the written "
                                  f"value within {RETRIES} retries (outputs switched to the safe state)")
        now, points, k = got, ramp.points(np.clip(got, lo, hi), target), 0
    return now


# --- temperature ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TemperatureState:
    """One batched read of a heater controller: reading (K), output, ramp on, ramp rate (K/min), set-point (K)."""

    temperature: float
    output: bool
    ramp_on: bool
    ramp_rate: float
    setpoint: float


@runtime_checkable
class TemperatureDevice(Protocol):
    """A heater temperature controller in device units (K, K/min); every call is one instrument transaction."""

    name: str

    def read_temperature(self) -> float: ...

    def read_state(self) -> TemperatureState: ...

    def read_output(self) -> bool: ...

    def write_setpoint(self, kelvin: float) -> float: ...

    def write_output(self, on: bool) -> None: ...

    def configure_ramp(self, k_per_min: float) -> tuple[float, bool]: ...


def _hook(device: object, fn: Callable[[], None]) -> None:
    register = getattr(device, "on_reconnect", None)
    if callable(register):
        register(fn)


class SafeTemperatureControl:
    """TemperaturePort with limits: set-points in `limits` (K), controller ramp on at <= max_ramp_k_per_min.

    ``set_temperature`` reads the controller's state in one query; it (re)programs the ramp if it is off or
    too fast, writes the measured temperature as the set-point before enabling an output that is off (the
    ramp starts from a read-back), writes the verified target and waits, bounded, until the reading settles.
    """

    def __init__(self, device: TemperatureDevice, limits: Range, max_ramp_k_per_min: float,
                 settle_tolerance_k: float = 0.05, settle_timeout_s: float = 120.0, poll_s: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        if not (math.isfinite(max_ramp_k_per_min) and max_ramp_k_per_min > 0):
            raise ConfigError(f"{device.name}: ramp rate limit {max_ramp_k_per_min} K/min; expected a finite rate > 0 K/min")
        self.device, self.limits, self.max_ramp = device, limits, float(max_ramp_k_per_min)
        self.tolerance, self.settle_timeout, self.poll = float(settle_tolerance_k), float(settle_timeout_s), float(poll_s)
        self._sleep, self._clock = sleep, clock
        self._ramp_ok = False
        self._expect: float | None = None      # the verified set-point while the HAL keeps the heater on
        _hook(device, self.restore)

    @property
    def name(self) -> str:
        """Instrument name for messages."""
        return self.device.name

    @property
    def identity(self) -> str:
        """Identity of the controller (as its device port reports it)."""
        return str(getattr(self.device, "identity", self.device.name))

    def _ensure_ramp(self) -> float:
        rate, enabled = self.device.configure_ramp(self.max_ramp)
        if not enabled or not 0 < rate <= self.max_ramp * (1 + 1e-6):
            self.safe_state()
            raise SafetyLimitError(
                f"{self.name}: controller reports ramp {'on' if enabled else 'off'} at {_fmt(rate)} K/min; expected "
                f"ramp on at 0 < rate <= {_fmt(self.max_ramp)} K/min (heater switched off)")
        self._ramp_ok = True
        return rate

    def _state(self) -> TemperatureState:
        st = self.device.read_state()
        if not np.isfinite(st.temperature) or not np.isfinite(st.ramp_rate):
            raise InstrumentError(f"{self.name}: state read-back {st}; expected finite numbers in K and K/min")
        return st

    def _ramp_checked(self, st: TemperatureState) -> float:
        """Ramp rate (K/min) in force: reprogrammed first when it is off, too fast or not yet verified."""
        if self._ramp_ok and st.ramp_on and 0 < st.ramp_rate <= self.max_ramp * (1 + 1e-6):
            return st.ramp_rate
        return self._ensure_ramp()

    def _write_setpoint(self, kelvin: float) -> None:
        resolution = float(getattr(self.device, "resolution", 1e-6))
        for attempt in range(RETRIES + 1):
            got = float(self.device.write_setpoint(kelvin))
            if _close(got, kelvin, resolution):
                return
        self.safe_state()
        raise InstrumentError(f"{self.name}: temperature set-point written as {_fmt(kelvin)} K read back as {_fmt(got)} K "
                              f"after {RETRIES + 1} writes; expected the written value (heater switched off)")

    def _turn_on(self, st: TemperatureState) -> None:
        """Output off -> set-point = the read-back temperature, then output on (the ramp starts there)."""
        if not st.output:
            self._write_setpoint(self.limits.clamp(st.temperature))
            self.device.write_output(True)

    def read_temperature(self) -> float:
        """Measured temperature (K)."""
        t = float(self.device.read_temperature())
        if not np.isfinite(t):
            raise InstrumentError(f"{self.name}: temperature reading is {t}; expected a finite value in K")
        return t

    def set_temperature(self, kelvin: float) -> None:
        """Ramp to `kelvin` (checked against the limits first) and wait until the reading is within tolerance."""
        target = self.limits.check(kelvin, f"{self.name}: temperature set-point")
        st = self._state()
        rate = self._ramp_checked(st)
        self._turn_on(st)
        self._expect = target
        self._write_setpoint(target)
        start = st.temperature
        timeout = abs(target - start) / (rate / 60.0) * 1.5 + self.settle_timeout
        deadline = self._clock() + timeout
        reading = start
        while True:
            if abs(reading - target) <= self.tolerance:
                return
            if self._clock() > deadline:
                raise InstrumentError(
                    f"{self.name}: temperature {reading:.3f} K did not reach the set-point {target:.3f} K within "
                    f"{timeout:.1f} s (ramp {_fmt(rate)} K/min); expected settling to +-{self.tolerance:g} K")
            self._sleep(self.poll)
            reading = self.read_temperature()

    def restore(self) -> None:
        """After a reconnect, before anything else: ramp on at the limit, heater output as the HAL left it."""
        self._ramp_ok = False
        self._ensure_ramp()
        st = self._state()
        if self._expect is None:
            if st.output:
                self.device.write_output(False)
            return
        self._turn_on(st)
        if not st.output or not _close(st.setpoint, self._expect, 1e-6):
            self._write_setpoint(self._expect)

    def invalidate(self) -> None:
        """Forget the verified ramp configuration (the next set-point re-programs it)."""
        self._ramp_ok = False

    def safe_state(self) -> None:
        """Heater output off (the cell cools passively), verified by a read-back (a lost write is re-sent)."""
        self._expect = None
        for _ in range(RETRIES + 1):
            self.device.write_output(False)
            if not self.device.read_output():
                return
        raise InstrumentError(f"{self.name}: heater output still reads on after {RETRIES + 1} 'off' writes; "
                              "expected it off (switch the heater off by hand)")


# --- laser ----------------------------------------------------------------------------------------------
@runtime_checkable
class LaserDevice(Protocol):
    """A laser diode current source in device units (A); every call is one instrument transaction."""

    name: str

    def read_current_setpoint(self) -> float: ...

    def write_current(self, amps: float) -> float: ...

    def read_output(self) -> bool: ...

    def write_output(self, on: bool) -> None: ...


@dataclass(frozen=True)
class LinearLaserModel:
    """Laser P-I curve above threshold: P = slope_w_per_a * max(0, I - threshold_a)."""

    threshold_a: float = 0.0
    slope_w_per_a: float = 1.0

    def power(self, amps: float) -> float:
        """Optical power (W) at drive current `amps`."""
        return self.slope_w_per_a * max(0.0, amps - self.threshold_a)

    def current_for(self, watts: float) -> float:
        """Drive current (A) giving optical power `watts`."""
        return self.threshold_a + watts / self.slope_w_per_a


class SafeLaser:
    """Laser with a current limit and a power limit (through the P-I model); verified ramps from the read-back."""

    def __init__(self, device: LaserDevice, current_limit: Range, model: LinearLaserModel, max_power_w: float,
                 ramp: RampPolicy, read_power: Callable[[], float] | None = None, power_tolerance: float = 0.1,
                 sleep: Callable[[float], None] = time.sleep):
        self.device, self.model, self.ramp = device, model, ramp
        i_max = current_limit.high
        if math.isfinite(max_power_w):
            i_max = min(i_max, model.current_for(max_power_w))
        self.current_limit = Range(max(0.0, current_limit.low), max(0.0, i_max), "A", f"{device.name}: laser current")
        self.max_power_w = float(max_power_w)
        self._read_power, self.power_tolerance, self._sleep = read_power, float(power_tolerance), sleep
        self._on = False                 # the HAL keeps the output on
        self._level: float | None = None  # last verified current set-point (A)
        _hook(device, self.restore)

    @property
    def name(self) -> str:
        """Instrument name for messages."""
        return self.device.name

    def _write(self, amps: NDArray[np.float64]) -> float:
        return float(self.device.write_current(float(amps)))

    def _ramp_to(self, target: float) -> None:
        start = float(self.device.read_current_setpoint())
        if not self.current_limit.contains(start):
            self.off()
            raise InstrumentError(f"{self.name}: current set-point read back as {_fmt(start)} A, outside the limit "
                                  f"{self.current_limit}; expected a value inside it (laser switched off)")
        end = _drive(self.name, "laser current (A)", np.asarray(start), np.asarray(float(target)), self.ramp,
                     self._write, (self.current_limit.low, self.current_limit.high),
                     float(getattr(self.device, "resolution", 1e-9)), self._sleep, self.off)
        self._level = float(end)

    def set_current(self, amps: float) -> None:
        """Ramp the drive current to `amps` (checked against the current and power limits first)."""
        target = self.current_limit.check(amps, f"{self.name}: laser current (power limit {_fmt(self.max_power_w)} W)")
        self._ramp_to(target)

    def _dark_on(self) -> None:
        """Set-point 0 A (verified) while dark, then output on."""
        _drive(self.name, "laser current (A)", np.asarray(0.0), np.asarray(0.0), self.ramp, self._write,
               (self.current_limit.low, self.current_limit.high), 1e-9, self._sleep, self.off)
        self.device.write_output(True)

    def on(self, amps: float) -> float | None:
        """Emit at `amps`: set-point to 0 while dark, output on, ramp up; verify the power meter if there is one."""
        target = self.current_limit.check(amps, f"{self.name}: laser current (power limit {_fmt(self.max_power_w)} W)")
        if not self.device.read_output():
            self._level = None
            self._dark_on()
        self._on = True
        self._ramp_to(target)
        if self._read_power is None:
            return None
        power = float(self._read_power())
        if not np.isfinite(power) or power > self.max_power_w * (1 + self.power_tolerance):
            self.off()
            raise SafetyLimitError(f"{self.name}: power meter reads {_fmt(power)} W at {_fmt(target)} A; expected at "
                                   f"most {_fmt(self.max_power_w)} W (laser switched off)")
        return power

    def restore(self) -> None:
        """After a reconnect, before anything else: output as the HAL left it; a laser found dark is brought
        back by the safe turn-on (0 A, output on, ramp up from the read-back to the last verified current)."""
        lit = bool(self.device.read_output())
        if not self._on:
            if lit:
                self.off()
            return
        level = self._level or 0.0
        if not lit:
            self._dark_on()
        self._ramp_to(level)

    def off(self) -> None:
        """Output off first (instantly dark), then the set-point to 0 A."""
        self._on, self._level = False, 0.0
        self.device.write_output(False)
        self.device.write_current(0.0)

    def safe_state(self) -> None:
        """Laser off."""
        self.off()


# --- voltage banks --------------------------------------------------------------------------------------
@runtime_checkable
class VoltageDevice(Protocol):
    """A multichannel voltage source in volts (channels from 0); one transaction per call; writes return read-backs."""

    name: str
    n_channels: int

    def read_voltages(self) -> NDArray[np.float64]: ...

    def write_voltages(self, volts: Mapping[int, float]) -> NDArray[np.float64]: ...


class SafeVoltageBank:
    """HeaterPort with per-channel voltage limits and a ramp-rate limit (V/s) on every channel.

    Every write first reads all voltages back (one batched query) and ramps from there; each ramp step is
    one batched write whose reply carries the read-back of the channels written (verified).
    """

    def __init__(self, device: VoltageDevice, limits: Range | Sequence[Range], ramp: RampPolicy,
                 sleep: Callable[[float], None] = time.sleep):
        n = device.n_channels
        lims = [limits] * n if isinstance(limits, Range) else list(limits)
        if len(lims) != n:
            raise ConfigError(f"{device.name}: {len(lims)} voltage limits for {n} channels; expected one per channel")
        self.device, self.ramp, self._sleep = device, ramp, sleep
        self.low = np.array([r.low for r in lims])
        self.high = np.array([r.high for r in lims])
        self.unit_ranges = lims
        self._level = np.full(n, np.nan)     # last verified set-point per channel (nan: never written)
        _hook(device, self.restore)

    @property
    def name(self) -> str:
        """Instrument name for messages."""
        return self.device.name

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return self.device.n_channels

    def _check(self, channels: NDArray[np.int64], values: NDArray[np.float64]) -> None:
        lo, hi = self.low[channels], self.high[channels]
        bad = ~np.isfinite(values) | (values < lo) | (values > hi)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            c = int(channels[k])
            raise SafetyLimitError(
                f"{self.name}: channel {c} voltage {_fmt(float(values[k]))} V outside the limit {self.unit_ranges[c]} "
                f"({int(bad.sum())} channel(s) out of range); nothing written")

    def set_channels(self, volts: Mapping[int, float]) -> None:
        """Write a subset {channel: volts}: limits first, then a verified ramp from a fresh read-back."""
        if not volts:
            return
        channels = np.array(sorted(int(c) for c in volts), dtype=np.int64)
        if channels[0] < 0 or channels[-1] >= self.n_channels:
            raise ValueError(f"{self.name}: channels {channels.tolist()} out of range 0..{self.n_channels - 1}")
        target = np.array([float(volts[int(c)]) for c in channels])
        self._check(channels, target)
        now = np.asarray(self.device.read_voltages(), np.float64)
        lo, hi, res = self.low[channels], self.high[channels], float(getattr(self.device, "resolution", 1e-9))
        if now.shape != (self.n_channels,) or not _close(np.clip(now[channels], lo, hi), now[channels], res):
            self.safe_state()
            raise InstrumentError(f"{self.name}: voltage read-back {np.round(now, 6).tolist()} is not {self.n_channels} "
                                  f"numbers inside the limits; expected the outputs where the HAL left them "
                                  "(every channel switched to 0 V)")

        def write(point: NDArray[np.float64]) -> NDArray[np.float64]:
            return np.asarray(self.device.write_voltages({int(c): float(v) for c, v in zip(channels, point)}))

        self._level[channels] = _drive(self.name, f"voltages (V) of channels {channels.tolist()}", now[channels], target,
                                       self.ramp, write, (lo, hi), res, self._sleep, self.safe_state)

    def set_voltages(self, voltages: ArrayLike) -> None:
        """Write every channel (V) - one batched transaction per ramp step."""
        v = np.asarray(voltages, np.float64).reshape(-1)
        if v.size != self.n_channels:
            raise ValueError(f"{self.name}: expected {self.n_channels} voltages, got {v.size}")
        self.set_channels(dict(enumerate(v.tolist())))

    def get_voltages(self) -> NDArray[np.float64]:
        """Voltage set-points read back from the device (V)."""
        return np.asarray(self.device.read_voltages(), np.float64)

    def restore(self) -> None:
        """After a reconnect, before anything else: ramp every channel the HAL set back to its last verified value."""
        known = np.flatnonzero(np.isfinite(self._level))
        if known.size:
            self.set_channels({int(c): float(self._level[c]) for c in known})

    def safe_state(self) -> None:
        """Every channel to 0 V at once (switching heaters off is always safe; no ramp), verified by the read-back."""
        self._level[:] = 0.0
        for _ in range(RETRIES + 1):
            if not np.any(np.asarray(self.device.write_voltages({c: 0.0 for c in range(self.n_channels)}))):
                return
        raise InstrumentError(f"{self.name}: voltages do not read back 0 V after {RETRIES + 1} writes; expected 0 V "
                              "(switch the source off by hand)")

    def view(self, first: int, count: int) -> "VoltageBankView":
        """HeaterPort on channels first .. first+count-1 (e.g. one mesh layer's phase shifters)."""
        if first < 0 or count < 1 or first + count > self.n_channels:
            raise ConfigError(f"{self.name}: channels {first}..{first + count - 1} do not exist; expected 0..{self.n_channels - 1}")
        return VoltageBankView(self, first, count)


class VoltageBankView:
    """A contiguous block of a SafeVoltageBank as a HeaterPort (n_channels, set_voltages, get_voltages)."""

    def __init__(self, bank: SafeVoltageBank, first: int, count: int) -> None:
        self.bank, self.first, self.n_channels = bank, int(first), int(count)

    @property
    def name(self) -> str:
        """Instrument name and channel block for messages."""
        return f"{self.bank.name}[{self.first}:{self.first + self.n_channels}]"

    def set_voltages(self, voltages: ArrayLike) -> None:
        """Write this block's channels (V) - one batched transaction per ramp step, limits checked first."""
        v = np.asarray(voltages, np.float64).reshape(-1)
        if v.size != self.n_channels:
            raise ValueError(f"{self.name}: expected {self.n_channels} voltages, got {v.size}")
        self.bank.set_channels({self.first + i: float(x) for i, x in enumerate(v)})

    def get_voltages(self) -> NDArray[np.float64]:
        """This block's set-points read back (V)."""
        return self.bank.get_voltages()[self.first:self.first + self.n_channels]
