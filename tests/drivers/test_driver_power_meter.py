"""OpticalPowerMeter against its pyvisa-sim model: exact commands, round trips, validators, errors."""

from __future__ import annotations

import os

import pytest

from lightloop.drivers.power_meter import OpticalPowerMeter
from lightloop.errors import InstrumentError

from driver_testkit import *  # noqa: F401,F403  (fixtures: see driver_testkit.__all__)

ADDRESS = "USB::0x1313::0x8078::SIM0003::INSTR"
YAML = "power_meter.yaml"


@pytest.fixture
def pm(open_sim):
    return open_sim(OpticalPowerMeter, ADDRESS, YAML, timeout=0.15)


def test_connect_sequence(open_sim, sim_connect_log):
    pm = open_sim(OpticalPowerMeter, ADDRESS, YAML)
    assert sim_connect_log.lines() == ["*IDN?", "SENS:POW:UNIT W"]
    assert pm.idn_info["model"] == "PM100-LIKE"


def test_round_trips_with_exact_commands(pm, wire_log):
    log = wire_log(pm)
    pm.wavelength(852.0)
    pm.auto_range(False)
    pm.power_range(0.002)
    pm.averaging(100)
    pm.zero()
    assert log.lines() == [
        "SENS:CORR:WAV 852",
        "SENS:POW:RANG:AUTO OFF",
        "SENS:POW:RANG 0.002",
        "SENS:AVER:COUN 100",
        "SENS:CORR:COLL:ZERO",
    ]
    log.clear()
    assert pm.wavelength() == 852.0
    assert pm.auto_range() is False
    assert pm.power_range() == 0.002
    assert pm.averaging() == 100
    assert pm.power() == pytest.approx(1.234e-3)
    assert log.lines() == [
        "SENS:CORR:WAV?", "SENS:POW:RANG:AUTO?", "SENS:POW:RANG?", "SENS:AVER:COUN?", "MEAS:POW?",
    ]
    pm.check_errors()


def test_validators_reject_before_anything_is_written(pm, wire_log):
    log = wire_log(pm)
    for param, value in [
        (pm.wavelength, 399.0),
        (pm.wavelength, 1550.0),
        (pm.power_range, 1.0),
        (pm.averaging, 0),
        (pm.averaging, 2.5),
        (pm.auto_range, "yes"),
    ]:
        with pytest.raises((ValueError, TypeError)):
            param(value)
    with pytest.raises(NotImplementedError):
        pm.power(1.0)  # read-only
    assert log.raw == b""


def test_garbage_and_timeout_are_one_line_instrument_errors(pm, monkeypatch):
    with pytest.raises(InstrumentError, match="timeout"):
        pm.ask("MEAS:TEMP?")
    monkeypatch.setattr(pm.visa_handle, "query", lambda cmd: "OVERLOAD")
    with pytest.raises(InstrumentError) as info:
        pm.power()
    assert "replied 'OVERLOAD' to 'MEAS:POW?'; expected a number" in str(info.value)
    with pytest.raises(InstrumentError, match="expected an integer"):
        pm.averaging()


HW = os.environ.get("LIGHTLOOP_HW_POWER_METER")


@pytest.mark.hardware
@pytest.mark.skipif(not HW, reason="set LIGHTLOOP_HW_POWER_METER to a VISA address to run on hardware")
def test_real_hardware_read_only(unique_name):
    inst = OpticalPowerMeter(unique_name("pm_hw"), HW)
    try:
        assert isinstance(inst.power(), float)
        inst.check_errors()
    finally:
        inst.close()
