"""Property test: random command sequences through the HAL safety layer, against the wire-level twin, never put
an out-of-limit value on the wire - checked on the server's own command log (and its limit monitor)."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightloop.station import Link, TransactionStats
from lightloop.station.adapters.laser_controller import LaserControllerDevice
from lightloop.station.adapters.qontrol_heater import QontrolHeaterDevice
from lightloop.station.adapters.scpi_source import ScpiSourceDevice
from lightloop.station.adapters.temperature_controller import TemperatureControllerDevice
from lightloop.drivers.laser_controller import LaserDiodeController
from lightloop.drivers.qontrol_heater import QontrolHeater
from lightloop.drivers.scpi_source import ScpiSource
from lightloop.drivers.temperature_controller import TemperatureController
from lightloop.errors import SafetyLimitError
from lightloop.hal.safety import LinearLaserModel, RampPolicy, Range, SafeLaser, SafeTemperatureControl, SafeVoltageBank
from lightloop.simulators.wire.laser_controller import LaserControllerTwin
from lightloop.simulators.wire.qontrol_heater import QontrolTwin
from lightloop.simulators.wire.scpi_source import ScpiSourceTwin
from lightloop.simulators.wire.temperature_controller import TemperatureControllerTwin
from lightloop.simulators.wire.server import WireTwinServer

T_LIM = (280.0, 400.0)            # K
RAMP_K_MIN = 10.0                 # K/min
I_LIM, P_LIM = 0.2, 0.05          # A, W  (with th 30 mA, 0.4 W/A: 155 mA)
I_STEP = 5.0 * 0.002              # A/s * interval
V_LIM, V_STEP = (0.0, 5.0), 250.0 * 0.002
H_LIM, H_STEP = (0.0, 9.0), 500.0 * 0.002


@pytest.fixture(scope="module")
def bench():
    twins = [
        TemperatureControllerTwin("tc", time_scale=1e5, envelope=T_LIM, max_ramp_envelope=RAMP_K_MIN),
        LaserControllerTwin("laser", 0.03, 0.4, max_current_envelope=I_LIM, max_step_envelope=I_STEP),
        ScpiSourceTwin("source", 2, envelope=V_LIM, max_step_envelope=V_STEP),
        QontrolTwin("heaters", 4, vmax=12.0, envelope=H_LIM, max_step_envelope=H_STEP),
    ]
    server = WireTwinServer(twins).start()
    stats = TransactionStats()
    visa = lambda n: f"TCPIP::127.0.0.1::{server.port(n)}::SOCKET"  # noqa: E731
    pid = os.getpid()
    links = {
        "tc": Link("tc", "temperature controller", lambda: TemperatureController(f"tc_{pid}", visa("tc"), visalib="@py"), stats).open(),
        "laser": Link("laser", "laser controller", lambda: LaserDiodeController(f"laser_{pid}", visa("laser"), visalib="@py"), stats).open(),
        "source": Link("source", "SCPI source", lambda: ScpiSource(f"src_{pid}", visa("source"), visalib="@py", n_channels=2), stats).open(),
        "heaters": Link("heaters", "Qontrol heater", lambda: QontrolHeater(
            f"heat_{pid}", f"socket://127.0.0.1:{server.port('heaters')}"), stats).open(),
    }
    nosleep = lambda s: None  # noqa: E731  (the twin clock is fast; ramps still step)
    tc_dev = TemperatureControllerDevice(links["tc"], Range(*T_LIM, "K"), RAMP_K_MIN)
    laser_dev = LaserControllerDevice(links["laser"], Range(0, I_LIM, "A"))
    src_dev = ScpiSourceDevice(links["source"])
    src_dev.enable([0, 1])
    heat_dev = QontrolHeaterDevice(links["heaters"], Range(*H_LIM, "V"))
    hal = {
        "tc": SafeTemperatureControl(tc_dev, tc_dev.limits, RAMP_K_MIN, settle_tolerance_k=0.01, settle_timeout_s=5.0,
                                     poll_s=0.001),
        "laser": SafeLaser(laser_dev, laser_dev.current_limit, LinearLaserModel(0.03, 0.4), P_LIM, RampPolicy(5.0, 0.002),
                           sleep=nosleep),
        "source": SafeVoltageBank(src_dev, Range(*V_LIM, "V"), RampPolicy(250.0, 0.002), sleep=nosleep),
        "heaters": SafeVoltageBank(heat_dev, Range(*H_LIM, "V"), RampPolicy(500.0, 0.002), sleep=nosleep),
    }
    yield server, hal, links
    for lk in links.values():
        lk.close()
    server.stop()


volts = st.floats(-3.0, 14.0) | st.just(float("nan"))
COMMANDS = st.one_of(
    st.tuples(st.just("temperature"), st.floats(250.0, 450.0) | st.just(float("nan"))),
    st.tuples(st.just("laser_on"), st.floats(-0.1, 0.4)),
    st.tuples(st.just("laser_current"), st.floats(-0.1, 0.4)),
    st.tuples(st.just("laser_off"), st.none()),
    st.tuples(st.just("source"), st.lists(volts, min_size=2, max_size=2)),
    st.tuples(st.just("heaters"), st.lists(volts, min_size=4, max_size=4)),
    st.tuples(st.just("heater_channel"), st.tuples(st.integers(0, 3), volts)),
    st.tuples(st.just("safe"), st.none()),
)
_NUM = r"([-+0-9.eE]+|nan|inf)"


def run(hal, cmd, arg):
    if cmd == "temperature":
        hal["tc"].set_temperature(arg)
    elif cmd == "laser_on":
        hal["laser"].on(arg)
    elif cmd == "laser_current":
        hal["laser"].set_current(arg)
    elif cmd == "laser_off":
        hal["laser"].off()
    elif cmd == "source":
        hal["source"].set_voltages(arg)
    elif cmd == "heaters":
        hal["heaters"].set_voltages(arg)
    elif cmd == "heater_channel":
        hal["heaters"].set_channels({arg[0]: arg[1]})
    else:
        for key in ("laser", "tc", "source", "heaters"):
            hal[key].safe_state()


def wire_values(server, instrument, pattern):
    out = []
    for line in server.log.commands(instrument):
        for m in re.finditer(pattern, line):
            out.append(m.groups())
    return out


@settings(max_examples=int(os.environ.get("LIGHTLOOP_SAFETY_EXAMPLES", "30")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(COMMANDS, min_size=1, max_size=8))
def test_no_out_of_limit_value_reaches_the_wire(bench, commands):
    server, hal, _ = bench
    server.log.clear()
    for cmd, arg in commands:
        before = server.log.count()
        try:
            run(hal, cmd, arg)
        except SafetyLimitError:
            assert server.log.count() == before, f"{cmd}({arg}) was refused but still wrote to the wire"
    assert server.log.violations == [], server.log.violations
    for (v,) in wire_values(server, "tc", r"^SOUR:TEMP " + _NUM + "$"):
        assert T_LIM[0] <= float(v) <= T_LIM[1]
    for (v,) in wire_values(server, "tc", r"^SOUR:TEMP:RAMP:RATE " + _NUM + "$"):
        assert float(v) <= RAMP_K_MIN
    for (v,) in wire_values(server, "laser", r"^SOUR:CURR " + _NUM + "$"):
        assert 0.0 <= float(v) <= 0.03 + P_LIM / 0.4 + 1e-9
    for (vals,) in wire_values(server, "source", r"^:SOUR:VOLT ([^(]*),\("):
        assert all(V_LIM[0] <= float(x) <= V_LIM[1] for x in vals.split(",") if x)
    for _, v in wire_values(server, "heaters", r"^V(\d+)=" + _NUM + "$"):
        assert H_LIM[0] <= float(v) <= H_LIM[1]


def test_the_monitor_catches_what_bypasses_the_hal(bench):
    server, hal, links = bench
    hal["tc"].safe_state()
    hal["laser"].off()
    n = len(server.log.violations)
    links["tc"].driver.write("SOUR:TEMP 450")                # a raw command that skips every check
    links["tc"].driver.ask("*OPC?")                          # round trip: the write above was handled
    links["laser"].driver.write("SOUR:CURR 0.3")
    links["laser"].driver.ask("*OPC?")
    assert len(server.log.violations) == n + 2
    assert "set-point 450.0 K outside the configured limit" in server.log.violations[-2]
    assert "current 0.3 A above the configured limit" in server.log.violations[-1]
    server.log.violations.clear()
    links["laser"].driver.write("SOUR:CURR 0")
    hal["laser"].off()
