"""TemperatureController against its pyvisa-sim model: exact commands, round trips, validators, errors."""

from __future__ import annotations

import os

import pytest

from lightloop.drivers.temperature_controller import TemperatureController
from lightloop.errors import InstrumentError

from driver_testkit import *  # noqa: F401,F403  (fixtures: see driver_testkit.__all__)

ADDRESS = "ASRL3::INSTR"
YAML = "temperature_controller.yaml"


@pytest.fixture
def tc(open_sim):
    return open_sim(TemperatureController, ADDRESS, YAML, timeout=0.15)


def test_connect_sequence_and_limit(open_sim, sim_connect_log):
    tc = open_sim(TemperatureController, ADDRESS, YAML)
    assert sim_connect_log.lines() == ["*IDN?", "UNIT:TEMP K", "SOUR:TEMP:LIM?"]
    assert tc.setpoint.vals.max_value == pytest.approx(423.15)


def test_round_trips_with_exact_commands(tc, wire_log):
    log = wire_log(tc)
    tc.setpoint(393.15)
    tc.ramp_rate(2.5)
    tc.ramp_enabled(True)
    tc.output(True)
    assert log.lines() == ["SOUR:TEMP 393.15", "SOUR:TEMP:RAMP:RATE 2.5", "SOUR:TEMP:RAMP:STAT ON", "OUTP ON"]
    log.clear()
    assert tc.setpoint() == 393.15
    assert tc.ramp_rate() == 2.5
    assert tc.ramp_enabled() is True
    assert tc.output() is True
    assert tc.temperature() == pytest.approx(293.4)
    assert tc.heater_power() == 0.0
    assert log.lines() == [
        "SOUR:TEMP?", "SOUR:TEMP:RAMP:RATE?", "SOUR:TEMP:RAMP:STAT?", "OUTP?", "MEAS:TEMP?", "MEAS:POW?",
    ]
    tc.output_off()
    assert tc.output() is False
    tc.check_errors()


def test_limit_narrows_the_setpoint_validator(tc, wire_log):
    log = wire_log(tc)
    tc.temperature_limit(373.15)
    assert log.lines() == ["SOUR:TEMP:LIM 373.15"]
    assert tc.temperature_limit() == 373.15
    log.clear()
    with pytest.raises(ValueError):
        tc.setpoint(380.0)
    assert log.raw == b""


def test_validators_reject_before_anything_is_written(tc, wire_log):
    log = wire_log(tc)
    for param, value in [
        (tc.setpoint, 250.0),
        (tc.setpoint, 430.0),  # above SOUR:TEMP:LIM? = 423.15 K
        (tc.temperature_limit, 500.0),
        (tc.ramp_rate, -1.0),
        (tc.ramp_rate, 25.0),
        (tc.output, "on"),
    ]:
        with pytest.raises((ValueError, TypeError)):
            param(value)
    assert log.raw == b""


def test_garbage_and_timeout_are_one_line_instrument_errors(tc, monkeypatch):
    with pytest.raises(InstrumentError, match="timeout"):
        tc.ask("SOUR:TEMP:PID?")
    monkeypatch.setattr(tc.visa_handle, "query", lambda cmd: "")
    with pytest.raises(InstrumentError) as info:
        tc.temperature()
    assert "replied '' to 'MEAS:TEMP?'; expected a number" in str(info.value)


HW = os.environ.get("LIGHTLOOP_HW_TEMPERATURE_CONTROLLER")


@pytest.mark.hardware
@pytest.mark.skipif(
    not HW, reason="set LIGHTLOOP_HW_TEMPERATURE_CONTROLLER to a VISA address to run on hardware"
)
def test_real_hardware_read_only(unique_name):
    inst = TemperatureController(unique_name("tc_hw"), HW)
    try:
        assert inst.temperature() > 0
        inst.check_errors()
    finally:
        inst.close()


def test_verified_set_point_and_state_are_one_compound_transaction_each(unique_name):
    """Issue 11 defect 6: the write carries its read-back (``SOUR:TEMP x;SOUR:TEMP?``), the state is one query."""
    from lightloop.simulators.wire.server import WireTwinServer
    from lightloop.simulators.wire.temperature_controller import TemperatureControllerTwin

    twin = TemperatureControllerTwin("tc")
    with WireTwinServer([twin]) as server:
        tc = TemperatureController(unique_name("tc"), server.address("tc"), visalib="@py", device_clear=False)
        try:
            server.log.clear()
            assert tc.set_setpoint_verified(310.5) == 310.5
            twin.lose_setpoints = 1
            assert tc.set_setpoint_verified(320.0) == 310.5          # lost: the read-back tells
            state = tc.read_state()
            assert state == {"temperature": pytest.approx(293.15), "output": False, "ramp_on": True, "ramp_rate": 5.0,
                             "setpoint": 310.5}
            assert server.log.commands("tc") == ["SOUR:TEMP 310.5;SOUR:TEMP?", "SOUR:TEMP 320;SOUR:TEMP?",
                                                 "MEAS:TEMP?;OUTP?;SOUR:TEMP:RAMP:STAT?;SOUR:TEMP:RAMP:RATE?;SOUR:TEMP?"]
            with pytest.raises(ValueError):
                tc.set_setpoint_verified(500.0)                     # validated before anything is sent
            assert len(server.log.commands("tc")) == 3
        finally:
            tc.close()
