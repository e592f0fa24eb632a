"""QontrolHeater against an in-test TCP responder speaking the Qontrol-style grammar (exact bytes pinned)."""

from __future__ import annotations

import os
import re
import time

import pytest
import serial

from lightloop.drivers.qontrol_heater import QontrolHeater
from lightloop.errors import InstrumentError

from driver_testkit import *  # noqa: F401,F403  (fixtures: see driver_testkit.__all__)



class FakeQontrol:
    """Reference responder: V/I/VMAX/IMAX/NCHAN/ID grammar, 0-based channels, currents in mA."""

    def __init__(self, n: int = 4, vmax: float = 6.0, imax_ma: float = 20.0, r_ohm: float = 500.0) -> None:
        self.n = n
        self.v = [0.0] * n
        self.vmax = [vmax] * n
        self.imax = [imax_ma] * n
        self.r = r_ohm
        self.lines: list[str] = []
        self.overrides: dict[str, str] = {}  # exact command -> forced reply
        self.silent: set[str] = set()  # commands that never get a reply
        self.drop_on: set[str] = set()  # commands that close the connection

    def handle(self, line: str) -> str | None:
        self.lines.append(line)
        if line in self.drop_on:
            raise ConnectionAbortedError
        if line in self.silent:
            return None
        if line in self.overrides:
            return self.overrides[line]
        if line == "ID?":
            return "Q8iv-0042"
        if line == "NCHAN?":
            return str(self.n)
        m = re.fullmatch(r"(VMAX|IMAX|V|I)(\d+)(\?|=(.*))", line)
        if not m:
            return "E01:unknown command"
        key, ch = m.group(1), int(m.group(2))
        if ch >= self.n:
            return "E02:channel out of range"
        if m.group(3) == "?":
            value = {"V": self.v, "VMAX": self.vmax, "IMAX": self.imax}.get(key)
            if key == "I":
                return f"{1e3 * self.v[ch] / self.r:.4f}"
            return f"{value[ch]:.4f}"
        if key == "I":
            return "E03:read-only"
        try:
            x = float(m.group(4))
        except ValueError:
            return "E04:bad number"
        if key == "V":
            if x > self.vmax[ch] or x < 0:
                return "E07:over vmax"
            self.v[ch] = x
        elif key == "VMAX":
            self.vmax[ch] = x
        else:
            self.imax[ch] = x
        return "OK"


@pytest.fixture(autouse=True)
def _fast_socket_close(monkeypatch):
    """pyserial's socket:// close() sleeps 0.3 s 'for quick reconnects'; skip that wait in tests only."""
    import types

    import serial.urlhandler.protocol_socket as protocol_socket

    monkeypatch.setattr(protocol_socket, "time", types.SimpleNamespace(sleep=lambda seconds: None))


@pytest.fixture
def fake(tcp_responder, line_session):
    device = FakeQontrol()
    server = tcp_responder(line_session(device.handle))
    device.url = f"socket://127.0.0.1:{server.port}"
    device.server = server
    return device


@pytest.fixture
def heater(fake, unique_name):
    inst = QontrolHeater(unique_name("heater"), fake.url, timeout=1.0)
    fake.server.received.clear()
    fake.lines.clear()
    yield inst
    inst.close()


def wire(fake) -> bytes:
    time.sleep(0.02)
    return bytes(fake.server.received)


def test_connect_reads_identity_channel_count_and_limits(fake, unique_name):
    inst = QontrolHeater(unique_name("heater"), fake.url, timeout=1.0)
    try:
        assert wire(fake) == b"ID?\nNCHAN?\nVMAX0?\nVMAX1?\nVMAX2?\nVMAX3?\n"
        assert inst.identity == "Q8iv-0042"
        assert inst.n_channels == 4
        assert len(inst.channels) == 4
        assert inst.ch2.voltage.vals.max_value == 6.0  # validator follows the device's VMAX
        assert inst.get_idn()["model"] == "Q8iv-0042"
    finally:
        inst.close()


def test_subset_of_channels(fake, unique_name):
    inst = QontrolHeater(unique_name("heater"), fake.url, n_channels=2, timeout=1.0)
    try:
        assert inst.n_channels == 2
    finally:
        inst.close()
    with pytest.raises(InstrumentError, match="asked for 9 channels"):
        QontrolHeater(unique_name("heater"), fake.url, n_channels=9, timeout=1.0)


def test_single_channel_set_and_get_exact_bytes(heater, fake):
    heater.ch3.voltage(1.25)
    assert wire(fake) == b"V3=1.2500\n"
    assert fake.v[3] == 1.25
    fake.server.received.clear()
    assert heater.ch3.voltage() == 1.25
    assert wire(fake) == b"V3?\n"


def test_current_is_reported_in_amperes(heater, fake):
    heater.ch1.voltage(5.0)
    fake.server.received.clear()
    assert heater.ch1.current() == pytest.approx(5.0 / 500.0)
    assert wire(fake) == b"I1?\n"


def test_limits_round_trip_and_narrow_the_validator(heater, fake):
    heater.ch0.vmax(3.0)
    heater.ch0.imax(0.015)
    assert wire(fake) == b"VMAX0=3.0000\nIMAX0=15.0000\n"
    assert heater.ch0.vmax() == 3.0
    assert heater.ch0.imax() == pytest.approx(0.015)
    fake.server.received.clear()
    with pytest.raises(ValueError):
        heater.ch0.voltage(3.5)
    assert wire(fake) == b""


def test_batched_write_is_one_pipelined_transaction(heater, fake):
    heater.set_voltages([0.5, 1.0, 1.5, 2.0])
    assert wire(fake) == b"V0=0.5000\nV1=1.0000\nV2=1.5000\nV3=2.0000\n"
    assert fake.v == [0.5, 1.0, 1.5, 2.0]
    assert heater.ch2.voltage.cache.get(get_if_invalid=False) == 1.5
    fake.server.received.clear()
    assert heater.get_voltages() == [0.5, 1.0, 1.5, 2.0]
    assert wire(fake) == b"V0?\nV1?\nV2?\nV3?\n"


def test_batched_write_of_a_subset(heater, fake):
    heater.set_voltages({2: 0.25, 0: 4.0})
    assert wire(fake) == b"V2=0.2500\nV0=4.0000\n"


def test_batched_currents_and_zero_all(heater, fake):
    heater.set_voltages([1.0, 2.0, 3.0, 4.0])
    fake.server.received.clear()
    assert heater.get_currents() == pytest.approx([0.002, 0.004, 0.006, 0.008])
    assert wire(fake) == b"I0?\nI1?\nI2?\nI3?\n"
    fake.server.received.clear()
    heater.zero_all()
    assert wire(fake) == b"V0=0.0000\nV1=0.0000\nV2=0.0000\nV3=0.0000\n"
    assert fake.v == [0.0] * 4


@pytest.mark.parametrize(
    "bad",
    [[0.5, 1.0, 7.0, 2.0], [0.5, -0.1, 1.0, 1.0], [float("nan"), 0, 0, 0], [1.0, 1.0]],
)
def test_batched_validation_rejects_before_any_byte(heater, fake, bad):
    with pytest.raises(ValueError):
        heater.set_voltages(bad)
    assert wire(fake) == b""


def test_validators_reject_before_write(heater, fake):
    for param, value in [
        (heater.ch0.voltage, 6.01),
        (heater.ch0.voltage, -0.5),
        (heater.ch1.vmax, 12.5),
        (heater.ch1.imax, 0.03),
    ]:
        with pytest.raises(ValueError):
            param(value)
    with pytest.raises(ValueError, match="channel 7"):
        heater.set_voltages({7: 1.0})
    assert wire(fake) == b""


def test_device_error_line_raises_one_line_instrument_error(heater, fake):
    fake.overrides["V1=2.0000"] = "E07:over vmax"
    with pytest.raises(InstrumentError) as info:
        heater.ch1.voltage(2.0)
    text = str(info.value)
    assert "\n" not in text and "E07:over vmax" in text and "V1=2.0000" in text


def test_batched_write_reports_every_rejected_channel(heater, fake):
    fake.overrides["V1=1.0000"] = "E07:over vmax"
    fake.overrides["V3=1.0000"] = "E09:interlock"
    with pytest.raises(InstrumentError, match=r"ch1 E07:over vmax, ch3 E09:interlock"):
        heater.set_voltages([1.0] * 4)
    assert fake.v[0] == 1.0 and fake.v[2] == 1.0
    # the link stays in sync after the error
    assert heater.ch0.voltage() == 1.0


def test_garbage_reply_raises_instrument_error(heater, fake):
    fake.overrides["V2?"] = "banana"
    with pytest.raises(InstrumentError, match="replied 'banana' to 'V2\\?'; expected a number"):
        heater.ch2.voltage()


def test_timeout_raises_and_link_recovers(heater, fake):
    fake.silent.add("V0?")
    heater.timeout(0.2)
    assert heater.timeout() == 0.2
    t0 = time.monotonic()
    with pytest.raises(InstrumentError, match="timeout"):
        heater.ch0.voltage()
    assert time.monotonic() - t0 < 2.0
    fake.silent.clear()
    assert heater.ch1.voltage() == 0.0


def test_dropped_connection_raises_instrument_error(heater, fake):
    fake.drop_on.add("V0?")
    heater.timeout(0.2)
    with pytest.raises(InstrumentError, match="connection failed|timeout"):
        heater.ch0.voltage()


def test_wrong_address_raises_instrument_error(unique_name):
    with socket_closed_port() as port:
        url = f"socket://127.0.0.1:{port}"
    with pytest.raises(InstrumentError) as info:
        QontrolHeater(unique_name("heater"), url, timeout=0.3)
    assert url in str(info.value) and "\n" not in str(info.value)


def test_bad_url_scheme_raises_instrument_error(unique_name):
    with pytest.raises(InstrumentError, match="cannot open serial URL"):
        QontrolHeater(unique_name("heater"), "nosuchscheme://x", timeout=0.3)


def test_loop_url_pins_the_request_bytes(unique_name):
    """loop:// echoes every request, so NCHAN? gets 'NCHAN?' back: a garbage reply, cleanly reported."""
    with pytest.raises(InstrumentError, match="replied 'NCHAN\\?' to 'NCHAN\\?'; expected an integer"):
        QontrolHeater(unique_name("heater"), "loop://", timeout=0.3)
    port = serial.serial_for_url("loop://", timeout=0.1)
    port.write(b"V0=1.0000\n")
    assert port.read(64) == b"V0=1.0000\n"
    port.close()


class socket_closed_port:
    """Context manager yielding a localhost port that nothing listens on."""

    def __enter__(self) -> int:
        import socket

        self._s = socket.socket()
        self._s.bind(("127.0.0.1", 0))
        return self._s.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self._s.close()


HW = os.environ.get("LIGHTLOOP_HW_QONTROL_HEATER")


@pytest.mark.hardware
@pytest.mark.skipif(not HW, reason="set LIGHTLOOP_HW_QONTROL_HEATER to a pyserial URL to run on hardware")
def test_real_hardware_read_only(unique_name):
    inst = QontrolHeater(unique_name("heater_hw"), HW)
    try:
        assert inst.n_channels >= 1
        voltages = inst.get_voltages()
        assert len(voltages) == inst.n_channels
    finally:
        inst.close()


def test_batched_write_with_read_back_is_one_pipelined_transaction(unique_name):
    """Issue 11 defect 6: ``V{c}=..`` then ``V{c}?`` in one write; a refused channel shows in the read-back."""
    from lightloop.simulators.wire.qontrol_heater import QontrolTwin
    from lightloop.simulators.wire.server import WireTwinServer

    twin = QontrolTwin("heat", 3, vmax=6.0)
    with WireTwinServer([twin]) as server:
        q = QontrolHeater(unique_name("heat"), server.address("heat"), timeout=1.0)
        try:
            server.log.clear()
            assert q.set_voltages({0: 1.25, 2: 2.5}, readback=True) == [1.25, 2.5]
            assert server.log.commands("heat") == ["V0=1.2500", "V2=2.5000", "V0?", "V2?"]
            twin.vmax[2] = 1.0                                        # lowered behind the driver's back
            assert q.set_voltages({2: 3.0}, readback=True) == [2.5]   # E07 is not raised: the read-back tells
        finally:
            q.close()
