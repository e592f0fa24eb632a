"""ScpiSource against its pyvisa-sim model (exact command strings) and a pyvisa-py TCP socket responder."""

from __future__ import annotations

import os

import pytest

from lightloop.drivers.scpi_source import ScpiSource
from lightloop.errors import InstrumentError

from driver_testkit import *  # noqa: F401,F403  (fixtures: see driver_testkit.__all__)

ADDRESS = "GPIB::5::INSTR"
YAML = "scpi_source.yaml"


@pytest.fixture
def src(open_sim):
    return open_sim(ScpiSource, ADDRESS, YAML, timeout=0.15)


def test_identity_and_channels(src):
    assert src.idn_info["model"] == "SCPI-SOURCE-4CH"
    assert [ch.channel for ch in src.channels] == [1, 2, 3, 4]
    assert src.ch3 is src.channels[2]


def test_parameter_round_trips_with_exact_commands(src, wire_log):
    log = wire_log(src)
    src.ch1.voltage(1.25)
    src.ch2.current_limit(0.02)
    src.ch3.output(True)
    assert log.lines() == [":SOUR1:VOLT 1.25", ":SOUR2:CURR:LIM 0.02", ":OUTP3 ON"]
    log.clear()
    assert src.ch1.voltage() == 1.25
    assert src.ch2.current_limit() == 0.02
    assert src.ch3.output() is True
    assert src.ch4.output() is False
    assert src.ch1.measured_current() == pytest.approx(0.0012)
    assert src.ch1.measured_voltage() == 0.0
    assert log.lines() == [
        ":SOUR1:VOLT?",
        ":SOUR2:CURR:LIM?",
        ":OUTP3?",
        ":OUTP4?",
        ":MEAS1:CURR?",
        ":MEAS1:VOLT?",
    ]
    src.check_errors()  # the sim recognised every command


def test_batched_write_is_one_transaction(src, wire_log):
    log = wire_log(src)
    src.set_voltages([0.5, 1.5, 2.5, 3.5])
    assert log.lines() == [":SOUR:VOLT 0.5,1.5,2.5,3.5,(@1,2,3,4);*OPC?"]
    assert [ch.voltage.cache.get(get_if_invalid=False) for ch in src.channels] == [0.5, 1.5, 2.5, 3.5]
    log.clear()
    src.set_voltages([1.25, 2.0], channels=[2, 4], wait=False)
    assert log.lines() == [":SOUR:VOLT 1.25,2,(@2,4)"]
    log.clear()
    assert src.get_voltages() == [0.5, 1.5, 2.5, 3.5]
    assert src.measure_currents() == [0.001, 0.002, 0.003, 0.004]
    assert log.lines() == [":SOUR:VOLT? (@1,2,3,4)", ":MEAS:CURR? (@1,2,3,4)"]
    src.check_errors()


def test_plain_operations(src, wire_log):
    log = wire_log(src)
    src.output_on()
    src.output_off()
    src.zero_all()
    src.reset()
    src.clear_status()
    assert log.lines() == [
        ":OUTP ON,(@1,2,3,4)",
        ":OUTP OFF,(@1,2,3,4)",
        ":SOUR:VOLT 0,0,0,0,(@1,2,3,4);*OPC?",
        "*RST",
        "*CLS",
    ]
    assert src.ch2.output.cache.get(get_if_invalid=False) is False
    src.check_errors()


def test_validators_reject_before_anything_is_written(src, wire_log):
    log = wire_log(src)
    for param, value in [
        (src.ch1.voltage, 20.5),
        (src.ch1.voltage, -21),
        (src.ch1.voltage, float("nan")),
        (src.ch2.current_limit, 0.2),
        (src.ch2.current_limit, -0.001),
        (src.ch3.output, "maybe"),
    ]:
        with pytest.raises((ValueError, TypeError)):
            param(value)
    with pytest.raises(ValueError, match="ch3"):
        src.set_voltages([0, 0, 25, 0])
    with pytest.raises(ValueError, match="channel 5"):
        src.set_voltages([0], channels=[5])
    with pytest.raises(ValueError):
        src.set_voltages([0, 0])
    assert log.raw == b""


def test_instrument_side_errors_are_reported(src):
    src.write(":SOUR1:VOLT 99")  # the sim model rejects it like an instrument would
    src.write("BOGUS")
    with pytest.raises(InstrumentError, match=r'-100,"Command error" \| -100,"Command error"'):
        src.check_errors()
    src.check_errors()  # queue drained


def test_timeout_is_one_line_instrument_error(src):
    with pytest.raises(InstrumentError) as info:
        src.ask(":NOT:A:QUERY?")
    text = str(info.value)
    assert "timeout" in text and "':NOT:A:QUERY?'" in text and "\n" not in text


def test_garbage_reply_is_instrument_error(src, monkeypatch):
    monkeypatch.setattr(src.visa_handle, "query", lambda cmd: "banana")
    with pytest.raises(InstrumentError) as info:
        src.ch1.voltage()
    assert "replied 'banana' to ':SOUR1:VOLT?'; expected a number" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(InstrumentError, match="4 comma-separated numbers"):
        src.get_voltages()


@pytest.mark.filterwarnings("ignore:read string doesn't end with termination characters")
def test_wrong_address_is_instrument_error_and_frees_the_name(unique_name):
    name = unique_name("src")
    with pytest.raises(InstrumentError) as info:  # nothing answers *IDN? there
        ScpiSource(name, "GPIB::9::INSTR", pyvisa_sim_file=f"lightloop.drivers.sim:{YAML}", timeout=0.2)
    assert name in str(info.value) and "*IDN?" in str(info.value) and "\n" not in str(info.value)
    # the name is free again
    inst = ScpiSource(name, ADDRESS, pyvisa_sim_file=f"lightloop.drivers.sim:{YAML}")
    inst.close()


def test_unreachable_socket_is_instrument_error(unique_name):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"TCPIP::127.0.0.1::{port}::SOCKET"
    with pytest.raises(InstrumentError, match="cannot open VISA resource") as info:
        ScpiSource(unique_name("src"), address, visalib="@py", timeout=0.15)
    assert "\n" not in str(info.value)


class FakeScpiSource:
    """Minimal line responder speaking the ScpiSource grammar (for pyvisa-py over TCP)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.drop = False

    def handle(self, line: str) -> str | None:
        if self.drop:
            raise ConnectionAbortedError
        if line == "*IDN?":
            return "ACME,SRC-TCP,42,2.1"
        if line.endswith(";*OPC?"):
            return "1"
        if line.endswith("?"):
            return self.values.get(line[:-1], "0")
        key, _, value = line.partition(" ")
        self.values[key] = value
        return None


@pytest.fixture
def tcp_src(tcp_responder, line_session, unique_name):
    fake = FakeScpiSource()
    server = tcp_responder(line_session(fake.handle))
    inst = ScpiSource(
        unique_name("src_tcp"), f"TCPIP::127.0.0.1::{server.port}::SOCKET", visalib="@py", timeout=1.0
    )
    server.received.clear()
    yield inst, fake, server
    inst.close()


def test_pyvisa_py_socket_bytes_on_the_wire(tcp_src):
    inst, fake, server = tcp_src
    inst.ch2.voltage(3.3)
    assert inst.ch2.voltage() == 3.3
    inst.set_voltages([1, 2, 3, 4])
    assert bytes(server.received) == (
        b":SOUR2:VOLT 3.3\n:SOUR2:VOLT?\n:SOUR:VOLT 1,2,3,4,(@1,2,3,4);*OPC?\n"
    )


def test_pyvisa_py_dropped_connection(tcp_src):
    inst, fake, server = tcp_src
    fake.drop = True
    inst.timeout(0.2)
    with pytest.raises(InstrumentError) as info:
        inst.ch1.voltage()
    assert "\n" not in str(info.value)


HW = os.environ.get("LIGHTLOOP_HW_SCPI_SOURCE")


@pytest.mark.hardware
@pytest.mark.skipif(not HW, reason="set LIGHTLOOP_HW_SCPI_SOURCE to a VISA address to run on hardware")
def test_real_hardware_read_only(unique_name):
    inst = ScpiSource(unique_name("src_hw"), HW)
    try:
        assert inst.idn_info["model"]
        inst.ch1.voltage()
        inst.check_errors()
    finally:
        inst.close()


def test_batched_write_with_read_back_is_one_transaction(unique_name):
    """Issue 11 defect 6: ``;:SOUR:VOLT? (@..)`` replaces ``;*OPC?``: the same round trip returns the set-points."""
    from lightloop.simulators.wire.scpi_source import ScpiSourceTwin
    from lightloop.simulators.wire.server import WireTwinServer

    twin = ScpiSourceTwin("src", 3)
    with WireTwinServer([twin]) as server:
        src = ScpiSource(unique_name("src"), server.address("src"), visalib="@py", n_channels=3, device_clear=False)
        try:
            server.log.clear()
            assert src.set_voltages([1.5, -2.0], [1, 3], readback=True) == [1.5, -2.0]
            assert server.log.commands("src") == [":SOUR:VOLT 1.5,-2,(@1,3);:SOUR:VOLT? (@1,3)"]
            assert twin.volts.tolist() == [1.5, 0.0, -2.0]
        finally:
            src.close()
