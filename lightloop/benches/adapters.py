"""Driver-backed device ports: the HAL's ports (``lightloop.hal.ports``, ``lightloop.hal.safety`` devices,
the chip's HeaterPort) implemented on the QCoDeS drivers of ``lightloop.drivers``.

Why here: adapters need both the HAL (the port contracts) and the drivers, and the layer rules allow
only the bench-building layer (``benches``, like ``bench.py``) to import both. The HAL stays free of
drivers; the drivers stay free of photonics.

Every call that reaches a driver goes through a :class:`Link`, which

* counts transactions - one transaction = one request sent to the instrument in one write plus its
  reply if it has one (a SCPI command or query, an SLM frame, a digitiser block transfer, one
  pipelined Qontrol batch, one DMD frame upload through the SDK);
* times the driver call (instrument time = time inside driver calls, wire round trip included);
* on a transport fault (timeout, dropped or refused connection) closes the driver, waits with
  exponential backoff, reconnects, re-applies the instrument's settings and retries the operation -
  at most ``ReconnectPolicy.attempts`` times per fault and ``ReconnectPolicy.budget`` times per run.
  Garbage replies and device-reported errors are not retried: they raise at once.

Bench-level conventions shared with the wire twin (see ``lightloop.simulators.wire.free_space``):
input/probe sequence panels, weight-frame layouts, digitiser channels as detector arrays.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError, InstrumentError
from lightloop.hal.safety import Range, SafeVoltageBank
from lightloop.simulators.wire.free_space import (
    encode_fields,
    render_dmd_frame,
    render_weight_frame,
    weight_panel_shape,
)

__all__ = [
    "TransactionStats",
    "ReconnectPolicy",
    "Link",
    "is_transport_fault",
    "BenchClock",
    "SLMFieldSource",
    "SLMWeightBlocks",
    "DMDWeightBlocks",
    "GainControl",
    "DigitizerArrays",
    "DigitizerDetector",
    "TemperatureControllerDevice",
    "LaserControllerDevice",
    "PowerMeterDevice",
    "ScpiSourceDevice",
    "QontrolHeaterDevice",
]

T = TypeVar("T")


# --- accounting -----------------------------------------------------------------------------------------
@dataclass
class TransactionStats:
    """Transactions and instrument time, in total and per instrument."""

    transactions: int = 0
    instrument_seconds: float = 0.0
    reconnects: int = 0
    per_instrument: dict[str, int] = field(default_factory=dict)
    seconds_per_instrument: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        """Add n transactions of instrument `name`."""
        self.transactions += n
        self.per_instrument[name] = self.per_instrument.get(name, 0) + n

    def add_time(self, name: str, seconds: float) -> None:
        """Add time spent inside driver calls of instrument `name`."""
        self.instrument_seconds += seconds
        self.seconds_per_instrument[name] = self.seconds_per_instrument.get(name, 0.0) + seconds


@dataclass(frozen=True)
class ReconnectPolicy:
    """Reconnect at most `attempts` times per fault (backoff_s * factor**k between tries), `budget` per run."""

    attempts: int = 3
    backoff_s: float = 0.1
    factor: float = 2.0
    budget: int = 20


_TRANSPORT_TEXT = ("(timeout)", "connection failed", "link closed", "cannot open", "cannot connect",
                   "not connected", "no reply")


def is_transport_fault(exc: BaseException) -> bool:
    """True for timeouts and dropped/refused connections (worth a reconnect); False for garbage and device errors."""
    text = str(exc)
    if any(t in text for t in _TRANSPORT_TEXT):
        return True
    e: BaseException | None = exc.__cause__
    while e is not None:
        if isinstance(e, (OSError, EOFError)) or type(e).__name__ in ("VisaIOError", "SerialException",
                                                                      "SerialTimeoutException"):
            return True
        e = e.__cause__
    return False


class Link:
    """One instrument connection: (re)connects through `connect`, counts and times every call, retries transport faults."""

    def __init__(self, name: str, family: str, connect: Callable[[], Any], stats: TransactionStats,
                 policy: ReconnectPolicy = ReconnectPolicy(), connect_transactions: int = 0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name, self.family = name, family
        self._connect, self.stats, self.policy = connect, stats, policy
        self.connect_transactions = int(connect_transactions)
        self._sleep = sleep
        self.driver: Any = None
        self.epoch = 0            # +1 on every (re)connect: caches keyed on it are re-read
        self.reconnects = 0
        self._setups: list[Callable[[Any], None]] = []

    @property
    def label(self) -> str:
        """'<family> <name>' for messages."""
        return f"{self.family} {self.name!r}"

    @property
    def identity(self) -> str:
        """'vendor,model,serial' as the instrument reported it at connect (no wire traffic)."""
        drv = self.driver
        if drv is None:
            return f"{self.family} {self.name} (disconnected)"
        info = getattr(drv, "idn_info", None)
        if info is None and not hasattr(drv, "visa_handle"):
            info = drv.get_idn()       # SLM, DMD and Qontrol answer from what they read when connecting
        info = info or {}
        parts = [str(info.get(k)) for k in ("vendor", "model", "serial") if info.get(k)]
        return ",".join(parts) or f"{self.family} {self.name}"

    def open(self) -> "Link":
        """First connection (errors propagate unchanged: the caller adds the config context)."""
        t0 = time.perf_counter()
        try:
            self.driver = self._connect()
            self.stats.count(self.name, self.connect_transactions)
            self.epoch += 1
        finally:
            self.stats.add_time(self.name, time.perf_counter() - t0)
        return self

    def on_connect(self, fn: Callable[[Any], None]) -> None:
        """Register a setup step re-applied (in order) after every reconnect."""
        self._setups.append(fn)

    def tick(self, n: int = 1) -> None:
        """Count n transactions of this instrument."""
        self.stats.count(self.name, n)

    def _drop(self) -> None:
        drv, self.driver = self.driver, None
        if drv is not None:
            try:
                drv.close()
            except Exception:
                pass

    def _reopen(self) -> None:
        self.driver = self._connect()
        self.stats.count(self.name, self.connect_transactions)
        self.epoch += 1
        self.reconnects += 1
        self.stats.reconnects += 1
        for fn in self._setups:
            fn(self.driver)

    def run(self, label: str, fn: Callable[[Any], T]) -> T:
        """Call fn(driver); transport faults reconnect (bounded, with backoff) and retry fn."""
        failures = 0
        t0 = time.perf_counter()
        try:
            while True:
                try:
                    if self.driver is None:
                        self._reopen()
                    return fn(self.driver)
                except InstrumentError as exc:
                    if not is_transport_fault(exc):
                        raise
                    self._drop()
                    failures += 1
                    budget_left = self.policy.budget - self.stats.reconnects
                    if failures > self.policy.attempts or budget_left <= 0:
                        why = (f"{failures - 1} reconnect attempt(s) failed" if failures > self.policy.attempts
                               else f"the run's reconnect budget of {self.policy.budget} is used up")
                        raise InstrumentError(f"{exc} [{self.label}: {label}: {why}; run stopped]") from exc
                    self._sleep(self.policy.backoff_s * self.policy.factor ** (failures - 1))
        finally:
            self.stats.add_time(self.name, time.perf_counter() - t0)

    def close(self) -> None:
        """Close the driver (best effort)."""
        self._drop()


@dataclass
class BenchClock:
    """Shared state of one bench: `gen` changes whenever light-path settings change; `batch` = patterns shown."""

    gen: int = 0
    batch: int = 0

    def changed(self) -> None:
        """Something that affects the light changed (detectors must acquire again)."""
        self.gen += 1

    def displayed(self, batch: int) -> None:
        """A new pattern sequence of `batch` patterns is on the sources."""
        self.batch = int(batch)
        self.gen += 1


# --- sources and weights: SLM / DMD -----------------------------------------------------------------------
class SLMFieldSource:
    """FieldSourcePort on an SLM sequence panel (row r = pattern r; signed codes around 2**(bits-1)).

    One transaction per display. A batch larger than the panel's rows is an error naming the instrument.
    """

    def __init__(self, link: Link, clock: BenchClock, n: int, full_scale_field: float, role: str = "input",
                 min_rows: int = 16) -> None:
        drv = link.driver
        h, w = drv.shape
        bits = int(drv.bit_depth())
        if w != n:
            raise ConfigError(f"{role} SLM {link.name!r}: panel is {h}x{w}; expected {n} columns (one pixel per field)")
        if bits < 2 or h < min_rows:
            raise ConfigError(f"{role} SLM {link.name!r}: panel {h}x{w} at {bits} bit; expected >= {min_rows} rows "
                              "(sequence slots) and >= 2 bit signed codes")
        self.link, self.clock, self.n, self.role = link, clock, n, role
        self.full_scale, self.bits, self.rows = float(full_scale_field), bits, h
        self.zero = 2 ** (bits - 1)
        self.frame = np.full((h, w), self.zero, dtype=np.uint16 if bits > 8 else np.uint8)
        self._used = 0
        link.on_connect(lambda d: self._send(d))

    @property
    def identity(self) -> str:
        """Identity of the SLM."""
        return self.link.identity

    def _send(self, drv: Any) -> None:
        drv.write_frame(self.frame)
        self.link.tick()

    def write_fields(self, fields: NDArray[np.float32]) -> None:
        """Show a batch (batch, n) of signed fields (saturation units) as one frame sequence."""
        f = np.asarray(fields)
        if f.ndim != 2 or f.shape[1] != self.n:
            raise ValueError(f"{self.role} SLM {self.link.name!r}: expected fields of shape (batch, {self.n}), got {f.shape}")
        b = f.shape[0]
        if b > self.rows:
            raise ConfigError(f"{self.role} SLM {self.link.name!r}: a batch of {b} patterns exceeds the panel's "
                              f"{self.rows}-frame sequence; expected batch <= {self.rows} (lower the batch size)")
        if not np.isfinite(f).all():
            raise ValueError(f"{self.role} SLM {self.link.name!r}: fields contain NaN or inf")
        self.frame[:b] = encode_fields(f, self.full_scale, self.bits)
        if self._used > b:
            self.frame[b:self._used] = self.zero
        self._used = b
        self.link.run("write_frame", self._send)
        self.clock.displayed(b)

    def dark(self) -> None:
        """Every pattern at zero field."""
        self.frame[:] = self.zero
        self._used = 0
        self.link.run("write_frame", self._send)
        self.clock.changed()


@dataclass
class GainControl:
    """Amplifier gain through a voltage-controlled amplifier: volts = gain * volts_per_gain on one bank channel."""

    bank: SafeVoltageBank
    channel: int              # 0-based index in the bank
    volts_per_gain: float

    def set(self, gain: float) -> None:
        """Write the control voltage (limits and ramps enforced by the bank)."""
        self.bank.set_channels({self.channel: float(gain) * self.volts_per_gain})


class _WeightGain:
    def __init__(self, name: str, gain: GainControl | None, fixed_gain: float | None, clock: BenchClock) -> None:
        self._name, self._gain, self._fixed, self._clock = name, gain, fixed_gain, clock

    @property
    def identity(self) -> str:
        """Identity of the weight device."""
        return self.link.identity  # type: ignore[attr-defined]

    def set_amplifier_gain(self, gain: float) -> None:
        """Amplifier gain after the 4f sum (control voltage, or check against the bench's fixed gain)."""
        if self._gain is not None:
            self._gain.set(gain)
            self._clock.changed()
        elif self._fixed is not None and not np.isclose(gain, self._fixed, rtol=1e-9, atol=0):
            raise ConfigError(f"weights on {self._name!r}: the block needs amplifier gain {gain:g} (max_weight / "
                              f"efficiency) but roles.weights.fixed_gain is {self._fixed:g}; expected equal values")


class SLMWeightBlocks(_WeightGain):
    """SLMBlockPort on a phase SLM: one frame per write (skipped when the frame did not change)."""

    def __init__(self, link: Link, clock: BenchClock, shape: tuple[int, int], layout: str = "pairs",
                 block_pixels: int = 1, gain: GainControl | None = None, fixed_gain: float | None = None) -> None:
        super().__init__(link.name, gain, fixed_gain, clock)
        drv = link.driver
        panel = tuple(drv.shape)
        need = weight_panel_shape(shape, layout, block_pixels)
        if panel[0] < need[0] or panel[1] < need[1] or int(drv.bit_depth()) < 8:
            raise ConfigError(f"weight SLM {link.name!r}: panel {panel[0]}x{panel[1]} at {drv.bit_depth()} bit; expected "
                              f">= {need[0]}x{need[1]} at 8 bit for {shape[0]}x{shape[1]} weights in layout {layout!r}")
        self.link, self.clock, self.shape = link, clock, shape
        self.layout, self.block_pixels, self.panel = layout, block_pixels, (int(panel[0]), int(panel[1]))
        self._last: NDArray[np.uint8] | None = None
        link.on_connect(self._resend)

    def _resend(self, drv: Any) -> None:
        if self._last is not None:
            drv.write_frame(self._last)
            self.link.tick()

    def write_blocks(self, gray_plus: NDArray[np.uint8], gray_minus: NDArray[np.uint8]) -> None:
        """Display the checkerboard gray levels (out, in) of every weight."""
        if gray_plus.shape != self.shape or gray_minus.shape != self.shape:
            raise ValueError(f"weight SLM {self.link.name!r}: expected gray levels of shape {self.shape}")
        frame = render_weight_frame(gray_plus, gray_minus, self.layout, self.block_pixels, self.panel)
        if self._last is not None and np.array_equal(frame, self._last):
            return

        def op(drv: Any) -> None:
            drv.write_frame(frame)
            self.link.tick()

        self.link.run("write_frame", op)
        self._last = frame
        self.clock.changed()


class DMDWeightBlocks(_WeightGain):
    """DMDBlockPort on a DMD (vendor SDK): differential k x k block pairs, one frame upload per write."""

    def __init__(self, link: Link, clock: BenchClock, shape: tuple[int, int], block_pixels: int,
                 gain: GainControl | None = None, fixed_gain: float | None = None) -> None:
        super().__init__(link.name, gain, fixed_gain, clock)
        panel = tuple(link.driver.shape)
        need = (shape[0] * block_pixels, 2 * shape[1] * block_pixels)
        if panel[0] < need[0] or panel[1] < need[1]:
            raise ConfigError(f"DMD {link.name!r}: {panel[0]}x{panel[1]} mirrors; expected >= {need[0]}x{need[1]} for "
                              f"{shape[0]}x{shape[1]} weights as {block_pixels}x{block_pixels} block pairs")
        self.link, self.clock, self.shape, self.block_pixels = link, clock, shape, int(block_pixels)
        self.panel = (int(panel[0]), int(panel[1]))
        self._last: NDArray[np.bool_] | None = None
        link.on_connect(self._resend)

    def _resend(self, drv: Any) -> None:
        if self._last is not None:
            drv.write_frame(self._last)
            self.link.tick()

    def write_blocks(self, on_plus: NDArray[np.uint16], on_minus: NDArray[np.uint16]) -> None:
        """Display on-mirror counts (0..k^2) of the + and - blocks (out, in)."""
        k2 = self.block_pixels**2
        if on_plus.shape != self.shape or on_minus.shape != self.shape:
            raise ValueError(f"DMD {self.link.name!r}: expected mirror counts of shape {self.shape}")
        if int(np.max(on_plus, initial=0)) > k2 or int(np.max(on_minus, initial=0)) > k2:
            raise ValueError(f"DMD {self.link.name!r}: mirror counts exceed the {k2} mirrors of a block")
        frame = render_dmd_frame(on_plus, on_minus, self.block_pixels, self.panel)
        if self._last is not None and np.array_equal(frame, self._last):
            return

        def op(drv: Any) -> None:
            drv.write_frame(frame)
            self.link.tick()

        self.link.run("write_frame", op)
        self._last = frame
        self.clock.changed()


# --- detectors ------------------------------------------------------------------------------------------
class DigitizerArrays:
    """One digitiser serving several detector arrays (one per channel), with one acquisition per batch and arm.

    Arms: 'forward' (pre/post taps, after the input display) and 'backward' (error taps, after the probe).
    The first read of an arm after the bench changed sends ``ACQ:POIN`` (only when the batch size
    changed) and ``DIG`` + ``*OPC?`` for every channel of that arm, in registration order; each read
    then transfers its own channel (``WAV:SOUR``, ``WAV:PRE?``, ``WAV:DATA?``).
    """

    def __init__(self, link: Link, clock: BenchClock, min_points: int = 16) -> None:
        self.link, self.clock, self.min_points = link, clock, int(min_points)
        self.arms: dict[str, list[int]] = {"forward": [], "backward": []}
        self._armed: dict[str, tuple[int, int] | None] = {"forward": None, "backward": None}
        self._points: int | None = None
        link.on_connect(lambda d: self.invalidate())

    def invalidate(self) -> None:
        """Forget acquisitions and record length (after a reconnect)."""
        self._armed = {"forward": None, "backward": None}
        self._points = None

    def port(self, channel: int, n_detectors: int, arm: str) -> "DigitizerDetector":
        """DetectorPort for one channel (an array of n_detectors) on arm 'forward' or 'backward'."""
        if arm not in self.arms:
            raise ValueError(f"digitizer {self.link.name!r}: arm must be 'forward' or 'backward', got {arm!r}")
        if channel in self.arms["forward"] + self.arms["backward"]:
            raise ConfigError(f"digitizer {self.link.name!r}: channel {channel} serves two detector arrays; "
                              "expected one array per channel")
        self.arms[arm].append(int(channel))
        return DigitizerDetector(self, int(channel), int(n_detectors), arm)

    def acquire(self, channel: int, n: int, arm: str) -> NDArray[np.float32]:
        """Volts (batch, n) of one channel from the current acquisition of its arm."""
        link = self.link

        def op(drv: Any) -> NDArray[np.float32]:
            batch = self.clock.batch
            if batch < 1:
                raise InstrumentError(f"digitizer {link.name!r}: acquisition requested before any pattern was shown")
            points = max(self.min_points, batch)
            key = (self.clock.gen, points)
            if self._armed[arm] != key:
                if self._points != points:
                    drv.record_length(points)
                    link.tick()
                    self._points = points
                drv.digitize(self.arms[arm])
                link.tick(2)
                self._armed[arm] = key
            volts = drv.fetch(channel)
            link.tick(3)
            if volts.size != points * n:
                raise InstrumentError(
                    f"digitizer {link.name!r} CHAN{channel}: {volts.size} samples; expected {points} patterns x "
                    f"{n} detectors = {points * n}")
            return volts.reshape(points, n)[:batch].astype(np.float32)

        return link.run(f"CHAN{channel}", op)


@dataclass
class DigitizerDetector:
    """DetectorPort: one digitiser channel carrying an array of n_channels detectors."""

    group: DigitizerArrays
    channel: int
    n_channels: int
    arm: str

    @property
    def identity(self) -> str:
        """Identity of the digitiser and channel."""
        return f"{self.group.link.identity}/CHAN{self.channel}"

    def acquire(self) -> NDArray[np.float32]:
        """Detector volts (batch, channels)."""
        return self.group.acquire(self.channel, self.n_channels, self.arm)


# --- temperature, laser, power meter ----------------------------------------------------------------------
class _OutputDevice:
    """Shared plumbing of a controller with one switched output: counted calls through its link."""

    link: Link
    clock: BenchClock | None

    def _call(self, label: str, fn: Callable[[Any], T], n: int = 1) -> T:
        def op(drv: Any) -> T:
            r = fn(drv)
            self.link.tick(n)
            return r

        return self.link.run(label, op)

    def read_output(self) -> bool:
        """``OUTP?``."""
        return bool(self._call("OUTP?", lambda d: d.output()))

    def write_output(self, on: bool) -> None:
        """``OUTP ON|OFF``."""
        self._call("OUTP", lambda d: d.output(bool(on)))
        if self.clock is not None:
            self.clock.changed()


class TemperatureControllerDevice(_OutputDevice):
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

    def write_setpoint(self, kelvin: float) -> None:
        """``SOUR:TEMP`` (K)."""
        self._call("SOUR:TEMP", lambda d: d.setpoint(kelvin))
        if self.clock is not None:
            self.clock.changed()

    def configure_ramp(self, k_per_min: float) -> tuple[float, bool]:
        """Program and read back the controller's set-point ramp (rate K/min, enabled)."""
        def op(drv: Any) -> tuple[float, bool]:
            drv.ramp_rate(k_per_min)
            drv.ramp_enabled(True)
            r = (float(drv.ramp_rate()), bool(drv.ramp_enabled()))
            self.link.tick(4)
            return r

        return self.link.run("ramp", op)


class LaserControllerDevice(_OutputDevice):
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

    def write_current(self, amps: float) -> None:
        """``SOUR:CURR`` (A)."""
        self._call("SOUR:CURR", lambda d: d.current(amps))
        if self.clock is not None:
            self.clock.changed()


class PowerMeterDevice:
    """Optical power read-back on an OpticalPowerMeter driver."""

    def __init__(self, link: Link) -> None:
        self.link, self.name = link, link.name

    def read_power(self) -> float:
        """``MEAS:POW?`` (W)."""
        def op(drv: Any) -> float:
            p = float(drv.power())
            self.link.tick()
            return p

        return self.link.run("MEAS:POW?", op)


# --- voltage sources (amplifier control, heaters) -------------------------------------------------------
class ScpiSourceDevice:
    """VoltageDevice (hal.safety) on a ScpiSource: bank channel k = driver channel k+1; one batched write per call."""

    def __init__(self, link: Link) -> None:
        self.link, self.name = link, link.name
        self.n_channels = int(link.driver.n_channels)

    @property
    def epoch(self) -> int:
        """Connection epoch (a reconnect invalidates read-back caches)."""
        return self.link.epoch

    def read_voltages(self) -> NDArray[np.float64]:
        """``:SOUR:VOLT? (@1..n)`` (V)."""
        def op(drv: Any) -> NDArray[np.float64]:
            v = np.asarray(drv.get_voltages(), np.float64)
            self.link.tick()
            return v

        return self.link.run(":SOUR:VOLT?", op)

    def write_voltages(self, volts: Mapping[int, float]) -> None:
        """``:SOUR:VOLT v..,(@c..);*OPC?`` for the given channels (0-based)."""
        chans = sorted(volts)

        def op(drv: Any) -> None:
            drv.set_voltages([volts[c] for c in chans], [c + 1 for c in chans])
            self.link.tick()

        self.link.run(":SOUR:VOLT", op)

    def enable(self, channels: Sequence[int], current_limit: float | None = None) -> None:
        """Close the relays of channels (0-based) that are open, after zeroing their set-points (no jump);
        lower each channel's current compliance to `current_limit` (A) first (never raise it)."""
        def op(drv: Any) -> None:
            states = []
            for c in channels:
                if current_limit is not None:
                    now = float(drv.channels[c].current_limit())
                    self.link.tick()
                    if now > current_limit:
                        drv.channels[c].current_limit(current_limit)
                        self.link.tick()
                states.append(bool(drv.channels[c].output()))
            self.link.tick(len(channels))
            closed = [c for c, on in zip(channels, states) if not on]
            if closed:
                drv.set_voltages([0.0] * len(closed), [c + 1 for c in closed])
                drv.output_on([c + 1 for c in closed])
                self.link.tick(2)

        self.link.run(":OUTP ON", op)

    def disable(self) -> None:
        """Every set-point to 0 V, then every relay open (safe state)."""
        def op(drv: Any) -> None:
            drv.zero_all()
            drv.output_off()
            self.link.tick(2)

        self.link.run(":OUTP OFF", op)


class QontrolHeaterDevice:
    """VoltageDevice (hal.safety) and HeaterPort on a QontrolHeater: one pipelined transaction per call."""

    def __init__(self, link: Link, limit: Range | None = None) -> None:
        self.link, self.name = link, link.name
        self.n_channels = int(link.driver.n_channels)
        if limit is not None:
            self._narrow(link.driver, limit)
            link.on_connect(lambda d: self._narrow(d, limit))

    def _narrow(self, drv: Any, limit: Range) -> None:
        """Lower each channel's VMAX above our limit (never raise it)."""
        for ch in drv.channels:
            vmax = ch.vmax.cache.get(get_if_invalid=False)
            if vmax is None or vmax > limit.high:
                ch.vmax(limit.high)
                self.link.tick()

    @property
    def epoch(self) -> int:
        """Connection epoch (a reconnect invalidates read-back caches)."""
        return self.link.epoch

    def read_voltages(self) -> NDArray[np.float64]:
        """``V0? ... V{n-1}?`` in one pipelined transaction (V)."""
        def op(drv: Any) -> NDArray[np.float64]:
            v = np.asarray(drv.get_voltages(), np.float64)
            self.link.tick()
            return v

        return self.link.run("V?", op)

    def write_voltages(self, volts: Mapping[int, float]) -> None:
        """``V{c}=...`` lines for the given channels in one pipelined transaction."""
        def op(drv: Any) -> None:
            drv.set_voltages({int(c): float(v) for c, v in volts.items()})
            self.link.tick()

        self.link.run("V=", op)

    # HeaterPort (raw; the HAL wraps this device in a SafeVoltageBank)
    def set_voltages(self, voltages: Sequence[float]) -> None:
        """All channels in one transaction."""
        self.write_voltages(dict(enumerate(float(v) for v in voltages)))

    def get_voltages(self) -> NDArray[np.float64]:
        """All channel set-points (V)."""
        return self.read_voltages()
