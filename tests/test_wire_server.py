"""The loopback instrument server: each twin answers its real driver, binds 127.0.0.1 only, shuts down cleanly;
wrong addresses, timeouts, dropped links and garbage replies give clear errors naming the instrument; the
Link reconnects a bounded number of times."""

from __future__ import annotations

import itertools
import os
import socket
import time

import numpy as np
import pytest

from lightloop.station import Link, ReconnectPolicy, TransactionStats
from lightloop.drivers.digitizer import Digitizer
from lightloop.drivers.qontrol_heater import QontrolHeater
from lightloop.drivers.scpi_source import ScpiSource
from lightloop.drivers.slm import SLMDisplay
from lightloop.drivers.temperature_controller import TemperatureController
from lightloop.errors import InstrumentError
from lightloop.simulators.wire.digitizer import DigitizerTwin
from lightloop.simulators.wire.laser_controller import LaserControllerTwin
from lightloop.simulators.wire.qontrol_heater import QontrolTwin
from lightloop.simulators.wire.scpi_source import ScpiSourceTwin
from lightloop.simulators.wire.slm import SLMTwin
from lightloop.simulators.wire.temperature_controller import TemperatureControllerTwin
from lightloop.simulators.wire.server import WireTwinServer

from test_wire_kit import clean_wire, wire_threads  # noqa: F401  (fixture)

_n = itertools.count()


def uname(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_n)}"


@pytest.fixture
def server(clean_wire):
    frames = []
    cell = {}
    readings = {1: np.arange(12.0).reshape(4, 3) * 0.25 - 1.0, 2: np.full((4, 1), 2.5)}

    def acquire(channels, points):
        return {c: np.resize(readings.get(c, np.zeros((points, 1))), (points, readings.get(c, np.zeros((1, 1))).shape[1]))
                for c in channels}

    devices = [
        SLMTwin("slm", 4, 6, 8, frames.append),
        DigitizerTwin("scope", 2, acquire, {1: 3, 2: 1}),
        TemperatureControllerTwin("tc", on_temperature=lambda k: cell.__setitem__("T", k), time_scale=6000.0),
        LaserControllerTwin("laser", 0.01, 0.5),
        ScpiSourceTwin("source", 2, on_change=lambda c, v: cell.__setitem__(f"v{c}", v)),
        QontrolTwin("heaters", 4, resistance_ohm=500.0, vmax=6.0),
    ]
    srv = WireTwinServer(devices).start()
    srv.frames, srv.cell = frames, cell
    yield srv
    srv.stop()


def visa(srv, name):
    return f"TCPIP::127.0.0.1::{srv.port(name)}::SOCKET"


def test_binds_loopback_only_and_stops_cleanly(clean_wire):
    with pytest.raises(ValueError, match="127.0.0.1"):
        WireTwinServer([SLMTwin("x", 1, 1, 8)], host="0.0.0.0")
    srv = WireTwinServer([SLMTwin("x", 1, 1, 8)]).start()
    assert srv.running and srv._listeners["x"].sock.getsockname()[0] == "127.0.0.1"
    port = srv.port("x")
    c = socket.create_connection(("127.0.0.1", port), timeout=1)
    srv.stop()
    srv.stop()  # idempotent
    assert not srv.running and not wire_threads()
    c.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5)


def test_drivers_talk_to_their_twins(server):
    slm = SLMDisplay(uname("slm"), "127.0.0.1", server.port("slm"))
    dig = Digitizer(uname("dig"), visa(server, "scope"), visalib="@py", n_channels=2)
    tc = TemperatureController(uname("tc"), visa(server, "tc"), visalib="@py")
    src = ScpiSource(uname("src"), visa(server, "source"), visalib="@py", n_channels=2)
    heat = QontrolHeater(uname("heat"), f"socket://127.0.0.1:{server.port('heaters')}", timeout=1.0)
    try:
        assert slm.shape == (4, 6)
        frame = np.arange(24, dtype=np.uint8).reshape(4, 6)
        slm.write_frame(frame)
        np.testing.assert_array_equal(server.frames[-1], frame)

        dig.record_length(16)
        dig.digitize([1, 2])
        volts = dig.fetch(1).reshape(16, 3)
        np.testing.assert_allclose(volts[:4], np.arange(12.0).reshape(4, 3) * 0.25 - 1.0, atol=20 / 65536)
        assert dig.last_preamble[1].points == 48
        dig.data_format("int8")
        assert dig.fetch(2)[0] == pytest.approx(2.5, abs=20 / 256)

        tc.ramp_rate(10.0)   # K/min; time_scale 6000: 100 K per wall second
        tc.output(True)
        tc.setpoint(313.15)
        deadline = time.monotonic() + 3
        while tc.temperature() < 313.15 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tc.temperature() == pytest.approx(313.15) and server.cell["T"] == pytest.approx(313.15)

        src.output_on([1])
        src.set_voltages([1.5, 2.0], [1, 2])
        assert src.get_voltages() == [1.5, 2.0] and server.cell["v1"] == 1.5 and server.cell["v2"] == 0.0
        assert server.log.commands("source")[-2] == ":SOUR:VOLT 1.5,2,(@1,2);*OPC?"

        heat.set_voltages([1.0, 2.0, 0.0, 5.0])
        assert heat.get_voltages() == [1.0, 2.0, 0.0, 5.0]
        assert heat.get_currents()[1] == pytest.approx(2.0 / 500.0)
    except InstrumentError as exc:  # pragma: no cover - keep the failure readable
        raise AssertionError(str(exc)) from exc
    finally:
        for inst in (slm, dig, tc, src, heat):
            inst.close()
    assert server.log.count() > 20 and not server.errors


def test_device_refuses_values_over_its_own_limit(server):
    heat = QontrolHeater(uname("heat"), f"socket://127.0.0.1:{server.port('heaters')}", timeout=1.0)
    try:
        server.endpoints["heaters"].vmax[1] = 3.0     # lowered on the front panel after the driver connected
        with pytest.raises(InstrumentError, match="ch1 E07:over vmax"):
            heat.set_voltages({0: 1.0, 1: 5.0})
        assert heat.get_voltages()[:2] == [1.0, 0.0]
    finally:
        heat.close()


def test_wrong_address_names_the_instrument(clean_wire):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InstrumentError, match=rf"SLM 'lab_slm': cannot connect to frame server '127.0.0.1:{port}'"):
        SLMDisplay("lab_slm", "127.0.0.1", port, timeout=0.5)
    with pytest.raises(InstrumentError, match=r"temperature controller 'lab_tc': cannot open VISA resource"):
        TemperatureController("lab_tc", f"TCPIP::127.0.0.1::{port}::SOCKET", visalib="@py", timeout=0.5)


def test_timeout_drop_and_garbage_are_clear_errors(server):
    tc = TemperatureController("cell_tc", visa(server, "tc"), visalib="@py", timeout=0.3)
    slm = SLMDisplay("in_slm", "127.0.0.1", server.port("slm"), timeout=0.3)
    try:
        server.garbage("tc")
        with pytest.raises(InstrumentError) as info:
            tc.temperature()
        assert "temperature controller 'cell_tc': replied '#!garbage!#' to 'MEAS:TEMP?'; expected a number" in str(info.value)
        server.silence("tc")
        with pytest.raises(InstrumentError, match=r"'cell_tc': no reply to 'MEAS:TEMP\?' within 0.3 s \(timeout\)"):
            tc.temperature()
        server.drop("slm")
        with pytest.raises(InstrumentError, match=r"SLM 'in_slm' at '127.0.0.1:\d+': connection failed during 'FRAME"):
            slm.blank()
    finally:
        tc.close()
        slm.close()


def _slm_link(server, stats, attempts=3, sleeps=None):
    return Link("in_slm", "SLM", lambda: SLMDisplay(uname("in_slm"), "127.0.0.1", server.port("slm"), timeout=0.5),
                stats, ReconnectPolicy(attempts=attempts, backoff_s=0.01, budget=10), connect_transactions=1,
                sleep=(sleeps.append if sleeps is not None else (lambda s: None))).open()


def test_link_reconnects_after_a_drop_and_retries(server):
    stats, sleeps = TransactionStats(), []
    link = _slm_link(server, stats, sleeps=sleeps)
    link.on_connect(lambda d: None)
    try:
        server.drop("slm")
        link.run("blank", lambda d: d.blank(3))
        assert link.reconnects == 1 and stats.reconnects == 1 and sleeps == [0.01]
        np.testing.assert_array_equal(server.frames[-1], np.full((4, 6), 3))
        server.drop("slm", refuse=2)            # drop, then refuse two reconnects: third attempt succeeds
        link.run("blank", lambda d: d.blank(4))
        assert link.reconnects == 2 and sleeps == [0.01, 0.01, 0.02, 0.04]
    finally:
        link.close()


def test_link_gives_up_after_bounded_attempts_and_retries_garbage_on_the_same_link(server):
    stats, sleeps = TransactionStats(), []
    link = _slm_link(server, stats, attempts=2, sleeps=sleeps)
    try:
        server.garbage("slm")                     # one garbage ack: the frame is sent again on the same link
        link.run("blank", lambda d: d.blank(2))
        np.testing.assert_array_equal(server.frames[-1], np.full((4, 6), 2))
        assert stats.retries == 1 and link.reconnects == 0 and sleeps == []
        server.garbage("slm", count=10)           # garbage for good: bounded retries, then one line
        with pytest.raises(InstrumentError) as info:
            link.run("blank", lambda d: d.blank())
        text = str(info.value)
        assert "replied '#!garbage!#'" in text and "still bad after 3 retries; run stopped" in text and "\n" not in text
        assert stats.retries == 4 and link.reconnects == 0 and sleeps == []
        server.endpoints["slm"].faults.garbage = 0
        server.set_down("slm")
        with pytest.raises(InstrumentError) as info:
            link.run("blank", lambda d: d.blank())
        text = str(info.value)
        assert "SLM 'in_slm': blank: 2 reconnect attempt(s) failed; run stopped" in text and "\n" not in text
        assert len(sleeps) == 2
        server.set_down("slm", False)
        link.run("blank", lambda d: d.blank(5))  # back on the same port: the next call reconnects
        np.testing.assert_array_equal(server.frames[-1], np.full((4, 6), 5))
    finally:
        link.close()
