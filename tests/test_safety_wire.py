"""The HAL safety layer against the wire-level twin, checked on the server's own command log and its monitors.

A property test (random command sequences, shared with benchmarks/safety_property.py) and one regression
test per defect 2-6 of issue 11: zero ramps, limits widened through `init`, ramps from a cached value,
reconnects that skip the safety state, lost set-point writes.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings

from lightloop.errors import ConfigError, InstrumentError

from conftest import REPO
from test_wire_kit import wire_config

sys.path.insert(0, str(REPO / "benchmarks"))
import _safety_sequences as seq  # noqa: E402


@pytest.fixture(scope="module")
def bench():
    b = seq.make_bench("w", visa_timeout=1.0)
    yield b
    b.close()


@pytest.fixture
def fresh(bench):
    """The bench in its safe state with an empty log (pending faults of the property test are cancelled first)."""
    bench.twins["tc"].lose_setpoints = bench.twins["laser"].lose_writes = 0
    for endpoint in bench.server.endpoints.values():
        endpoint.faults = type(endpoint.faults)()      # no scripted drop, refusal, garbage or silence pending
    for key in ("laser", "tc", "source", "heaters"):
        bench.hal[key].safe_state()
    bench.server.log.clear()
    return bench


def assert_clean(b):
    report = seq.audit(b)
    assert report["out_of_limit"] == [] and report["unramped"] == [], report


@settings(max_examples=int(os.environ.get("LIGHTLOOP_SAFETY_EXAMPLES", "40")), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seq.SEQUENCES)
def test_no_unsafe_command_reaches_the_wire(bench, commands):
    bench.server.log.clear()
    for cmd, arg in commands:
        seq.run(bench, cmd, arg)
    assert_clean(bench)


def test_the_monitor_catches_what_bypasses_the_hal(fresh):
    links = fresh.links
    links["tc"].driver.write("SOUR:TEMP 450")                # a raw command that skips every check
    links["laser"].driver.write("OUTP ON")
    links["laser"].driver.write("SOUR:CURR 0.05")             # an unramped step while emitting
    links["laser"].driver.write("SOUR:CURR 0.3")
    links["laser"].driver.ask("*OPC?")                        # round trip: the writes above were handled
    links["tc"].driver.ask("*OPC?")
    report = seq.audit(fresh)
    assert any("set-point 450.0 K outside the configured limit" in v for v in report["out_of_limit"])
    assert any("current 0.3 A above the configured limit" in v for v in report["out_of_limit"])
    assert any("current step 0.0 -> 0.05 A exceeds the ramp step" in v for v in report["unramped"])
    fresh.twins["laser"].front_panel(current=0.0, output=False)
    fresh.twins["tc"].front_panel(setpoint=293.15)


# --- defect 2: a zero ramp is a config error; an unconfigured ramp is a conservative default ---------------
@pytest.mark.parametrize("instrument, key, value, unit", [("laser", "current_ramp", "0 A/s", "A/s"),
                                                          ("amplifiers", "voltage_ramp", "0 V/s", "V/s"),
                                                          ("cell1_tc", "ramp_rate", "0 K/min", "K/min")])
def test_zero_ramp_is_a_config_error(tmp_path, instrument, key, value, unit):
    def mutate(d):
        d["instruments"][instrument]["limits"][key] = value
    with pytest.raises(ConfigError) as info:
        wire_config(tmp_path, mutate)
    text = str(info.value)
    assert text.startswith(str(tmp_path / "wire.yaml")) and "\n" not in text
    assert f"instruments.{instrument}.limits.{key}: ramp rate 0 {unit}; expected a rate > 0 {unit}" in text


def test_unconfigured_ramps_ramp_the_laser_on_the_wire(tmp_path):
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.station._instruments import DEFAULT_RAMPS

    def mutate(d):
        del d["instruments"]["laser"]["limits"]["current_ramp"]
        del d["instruments"]["amplifiers"]["limits"]["voltage_ramp"]
    cfg = wire_config(tmp_path, mutate)
    assert cfg.instruments["laser"].limit("current_ramp").high == DEFAULT_RAMPS["laser_controller"]["current_ramp"]
    proc = build_processor(cfg, 64, 10, BuildOverrides(hidden=[8]))
    try:
        server = proc.station.server
        currents = [float(c.split(";")[0].split()[1]) for c in server.log.commands("laser") if c.startswith("SOUR:CURR ")]
        step = 0.5 * cfg.instruments["laser"].ramp_interval          # default 0.5 A/s x 20 ms = 10 mA
        assert max(currents) == pytest.approx(0.12) and len(currents) >= 12   # 120 mA in ramp steps, not one write
        assert all(abs(b - a) <= step * (1 + 1e-6) for a, b in zip(currents, currents[1:]))
        assert server.log.violations == []
    finally:
        proc.close()


# --- defect 4: every ramp starts from a fresh read-back ---------------------------------------------------
def test_outputs_moved_behind_the_hals_back_are_ramped_from_where_they_are(fresh):
    hal, tw, server = fresh.hal, fresh.twins, fresh.server
    hal["source"].set_channels({0: 4.5})
    tw["source"].front_panel(1, volts=0.0)                   # e.g. a reset: 4.5 V -> 0 V behind the HAL's back
    server.log.clear()
    hal["source"].set_channels({0: 4.5})                     # the old cache believed 4.5 V: one jump 0 -> 4.5 V
    writes = [c for c in server.log.commands("source") if c.startswith(":SOUR:VOLT ")]
    assert server.log.commands("source")[0].startswith(":SOUR:VOLT? ") and len(writes) == 9   # 0.5 V steps
    hal["heaters"].set_channels({2: 8.0})
    tw["heaters"].front_panel(2, 0.5)
    hal["heaters"].set_channels({2: 8.0})
    hal["laser"].on(0.1)
    tw["laser"].front_panel(current=0.02)
    hal["laser"].set_current(0.1)
    assert tw["source"].volts[0] == 4.5 and tw["heaters"].volts[2] == 8.0 and tw["laser"].current == pytest.approx(0.1)
    tw["source"].front_panel(1, volts=7.0)                   # outside our 5 V limit: never ramped through
    with pytest.raises(InstrumentError, match="not 2 numbers inside the limits"):
        hal["source"].set_channels({0: 1.0})
    assert tw["source"].volts.tolist() == [0.0, 0.0]
    assert_clean(fresh)


# --- defect 5: after a reconnect the safety state is re-established before any output command --------------
def _after(commands, marker):
    return commands[max(i for i, c in enumerate(commands) if c == marker) + 1:] if marker in commands else commands


def test_reboot_of_each_instrument_is_repaired_before_any_output_command(fresh):
    hal, tw, server = fresh.hal, fresh.twins, fresh.server
    hal["laser"].on(0.12)
    hal["tc"].set_temperature(330.0)
    hal["source"].set_voltages([2.0, 3.0])
    hal["heaters"].set_voltages([1.0, 2.0, 3.0, 4.0])
    for name in seq.NAMES:
        tw[name].reboot()
    server.disconnect("laser")                               # a reset link: the next command reconnects
    for name in ("tc", "source", "heaters"):
        server.drop(name, after=1)                           # ... or the next command is lost with the link
    server.log.clear()
    hal["laser"].set_current(0.1)
    hal["tc"].set_temperature(335.0)
    hal["source"].set_channels({0: 2.5})
    hal["heaters"].set_channels({0: 1.5})
    assert_clean(fresh)
    laser = server.log.commands("laser")
    on = laser.index("OUTP ON")
    assert "SOUR:CURR:LIM 0.2" in laser[:on] and laser[on - 1] == "SOUR:CURR 0;SOUR:CURR?"   # limit, dark turn-on
    assert tw["laser"].output and tw["laser"].current == pytest.approx(0.1) and tw["laser"].limit <= seq.I_LIM
    tc = _after(server.log.commands("tc"), "SOUR:TEMP:RAMP:STAT ON")
    assert tw["tc"].ramp_on and tw["tc"].limit <= seq.T_LIM[1] and "OUTP ON" in tc
    first_output = min(i for i, c in enumerate(server.log.commands("tc")) if c == "OUTP ON" or c.startswith("SOUR:TEMP "))
    assert first_output > server.log.commands("tc").index("SOUR:TEMP:RAMP:STAT ON")
    assert tw["tc"].output and tw["tc"].setpoint == 335.0
    assert tw["source"].outputs.all() and tw["source"].ilim.max() <= 0.005 and tw["source"].volts.tolist() == [2.5, 3.0]
    assert tw["heaters"].vmax.max() <= seq.H_LIM[1] and tw["heaters"].volts.tolist() == [1.5, 2.0, 3.0, 4.0]


# --- defect 6: set-point writes are verified; a lost write is re-sent, never waited for ---------------------
def test_lost_set_point_writes_are_noticed_retried_and_bounded(fresh):
    hal, tw, server = fresh.hal, fresh.twins, fresh.server
    hal["tc"].set_temperature(330.0)
    tw["tc"].lose_setpoints = 1                               # silently lost once
    server.log.clear()
    t0 = time.monotonic()
    hal["tc"].set_temperature(340.0)
    assert server.log.commands("tc").count("SOUR:TEMP 340;SOUR:TEMP?") == 2 and time.monotonic() - t0 < 2.0
    server.drop("tc", after=2)                                # the link drops exactly on the set-point write
    hal["tc"].set_temperature(345.0)
    assert tw["tc"].setpoint == 345.0
    tw["tc"].lose_setpoints = 99                              # the controller never takes it: bounded, then safe
    server.log.clear()
    t0 = time.monotonic()
    with pytest.raises(InstrumentError, match="read back as 345 K after 4 writes; expected the written value "
                                              r"\(heater switched off\)"):
        hal["tc"].set_temperature(350.0)
    assert time.monotonic() - t0 < 2.0 and server.log.commands("tc")[-2:] == ["OUTP OFF", "OUTP?"] and not tw["tc"].output
    assert not any(c.startswith("MEAS:TEMP?") and ";" not in c for c in server.log.commands("tc"))   # no polling
    tw["tc"].lose_setpoints = 0
    hal["laser"].on(0.05)
    tw["laser"].lose_writes = 1                               # a lost ramp step is re-planned from the read-back
    hal["laser"].set_current(0.1)
    assert tw["laser"].current == pytest.approx(0.1)
    assert_clean(fresh)
