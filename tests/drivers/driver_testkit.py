"""Shared fixtures for driver tests: wire logs for pyvisa-sim devices and a threaded TCP responder.

Deliberately NOT a conftest.py: other test modules do ``from conftest import ...`` and a second
top-level ``conftest`` module would shadow the root one. Test modules here import what they use:
``from driver_testkit import *`` (the names are listed in ``__all__``).
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from qcodes.instrument import Instrument

__all__ = [
    "TcpResponder",
    "WireLog",
    "line_session",
    "no_leaked_instruments",
    "open_sim",
    "sim_connect_log",
    "tcp_responder",
    "unique_name",
    "wire_log",
]

_counter = itertools.count()


def _unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}"


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory for QCoDeS instrument names that no other test uses."""
    return _unique_name


@pytest.fixture(autouse=True)
def no_leaked_instruments() -> Iterator[None]:
    """Every test must close the instruments it opened (QCoDeS keeps a global name registry)."""
    yield
    leaked = list(Instrument._all_instruments)
    Instrument.close_all()
    assert not leaked, f"test left instruments open: {leaked}"


class WireLog:
    """Records every byte a VISA driver sends to its pyvisa-sim device."""

    def __init__(self, instrument: Any) -> None:
        handle = instrument.visa_handle
        device = handle.visalib.sessions[handle.session].device
        self.raw = bytearray()
        original = device.write

        def spy(data: bytes) -> None:
            self.raw.extend(data)
            original(data)

        device.write = spy

    def lines(self) -> list[str]:
        """Messages sent so far, split on the ``\\n`` terminator."""
        text = self.raw.decode("ascii")
        assert text == "" or text.endswith("\n"), f"unterminated message on the wire: {text!r}"
        return text.split("\n")[:-1]

    def clear(self) -> None:
        self.raw.clear()


@pytest.fixture
def wire_log() -> Callable[[Any], WireLog]:
    return WireLog


class TcpResponder:
    """A TCP server on 127.0.0.1 (one thread, one client at a time) recording everything it receives."""

    def __init__(self, session: Callable[[socket.socket, TcpResponder], None]) -> None:
        self._session = session
        self.received = bytearray()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(4)
        self._server.settimeout(0.02)
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(0.02)
                try:
                    self._session(conn, self)
                except OSError:  # includes ConnectionAbortedError raised by a handler to drop the link
                    pass

    def recv(self, conn: socket.socket) -> bytes | None:
        """Receive some bytes (None: keep waiting, b'': client closed)."""
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            self.received.extend(data)
            return data
        return b""

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=2)


def _line_session(handler: Callable[[str], str | None]) -> Callable[[socket.socket, TcpResponder], None]:

    def session(conn: socket.socket, server: TcpResponder) -> None:
        buf = bytearray()
        while True:
            data = server.recv(conn)
            if not data:
                return
            buf.extend(data)
            while b"\n" in buf:
                idx = buf.index(b"\n")
                line = bytes(buf[:idx]).decode("ascii").rstrip("\r")
                del buf[: idx + 1]
                reply = handler(line)
                if reply is not None:
                    conn.sendall(reply.encode("latin-1") + b"\n")

    return session


@pytest.fixture
def line_session() -> Callable[..., Callable[[socket.socket, TcpResponder], None]]:
    """Factory: session for newline-terminated ASCII protocols (line -> handler -> optional reply line).

    A handler raises ConnectionAbortedError to drop the connection without replying.
    """
    return _line_session


@pytest.fixture
def tcp_responder() -> Iterator[Callable[..., TcpResponder]]:
    """Factory: ``tcp_responder(session)`` starts a TcpResponder that is stopped after the test."""
    servers: list[TcpResponder] = []

    def make(session: Callable[[socket.socket, TcpResponder], None]) -> TcpResponder:
        server = TcpResponder(session)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def open_sim(unique_name: Callable[[str], str]) -> Iterator[Callable[..., Any]]:
    """Factory: ``open_sim(DriverClass, address, "file.yaml", **kw)`` opens a driver on its pyvisa-sim model."""
    opened: list[Any] = []

    def make(cls: type, address: str, yaml_name: str, **kwargs: Any) -> Any:
        inst = cls(
            unique_name(cls.__name__),
            address,
            pyvisa_sim_file=f"lightloop.drivers.sim:{yaml_name}",
            **kwargs,
        )
        opened.append(inst)
        return inst

    yield make
    for inst in opened:
        try:
            inst.close()
        except Exception:
            pass


@pytest.fixture
def sim_connect_log(monkeypatch: pytest.MonkeyPatch) -> WireLog:
    """A WireLog fed by EVERY pyvisa-sim device from now on (to pin the connect sequence)."""
    from pyvisa_sim.devices import Device

    log = WireLog.__new__(WireLog)
    log.raw = bytearray()
    original = Device.write

    def spy(self: Any, data: bytes) -> None:
        log.raw.extend(data)
        original(self, data)

    monkeypatch.setattr(Device, "write", spy)
    return log
