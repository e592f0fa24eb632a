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
"""

from __future__ import annotations

import importlib
from typing import Any

from lightloop.errors import ConfigError

__all__ = ["DRIVER_CLASSES", "driver_class"]

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


def driver_class(short_name: str) -> type[Any]:
    """Import and return the driver class registered under ``short_name`` in DRIVER_CLASSES."""
    try:
        target = DRIVER_CLASSES[short_name]
    except KeyError:
        raise ConfigError(
            f"unknown driver {short_name!r}; expected one of {', '.join(sorted(DRIVER_CLASSES))}"
        ) from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
