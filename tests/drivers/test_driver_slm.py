"""SLMDisplay against an in-test TCP frame server: exact header + payload bytes, validation, faults."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest

from lightloop.drivers.slm import SLMDisplay, validate_frame
from lightloop.errors import InstrumentError

from driver_testkit import *  # noqa: F401,F403  (fixtures: see driver_testkit.__all__)


class FakeSlmServer:
    """Reference frame server: INFO? -> 'OK h w bits'; FRAME h w bits nbytes + payload -> 'OK'."""

    def __init__(self, height: int = 4, width: int = 6, bits: int = 8) -> None:
        self.geometry = (height, width, bits)
        self.frames: list[np.ndarray] = []
        self.reply_override: str | None = None
        self.silent = False
        self.drop = False

    def session(self, conn: socket.socket, server) -> None:
        buf = bytearray()

        def fill(n: int) -> bool:
            while len(buf) < n:
                data = server.recv(conn)
                if not data:
                    return False
                buf.extend(data)
            return True

        while True:
            while b"\n" not in buf:
                data = server.recv(conn)
                if not data:
                    return
                buf.extend(data)
            idx = buf.index(b"\n")
            header = bytes(buf[:idx]).decode("ascii")
            del buf[: idx + 1]
            h, w, bits = self.geometry
            if header == "INFO?":
                conn.sendall(f"OK {h} {w} {bits}\n".encode())
                continue
            parts = header.split()
            if parts[0] != "FRAME" or len(parts) != 5:
                conn.sendall(b"ERR bad header\n")
                continue
            fh, fw, fbits, nbytes = (int(p) for p in parts[1:])
            if not fill(nbytes):
                return
            payload = bytes(buf[:nbytes])
            del buf[:nbytes]
            if self.drop:
                return
            dtype = np.uint8 if fbits <= 8 else np.dtype("<u2")
            self.frames.append(np.frombuffer(payload, dtype=dtype).reshape(fh, fw))
            if self.silent:
                continue
            conn.sendall(((self.reply_override or "OK") + "\n").encode())


@pytest.fixture
def server(tcp_responder):
    fake = FakeSlmServer()
    fake.tcp = tcp_responder(fake.session)
    return fake


@pytest.fixture
def slm(server, unique_name):
    inst = SLMDisplay(unique_name("slm"), "127.0.0.1", server.tcp.port, timeout=1.0)
    server.tcp.received.clear()
    yield inst
    inst.close()


def test_connect_reads_geometry(server, unique_name):
    inst = SLMDisplay(unique_name("slm"), "127.0.0.1", server.tcp.port, expected_shape=(4, 6))
    try:
        assert server.tcp.received == b"INFO?\n"
        assert inst.shape == (4, 6)
        assert (inst.height(), inst.width(), inst.bit_depth()) == (4, 6, 8)
    finally:
        inst.close()


def test_expected_shape_mismatch_is_instrument_error(server, unique_name):
    with pytest.raises(InstrumentError, match="panel is 4x6; expected 8x8"):
        SLMDisplay(unique_name("slm"), "127.0.0.1", server.tcp.port, expected_shape=(8, 8))


def test_frame_bytes_on_the_wire(slm, server):
    frame = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    slm.write_frame(frame)
    assert bytes(server.tcp.received) == b"FRAME 4 6 8 24\n" + frame.tobytes()
    np.testing.assert_array_equal(server.frames[-1], frame)
    slm.blank(7)
    np.testing.assert_array_equal(server.frames[-1], np.full((4, 6), 7))


def test_sixteen_bit_panels_use_little_endian_words(tcp_responder, unique_name):
    fake = FakeSlmServer(2, 3, 10)
    tcp = tcp_responder(fake.session)
    inst = SLMDisplay(unique_name("slm"), "127.0.0.1", tcp.port)
    try:
        tcp.received.clear()
        frame = np.array([[0, 1, 1023], [256, 512, 5]])
        inst.write_frame(frame)
        assert bytes(tcp.received) == b"FRAME 2 3 10 12\n" + frame.astype("<u2").tobytes()
        with pytest.raises(ValueError, match="0..1023"):
            inst.write_frame(np.full((2, 3), 1024))
    finally:
        inst.close()


@pytest.mark.parametrize(
    "frame, match",
    [
        (np.zeros((6, 4), dtype=np.uint8), "shape"),
        (np.zeros((4, 6), dtype=np.float32), "dtype"),
        (np.full((4, 6), 256, dtype=np.int32), "0..255"),
        (np.full((4, 6), -1, dtype=np.int32), "0..255"),
        ([[0] * 6] * 4, "numpy array"),
    ],
)
def test_validation_rejects_before_any_byte(slm, server, frame, match):
    with pytest.raises(ValueError, match=match):
        slm.write_frame(frame)
    time.sleep(0.02)
    assert server.tcp.received == b""


def test_validate_frame_accepts_bool_and_wide_ints():
    out = validate_frame(np.array([[True, False]]), 1, 2, 1)
    assert out.dtype == np.uint8 and out.tolist() == [[1, 0]]
    assert validate_frame(np.array([[255, 0]], dtype=np.int64), 1, 2, 8).dtype == np.uint8


def test_server_error_reply_is_instrument_error(slm, server):
    server.reply_override = "ERR panel over temperature"
    with pytest.raises(InstrumentError) as info:
        slm.write_frame(np.zeros((4, 6), dtype=np.uint8))
    assert "ERR panel over temperature" in str(info.value) and "\n" not in str(info.value)


def test_timeout_is_instrument_error(slm, server):
    server.silent = True
    slm.timeout(0.2)
    with pytest.raises(InstrumentError, match="timeout"):
        slm.write_frame(np.zeros((4, 6), dtype=np.uint8))
    with pytest.raises(InstrumentError, match="link closed after an earlier fault"):
        slm.blank()


def test_dropped_connection_is_instrument_error(slm, server):
    server.drop = True
    with pytest.raises(InstrumentError, match="connection failed"):
        slm.write_frame(np.zeros((4, 6), dtype=np.uint8))


def test_unreachable_server_is_instrument_error(unique_name):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InstrumentError, match=f"cannot connect to frame server '127.0.0.1:{port}'"):
        SLMDisplay(unique_name("slm"), "127.0.0.1", port, timeout=0.3)


HW = os.environ.get("LIGHTLOOP_HW_SLM")  # "host:port"


@pytest.mark.hardware
@pytest.mark.skipif(not HW, reason="set LIGHTLOOP_HW_SLM=host:port to run on hardware")
def test_real_hardware_geometry(unique_name):
    host, _, port = HW.rpartition(":")
    inst = SLMDisplay(unique_name("slm_hw"), host, int(port))
    try:
        assert inst.height() > 0 and inst.width() > 0
    finally:
        inst.close()
