"""The `instruments:` section: one instrument's spec, the limits each driver accepts, and their validation."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

from pydantic import Field, PrivateAttr

from lightloop.errors import ConfigError
from lightloop.hal.safety import Range
from lightloop.schema import StrictModel
from lightloop.units import UNITS, Seconds, expectation, parse_quantity

__all__ = ["LIMITS", "HARDWARE_INIT", "DEFAULT_RAMPS", "OWNED_PARAMETERS", "CONNECT_TRANSACTIONS", "VISA_DRIVERS",
           "ReconnectSettings", "InstrumentSpec", "Checker", "validate_instrument"]


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
    "awg": {"amplitude": ("voltage", "max", lambda i: (0.0, float(i["v_max"])))},   # full-scale IQ amplitude
    "slm": {},
    "dmd": {},
}


#: driver -> init keyword that sets a hardware range -> 'max' (a number) or 'range' ([low, high]). The
#: driver CLASS's default is the hardware range; a config value may only narrow it.
HARDWARE_INIT: dict[str, dict[str, str]] = {
    "temperature_controller": {"temperature_range": "range", "max_ramp_rate": "max"},
    "laser_controller": {"i_max": "max", "tec_range": "range"},
    "power_meter": {"max_power": "max", "wavelength_range": "range"},
    "scpi_source": {"v_max": "max", "i_max": "max"},
    "qontrol_heater": {"v_hw_max": "max", "i_hw_max": "max"},
    "digitizer": {"max_sample_rate": "max", "max_points": "max"},
    "awg": {"v_max": "max", "max_points": "max"},
}

#: software ramp (unit/s) of an output whose config gives none: conservative, never unramped. The
#: temperature controller ramps in hardware; without `ramp_rate` it is programmed at the driver's maximum.
DEFAULT_RAMPS: dict[str, dict[str, float]] = {
    "laser_controller": {"current_ramp": 0.5},    # A/s: 10 mA per 20 ms step
    "scpi_source": {"voltage_ramp": 10.0},        # V/s: 0.2 V per 20 ms step
    "qontrol_heater": {"voltage_ramp": 10.0},     # V/s
}

#: driver parameters the HAL owns (outputs, set-points, ramps, protection limits): not settable through
#: `parameters` (a config gives them as `limits`, which only narrow)
OWNED_PARAMETERS: dict[str, set[str]] = {
    "temperature_controller": {"setpoint", "temperature_limit", "ramp_rate", "ramp_enabled", "output"},
    "laser_controller": {"current", "current_limit", "output"},
    "scpi_source": {"voltage", "current_limit", "output"},
    "qontrol_heater": {"voltage", "vmax", "imax"},
    "awg": {"amplitude", "output", "trigger_source"},
}

#: limits whose range must contain the safe value 0 (outputs go to zero in the safe state)
_ZERO_SAFE = {"voltage", "current"}


VISA_DRIVERS = {"scpi_source", "laser_controller", "power_meter", "temperature_controller", "digitizer", "awg"}


_RESERVED_INIT = {"name", "address", "host", "port", "url", "library_path", "loader", "visalib", "timeout",
                  "pyvisa_sim_file", "resource", "terminator", "device_clear"}


#: transactions a driver sends while connecting (counted on every (re)connect)
CONNECT_TRANSACTIONS = {"temperature_controller": 3, "laser_controller": 3, "digitizer": 3, "scpi_source": 1,
                        "power_meter": 2, "slm": 1, "qontrol_heater": 3, "dmd": 0, "awg": 1}


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _driver_defaults(driver: str) -> dict[str, Any]:
    """Keyword defaults of a driver class's __init__ (built-in name, entry point or class path)."""
    from lightloop.drivers import driver_class

    sig = inspect.signature(driver_class(driver).__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


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
    _target: str | None = PrivateAttr(default=None)   # a foreign driver's class path ("module:Class"), else None

    @property
    def driver_target(self) -> str:
        """The class the station constructs: a foreign driver's "module:Class", else the built-in name."""
        return self._target or self.driver

    def limit(self, key: str) -> Range | None:
        """Effective limit (hardware range narrowed by the config) of one limit key, or None."""
        return self._limits.get(key)

    def hardware(self, key: str, default: Any = None) -> Any:
        """Driver init value (config `init`, checked to narrow the class default, over that default)."""
        return self._hardware.get(key, default)


class Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, loc: str, msg: str) -> None:
        raise ConfigError(f"{self.source}: {loc}: {msg}")


def _limit_range(chk: Checker, loc: str, key: str, raw: Any, dim: str, kind: str,
                 hw: tuple[float, float] | None) -> Range:
    unit = UNITS[dim][0]
    try:
        if kind == "max":
            if isinstance(raw, (list, tuple)):
                raise ValueError(f"expected one maximum ({expectation(dim)[9:]}), not a list")
            lo, hi = (hw[0] if hw else 0.0), parse_quantity(raw, dim)
        elif isinstance(raw, (list, tuple)):
            if len(raw) != 2:
                raise ValueError(f"expected [low, high] or a maximum; {expectation(dim)[9:]}")
            lo, hi = parse_quantity(raw[0], dim), parse_quantity(raw[1], dim)
        else:
            lo, hi = (hw[0] if hw else -math.inf), parse_quantity(raw, dim)
    except ValueError as exc:
        chk.fail(loc, str(exc))
    if lo > hi:
        chk.fail(loc, f"limit [{lo:g}, {hi:g}] {unit} is empty; expected low <= high")
    if kind == "max" and hi < 0:
        chk.fail(loc, f"limit {hi:g} {unit} is negative; expected a maximum >= 0")
    if dim.endswith("_rate") and not hi > 0:
        chk.fail(loc, f"ramp rate {hi:g} {unit}; expected a rate > 0 {unit} (an output cannot be left unramped)")
    cfg = Range(lo, hi, unit, key)
    if hw is not None:
        hw_range = Range(hw[0], hw[1], unit, key)
        if lo < hw_range.low - 1e-12 or hi > hw_range.high + 1e-12:
            chk.fail(loc, f"limit {cfg} widens the driver's own range {hw_range}; expected a limit inside it")
    if key in _ZERO_SAFE and not lo <= 0.0 <= hi:
        chk.fail(loc, f"limit {cfg} excludes 0 {unit}; expected a range containing the safe value 0 {unit}")
    return cfg


def _check_narrows(chk: Checker, loc: str, value: Any, default: Any, kind: str) -> None:
    """An init value setting a hardware range must lie inside the driver class's default range."""
    try:
        if kind == "range":
            lo, hi = float(value[0]), float(value[1])
            d_lo, d_hi = float(default[0]), float(default[1])
            ok = len(value) == 2 and d_lo <= lo <= hi <= d_hi
            want = f"[low, high] inside the driver's own range [{d_lo:g}, {d_hi:g}]"
        else:
            lo = hi = float(value)
            d_lo, d_hi = 0.0, float(default)
            ok = 0 < hi <= d_hi
            want = f"a value in (0, {d_hi:g}] (the driver's own maximum)"
    except (TypeError, ValueError, IndexError):
        ok, want = False, ("[low, high] numbers" if kind == "range" else "a number")
    if not ok or not (math.isfinite(lo) and math.isfinite(hi)):
        chk.fail(loc, f"{value!r} widens or breaks the driver's hardware range; expected {want} - driver ranges "
                 "come from the driver class, a config may only narrow them")


def validate_instrument(chk: Checker, name: str, spec: InstrumentSpec) -> None:
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
    if spec.driver not in DRIVER_CLASSES:   # a foreign QCoDeS class: it plays one built-in family (driver := family)
        from lightloop.drivers import resolve_driver

        try:
            ref = resolve_driver(spec.driver)
        except ConfigError as exc:
            chk.fail(f"{loc}.driver", str(exc))
        spec._target, spec.driver = ref.target, ref.family
    if not spec.address:
        chk.fail(f"{loc}.address", f"missing; expected the {spec.driver} address "
                 + {"slm": "host:port", "qontrol_heater": "pyserial URL", "dmd": "SDK library path"}.get(spec.driver, "VISA resource"))
    if spec.visalib is not None and spec.driver not in VISA_DRIVERS:
        chk.fail(f"{loc}.visalib", f"a {spec.driver} is not a VISA instrument; expected no visalib")
    defaults = _driver_defaults(spec.driver_target)
    for key in spec.init:
        if key in _RESERVED_INIT or key not in defaults:
            allowed = sorted(k for k in defaults if k not in _RESERVED_INIT)
            chk.fail(f"{loc}.init.{key}", f"not a keyword of driver {spec.driver!r}; expected one of {', '.join(allowed)}")
    hw_init = {k: v for k, v in defaults.items() if v is not inspect.Parameter.empty}
    for key, value in spec.init.items():
        if key in HARDWARE_INIT.get(spec.driver, {}):
            _check_narrows(chk, f"{loc}.init.{key}", value, hw_init.get(key), HARDWARE_INIT[spec.driver][key])
    hw_init.update(spec.init)
    spec._hardware = hw_init
    owned = OWNED_PARAMETERS.get(spec.driver, set())
    for pname in spec.parameters:
        if str(pname).split(".")[-1] in owned:
            chk.fail(f"{loc}.parameters.{pname}", "the HAL owns outputs, set-points, ramps and protection limits; "
                     f"expected them under {loc}.limits (which can only narrow the driver's range)")
    if not 0 < spec.ramp_interval <= 10:
        chk.fail(f"{loc}.ramp_interval", f"{spec.ramp_interval:g} s; expected a software ramp step interval in (0, 10] s")
    table = LIMITS[spec.driver]
    limits: dict[str, Range] = {}
    for key, raw in spec.limits.items():
        if key not in table:
            chk.fail(f"{loc}.limits.{key}", f"unknown limit for a {spec.driver}; expected one of "
                     f"{', '.join(sorted(table)) or '(none: this driver takes no limits)'}")
        dim, kind, hw_fn = table[key]
        try:
            hw = hw_fn(hw_init) if hw_fn is not None else None
        except KeyError if spec._target is not None else ():   # a foreign class declaring no hardware range
            hw = None
        except (KeyError, TypeError, ValueError, IndexError):
            chk.fail(f"{loc}.init", f"cannot read the driver's hardware range for {key!r}; expected valid init values")
        limits[key] = _limit_range(chk, f"{loc}.limits.{key}", key, raw, dim, kind, hw)
    for key, (dim, kind, hw_fn) in table.items():   # unconfigured: the driver's own range applies
        if key not in limits and hw_fn is not None:
            try:
                lo, hi = hw_fn(hw_init)
            except (KeyError, TypeError, ValueError, IndexError):   # a foreign class without that init keyword
                chk.fail(f"{loc}.limits.{key}", f"missing, and driver {spec.driver_target!r} declares no hardware "
                         f"range for it; expected limits.{key} in the config")
            limits[key] = Range(lo, hi, UNITS[dim][0], key)
        elif key not in limits and key in DEFAULT_RAMPS.get(spec.driver, {}):
            limits[key] = Range(0.0, DEFAULT_RAMPS[spec.driver][key], UNITS[dim][0], key)
    spec._limits = limits
