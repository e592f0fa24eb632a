"""Safety policy of the HAL: limits that can only narrow, and set-point ramps that start from a read-back.

Nothing in this module talks to a driver. The policy objects wrap *device ports* - small protocols in
device units (kelvin, amperes, volts) that driver adapters (``lightloop.station.adapters``) or test
fakes implement - and refuse every out-of-limit value with :class:`SafetyLimitError` BEFORE anything
is handed to the port, so no such value can reach a driver or the wire (docs/architecture.md, Reliability rules).

Rules implemented here:

* :class:`Range` - a closed interval of one quantity; :meth:`Range.narrowed_by` accepts a configured
  limit only if it lies inside the hardware range (limits can only narrow); :meth:`Range.intersect`
  combines limits that are all binding (config, driver, what the instrument reports).
* :class:`RampPolicy` - a maximum set-point rate; a ramp always begins at a value READ BACK from the
  device (never from a cached or assumed value) and moves in steps of at most ``max_rate * interval``.
* :class:`SafeTemperatureControl` - a heater controller as a HAL :class:`~lightloop.hal.ports.TemperaturePort`:
  set-points inside the limits, the controller's own ramp programmed no faster than the limit and
  verified by read-back, the ramp origin set to the measured temperature before the output is enabled,
  bounded settling wait, heater off in the safe state.
* :class:`SafeLaser` - laser current inside the current limit and the power limit (through a linear
  P-I model), current ramps from the read-back set-point, output off first in the safe state,
  optional power-meter verification.
* :class:`SafeVoltageBank` - a multichannel voltage source (heaters, amplifier control voltages) as a
  HeaterPort: per-channel voltage limits, steps larger than the ramp allows are split into batched
  writes that start from the read-back voltages; :meth:`SafeVoltageBank.view` gives one block of
  channels (one mesh layer's phase shifters) as its own HeaterPort.
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
@dataclass(frozen=True)
class RampPolicy:
    """Set-point rate limit: at most max_rate (unit/s), one write every interval_s, at most max_steps writes."""

    max_rate: float = math.inf
    interval_s: float = 0.02
    max_steps: int = 2000

    def __post_init__(self) -> None:
        if not self.max_rate > 0 or not self.interval_s > 0 or self.max_steps < 1:
            raise ConfigError(f"ramp: need max_rate > 0, interval_s > 0 and max_steps >= 1, got {self}")

    @property
    def max_step(self) -> float:
        """Largest change per write (unit)."""
        return self.max_rate * self.interval_s

    def points(self, start: ArrayLike, target: ArrayLike) -> list[NDArray[np.float64]]:
        """Intermediate set-points from start (excluded) to target (included); each step <= max_step per element."""
        return ramp_points(start, target, self.max_step, self.max_steps)


def ramp_points(start: ArrayLike, target: ArrayLike, max_step: float, max_steps: int = 2000) -> list[NDArray[np.float64]]:
    """Linear ramp start -> target in ceil(max|delta| / max_step) equal steps (start excluded, target included)."""
    a, b = np.asarray(start, np.float64), np.asarray(target, np.float64)
    span = float(np.max(np.abs(b - a))) if a.size else 0.0
    if span == 0.0:
        return [b.copy()] if a.size else []
    n = 1 if math.isinf(max_step) else max(1, math.ceil(span / max_step - 1e-9))
    if n > max_steps:
        raise SafetyLimitError(f"ramp: {n} steps of <= {_fmt(max_step)} needed for a change of {_fmt(span)}; "
                               f"expected at most {max_steps} steps (raise the ramp rate limit or move in smaller moves)")
    return [a + (b - a) * (k / n) for k in range(1, n)] + [b.copy()]


# --- temperature ----------------------------------------------------------------------------------------
@runtime_checkable
class TemperatureDevice(Protocol):
    """A heater temperature controller in device units (K, K/min); every call is one instrument transaction."""

    name: str

    def read_temperature(self) -> float: ...

    def write_setpoint(self, kelvin: float) -> None: ...

    def read_output(self) -> bool: ...

    def write_output(self, on: bool) -> None: ...

    def configure_ramp(self, k_per_min: float) -> tuple[float, bool]: ...


class SafeTemperatureControl:
    """TemperaturePort with limits: set-points in `limits` (K), controller ramp <= max_ramp_k_per_min.

    ``set_temperature`` reads the measured temperature first; if the heater output is off it writes that
    reading as the set-point before enabling the output (the controller's ramp starts from a read-back,
    not from a stale set-point), then writes the target and waits, bounded, until the reading settles.
    """

    def __init__(self, device: TemperatureDevice, limits: Range, max_ramp_k_per_min: float,
                 settle_tolerance_k: float = 0.05, settle_timeout_s: float = 120.0, poll_s: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        if not max_ramp_k_per_min > 0:
            raise ConfigError(f"{device.name}: ramp rate limit must be > 0 K/min, got {max_ramp_k_per_min}")
        self.device, self.limits, self.max_ramp = device, limits, float(max_ramp_k_per_min)
        self.tolerance, self.settle_timeout, self.poll = float(settle_tolerance_k), float(settle_timeout_s), float(poll_s)
        self._sleep, self._clock = sleep, clock
        self._ramp_ok = False

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
            self.device.write_output(False)
            raise SafetyLimitError(
                f"{self.name}: controller reports ramp {'on' if enabled else 'off'} at {_fmt(rate)} K/min; expected "
                f"ramp on at 0 < rate <= {_fmt(self.max_ramp)} K/min (heater switched off)")
        self._ramp_ok = True
        return rate

    def read_temperature(self) -> float:
        """Measured temperature (K)."""
        t = float(self.device.read_temperature())
        if not np.isfinite(t):
            raise InstrumentError(f"{self.name}: temperature reading is {t}; expected a finite value in K")
        return t

    def set_temperature(self, kelvin: float) -> None:
        """Ramp to `kelvin` (checked against the limits first) and wait until the reading is within tolerance."""
        target = self.limits.check(kelvin, f"{self.name}: temperature set-point")
        rate = self._ensure_ramp() if not self._ramp_ok else self.max_ramp
        start = self.read_temperature()
        if not self.device.read_output():
            self.device.write_setpoint(self.limits.clamp(start))   # ramp origin = read-back
            self.device.write_output(True)
        self.device.write_setpoint(target)
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

    def invalidate(self) -> None:
        """Forget the verified ramp configuration (after a reconnect the controller is re-checked)."""
        self._ramp_ok = False

    def safe_state(self) -> None:
        """Heater output off (the cell cools passively)."""
        self.device.write_output(False)


# --- laser ----------------------------------------------------------------------------------------------
@runtime_checkable
class LaserDevice(Protocol):
    """A laser diode current source in device units (A); every call is one instrument transaction."""

    name: str

    def read_current_setpoint(self) -> float: ...

    def write_current(self, amps: float) -> None: ...

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
    """Laser with a current limit and a power limit (through the P-I model); ramps from the read-back set-point."""

    def __init__(self, device: LaserDevice, current_limit: Range, model: LinearLaserModel,
                 max_power_w: float = math.inf, ramp: RampPolicy = RampPolicy(),
                 read_power: Callable[[], float] | None = None, power_tolerance: float = 0.1,
                 sleep: Callable[[float], None] = time.sleep):
        self.device, self.model, self.ramp = device, model, ramp
        i_max = current_limit.high
        if math.isfinite(max_power_w):
            i_max = min(i_max, model.current_for(max_power_w))
        self.current_limit = Range(max(0.0, current_limit.low), max(0.0, i_max), "A", f"{device.name}: laser current")
        self.max_power_w = float(max_power_w)
        self._read_power, self.power_tolerance, self._sleep = read_power, float(power_tolerance), sleep

    @property
    def name(self) -> str:
        """Instrument name for messages."""
        return self.device.name

    def _ramp_to(self, target: float) -> None:
        start = float(self.device.read_current_setpoint())
        if not np.isfinite(start):
            raise InstrumentError(f"{self.name}: current set-point read-back is {start}; expected a number in A")
        for k, point in enumerate(self.ramp.points(start, target)):
            if k:
                self._sleep(self.ramp.interval_s)
            self.device.write_current(float(point))

    def set_current(self, amps: float) -> None:
        """Ramp the drive current to `amps` (checked against the current and power limits first)."""
        target = self.current_limit.check(amps, f"{self.name}: laser current (power limit {_fmt(self.max_power_w)} W)")
        self._ramp_to(target)

    def on(self, amps: float) -> float | None:
        """Emit at `amps`: set-point to 0 while dark, output on, ramp up; verify the power meter if there is one."""
        target = self.current_limit.check(amps, f"{self.name}: laser current (power limit {_fmt(self.max_power_w)} W)")
        if not self.device.read_output():
            self.device.write_current(0.0)
            self.device.write_output(True)
        self._ramp_to(target)
        if self._read_power is None:
            return None
        power = float(self._read_power())
        if not np.isfinite(power) or power > self.max_power_w * (1 + self.power_tolerance):
            self.off()
            raise SafetyLimitError(f"{self.name}: power meter reads {_fmt(power)} W at {_fmt(target)} A; expected at "
                                   f"most {_fmt(self.max_power_w)} W (laser switched off)")
        return power

    def off(self) -> None:
        """Output off first (instantly dark), then the set-point to 0 A."""
        self.device.write_output(False)
        self.device.write_current(0.0)

    def safe_state(self) -> None:
        """Laser off."""
        self.off()


# --- voltage banks --------------------------------------------------------------------------------------
@runtime_checkable
class VoltageDevice(Protocol):
    """A multichannel voltage source in volts (channels numbered from 0 here); one transaction per call."""

    name: str
    n_channels: int

    def read_voltages(self) -> NDArray[np.float64]: ...

    def write_voltages(self, volts: Mapping[int, float]) -> None: ...


@dataclass
class _Known:
    volts: NDArray[np.float64] | None = None
    epoch: int = -1


class SafeVoltageBank:
    """HeaterPort with per-channel voltage limits and a ramp-rate limit (V/s) on every channel.

    The first write (and the first after a reconnect, seen through the device's ``epoch``) reads the
    voltages back; a change larger than one ramp step becomes several batched writes from there.
    """

    def __init__(self, device: VoltageDevice, limits: Range | Sequence[Range], ramp: RampPolicy = RampPolicy(),
                 sleep: Callable[[float], None] = time.sleep):
        n = device.n_channels
        lims = [limits] * n if isinstance(limits, Range) else list(limits)
        if len(lims) != n:
            raise ConfigError(f"{device.name}: {len(lims)} voltage limits for {n} channels; expected one per channel")
        self.device, self.ramp, self._sleep = device, ramp, sleep
        self.low = np.array([r.low for r in lims])
        self.high = np.array([r.high for r in lims])
        self.unit_ranges = lims
        self._known = _Known()

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

    def _current(self) -> NDArray[np.float64]:
        epoch = getattr(self.device, "epoch", 0)
        if self._known.volts is None or self._known.epoch != epoch:
            v = np.asarray(self.device.read_voltages(), np.float64)
            if v.shape != (self.n_channels,) or not np.all(np.isfinite(v)):
                raise InstrumentError(f"{self.name}: voltage read-back has shape {v.shape} or non-finite values; "
                                      f"expected {self.n_channels} numbers")
            self._known = _Known(v, epoch)
        return self._known.volts  # type: ignore[return-value]

    def set_channels(self, volts: Mapping[int, float]) -> None:
        """Write a subset {channel: volts}; ramped from the read-back when a step exceeds the ramp limit."""
        if not volts:
            return
        channels = np.array(sorted(int(c) for c in volts), dtype=np.int64)
        if channels[0] < 0 or channels[-1] >= self.n_channels:
            raise ValueError(f"{self.name}: channels {channels.tolist()} out of range 0..{self.n_channels - 1}")
        target = np.array([float(volts[int(c)]) for c in channels])
        self._check(channels, target)
        now = self._current()
        steps = self.ramp.points(now[channels], target)
        for k, point in enumerate(steps):
            if k:
                self._sleep(self.ramp.interval_s)
            self.device.write_voltages({int(c): float(v) for c, v in zip(channels, point)})
            now = now.copy()
            now[channels] = point
            self._known = _Known(now, getattr(self.device, "epoch", 0))

    def set_voltages(self, voltages: ArrayLike) -> None:
        """Write every channel (V) - one batched transaction per ramp step."""
        v = np.asarray(voltages, np.float64).reshape(-1)
        if v.size != self.n_channels:
            raise ValueError(f"{self.name}: expected {self.n_channels} voltages, got {v.size}")
        self.set_channels(dict(enumerate(v.tolist())))

    def get_voltages(self) -> NDArray[np.float64]:
        """Voltage set-points read back from the device (V)."""
        v = np.asarray(self.device.read_voltages(), np.float64)
        self._known = _Known(v.copy(), getattr(self.device, "epoch", 0))
        return v

    def safe_state(self) -> None:
        """Every channel to 0 V at once (switching heaters off is always safe; no ramp)."""
        zero = {c: 0.0 for c in range(self.n_channels)}
        self.device.write_voltages(zero)
        self._known = _Known(np.zeros(self.n_channels), getattr(self.device, "epoch", 0))

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
