"""Physical quantities in configs: a number in the base unit (K, K/min, V, V/s, A, A/s, W, W/A, s) or 'number unit'."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

__all__ = ["UNITS", "BOUNDS", "parse_quantity", "expectation", "quantity", "Temperature", "TemperatureDelta", "Voltage", "Current", "Power", "SlopeEfficiency", "Seconds"]


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


_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S.*?)?\s*$", re.ASCII)


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
}


def expectation(dimension: str) -> str:
    """'expected a <dimension>: a number in <base unit> or a string with one of the units ...'."""
    base, units = UNITS[dimension]
    return (f"expected a {dimension.replace('_', ' ')}: a number in {base} or a string with one of the units "
            f"{', '.join(units)}")


def parse_quantity(value: Any, dimension: str) -> float:
    """Number (base unit) or 'number unit' string -> float in the base unit; ValueError on a wrong unit."""
    if isinstance(value, bool):
        raise ValueError(expectation(dimension))
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        m = _NUMBER.match(value)
        if not m:
            raise ValueError(expectation(dimension))
        unit = (m.group(2) or UNITS[dimension][0]).replace(" ", "")
        conv = UNITS[dimension][1].get(unit)
        if conv is None:
            raise ValueError(expectation(dimension) + f" (unit {unit!r} is not one of them)")
        v = float(m.group(1)) * conv[0] + conv[1]
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
