"""DRIVER_CLASSES resolves to driver classes; every VISA driver ships a loadable pyvisa-sim YAML."""

from __future__ import annotations

import importlib.resources
import inspect

import pytest
import yaml
from qcodes.instrument import Instrument, VisaInstrument

import lightloop.drivers as drivers
from lightloop.errors import ConfigError

from driver_testkit import *  # noqa: F401,F403  (fixtures: see driver_testkit.__all__)

VISA_DRIVERS = {"scpi_source", "laser_controller", "power_meter", "temperature_controller", "digitizer", "awg"}


@pytest.mark.parametrize("short_name", sorted(drivers.DRIVER_CLASSES))
def test_registry_entries_resolve(short_name):
    cls = drivers.driver_class(short_name)
    assert issubclass(cls, Instrument)
    assert cls.__doc__ and "\n" not in cls.__doc__.strip()
    assert drivers.DRIVER_CLASSES[short_name].startswith(f"lightloop.drivers.{short_name}:")
    hints = inspect.signature(cls.__init__).parameters
    assert "name" in hints


@pytest.mark.parametrize("short_name", sorted(VISA_DRIVERS))
def test_visa_drivers_ship_a_sim_yaml(short_name):
    assert issubclass(drivers.driver_class(short_name), VisaInstrument)
    text = (importlib.resources.files("lightloop.drivers.sim") / f"{short_name}.yaml").read_text()
    data = yaml.safe_load(text)
    assert list(data["devices"]) == [short_name]
    assert len(data["resources"]) == 1


def test_unknown_driver_is_config_error():
    with pytest.raises(ConfigError, match="unknown driver 'nope'; expected one of"):
        drivers.driver_class("nope")
