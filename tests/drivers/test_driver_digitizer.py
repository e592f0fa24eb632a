"""Digitizer: IEEE 488.2 block parser/builder, preamble scaling, sim setup commands, binary transfer over TCP."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightloop.drivers.digitizer import (
    Digitizer,
    WaveformPreamble,
    build_ieee_block,
    codes_to_volts,
    parse_ieee_block,
    parse_preamble,
    read_ieee_block,
)
from lightloop.errors import InstrumentError

from driver_testkit import *  # noqa: F401,F403  (fixtures: see driver_testkit.__all__)

ADDRESS = "TCPIP::192.168.0.50::INSTR"
YAML = "digitizer.yaml"

# --- pure block functions -----------------------------------------------------------------------


def test_build_block_examples():
    assert build_ieee_block(b"") == b"#10"
    assert build_ieee_block(b"abc") == b"#13abc"
    assert build_ieee_block(bytes(12)) == b"#212" + bytes(12)
    assert build_ieee_block(bytes(1000)) == b"#41000" + bytes(1000)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000))
def test_block_round_trip(payload):
    block = build_ieee_block(payload)
    assert parse_ieee_block(block) == payload
    assert parse_ieee_block(block + b"\n") == payload
    assert parse_ieee_block(block + b"\r\n") == payload


def test_read_block_from_a_stream_leaves_the_rest_unread():
    data = build_ieee_block(b"\n\n#9xyz") + b"\nNEXT"
    pos = 0

    def read_exact(k: int) -> bytes:
        nonlocal pos
        chunk = data[pos : pos + k]
        pos += len(chunk)
        return chunk

    assert read_ieee_block(read_exact) == b"\n\n#9xyz"
    assert data[pos:] == b"\nNEXT"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "truncated header"),
        (b"#", "truncated header"),
        (b"13abc", "not '#'"),
        (b"#A3abc", "not 1-9"),
        (b"#03abc", "indefinite-length"),
        (b"#2x5abcde", "not 2 decimal digits"),
        (b"#25abcde", "not 2 decimal digits"),
        (b"#15abc", "truncated: got 3 of 5"),
        (b"#13abcdef", "unexpected trailing bytes"),
        (b"#13abc\n\n", "unexpected trailing bytes"),
    ],
)
def test_malformed_blocks_raise_one_line_instrument_error(data, reason):
    with pytest.raises(InstrumentError) as info:
        parse_ieee_block(data, source="scope 'dig'")
    text = str(info.value)
    assert reason in text and "scope 'dig'" in text and "\n" not in text


def test_preamble_and_scaling():
    pre = parse_preamble("1,0,4,1,1e-09,-2e-09,0,0.001,0.5,0")
    assert pre == WaveformPreamble(1, 0, 4, 1, 1e-9, -2e-9, 0.0, 1e-3, 0.5, 0.0)
    payload = np.array([-32768, -1, 0, 32767], dtype="<i2").tobytes()
    volts = codes_to_volts(payload, pre)
    np.testing.assert_allclose(volts, [-32.268, 0.499, 0.5, 33.267])
    np.testing.assert_allclose(pre.time_axis(), [-2e-9, -1e-9, 0, 1e-9])
    pre8 = parse_preamble("+0,+0,+3,+1,1e-9,0,0,0.01,0,128")
    volts8 = codes_to_volts(np.array([-128, 0, 127], dtype="i1").tobytes(), pre8)
    np.testing.assert_allclose(volts8, [-2.56, -1.28, -0.01])


@pytest.mark.parametrize(
    "text", ["", "1,0,4", "1,0,4,1,a,0,0,1,0,0", "4,0,4,1,1,0,0,1,0,0", "1,0,4,1,1,0,0,1,0,0,9"]
)
def test_bad_preamble_is_instrument_error(text):
    with pytest.raises(InstrumentError):
        parse_preamble(text)


def test_sample_count_mismatch_is_instrument_error():
    pre = parse_preamble("1,0,4,1,1e-09,0,0,0.001,0,0")
    with pytest.raises(InstrumentError, match="not a whole number"):
        codes_to_volts(b"\x00\x01\x02", pre)
    with pytest.raises(InstrumentError, match="expected 4"):
        codes_to_volts(bytes(6), pre)


# --- driver against pyvisa-sim --------------------------------------------------------------------


@pytest.fixture
def dig(open_sim):
    return open_sim(Digitizer, ADDRESS, YAML, timeout=0.15)


def test_connect_sequence(open_sim, sim_connect_log):
    dig = open_sim(Digitizer, ADDRESS, YAML)
    assert sim_connect_log.lines() == ["*IDN?", "WAV:BYT LSBF", "WAV:UNS OFF"]
    assert len(dig.channels) == 4


def test_setup_round_trips_with_exact_commands(dig, wire_log):
    log = wire_log(dig)
    dig.sample_rate(2.5e9)
    dig.record_length(2000)
    dig.data_format("int8")
    dig.trigger_source("EXT")
    dig.trigger_level(0.25)
    dig.ch2.enabled(False)
    dig.ch2.range(0.5)
    dig.ch2.offset(-0.1)
    dig.ch2.coupling("AC")
    assert log.lines() == [
        "ACQ:SRAT 2.5e+09",
        "ACQ:POIN 2000",
        "WAV:FORM BYTE",
        "TRIG:SOUR EXT",
        "TRIG:LEV 0.25",
        "CHAN2:DISP OFF",
        "CHAN2:RANG 0.5",
        "CHAN2:OFFS -0.1",
        "CHAN2:COUP AC",
    ]
    log.clear()
    assert dig.sample_rate() == 2.5e9
    assert dig.record_length() == 2000
    assert dig.data_format() == "int8"
    assert dig.trigger_source() == "EXT"
    assert dig.trigger_level() == 0.25
    assert dig.ch2.enabled() is False and dig.ch1.enabled() is True
    assert dig.ch2.range() == 0.5
    assert dig.ch2.offset() == -0.1
    assert dig.ch2.coupling() == "AC"
    assert log.lines() == [
        "ACQ:SRAT?", "ACQ:POIN?", "WAV:FORM?", "TRIG:SOUR?", "TRIG:LEV?",
        "CHAN2:DISP?", "CHAN1:DISP?", "CHAN2:RANG?", "CHAN2:OFFS?", "CHAN2:COUP?",
    ]
    dig.check_errors()


def test_acquire_through_the_sim_block(dig, wire_log):
    log = wire_log(dig)
    traces = dig.acquire([1, 3])
    assert log.lines() == [
        "DIG CHAN1,CHAN3",
        "*OPC?",
        "WAV:SOUR CHAN1",
        "WAV:PRE?",
        "WAV:DATA?",
        "WAV:SOUR CHAN3",
        "WAV:PRE?",
        "WAV:DATA?",
    ]
    assert traces.shape == (2, 4) and traces.dtype == np.float64
    np.testing.assert_allclose(traces[0], [0.501, 0.502, 0.503, 0.758])
    np.testing.assert_allclose(dig.last_preamble[3].time_axis(), [-2e-9, -1e-9, 0, 1e-9])
    dig.check_errors()


def test_validators_reject_before_anything_is_written(dig, wire_log):
    log = wire_log(dig)
    for param, value in [
        (dig.sample_rate, 1e10),
        (dig.sample_rate, 10.0),
        (dig.record_length, 8),
        (dig.record_length, 1.5),
        (dig.data_format, "float32"),
        (dig.trigger_source, "CHAN9"),
        (dig.ch1.range, 100.0),
        (dig.ch1.offset, -25.0),
        (dig.ch1.coupling, "GND"),
    ]:
        with pytest.raises((ValueError, TypeError)):
            param(value)
    with pytest.raises(ValueError, match="channel 5"):
        dig.acquire([1, 5])
    with pytest.raises(ValueError):
        dig.fetch(0)
    assert log.raw == b""


# --- real binary over a pyvisa-py TCP socket ------------------------------------------------------


class FakeScope:
    """Line responder serving int16 blocks whose bytes include 0x0A and 0xFF (binary-safe transfer)."""

    def __init__(self) -> None:
        self.source = 1
        self.corrupt = False
        self.codes = {c: np.array([-32768, 2570, -1, 0, 32767, c], dtype="<i2") for c in (1, 2, 3, 4)}

    def handle(self, line: str) -> str | None:
        if line == "*IDN?":
            return "ACME,SCOPE,7,1.0"
        if line == "*OPC?":
            return "1"
        if line.startswith("WAV:SOUR CHAN"):
            self.source = int(line[-1])
            return None
        if line == "WAV:PRE?":
            return "1,0,6,1,2e-10,0,0,1e-4,0,0"
        if line == "WAV:DATA?":
            block = build_ieee_block(self.codes[self.source].tobytes())
            if self.corrupt:
                block = block[:-3]  # short payload: the driver must time out cleanly, not hang
            return block.decode("latin-1")
        return None


@pytest.fixture
def tcp_scope(tcp_responder, line_session, unique_name):
    fake = FakeScope()
    server = tcp_responder(line_session(fake.handle))
    inst = Digitizer(unique_name("dig_tcp"), f"TCPIP::127.0.0.1::{server.port}::SOCKET", visalib="@py", timeout=1.0)
    inst.wait_complete()  # *OPC? round trip: the connect-time writes have reached the server
    server.received.clear()
    yield inst, fake, server
    inst.close()


def test_binary_block_over_tcp(tcp_scope):
    inst, fake, server = tcp_scope
    traces = inst.acquire([2, 4])
    expected = (fake.codes[2].astype(float)) * 1e-4
    np.testing.assert_allclose(traces[0], expected)
    np.testing.assert_allclose(traces[1], fake.codes[4].astype(float) * 1e-4)
    assert bytes(server.received) == (
        b"DIG CHAN2,CHAN4\n*OPC?\nWAV:SOUR CHAN2\nWAV:PRE?\nWAV:DATA?\nWAV:SOUR CHAN4\nWAV:PRE?\nWAV:DATA?\n"
    )
    assert inst.ask("*OPC?") == "1"  # the link is still in sync after the binary transfers


def test_truncated_block_over_tcp_is_instrument_error(tcp_scope):
    inst, fake, server = tcp_scope
    fake.corrupt = True
    inst.timeout(0.2)
    with pytest.raises(InstrumentError) as info:
        inst.fetch(1)
    assert "\n" not in str(info.value)


HW = os.environ.get("LIGHTLOOP_HW_DIGITIZER")


@pytest.mark.hardware
@pytest.mark.skipif(not HW, reason="set LIGHTLOOP_HW_DIGITIZER to a VISA address to run on hardware")
def test_real_hardware_single_acquisition(unique_name):
    inst = Digitizer(unique_name("dig_hw"), HW)
    try:
        traces = inst.acquire([1])
        assert traces.ndim == 2 and traces.shape[0] == 1
        inst.check_errors()
    finally:
        inst.close()
