"""The instrument station: what a real-instrument run needs and nothing of the twins (docs/architecture.md).

* config sections: ``instruments`` (:class:`InstrumentSpec`, limits that only narrow a driver's own),
  ``roles`` (:class:`FreeSpaceRoles`, :class:`ChipRoles`), ``emulator`` (:class:`EmulatorSettings`) and
  their validation (:func:`validate_station`);
* :class:`Link`: one reconnecting, counted, timed instrument connection;
* port adapters (``lightloop.station.adapters.<driver>``): the HAL's device ports on the QCoDeS drivers;
* :class:`Station`: connect, safe-state sequence, close; its :class:`StepMeter` counts transactions,
  instrument time and overhead per training step (attached to a processor as hooks);
* per-bench role wiring (:class:`FreeSpaceStation`).

Imports ``lightloop.hal``, ``lightloop.drivers`` and ground-floor modules only: never simulators,
training, calibration or benches (``tests/test_architecture.py`` checks it in a fresh interpreter).
"""

from __future__ import annotations

from lightloop.station._clock import BenchClock
from lightloop.station._instruments import CONNECT_TRANSACTIONS, LIMITS, InstrumentSpec, ReconnectSettings
from lightloop.station._link import Link, ReconnectPolicy, TransactionStats, is_transport_fault
from lightloop.station._meter import StepMeter
from lightloop.station._roles import ChipRoles, EmulatorSettings, FreeSpaceRoles
from lightloop.station._station import Station, make_driver
from lightloop.station._validate import validate_station
from lightloop.station.free_space import FreeSpaceStation
from lightloop.station.integrated_chip import ChipStation

__all__ = [
    "BenchClock",
    "CONNECT_TRANSACTIONS",
    "ChipRoles",
    "ChipStation",
    "EmulatorSettings",
    "FreeSpaceRoles",
    "FreeSpaceStation",
    "InstrumentSpec",
    "LIMITS",
    "Link",
    "ReconnectPolicy",
    "ReconnectSettings",
    "Station",
    "StepMeter",
    "TransactionStats",
    "is_transport_fault",
    "make_driver",
    "validate_station",
]
