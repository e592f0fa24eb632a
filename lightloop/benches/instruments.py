"""Instruments in a lab config (QCoDeS-station style), their HAL roles, and building a bench from them.

Three optional top-level sections of a lab config (validated here, called from ``lightloop.config``):

``instruments``  name -> one instrument:
    ``driver``      a short name from ``lightloop.drivers.DRIVER_CLASSES`` (``slm``, ``digitizer``,
                    ``temperature_controller`` ...) or ``twin`` (served by the in-process twin)
    ``address``     VISA resource (``TCPIP::10.0.0.5::5025::SOCKET``, ``GPIB::6::INSTR``), ``host:port``
                    (slm), a pyserial URL (qontrol_heater) or the SDK library path (dmd)
    ``visalib``     VISA backend, e.g. ``"@py"`` (pyvisa-py); default: the system VISA
    ``timeout``     reply timeout (``2 s``, ``500 ms``)
    ``init``        keyword arguments of the driver class (its hardware ranges and geometry)
    ``parameters``  QCoDeS parameter values applied after every (re)connect (``ch1.range: 20``)
    ``limits``      safety limits; they may only NARROW the driver's own ranges (see LIMITS)
    ``ramp_interval`` time between the steps of a software ramp (default 20 ms)
    ``reconnect``   ``{attempts: 3, backoff: 100 ms, budget: 20}``
``roles``        which instrument (channel) serves each HAL role; the schema depends on processor.kind
                 (``free_space``: :class:`FreeSpaceRoles`; ``integrated_chip``: :class:`ChipRoles`,
                 validated only: that builder does not drive instruments yet)
``emulator``     the wire-level twin: ``autostart: true`` starts it in this process for the run,
                 serving every non-twin instrument on its loopback address (port 0 = any free port)

Quantities are a number in the base unit (K, K/min, V, V/s, A, A/s, W, W/A, s) or a string with a
unit (``150 degC``, ``5 K/min``, ``20 mW``, ``120 mA``); a unit of the wrong kind is an error. Every
error is one line: ``<file>: <field>: <expectation>``.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from numpy.typing import NDArray
from pydantic import BeforeValidator, Field, PrivateAttr, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from lightloop.config import StrictModel, validation_message
from lightloop.errors import ConfigError, InstrumentError
from lightloop.hal.calibration_maps import HomodyneMap, VaporCellMap
from lightloop.hal.free_space import FreeSpaceProcessor
from lightloop.hal.safety import (
    LinearLaserModel,
    RampPolicy,
    Range,
    SafeLaser,
    SafeTemperatureControl,
    SafeVoltageBank,
)

__all__ = [
    "UNITS",
    "parse_quantity",
    "InstrumentSpec",
    "FreeSpaceRoles",
    "ChipRoles",
    "EmulatorSettings",
    "LIMITS",
    "validate_station",
    "Station",
    "StepMeter",
    "InstrumentedFreeSpaceProcessor",
    "build_free_space",
]

log = logging.getLogger("lightloop.instruments")

# --- units ---------------------------------------------------------------------------------------------
#: dimension -> (base unit, {unit: (scale, offset)}): base = value * scale + offset
UNITS: dict[str, tuple[str, dict[str, tuple[float, float]]]] = {
    "temperature": ("K", {"K": (1.0, 0.0), "mK": (1e-3, 0.0), "degC": (1.0, 273.15), "°C": (1.0, 273.15)}),
    "temperature_delta": ("K", {"K": (1.0, 0.0), "mK": (1e-3, 0.0), "degC": (1.0, 0.0)}),
    "temperature_rate": ("K/min", {"K/min": (1.0, 0.0), "K/s": (60.0, 0.0), "degC/min": (1.0, 0.0),
                                   "mK/s": (0.06, 0.0), "K/h": (1 / 60, 0.0)}),
    "voltage": ("V", {"V": (1.0, 0.0), "mV": (1e-3, 0.0), "uV": (1e-6, 0.0), "kV": (1e3, 0.0)}),
    "voltage_rate": ("V/s", {"V/s": (1.0, 0.0), "mV/s": (1e-3, 0.0), "V/ms": (1e3, 0.0), "V/min": (1 / 60, 0.0)}),
    "current": ("A", {"A": (1.0, 0.0), "mA": (1e-3, 0.0), "uA": (1e-6, 0.0)}),
    "current_rate": ("A/s", {"A/s": (1.0, 0.0), "mA/s": (1e-3, 0.0), "mA/ms": (1.0, 0.0)}),
    "power": ("W", {"W": (1.0, 0.0), "mW": (1e-3, 0.0), "uW": (1e-6, 0.0), "nW": (1e-9, 0.0)}),
    "slope_efficiency": ("W/A", {"W/A": (1.0, 0.0), "mW/mA": (1.0, 0.0)}),
    "time": ("s", {"s": (1.0, 0.0), "ms": (1e-3, 0.0), "min": (60.0, 0.0), "h": (3600.0, 0.0)}),
}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S.*?)?\s*$")


def _expectation(dimension: str) -> str:
    base, units = UNITS[dimension]
    return (f"expected a {dimension.replace('_', ' ')}: a number in {base} or a string with one of the units "
            f"{', '.join(units)}")


def parse_quantity(value: Any, dimension: str) -> float:
    """Number (base unit) or 'number unit' string -> float in the base unit; ValueError on a wrong unit."""
    if isinstance(value, bool):
        raise ValueError(_expectation(dimension))
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        m = _NUMBER.match(value)
        if not m:
            raise ValueError(_expectation(dimension))
        unit = (m.group(2) or UNITS[dimension][0]).replace(" ", "")
        conv = UNITS[dimension][1].get(unit)
        if conv is None:
            raise ValueError(_expectation(dimension) + f" (unit {unit!r} is not one of them)")
        v = float(m.group(1)) * conv[0] + conv[1]
    else:
        raise ValueError(_expectation(dimension))
    if not math.isfinite(v):
        raise ValueError(_expectation(dimension))
    return v


def _quantity(dimension: str) -> Any:
    def convert(value: Any) -> float:
        try:
            return parse_quantity(value, dimension)
        except ValueError as exc:
            raise PydanticCustomError("unit", str(exc)) from None

    return Annotated[float, BeforeValidator(convert)]


Temperature = _quantity("temperature")
TemperatureDelta = _quantity("temperature_delta")
Voltage = _quantity("voltage")
Current = _quantity("current")
Power = _quantity("power")
SlopeEfficiency = _quantity("slope_efficiency")
Seconds = _quantity("time")

# --- limits each driver accepts ------------------------------------------------------------------------
#: driver -> limit key -> (dimension, 'range' | 'max', hardware range from the driver's init (or None))
LIMITS: dict[str, dict[str, tuple[str, str, Callable[[dict[str, Any]], tuple[float, float]] | None]]] = {
    "temperature_controller": {
        "temperature": ("temperature", "range", lambda i: (float(i["temperature_range"][0]), float(i["temperature_range"][1]))),
        "ramp_rate": ("temperature_rate", "max", lambda i: (0.0, float(i["max_ramp_rate"]))),
    },
    "laser_controller": {
        "current": ("current", "max", lambda i: (0.0, float(i["i_max"]))),
        "power": ("power", "max", None),
        "current_ramp": ("current_rate", "max", None),
    },
    "power_meter": {"power": ("power", "max", lambda i: (0.0, float(i["max_power"])))},
    "scpi_source": {
        "voltage": ("voltage", "range", lambda i: (-float(i["v_max"]), float(i["v_max"]))),
        "current": ("current", "max", lambda i: (0.0, float(i["i_max"]))),
        "voltage_ramp": ("voltage_rate", "max", None),
    },
    "qontrol_heater": {
        "voltage": ("voltage", "range", lambda i: (0.0, float(i["v_hw_max"]))),
        "current": ("current", "max", lambda i: (0.0, float(i["i_hw_max"]))),
        "voltage_ramp": ("voltage_rate", "max", None),
    },
    "digitizer": {},
    "slm": {},
    "dmd": {},
}
#: limits whose range must contain the safe value 0 (outputs go to zero in the safe state)
_ZERO_SAFE = {"voltage", "current"}
_VISA_DRIVERS = {"scpi_source", "laser_controller", "power_meter", "temperature_controller", "digitizer"}
_RESERVED_INIT = {"name", "address", "host", "port", "url", "library_path", "loader", "visalib", "timeout",
                  "pyvisa_sim_file", "resource", "terminator", "device_clear"}
#: transactions a driver sends while connecting (counted on every (re)connect)
CONNECT_TRANSACTIONS = {"temperature_controller": 3, "laser_controller": 3, "digitizer": 3, "scpi_source": 1,
                        "power_meter": 2, "slm": 1, "qontrol_heater": 3, "dmd": 0}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _driver_defaults(driver: str) -> dict[str, Any]:
    from lightloop.drivers import driver_class

    sig = inspect.signature(driver_class(driver).__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


# --- schema ----------------------------------------------------------------------------------------------
class ReconnectSettings(StrictModel):
    """Bounded reconnection: attempts per fault, first backoff (doubling), total reconnects per run."""

    attempts: int = Field(3, ge=0, le=20)
    backoff: Seconds = 0.1
    budget: int = Field(20, ge=0, le=1000)


class InstrumentSpec(StrictModel):
    """One instrument of the station."""

    driver: str
    address: str | None = None
    visalib: str | None = None
    timeout: Seconds | None = None
    init: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)
    ramp_interval: Seconds = 0.02
    reconnect: ReconnectSettings = ReconnectSettings()
    _limits: dict[str, Range] = PrivateAttr(default_factory=dict)
    _hardware: dict[str, Any] = PrivateAttr(default_factory=dict)

    def limit(self, key: str) -> Range | None:
        """Effective limit (hardware range narrowed by the config) of one limit key, or None."""
        return self._limits.get(key)

    def hardware(self, key: str, default: Any = None) -> Any:
        """Driver init value (config `init` over the driver's default)."""
        return self._hardware.get(key, default)


class LaserRole(StrictModel):
    """The light source: a laser controller, its operating current and P-I model; optional power meter."""

    laser: str
    operating_current: Current
    threshold_current: Current = 0.0
    slope_efficiency: SlopeEfficiency = 1.0
    power_meter: str | None = None

    @field_validator("operating_current", "slope_efficiency")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise PydanticCustomError("positive", "expected a value > 0")
        return v


class DisplayRole(StrictModel):
    """An SLM sequence panel showing signed fields; full_scale_field = field at the extreme code."""

    instrument: str
    full_scale_field: float = Field(gt=0)


class GainRef(StrictModel):
    """Amplifier gain via a voltage-controlled amplifier on a source channel (driver numbering)."""

    instrument: str
    channel: int = Field(ge=0)
    volts_per_gain: Voltage

    @field_validator("volts_per_gain")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise PydanticCustomError("positive", "expected a voltage > 0 per unit gain")
        return v


class WeightRole(StrictModel):
    """One weight layer: an SLM (layout pairs | checkerboard) or DMD (block pairs), and its amplifier gain."""

    instrument: str
    layout: Literal["pairs", "checkerboard"] = "pairs"
    block_pixels: int = Field(1, ge=1, le=64)
    gain: GainRef | None = None
    fixed_gain: float | None = Field(None, gt=0)


class CellRole(StrictModel):
    """One vapor cell's temperature controller and its settling criterion."""

    instrument: str
    settle_tolerance: TemperatureDelta = 0.05
    settle_timeout: Seconds = 120.0
    poll_interval: Seconds = 0.5


class ChannelRef(StrictModel):
    """An instrument channel (driver numbering)."""

    instrument: str
    channel: int = Field(ge=0)


class DetectorRoles(StrictModel):
    """Homodyne arrays: pre taps (one per weight layer), post and error taps (one per vapor cell)."""

    pre: list[ChannelRef] = Field(min_length=1)
    post: list[ChannelRef] = Field(default_factory=list)
    error: list[ChannelRef] = Field(default_factory=list)


class FreeSpaceRoles(StrictModel):
    """HAL roles of a free_space bench."""

    source: LaserRole
    input: DisplayRole
    probe: DisplayRole
    weights: list[WeightRole] = Field(min_length=1)
    vapor_cells: list[CellRole] = Field(default_factory=list)
    detectors: DetectorRoles


class HeaterBankRole(StrictModel):
    """A contiguous block of heater channels (driver numbering) serving one layer's phase shifters or biases."""

    instrument: str
    first_channel: int = Field(0, ge=0)
    count: int = Field(ge=1)


class ChipDetectorRoles(StrictModel):
    """Digitiser channels (each an array) of the chip's detectors."""

    outputs: ChannelRef
    monitors: list[ChannelRef] = Field(default_factory=list, description="tap monitors, one per mesh layer")
    receivers: list[ChannelRef] = Field(default_factory=list, description="coherent receivers, one per mesh layer")


class ChipRoles(StrictModel):
    """HAL roles of an integrated_chip bench: laser, heater banks per mesh layer, activation biases, detectors."""

    source: LaserRole
    phase_shifters: list[HeaterBankRole] = Field(min_length=1)
    activation_bias: list[HeaterBankRole] = Field(default_factory=list)
    detectors: ChipDetectorRoles


class EmulatorSettings(StrictModel):
    """The wire-level twin for this config."""

    autostart: bool = False
    host: str = "127.0.0.1"
    layer_sizes: list[int] | None = None
    time_scale: float = Field(1000.0, gt=0, description="twin seconds per wall second (temperature ramps)")
    sequence_length: int = Field(1024, ge=16, le=1 << 16, description="patterns per SLM sequence frame")

    @field_validator("host")
    @classmethod
    def _loopback(cls, v: str) -> str:
        if v not in ("127.0.0.1", "localhost"):
            raise PydanticCustomError("loopback", "expected 127.0.0.1 (the wire twin binds the loopback interface only)")
        return "127.0.0.1"

    @field_validator("layer_sizes")
    @classmethod
    def _sizes(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) < 2 or any(n < 1 for n in v)):
            raise PydanticCustomError("sizes", "expected at least two positive layer sizes (input first)")
        return v


ROLE_SCHEMAS: dict[str, type[StrictModel]] = {"free_space": FreeSpaceRoles, "integrated_chip": ChipRoles}
#: processor kinds whose builder can run on instruments (others: the station validates, building refuses)
INSTRUMENT_KINDS = {"free_space"}
_ROLE_DRIVERS = {"laser": {"laser_controller"}, "power_meter": {"power_meter"}, "slm": {"slm"},
                 "weights": {"slm", "dmd"}, "gain": {"scpi_source"}, "cell": {"temperature_controller"},
                 "detector": {"digitizer"}, "heater": {"qontrol_heater", "scpi_source"}}


# --- validation ------------------------------------------------------------------------------------------
class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, loc: str, msg: str) -> None:
        raise ConfigError(f"{self.source}: {loc}: {msg}")


def _limit_range(chk: _Checker, loc: str, key: str, raw: Any, dim: str, kind: str,
                 hw: tuple[float, float] | None) -> Range:
    unit = UNITS[dim][0]
    try:
        if kind == "max":
            if isinstance(raw, (list, tuple)):
                raise ValueError(f"expected one maximum ({_expectation(dim)[9:]}), not a list")
            lo, hi = (hw[0] if hw else 0.0), parse_quantity(raw, dim)
        elif isinstance(raw, (list, tuple)):
            if len(raw) != 2:
                raise ValueError(f"expected [low, high] or a maximum; {_expectation(dim)[9:]}")
            lo, hi = parse_quantity(raw[0], dim), parse_quantity(raw[1], dim)
        else:
            lo, hi = (hw[0] if hw else -math.inf), parse_quantity(raw, dim)
    except ValueError as exc:
        chk.fail(loc, str(exc))
    if lo > hi:
        chk.fail(loc, f"limit [{lo:g}, {hi:g}] {unit} is empty; expected low <= high")
    if kind == "max" and hi < 0:
        chk.fail(loc, f"limit {hi:g} {unit} is negative; expected a maximum >= 0")
    cfg = Range(lo, hi, unit, key)
    if hw is not None:
        hw_range = Range(hw[0], hw[1], unit, key)
        if lo < hw_range.low - 1e-12 or hi > hw_range.high + 1e-12:
            chk.fail(loc, f"limit {cfg} widens the driver's own range {hw_range}; expected a limit inside it")
    if key in _ZERO_SAFE and not lo <= 0.0 <= hi:
        chk.fail(loc, f"limit {cfg} excludes 0 {unit}; expected a range containing the safe value 0 {unit}")
    return cfg


def _validate_instrument(chk: _Checker, name: str, spec: InstrumentSpec) -> None:
    from lightloop.drivers import DRIVER_CLASSES

    loc = f"instruments.{name}"
    if not _NAME.match(name):
        chk.fail(loc, "expected an instrument name made of letters, digits and '_' (not starting with a digit)")
    if spec.driver == "twin":
        for key in ("address", "visalib", "timeout"):
            if getattr(spec, key) is not None:
                chk.fail(f"{loc}.{key}", "a 'twin' instrument is served in process; expected no address/visalib/timeout")
        for key in ("init", "parameters", "limits"):
            if getattr(spec, key):
                chk.fail(f"{loc}.{key}", f"a 'twin' instrument takes no {key}; expected a driver for {key}")
        return
    if spec.driver not in DRIVER_CLASSES:
        chk.fail(f"{loc}.driver", f"unknown driver {spec.driver!r}; expected 'twin' or one of {', '.join(sorted(DRIVER_CLASSES))}")
    if not spec.address:
        chk.fail(f"{loc}.address", f"missing; expected the {spec.driver} address "
                 + {"slm": "host:port", "qontrol_heater": "pyserial URL", "dmd": "SDK library path"}.get(spec.driver, "VISA resource"))
    if spec.visalib is not None and spec.driver not in _VISA_DRIVERS:
        chk.fail(f"{loc}.visalib", f"a {spec.driver} is not a VISA instrument; expected no visalib")
    defaults = _driver_defaults(spec.driver)
    for key in spec.init:
        if key in _RESERVED_INIT or key not in defaults:
            allowed = sorted(k for k in defaults if k not in _RESERVED_INIT)
            chk.fail(f"{loc}.init.{key}", f"not a keyword of driver {spec.driver!r}; expected one of {', '.join(allowed)}")
    hw_init = {k: v for k, v in defaults.items() if v is not inspect.Parameter.empty}
    hw_init.update(spec.init)
    spec._hardware = hw_init
    table = LIMITS[spec.driver]
    limits: dict[str, Range] = {}
    for key, raw in spec.limits.items():
        if key not in table:
            chk.fail(f"{loc}.limits.{key}", f"unknown limit for a {spec.driver}; expected one of "
                     f"{', '.join(sorted(table)) or '(none: this driver takes no limits)'}")
        dim, kind, hw_fn = table[key]
        try:
            hw = hw_fn(hw_init) if hw_fn is not None else None
        except (KeyError, TypeError, ValueError, IndexError):
            chk.fail(f"{loc}.init", f"cannot read the driver's hardware range for {key!r}; expected valid init values")
        limits[key] = _limit_range(chk, f"{loc}.limits.{key}", key, raw, dim, kind, hw)
    for key, (dim, kind, hw_fn) in table.items():   # unconfigured: the driver's own range applies
        if key not in limits and hw_fn is not None:
            lo, hi = hw_fn(hw_init)
            limits[key] = Range(lo, hi, UNITS[dim][0], key)
    spec._limits = limits


def _parse_section(chk: _Checker, model: type[StrictModel], data: Any, prefix: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(chk.source, exc, prefix)) from None


def validate_station(cfg: Any, require_builder: bool = True) -> None:
    """Validate cfg.instruments / cfg.roles / cfg.emulator in place (raw dicts -> models); one-line ConfigError.

    require_builder: also demand that the processor kind can be built on instruments (config loading does;
    a test of an example config for a kind whose wiring is pending may not).
    """
    chk = _Checker(cfg.source)
    kind = getattr(cfg.processor, "kind", None)
    if cfg.instruments is None:
        chk.fail("instruments", "missing; expected the instruments that serve the roles (or drop roles/emulator)")
    if not isinstance(cfg.instruments, dict) or not cfg.instruments:
        chk.fail("instruments", "expected a mapping of instrument name -> {driver, address, ...}")
    insts: dict[str, InstrumentSpec] = {}
    for name, raw in cfg.instruments.items():
        insts[str(name)] = _parse_section(chk, InstrumentSpec, raw, f"instruments.{name}")
        _validate_instrument(chk, str(name), insts[str(name)])
    cfg.instruments = insts
    if cfg.roles is None:
        chk.fail("roles", "missing; expected which instrument channel serves each HAL role")
    schema = ROLE_SCHEMAS.get(kind)
    if schema is None:
        chk.fail("roles", f"instrument roles are defined for processor kinds {', '.join(sorted(ROLE_SCHEMAS))}; got {kind!r}")
    cfg.roles = _parse_section(chk, schema, cfg.roles, "roles")
    cfg.emulator = None if cfg.emulator is None else _parse_section(chk, EmulatorSettings, cfg.emulator, "emulator")
    if kind == "free_space":
        _check_free_space(chk, cfg)
    else:
        _check_chip(chk, cfg)
    if require_builder and kind not in INSTRUMENT_KINDS:
        chk.fail("instruments", f"the {kind!r} builder does not drive instruments yet (its HAL wiring onto drivers is "
                 f"pending); expected processor.kind {' or '.join(sorted(INSTRUMENT_KINDS))}, or no instruments "
                 "section to use the twin")


def _ref(chk: _Checker, insts: dict[str, InstrumentSpec], loc: str, name: str, allowed: set[str]) -> str:
    if name not in insts:
        chk.fail(loc, f"unknown instrument {name!r}; expected one of {', '.join(sorted(insts))}")
    d = insts[name].driver
    if d != "twin" and d not in allowed:
        chk.fail(loc, f"{name!r} is a {d}; expected a {' or '.join(sorted(allowed))} (or a twin)")
    return d


def _channel(chk: _Checker, insts: dict[str, InstrumentSpec], loc: str, name: str, channel: int, first: int = 1) -> None:
    spec = insts[name]
    if spec.driver == "twin":
        return
    n = spec.hardware("n_channels")
    if not isinstance(n, int):
        return  # e.g. a Qontrol that reports its channel count when it connects
    if not first <= channel < first + n:
        chk.fail(loc, f"channel {channel} does not exist on {name!r} ({spec.driver} with {n} channels); "
                 f"expected {first}..{first + n - 1}")


def _check_source(chk: _Checker, insts: dict[str, InstrumentSpec], src: LaserRole, used: dict[str, str]) -> None:
    _ref(chk, insts, "roles.source.laser", src.laser, _ROLE_DRIVERS["laser"])
    used[src.laser] = "roles.source.laser"
    spec = insts[src.laser]
    if spec.driver != "twin":
        cur, power = spec.limit("current"), spec.limit("power")
        i_max = cur.high if cur else math.inf
        if power is not None:
            i_max = min(i_max, src.threshold_current + power.high / src.slope_efficiency)
        if src.operating_current > i_max + 1e-12:
            chk.fail("roles.source.operating_current", f"{src.operating_current:g} A exceeds what the limits of "
                     f"{src.laser!r} allow ({i_max:g} A from the current and power limits); expected <= {i_max:g} A")
    if src.power_meter is not None:
        _ref(chk, insts, "roles.source.power_meter", src.power_meter, _ROLE_DRIVERS["power_meter"])
        used[src.power_meter] = "roles.source.power_meter"


def _check_free_space(chk: _Checker, cfg: Any) -> None:
    insts: dict[str, InstrumentSpec] = cfg.instruments
    roles: FreeSpaceRoles = cfg.roles
    p = cfg.processor
    n_layers = len(p.hidden) + 1
    used: dict[str, str] = {}

    def once(loc: str, name: str) -> None:
        if name in used:
            chk.fail(loc, f"{name!r} already serves {used[name]}; expected one role per instrument")
        used[name] = loc

    _check_source(chk, insts, roles.source, used)
    for role, attr, minimum in (("input", "input_field_scale", p.input_field_scale), ("probe", "probe_field", p.probe_field)):
        r: DisplayRole = getattr(roles, role)
        _ref(chk, insts, f"roles.{role}.instrument", r.instrument, _ROLE_DRIVERS["slm"])
        once(f"roles.{role}", r.instrument)
        if r.full_scale_field < minimum * (1 - 1e-9):
            chk.fail(f"roles.{role}.full_scale_field", f"{r.full_scale_field:g} cannot show processor.{attr} = "
                     f"{minimum:g}; expected >= {minimum:g}")
    if len(roles.weights) != n_layers:
        chk.fail("roles.weights", f"{len(roles.weights)} entries for {n_layers} weight layers (processor.hidden "
                 f"{list(p.hidden)}); expected one per weight layer")
    gain_channels: set[tuple[str, int]] = set()
    for i, w in enumerate(roles.weights):
        loc = f"roles.weights[{i}]"
        d = _ref(chk, insts, f"{loc}.instrument", w.instrument, _ROLE_DRIVERS["weights"])
        once(loc, w.instrument)
        device = p.weights.device
        if d != "twin" and d != device:
            chk.fail(f"{loc}.instrument", f"{w.instrument!r} is a {d} but processor.weights.device is {device!r}; "
                     "expected matching devices")
        if d == "slm" and w.layout == "checkerboard" and w.block_pixels < 2:
            chk.fail(f"{loc}.block_pixels", "a checkerboard needs blocks of at least 2x2 pixels; expected >= 2")
        if d == "dmd" and w.block_pixels != p.weights.dmd_block_pixels:
            chk.fail(f"{loc}.block_pixels", f"{w.block_pixels} differs from processor.weights.dmd_block_pixels = "
                     f"{p.weights.dmd_block_pixels}; expected equal")
        if d != "twin" and (w.gain is None) == (w.fixed_gain is None):
            chk.fail(loc, "expected exactly one of 'gain' (a source channel driving the amplifier) or "
                     "'fixed_gain' (amplifier set by hand)")
        if d == "twin" and (w.gain is not None or w.fixed_gain is not None):
            chk.fail(loc, "a twin weight device sets its amplifier in process; expected no 'gain' or 'fixed_gain'")
        if w.gain is not None:
            _ref(chk, insts, f"{loc}.gain.instrument", w.gain.instrument, _ROLE_DRIVERS["gain"])
            _channel(chk, insts, f"{loc}.gain.channel", w.gain.instrument, w.gain.channel)
            key = (w.gain.instrument, w.gain.channel)
            if key in gain_channels:
                chk.fail(f"{loc}.gain.channel", f"channel {w.gain.channel} of {w.gain.instrument!r} already drives "
                         "another amplifier; expected one channel per layer")
            gain_channels.add(key)
            if w.gain.instrument in used and not used[w.gain.instrument].startswith("roles.weights"):
                chk.fail(f"{loc}.gain.instrument", f"{w.gain.instrument!r} already serves {used[w.gain.instrument]}")
            used.setdefault(w.gain.instrument, f"{loc}.gain")
            vlim = insts[w.gain.instrument].limit("voltage")
            need = (p.weights.max_weight / p.weights.efficiency) * w.gain.volts_per_gain
            if vlim is not None and not vlim.contains(need):
                chk.fail(f"{loc}.gain.volts_per_gain", f"gain {p.weights.max_weight / p.weights.efficiency:g} needs "
                         f"{need:g} V, outside the voltage limit {vlim} of {w.gain.instrument!r}; expected a control "
                         "voltage inside the limit")
    if len(roles.vapor_cells) != n_layers - 1:
        chk.fail("roles.vapor_cells", f"{len(roles.vapor_cells)} entries for {n_layers - 1} vapor cells (one per "
                 f"hidden layer {list(p.hidden)}); expected one per cell")
    for i, c in enumerate(roles.vapor_cells):
        _ref(chk, insts, f"roles.vapor_cells[{i}].instrument", c.instrument, _ROLE_DRIVERS["cell"])
        once(f"roles.vapor_cells[{i}]", c.instrument)
        lim = insts[c.instrument].limit("temperature")
        if lim is not None and (lim.high < p.vapor_cell.t_min_k or lim.low > p.vapor_cell.t_max_k):
            chk.fail(f"instruments.{c.instrument}.limits.temperature", f"{lim} does not overlap processor.vapor_cell "
                     f"[{p.vapor_cell.t_min_k:g}, {p.vapor_cell.t_max_k:g}] K; expected overlapping ranges")
        if insts[c.instrument].driver != "twin" and insts[c.instrument].limit("ramp_rate") is None:
            chk.fail(f"instruments.{c.instrument}.limits.ramp_rate", "missing; expected a ramp rate limit (K/min)")
    seen: dict[tuple[str, int], str] = {}
    for tap, want in (("pre", n_layers), ("post", n_layers - 1), ("error", n_layers - 1)):
        refs = getattr(roles.detectors, tap)
        if len(refs) != want:
            chk.fail(f"roles.detectors.{tap}", f"{len(refs)} entries; expected {want} (one per "
                     f"{'weight layer' if tap == 'pre' else 'vapor cell'})")
        for i, ref in enumerate(refs):
            loc = f"roles.detectors.{tap}[{i}]"
            _ref(chk, insts, f"{loc}.instrument", ref.instrument, _ROLE_DRIVERS["detector"])
            _channel(chk, insts, f"{loc}.channel", ref.instrument, ref.channel)
            if (ref.instrument, ref.channel) in seen:
                chk.fail(f"{loc}.channel", f"channel {ref.channel} of {ref.instrument!r} already serves "
                         f"{seen[(ref.instrument, ref.channel)]}; expected one array per channel")
            seen[(ref.instrument, ref.channel)] = loc
            if ref.instrument in used and not used[ref.instrument].startswith("roles.detectors"):
                chk.fail(f"{loc}.instrument", f"{ref.instrument!r} already serves {used[ref.instrument]}")
            used.setdefault(ref.instrument, loc)
    _check_common(chk, cfg, used, light_path=[roles.input.instrument, roles.probe.instrument, roles.source.laser]
                  + [r.instrument for r in roles.detectors.pre + roles.detectors.post + roles.detectors.error])


def _check_chip(chk: _Checker, cfg: Any) -> None:
    insts: dict[str, InstrumentSpec] = cfg.instruments
    roles: ChipRoles = cfg.roles
    n_layers = len(getattr(cfg.processor, "hidden", [])) + 1
    used: dict[str, str] = {}
    _check_source(chk, insts, roles.source, used)
    for group, want in (("phase_shifters", n_layers), ("activation_bias", n_layers - 1)):
        banks = getattr(roles, group)
        if group == "phase_shifters" and len(banks) != want:
            chk.fail(f"roles.{group}", f"{len(banks)} entries for {want} mesh layers; expected one heater block per layer")
        if group == "activation_bias" and banks and len(banks) != want:
            chk.fail(f"roles.{group}", f"{len(banks)} entries for {want} activation layers; expected one per hidden layer")
    taken: dict[tuple[str, int], str] = {}
    for group in ("phase_shifters", "activation_bias"):
        for i, bank in enumerate(getattr(roles, group)):
            loc = f"roles.{group}[{i}]"
            d = _ref(chk, insts, f"{loc}.instrument", bank.instrument, _ROLE_DRIVERS["heater"])
            first = 1 if d == "scpi_source" else 0
            for ch in (bank.first_channel, bank.first_channel + bank.count - 1):
                _channel(chk, insts, f"{loc}.first_channel", bank.instrument, ch, first)
            for ch in range(bank.first_channel, bank.first_channel + bank.count):
                if (bank.instrument, ch) in taken:
                    chk.fail(loc, f"channel {ch} of {bank.instrument!r} already belongs to {taken[(bank.instrument, ch)]}; "
                             "expected disjoint channel blocks")
                taken[(bank.instrument, ch)] = loc
            if bank.instrument in used and used[bank.instrument].startswith("roles.source"):
                chk.fail(f"{loc}.instrument", f"{bank.instrument!r} already serves {used[bank.instrument]}")
            used.setdefault(bank.instrument, loc)
    det = roles.detectors
    seen: dict[tuple[str, int], str] = {}
    refs = [("outputs", det.outputs)] + [(f"monitors[{i}]", r) for i, r in enumerate(det.monitors)] \
        + [(f"receivers[{i}]", r) for i, r in enumerate(det.receivers)]
    for what in ("monitors", "receivers"):
        if getattr(det, what) and len(getattr(det, what)) != n_layers:
            chk.fail(f"roles.detectors.{what}", f"{len(getattr(det, what))} entries; expected {n_layers} (one per mesh layer)")
    for name, ref in refs:
        loc = f"roles.detectors.{name}"
        _ref(chk, insts, f"{loc}.instrument", ref.instrument, _ROLE_DRIVERS["detector"])
        _channel(chk, insts, f"{loc}.channel", ref.instrument, ref.channel)
        if (ref.instrument, ref.channel) in seen:
            chk.fail(f"{loc}.channel", f"channel {ref.channel} of {ref.instrument!r} already serves {seen[(ref.instrument, ref.channel)]}")
        seen[(ref.instrument, ref.channel)] = loc
        used.setdefault(ref.instrument, loc)
    _check_common(chk, cfg, used, light_path=[])


def _check_common(chk: _Checker, cfg: Any, used: dict[str, str], light_path: list[str]) -> None:
    insts: dict[str, InstrumentSpec] = cfg.instruments
    for name in insts:
        if name not in used:
            chk.fail(f"instruments.{name}", "not used by any role; expected every instrument to serve a role "
                     "(remove it or add its role)")
    twins = {n for n, s in insts.items() if s.driver == "twin"}
    drivers = set(insts) - twins
    em = cfg.emulator
    autostart = em is not None and em.autostart
    if twins and drivers and not autostart:
        chk.fail("emulator.autostart", f"instruments {sorted(twins)} are twins but {sorted(drivers)} are real drivers; "
                 "expected emulator.autostart: true so that both share one emulator")
    kinds = {insts[n].driver == "twin" for n in light_path}
    if len(kinds) > 1:
        chk.fail("instruments", "the light path (input, probe, laser and detectors) must be all twins or all "
                 f"drivers; got a mix in {sorted(set(light_path))}")
    if em is not None:
        from lightloop.simulators.wire.free_space import address_port

        for name in sorted(drivers):
            spec = insts[name]
            if spec.driver == "dmd":
                chk.fail(f"instruments.{name}.driver", "the wire twin cannot serve a DMD (a ctypes SDK has no wire); "
                         "expected 'twin' or an SLM in an emulated config")
            try:
                host, _ = address_port(spec.driver, spec.address or "")
            except ValueError:
                form = {"slm": "127.0.0.1:<port>", "qontrol_heater": "socket://127.0.0.1:<port>"}.get(
                    spec.driver, "TCPIP::127.0.0.1::<port>::SOCKET")
                chk.fail(f"instruments.{name}.address", f"{spec.address!r} is not served by the wire twin; expected {form}")
            if host not in ("127.0.0.1", "localhost"):
                chk.fail(f"instruments.{name}.address", f"host {host!r}: the wire twin serves 127.0.0.1 only; "
                         "expected a loopback address")
            if spec.driver in _VISA_DRIVERS and spec.visalib not in ("@py",):
                chk.fail(f"instruments.{name}.visalib", "TCPIP SOCKET resources of the wire twin need pyvisa-py; "
                         "expected '@py'")


# --- step accounting ---------------------------------------------------------------------------------------
class StepMeter:
    """Per training step: transactions, instrument time and wall time (overhead = wall - instrument time).

    Preferred measure: the interval between two consecutive training-step hooks of one epoch (the
    trainer calls ``processor.step_hooks`` after every update), which brackets exactly one step -
    program, forward, error, backward, gradient, update - whatever the gradient method. Without hook
    calls it falls back to program() -> program() intervals that ran an optical backward pass.
    """

    def __init__(self, stats: Any) -> None:
        self.stats = stats
        self._open: list[Any] | None = None
        self._sums = {True: [0, 0.0, 0, 0.0], False: [0, 0.0, 0, 0.0]}  # n, wall, tx, instrument s
        self._hook_sums = [0, 0.0, 0, 0.0]
        self._last_hook: tuple[Any, float, int, float] | None = None

    def _now(self) -> tuple[float, int, float]:
        return time.perf_counter(), self.stats.transactions, self.stats.instrument_seconds

    def begin(self) -> None:
        """A program() call: close the current interval and open the next."""
        now = time.perf_counter()
        self._close(now)
        self._open = [now, self.stats.transactions, self.stats.instrument_seconds, False]

    def training_step(self) -> None:
        """The current interval ran an optical backward pass."""
        if self._open is not None:
            self._open[3] = True

    def on_step(self, info: dict[str, Any]) -> None:
        """Trainer step hook (after the update): one step since the previous hook of the same epoch."""
        t, tx, inst = self._now()
        epoch = info.get("epoch")
        last = self._last_hook
        if last is not None and last[0] == epoch:
            s = self._hook_sums
            s[0] += 1
            s[1] += t - last[1]
            s[2] += tx - last[2]
            s[3] += inst - last[3]
        self._last_hook = (epoch, t, tx, inst)

    def _close(self, now: float) -> None:
        if self._open is None:
            return
        t0, tx0, inst0, training = self._open
        s = self._sums[training]
        s[0] += 1
        s[1] += now - t0
        s[2] += self.stats.transactions - tx0
        s[3] += self.stats.instrument_seconds - inst0
        self._open = None

    def summary(self) -> dict[str, Any]:
        """Mean transactions, instrument seconds and overhead seconds per step."""
        for sums in (self._hook_sums, self._sums[True], self._sums[False]):
            if sums[0]:
                n, wall, tx, inst = sums
                return {"transactions_per_step": tx / n, "instrument_seconds_per_step": inst / n,
                        "overhead_seconds_per_step": (wall - inst) / n, "steps_measured": n}
        return {"transactions_per_step": None, "instrument_seconds_per_step": None,
                "overhead_seconds_per_step": None, "steps_measured": 0}


# --- station: connected instruments of one bench ---------------------------------------------------------
def _free_name(name: str) -> str:
    from qcodes.instrument import Instrument

    candidate, k = name, 1
    while Instrument.exist(candidate):
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def _tcp_nodelay(driver: Any) -> None:
    """Disable Nagle on VISA TCP sockets (a write followed by a query otherwise waits for a delayed ACK)."""
    handle = getattr(driver, "visa_handle", None)
    if handle is None or "SOCKET" not in str(getattr(handle, "resource_name", "")).upper():
        return
    from pyvisa import constants

    try:
        handle.set_visa_attribute(constants.VI_ATTR_TCPIP_NODELAY, constants.VI_TRUE)
        return
    except Exception:
        pass
    try:  # pyvisa-py <= 0.8 wires the NODELAY setter to a method that refuses it: set the socket option
        import socket

        sock = handle.visalib.sessions[handle.session].interface
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except Exception:
        pass


def make_driver(driver: str, qname: str, address: str, spec: InstrumentSpec) -> Any:
    """Construct a driver instance (= connect) for one instrument spec."""
    from lightloop.drivers import driver_class

    cls = driver_class(driver)
    kw = dict(spec.init)
    if spec.timeout is not None and driver != "dmd":
        kw["timeout"] = spec.timeout
    if driver in _VISA_DRIVERS:
        if spec.visalib:
            kw["visalib"] = spec.visalib
        if address.upper().endswith("::SOCKET"):
            # viClear on a raw socket only drains input; pyvisa-py (<= 0.8) spins forever in it when the peer
            # has closed the link, which would make a reconnect unbounded
            kw["device_clear"] = False
        return cls(qname, address, **kw)
    if driver == "slm":
        host, _, port = address.rpartition(":")
        host = host.removeprefix("tcp://")
        if not host or not port.isdigit():
            raise ConfigError(f"SLM {qname!r}: address {address!r}; expected host:port")
        return cls(qname, host, int(port), **kw)
    return cls(qname, address, **kw)   # qontrol_heater: url; dmd: library path


_FAMILY = {"temperature_controller": "temperature controller", "laser_controller": "laser controller",
           "digitizer": "digitizer", "scpi_source": "SCPI source", "power_meter": "power meter", "slm": "SLM",
           "qontrol_heater": "Qontrol heater", "dmd": "DMD"}


class Station:
    """The connected instruments of one bench: links, transaction stats, safe-state actions, the wire twin."""

    def __init__(self, source: str = "<config>") -> None:
        from lightloop.benches.adapters import TransactionStats

        self.source = source
        self.stats = TransactionStats()
        self.meter = StepMeter(self.stats)
        self.links: dict[str, Any] = {}
        self.server: Any = None
        self.mode = "drivers"   # 'drivers' (real instruments or a separate emulator), 'wire-twin', 'twin'
        self._safe: list[tuple[str, Callable[[], None]]] = []
        self._closed = False
        self.safe_state_failures: list[str] = []

    def connect(self, name: str, spec: InstrumentSpec, address: str) -> Any:
        """Open one instrument (driver + Link); a wrong address is one line naming file, field and instrument."""
        from lightloop.benches.adapters import Link, ReconnectPolicy

        r = spec.reconnect
        link = Link(name, _FAMILY.get(spec.driver, spec.driver),
                    lambda: make_driver(spec.driver, _free_name(name), address, spec), self.stats,
                    ReconnectPolicy(r.attempts, r.backoff, 2.0, r.budget), CONNECT_TRANSACTIONS.get(spec.driver, 0))
        try:
            link.open()
        except InstrumentError as exc:
            raise InstrumentError(f"{self.source}: instruments.{name}.address: {exc}") from exc
        self.links[name] = link
        setup = self._setup(link, name, spec)
        try:
            setup(link.driver)
        except BaseException:
            link.close()
            raise
        link.on_connect(setup)
        return link

    def _setup(self, link: Any, name: str, spec: InstrumentSpec) -> Callable[[Any], None]:
        def apply(drv: Any) -> None:
            _tcp_nodelay(drv)
            for pname, value in spec.parameters.items():
                obj = drv
                parts = pname.split(".")
                try:
                    for part in parts[:-1]:
                        obj = obj.submodules[part]
                    param = obj.parameters[parts[-1]]
                except KeyError:
                    raise ConfigError(f"{self.source}: instruments.{name}.parameters.{pname}: the {spec.driver} has no "
                                      "such parameter; expected a QCoDeS parameter name such as 'ch1.range'") from None
                try:
                    param.set(value)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"{self.source}: instruments.{name}.parameters.{pname}: "
                                      f"{' '.join(str(exc).split())}") from None
                link.tick()

        return apply

    def add_safe_action(self, label: str, fn: Callable[[], None]) -> None:
        """Register one safe-state step (run in registration order, each best effort)."""
        self._safe.append((label, fn))

    def safe_state(self) -> None:
        """Every safe action, best effort (a failing one is logged and the rest still run); never raises."""
        failures = []
        for label, fn in self._safe:
            try:
                fn()
            except Exception as exc:
                failures.append(f"{label}: {' '.join(str(exc).split())}")
        self.safe_state_failures = failures
        if failures:
            log.warning("safe state incomplete: %s", " | ".join(failures))

    def close(self) -> None:
        """Safe state, then release every driver and stop the wire twin (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.safe_state()
        finally:
            for link in self.links.values():
                link.close()
            if self.server is not None:
                self.server.stop()

    def summary(self) -> dict[str, Any]:
        """JSON fields: instruments mode, per-step transactions and times, totals."""
        return {"instruments": self.mode, **self.meter.summary(), "transactions_total": self.stats.transactions,
                "reconnects": self.stats.reconnects}


class InstrumentedFreeSpaceProcessor(FreeSpaceProcessor):
    """FreeSpaceProcessor on instruments: counts transactions per step, best-effort safe state, releases drivers."""

    def __init__(self, *args: Any, station: Station, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.station = station
        self.step_hooks: list[Callable[[dict[str, Any]], None]] = [station.meter.on_step]

    def program(self, params: Any) -> None:
        """Write every layer's weights (one frame per device); opens a new step interval."""
        self.station.meter.begin()
        super().program(params)

    def backward(self, delta_out: NDArray) -> list[NDArray]:
        """Optical backward pass (marks the step as a training step)."""
        self.station.meter.training_step()
        return super().backward(delta_out)

    def summary_fields(self) -> dict[str, Any]:
        """Bench figures plus transactions_per_step and overhead_seconds_per_step."""
        return {**super().summary_fields(), **self.station.summary()}

    def safe_state(self) -> None:
        """Laser off, sources dark, heaters off, control voltages to zero - each best effort."""
        self.station.safe_state()

    def close(self) -> None:
        """Safe state, then release the instruments (and the auto-started wire twin)."""
        self.station.close()


class _Locked:
    """Proxy calling a port's methods under a lock (in-process twin ports sharing the emulator with the server)."""

    def __init__(self, port: Any, lock: threading.RLock) -> None:
        self._port, self._lock = port, lock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._port, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **k: Any) -> Any:
            with self._lock:
                return attr(*a, **k)

        return call


# --- building a free-space bench on instruments ---------------------------------------------------------
def _ramp(spec: InstrumentSpec, key: str) -> RampPolicy:
    r = spec.limit(key)
    if r is None or not math.isfinite(r.high) or r.high <= 0:
        return RampPolicy(math.inf, spec.ramp_interval)
    return RampPolicy(r.high, spec.ramp_interval)


def build_free_space(cfg: Any, n_inputs: int, n_outputs: int, ov: Any) -> InstrumentedFreeSpaceProcessor:
    """FreeSpaceProcessor for (n_inputs, *hidden, n_outputs) on the instruments of `cfg` (auto-starting the wire twin)."""
    from lightloop.benches.adapters import (
        BenchClock,
        DigitizerArrays,
        DMDWeightBlocks,
        GainControl,
        LaserControllerDevice,
        PowerMeterDevice,
        ScpiSourceDevice,
        SLMFieldSource,
        SLMWeightBlocks,
        TemperatureControllerDevice,
    )
    from lightloop.hal.free_space_roles import (
        AnalogWeightBlock,
        DMDWeightBlock,
        HomodyneDetector,
        InputEncoder,
        ProbeSource,
        SaturableAbsorber,
        SLMWeightBlock,
        TemperatureLimits,
    )

    p, roles, insts, src = cfg.processor, cfg.roles, cfg.instruments, cfg.source
    if ov.extra:
        raise ConfigError(f"{src}: options {sorted(ov.extra)} do not apply to a free_space bench")
    hidden = list(ov.hidden) if ov.hidden is not None else list(p.hidden)
    if any(h < 1 for h in hidden):
        raise ConfigError(f"--hidden: layer sizes must be positive integers, got {hidden}")
    a0 = p.optical_depth if ov.optical_depth is None else ov.optical_depth
    if a0 < 0:
        raise ConfigError(f"--optical-depth: expected a0 >= 0 (a vapor cell absorbs), got {a0}")
    sizes = (n_inputs, *hidden, n_outputs)
    n_layers = len(sizes) - 1
    for what, have, want in (("weights", len(roles.weights), n_layers), ("vapor_cells", len(roles.vapor_cells), n_layers - 1),
                             ("detectors.pre", len(roles.detectors.pre), n_layers),
                             ("detectors.post", len(roles.detectors.post), n_layers - 1),
                             ("detectors.error", len(roles.detectors.error), n_layers - 1)):
        if have != want:
            raise ConfigError(f"{src}: roles.{what}: {have} entries for a network with layer sizes {list(sizes)}; "
                              f"expected {want} (the config wires hidden layers {list(p.hidden)})")
    em = cfg.emulator
    if em is not None and em.layer_sizes is not None and tuple(em.layer_sizes) != sizes:
        raise ConfigError(f"{src}: emulator.layer_sizes: {em.layer_sizes} but this run needs {list(sizes)}; "
                          "expected equal sizes (or drop layer_sizes)")
    autostart = em is not None and em.autostart
    all_twin = all(s.driver == "twin" for s in insts.values())
    simulated = autostart or all_twin
    ideal = p.twin.ideal if ov.ideal is None else ov.ideal
    if ideal and not simulated:
        raise ConfigError(f"--ideal: {src} drives real instruments; expected a simulated bench "
                          "(emulator.autostart: true or twin instruments)")

    station = Station(src)
    station.mode = "twin" if all_twin else ("wire-twin" if autostart else "drivers")
    try:
        emu = None
        lock: threading.RLock | None = None
        if simulated:
            from lightloop.simulators.wire.free_space import make_free_space_emulator, start_free_space_twin

            emu = make_free_space_emulator(p, sizes, ideal)
            if autostart:
                station.server = start_free_space_twin(cfg, sizes, emu)
                lock = station.server.lock

        def twin_port(port: Any) -> Any:
            return _Locked(port, lock) if lock is not None else port

        def link(name: str) -> Any:
            if name not in station.links:
                spec = insts[name]
                address = station.server.address(name) if autostart else spec.address
                station.connect(name, spec, address)
            return station.links[name]

        def is_twin(name: str) -> bool:
            return insts[name].driver == "twin"

        clock = BenchClock()
        tw: Any = None
        if emu is not None:
            from lightloop.simulators import free_space as tw

        # light source: laser (+ power meter)
        s = roles.source
        laser: SafeLaser | None = None
        if not is_twin(s.laser):
            spec = insts[s.laser]
            lk = link(s.laser)
            cur = spec.limit("current") or Range(0.0, math.inf, "A", "current")
            dev = LaserControllerDevice(lk, cur, clock)
            pm = PowerMeterDevice(link(s.power_meter)) if s.power_meter and not is_twin(s.power_meter) else None
            power = spec.limit("power")
            laser = SafeLaser(dev, dev.current_limit, LinearLaserModel(s.threshold_current, s.slope_efficiency),
                              power.high if power else math.inf, _ramp(spec, "current_ramp"),
                              read_power=pm.read_power if pm else None)
            station.add_safe_action(f"laser {s.laser!r} off", laser.safe_state)

        # input and probe displays
        def display(role: Any, n: int, label: str, twin_cls: str) -> Any:
            if is_twin(role.instrument):
                return twin_port(getattr(tw, twin_cls)(emu))
            port = SLMFieldSource(link(role.instrument), clock, n, role.full_scale_field, label)
            station.add_safe_action(f"{label} SLM {role.instrument!r} dark", port.dark)
            return port

        enc_port = display(roles.input, n_inputs, "input", "SourceTwin")
        probe_port = display(roles.probe, n_outputs, "probe", "ProbeTwin")

        # amplifier control sources
        banks: dict[str, SafeVoltageBank] = {}

        def bank(name: str) -> SafeVoltageBank:
            if name not in banks:
                spec = insts[name]
                dev = ScpiSourceDevice(link(name))
                banks[name] = SafeVoltageBank(dev, spec.limit("voltage") or Range(-math.inf, math.inf, "V"),
                                              _ramp(spec, "voltage_ramp"))
                chans = sorted({w.gain.channel - 1 for w in roles.weights if w.gain and w.gain.instrument == name})
                ilim = spec.limit("current")
                dev.enable(chans, None if ilim is None else ilim.high)
                station.add_safe_action(f"source {name!r} to 0 V, outputs off", dev.disable)
            return banks[name]

        blocks = []
        device = "analog" if (ideal and all_twin) else p.weights.device
        kw = dict(max_weight=p.weights.max_weight, efficiency=p.weights.efficiency)
        for i, w in enumerate(roles.weights):
            shape = (sizes[i + 1], sizes[i])
            if is_twin(w.instrument):
                cls_name = {"analog": "AnalogWeightTwin", "slm": "SLMWeightTwin", "dmd": "DMDWeightTwin"}[device]
                port = twin_port(getattr(tw, cls_name)(emu, i))
            else:
                gain = None
                if w.gain is not None:
                    gain = GainControl(bank(w.gain.instrument), w.gain.channel - 1, w.gain.volts_per_gain)
                lk = link(w.instrument)
                if insts[w.instrument].driver == "slm":
                    port = SLMWeightBlocks(lk, clock, shape, w.layout, w.block_pixels, gain, w.fixed_gain)
                else:
                    port = DMDWeightBlocks(lk, clock, shape, w.block_pixels, gain, w.fixed_gain)
            if device == "analog":
                blocks.append(AnalogWeightBlock(port, shape, **kw))
            elif device == "slm":
                blocks.append(SLMWeightBlock(port, shape, **kw))
            else:
                blocks.append(DMDWeightBlock(port, shape, **kw))

        # vapor cells
        cell_map = VaporCellMap(p.vapor_cell.sigma_l_m3)
        absorbers = []
        for i, c in enumerate(roles.vapor_cells):
            t_lo, t_hi = p.vapor_cell.t_min_k, p.vapor_cell.t_max_k
            if is_twin(c.instrument):
                port = twin_port(tw.VaporCellHeaterTwin(emu, i))
            else:
                spec = insts[c.instrument]
                lim = spec.limit("temperature") or Range(t_lo, t_hi, "K")
                dev = TemperatureControllerDevice(link(c.instrument), lim, spec.limit("ramp_rate").high, clock)
                t_lo, t_hi = max(t_lo, dev.limits.low), min(t_hi, dev.limits.high)
                if t_lo >= t_hi:
                    raise ConfigError(f"{src}: roles.vapor_cells[{i}]: processor.vapor_cell range and the limits of "
                                      f"{c.instrument!r} leave no temperature; expected overlapping ranges")
                port = SafeTemperatureControl(dev, Range(t_lo, t_hi, "K", f"{c.instrument}: temperature"),
                                              dev.max_ramp, c.settle_tolerance, c.settle_timeout, c.poll_interval)
                station.add_safe_action(f"heater {c.instrument!r} off", port.safe_state)
            absorbers.append(SaturableAbsorber(port, cell_map, TemperatureLimits(t_lo, t_hi)))

        # detectors (registration order = the processor's acquisition order: pre, post, then error)
        groups: dict[str, Any] = {}

        def detector(tap: str, layer: int, ref: Any) -> Any:
            n = sizes[layer + 1]
            if is_twin(ref.instrument):
                return twin_port(tw.HomodyneTwin(emu, tap, layer))
            if ref.instrument not in groups:
                groups[ref.instrument] = DigitizerArrays(link(ref.instrument), clock)
            return groups[ref.instrument].port(ref.channel, n, "backward" if tap == "error" else "forward")

        pre = [HomodyneDetector(detector("pre", i, r)) for i, r in enumerate(roles.detectors.pre)]
        post = [HomodyneDetector(detector("post", i, r)) for i, r in enumerate(roles.detectors.post)]
        err_gain = 1.0 if ideal else p.error_detector_gain_v
        error = [HomodyneDetector(detector("error", i, r), HomodyneMap.unity(sizes[i + 1], err_gain))
                 for i, r in enumerate(roles.detectors.error)]

        proc = InstrumentedFreeSpaceProcessor(
            encoder=InputEncoder(enc_port, n_inputs, p.input_field_scale),
            probe=ProbeSource(probe_port, n_outputs, p.probe_field),
            weights=blocks, absorbers=absorbers, pre_taps=pre, post_taps=post, error_taps=error,
            stateful=[emu] if emu is not None else [], station=station)
        proc.set_optical_depth(a0)
        proc.error_averages, proc.error_readout = p.error_averages, p.error_readout
        if laser is not None:
            laser.on(s.operating_current)
        proc.emulator = emu          # the twin (None on hardware), for truth reports; training never touches it
        proc.wire_server = station.server
        proc.device = device
        proc.bench_name = cfg.bench  # calibration records are attached by lightloop.benches.free_space.build
        return proc
    except BaseException:
        station.close()
        raise
