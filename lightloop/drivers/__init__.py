"""Real-instrument drivers (QCoDeS) speaking each instrument's wire protocol; no photonics, no simulation.

Driver classes (import lazily through :func:`driver_class` so that importing this package stays cheap):

- ``QontrolHeater``         (qontrol_heater)          multichannel heater driver, ASCII over a pyserial URL
- ``ScpiSource``            (scpi_source)             SCPI multichannel voltage source / SMU
- ``LaserDiodeController``  (laser_controller)        laser diode current + TEC controller, SCPI
- ``OpticalPowerMeter``     (power_meter)             optical power meter, SCPI
- ``TemperatureController`` (temperature_controller)  vapor-cell heater temperature controller, SCPI
- ``Digitizer``             (digitizer)               oscilloscope/digitiser, IEEE 488.2 binary blocks
- ``IQArbitraryWaveformGenerator`` (awg)              multichannel IQ arbitrary-waveform / DAC generator, SCPI + blocks
- ``SLMDisplay``            (slm)                     SLM frame sink over TCP
- ``DMDController``         (dmd)                     DMD through a ctypes-loaded vendor SDK

pyvisa-sim models of the VISA drivers live in ``lightloop.drivers.sim`` (use
``pyvisa_sim_file="lightloop.drivers.sim:<module>.yaml"``).

Foreign drivers (a lab's own QCoDeS ``Instrument`` classes): a config's ``driver:`` may also be a class path
(``"package.module:Class"`` or ``"package.module.Class"``) or a name another package registers in the entry-point
group ``lightloop.drivers``. The class plays the role of one built-in *family* (the adapter and safe-state
sequence of that family drive it): its ``lightloop_family`` class attribute names the family, or it subclasses a
built-in driver class. :data:`ROLE_CONTRACT` lists what each family's adapter calls (docs/add_an_instrument.md).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from lightloop.errors import ConfigError

__all__ = ["DRIVER_CLASSES", "ROLE_CONTRACT", "DriverRef", "driver_class", "resolve_driver", "missing_contract"]

#: short name (as used in lab configs) -> "module:Class"
DRIVER_CLASSES: dict[str, str] = {
    "qontrol_heater": "lightloop.drivers.qontrol_heater:QontrolHeater",
    "scpi_source": "lightloop.drivers.scpi_source:ScpiSource",
    "laser_controller": "lightloop.drivers.laser_controller:LaserDiodeController",
    "power_meter": "lightloop.drivers.power_meter:OpticalPowerMeter",
    "temperature_controller": "lightloop.drivers.temperature_controller:TemperatureController",
    "digitizer": "lightloop.drivers.digitizer:Digitizer",
    "awg": "lightloop.drivers.awg:IQArbitraryWaveformGenerator",
    "slm": "lightloop.drivers.slm:SLMDisplay",
    "dmd": "lightloop.drivers.dmd:DMDController",
}

#: family -> what its station adapter and safe-state action use on a connected driver instance:
#: "parameters" (QCoDeS parameters, called get()/set()), "methods", "attributes" (plain values), and
#: "channel_parameters" (parameters of each entry of ``drv.channels``)
ROLE_CONTRACT: dict[str, dict[str, tuple[str, ...]]] = {
    "laser_controller": {"parameters": ("current", "current_limit", "output"), "methods": ("set_current_verified",)},
    "temperature_controller": {"parameters": ("temperature", "temperature_limit", "setpoint", "ramp_rate",
                                              "ramp_enabled", "output"),
                               "methods": ("read_state", "set_setpoint_verified")},
    "power_meter": {"parameters": ("power",)},
    "scpi_source": {"attributes": ("n_channels", "channels"), "channel_parameters": ("current_limit", "output"),
                    "methods": ("set_voltages", "get_voltages", "output_on", "output_off", "zero_all")},
    "qontrol_heater": {"attributes": ("n_channels", "channels"), "channel_parameters": ("vmax",),
                       "methods": ("set_voltages", "get_voltages", "zero_all")},
    "digitizer": {"attributes": ("n_channels", "channels"), "parameters": ("record_length",),
                  "channel_parameters": ("range",), "methods": ("digitize", "fetch")},
    "awg": {"attributes": ("n_channels", "v_max", "max_points"),
            "methods": ("set_amplitudes", "set_outputs", "get_outputs", "upload", "arm", "output_off", "zero")},
    "slm": {"attributes": ("shape",), "parameters": ("bit_depth",), "methods": ("write_frame",)},
    "dmd": {"attributes": ("shape",), "methods": ("write_frame", "stop", "blank")},
}


@dataclass(frozen=True)
class DriverRef:
    """A resolved ``driver:`` value: the built-in family it plays, the class and where it came from."""

    family: str
    cls: type[Any]
    target: str          # "module:Class"
    foreign: bool        # not one of DRIVER_CLASSES


def _import_target(target: str) -> type[Any]:
    """Import "module:Class" (or "module.Class"); one-line ConfigError when it cannot."""
    module_name, sep, class_name = target.partition(":")
    if not sep:
        module_name, _, class_name = target.rpartition(".")
    if not module_name or not class_name:
        raise ConfigError(f"driver {target!r}: not a class path; expected a built-in driver name, an entry point of "
                          "'lightloop.drivers' or 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"driver {target!r}: module {module_name!r} cannot be imported ({exc}); expected an "
                          "importable QCoDeS driver module") from None
    obj = module
    for part in class_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"driver {target!r}: module {module_name!r} has no {class_name!r}; expected a QCoDeS "
                              "Instrument class")
    return obj


def _builtin_class(short_name: str) -> type[Any]:
    module_name, _, class_name = DRIVER_CLASSES[short_name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def _family_of(cls: type[Any], where: str) -> str:
    """The built-in family a foreign class plays: its ``lightloop_family`` or the built-in class it subclasses."""
    family = getattr(cls, "lightloop_family", None)
    if family is None:
        for name in DRIVER_CLASSES:
            if issubclass(cls, _builtin_class(name)):
                return name
        raise ConfigError(f"driver {where!r}: class {cls.__name__} names no role family; expected a class attribute "
                          f"lightloop_family = one of {', '.join(sorted(DRIVER_CLASSES))} (or a subclass of a "
                          "built-in driver)")
    if family not in DRIVER_CLASSES:
        raise ConfigError(f"driver {where!r}: lightloop_family {family!r}; expected one of "
                          f"{', '.join(sorted(DRIVER_CLASSES))}")
    return str(family)


def resolve_driver(name: str) -> DriverRef:
    """Resolve a config's ``driver:``: built-in short name, entry point (lightloop.drivers) or class path."""
    if name in DRIVER_CLASSES:
        return DriverRef(name, _builtin_class(name), DRIVER_CLASSES[name], False)
    from lightloop.plugins import entry_points_of, load_entry_point

    if name in entry_points_of("lightloop.drivers"):
        cls, target = load_entry_point("lightloop.drivers", name), entry_points_of("lightloop.drivers")[name].value
    elif ":" in name or "." in name:
        cls, target = _import_target(name), name
    else:
        raise ConfigError(f"unknown driver {name!r}; expected one of {', '.join(sorted(DRIVER_CLASSES))}, an entry "
                          "point of 'lightloop.drivers' or a class path 'package.module:Class'")
    from qcodes.instrument import InstrumentBase

    if not (inspect.isclass(cls) and issubclass(cls, InstrumentBase)):
        raise ConfigError(f"driver {name!r}: {target} is not a QCoDeS Instrument class; expected a subclass of "
                          "qcodes.instrument.Instrument")
    family = _family_of(cls, name)
    missing = [m for m in ROLE_CONTRACT[family].get("methods", ()) if not callable(getattr(cls, m, None))]
    if missing:
        raise ConfigError(f"driver {name!r}: {cls.__name__} lacks method(s) {', '.join(missing)} that a "
                          f"{family} must have; expected the {family} role contract (docs/add_an_instrument.md)")
    return DriverRef(family, cls, target, True)


def driver_class(short_name: str) -> type[Any]:
    """Import and return the driver class of a ``driver:`` value (built-in name, entry point or class path)."""
    if short_name in DRIVER_CLASSES:
        return _builtin_class(short_name)
    return resolve_driver(short_name).cls


def missing_contract(family: str, drv: Any) -> list[str]:
    """What a connected driver instance lacks of its family's role contract (empty: it satisfies it)."""
    contract = ROLE_CONTRACT.get(family, {})
    params = getattr(drv, "parameters", {})
    missing = [f"parameter {p}" for p in contract.get("parameters", ()) if p not in params]
    missing += [f"method {m}()" for m in contract.get("methods", ()) if not callable(getattr(drv, m, None))]
    missing += [f"attribute {a}" for a in contract.get("attributes", ()) if not hasattr(drv, a)]
    channels = getattr(drv, "channels", None)
    wanted = contract.get("channel_parameters", ())
    if wanted and channels is not None:
        try:
            first = channels[0]
        except (IndexError, TypeError, KeyError):
            missing.append("channels[0]")
        else:
            cparams = getattr(first, "parameters", {})
            missing += [f"channel parameter {p}" for p in wanted if p not in cparams]
    return missing
