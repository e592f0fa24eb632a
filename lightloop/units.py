"""Physical quantities in configs: a number in the base unit, or 'number unit' parsed by pint (any unit of the
right dimension: '150 degC', '10 K/min', '2 degC/s', '120 mA', '0.5 kohm', '25 mW/rad')."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

__all__ = ["UNITS", "BOUNDS", "parse_quantity", "expectation", "quantity", "Temperature", "TemperatureDelta", "Voltage",
           "Current", "Power", "SlopeEfficiency", "Seconds", "Resistance", "PowerPerAngle", "Angle", "Conductance",
           "Volume", "TemperatureRate", "Frequency"]


#: dimension -> (base unit as written in messages, pint base unit, examples for messages)
UNITS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "temperature": ("K", "kelvin", ("300 K", "150 degC", "20 mK")),
    "temperature_delta": ("K", "kelvin", ("0.05 K", "50 mK", "0.1 degC")),
    "temperature_rate": ("K/min", "kelvin / minute", ("10 K/min", "0.5 K/s", "2 degC/min")),
    "voltage": ("V", "volt", ("5 V", "200 mV")),
    "voltage_rate": ("V/s", "volt / second", ("10 V/s", "500 mV/s")),
    "current": ("A", "ampere", ("0.12 A", "120 mA")),
    "current_rate": ("A/s", "ampere / second", ("2 A/s", "50 mA/s")),
    "power": ("W", "watt", ("20 mW", "1 W")),
    "slope_efficiency": ("W/A", "watt / ampere", ("0.4 W/A", "0.4 mW/mA")),
    "time": ("s", "second", ("2 s", "500 ms", "1 min")),
    "resistance": ("ohm", "ohm", ("1000 ohm", "1 kohm")),
    "power_per_angle": ("W/rad", "watt / radian", ("0.008 W/rad", "25 mW/rad")),
    "angle": ("rad", "radian", ("0.3 rad", "10 deg")),
    "conductance": ("S", "siemens", ("1 S", "20 mS")),
    "volume": ("m^3", "meter ** 3", ("1.3e-17 m^3",)),
    "frequency": ("Hz", "hertz", ("100 Hz", "1 kHz")),
}


_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S.*?)?\s*$", re.ASCII)
#: a Celsius / Fahrenheit unit inside a difference or a rate means a difference of degrees
_OFFSET = re.compile(r"(?<![A-Za-z_])(degC|°C|celsius|degree_Celsius|degF|°F|fahrenheit|degree_Fahrenheit)(?![A-Za-z_])")
_DELTA_DIMS = {"temperature_delta", "temperature_rate"}


#: dimension -> (lowest, lowest allowed itself, highest, why): physically sane range in the base unit
BOUNDS: dict[str, tuple[float, bool, float, str]] = {
    "temperature": (0.0, False, 1e4, "above absolute zero"),
    "temperature_delta": (-1e4, True, 1e4, "a difference of at most 10000 K"),
    "temperature_rate": (0.0, True, 1e6, "a rate cannot be negative"),
    "voltage": (-1e5, True, 1e5, "at most 100 kV in magnitude"),
    "voltage_rate": (0.0, True, 1e9, "a rate cannot be negative"),
    "current": (-1e3, True, 1e3, "at most 1000 A in magnitude"),
    "current_rate": (0.0, True, 1e6, "a rate cannot be negative"),
    "power": (0.0, True, 1e6, "an optical power cannot be negative"),
    "slope_efficiency": (0.0, True, 1e3, "a slope efficiency cannot be negative"),
    "time": (0.0, True, 86400.0, "a duration cannot be negative; every wait is bounded by one day"),
    "resistance": (0.0, True, 1e12, "a resistance cannot be negative"),
    "power_per_angle": (0.0, True, 1e3, "a power per radian cannot be negative"),
    "angle": (-1e6, True, 1e6, "at most 1e6 rad in magnitude"),
    "conductance": (0.0, True, 1e6, "a conductance cannot be negative"),
    "volume": (0.0, True, 1e3, "a volume cannot be negative"),
    "frequency": (0.0, True, 1e15, "a frequency cannot be negative"),
}


@lru_cache(maxsize=1)
def _registry() -> Any:
    """The pint unit registry (built on the first unit string: ~0.3 s, never for plain numbers)."""
    import pint

    return pint.UnitRegistry()


def expectation(dimension: str) -> str:
    """'expected a <dimension>: a number in <base unit> or a string with a unit, e.g. ...'."""
    base, _, examples = UNITS[dimension]
    return (f"expected a {dimension.replace('_', ' ')}: a number in {base} or a string with a unit, e.g. "
            f"{', '.join(repr(e) for e in examples)}")


def _convert(number: float, unit: str, dimension: str) -> float:
    import pint

    if dimension in _DELTA_DIMS:
        unit = _OFFSET.sub(lambda m: "delta_degF" if "F" in m.group(1) or "fahr" in m.group(1) else "delta_degC", unit)
    ureg = _registry()
    try:
        q = ureg.Quantity(number, ureg.parse_units(unit.replace("^", "**")))
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError, TypeError,
            ValueError, SyntaxError) as exc:
        raise ValueError(expectation(dimension) + f" (unit {unit!r} is not a unit)") from exc
    try:
        return float(q.to(UNITS[dimension][1]).magnitude)
    except pint.errors.DimensionalityError:
        kind = next((d.replace("_", " ") for d, (_, base, _) in UNITS.items()
                     if ureg.Quantity(1, base).dimensionality == q.dimensionality), str(q.dimensionality))
        raise ValueError(expectation(dimension) + f" (unit {unit!r} is a {kind}, not a "
                         f"{dimension.replace('_', ' ')})") from None
    except pint.errors.OffsetUnitCalculusError:
        raise ValueError(expectation(dimension) + f" (unit {unit!r} mixes an offset temperature into a product)") from None


def parse_quantity(value: Any, dimension: str) -> float:
    """Number (base unit) or 'number unit' string -> float in the base unit; ValueError naming what was expected."""
    if isinstance(value, bool):
        raise ValueError(expectation(dimension))
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        m = _NUMBER.match(value)
        if not m:
            raise ValueError(expectation(dimension))
        unit = (m.group(2) or "").strip()
        v = float(m.group(1)) if not unit else _convert(float(m.group(1)), unit, dimension)
    else:
        raise ValueError(expectation(dimension))
    if not math.isfinite(v):
        raise ValueError(expectation(dimension) + f" (got {value!r}, not a finite number)")
    lo, lo_ok, hi, why = BOUNDS[dimension]
    if v < lo or (v == lo and not lo_ok) or v > hi:
        base = UNITS[dimension][0]
        raise ValueError(f"expected a {dimension.replace('_', ' ')} {'>=' if lo_ok else '>'} {lo:g} {base} and <= "
                         f"{hi:g} {base} ({why}), got {value!r}")
    return v


def quantity(dimension: str) -> Any:
    """Pydantic float type of one dimension: a number in the base unit or a 'number unit' string."""
    def convert(value: Any) -> float:
        try:
            return parse_quantity(value, dimension)
        except ValueError as exc:
            raise PydanticCustomError("unit", str(exc)) from None

    return Annotated[float, BeforeValidator(convert)]


Temperature = quantity("temperature")


TemperatureDelta = quantity("temperature_delta")


Voltage = quantity("voltage")


Current = quantity("current")


Power = quantity("power")


SlopeEfficiency = quantity("slope_efficiency")


Seconds = quantity("time")


TemperatureRate = quantity("temperature_rate")


Resistance = quantity("resistance")


PowerPerAngle = quantity("power_per_angle")


Angle = quantity("angle")


Conductance = quantity("conductance")


Volume = quantity("volume")


Frequency = quantity("frequency")
