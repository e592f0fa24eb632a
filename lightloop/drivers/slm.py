"""Spatial light modulator as a frame sink over TCP (length-prefixed frames, ASCII header lines).

Protocol (one TCP connection; every header and every reply is an ASCII line ending ``\\n``):

================================================  ===========================================
client sends                                      server replies
================================================  ===========================================
``INFO?\\n``                                       ``OK <height> <width> <bits>\\n``
``FRAME <height> <width> <bits> <nbytes>\\n``      ``OK\\n`` once the frame is on the panel,
followed by exactly ``nbytes`` payload bytes       or ``ERR <text>\\n`` (frame rejected)
================================================  ===========================================

Payload: row-major pixels, ``height * width`` samples; 1..8 bits -> one uint8 per pixel,
9..16 bits -> one little-endian uint16 per pixel. ``nbytes = height * width * (1 or 2)``.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import numpy as np
from qcodes.instrument import Instrument
from qcodes.parameters import Parameter
from qcodes.validators import Numbers

from lightloop.drivers._base import DriverError

__all__ = ["SLMDisplay", "validate_frame"]


def validate_frame(frame: Any, height: int, width: int, bits: int, label: str = "SLM") -> np.ndarray:
    """Check shape (height, width), integer/bool dtype and 0 <= value < 2**bits; return wire-ready pixels."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{label}: frame must be a numpy array, got {type(frame).__name__}")
    if frame.shape != (height, width):
        raise ValueError(f"{label}: frame shape {frame.shape}; expected {(height, width)}")
    if frame.dtype == np.bool_:
        frame = frame.astype(np.uint8)
    if not np.issubdtype(frame.dtype, np.integer):
        raise ValueError(f"{label}: frame dtype {frame.dtype}; expected an integer dtype (gray levels)")
    if frame.size:
        lo, hi = int(frame.min()), int(frame.max())
        if lo < 0 or hi >= 2**bits:
            raise ValueError(
                f"{label}: gray levels span {lo}..{hi}; expected 0..{2**bits - 1} for {bits}-bit pixels"
            )
    wire = np.dtype(np.uint8) if bits <= 8 else np.dtype("<u2")
    return np.ascontiguousarray(frame, dtype=wire)


class SLMDisplay(Instrument):
    """Phase SLM frame sink: writes (height, width) gray-level frames of ``bit_depth`` bits over TCP."""

    family = "SLM"

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        timeout: float = 2.0,
        expected_shape: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        """Connect to the frame server at ``host:port`` (timeout in s) and read the panel geometry."""
        super().__init__(name, **kwargs)
        self.address = f"{host}:{port}"
        self._timeout = float(timeout)
        self._lock = threading.RLock()
        self._rx = bytearray()
        self._sock: socket.socket | None = None
        try:
            try:
                self._sock = socket.create_connection((host, int(port)), timeout=self._timeout)
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                raise DriverError(
                    f"{self.family} {name!r}: cannot connect to frame server {self.address!r} "
                    f"({type(exc).__name__}: {exc}); expected a listening SLM frame server"
                ) from exc
            reply = self._request(b"INFO?\n", "INFO?")
            parts = reply.split()
            if len(parts) != 4 or parts[0] != "OK" or not all(p.isdigit() for p in parts[1:]):
                raise self._garbage("INFO?", reply, "'OK <height> <width> <bits>'")
            h, w, bits = (int(p) for p in parts[1:])
            if h < 1 or w < 1 or not 1 <= bits <= 16:
                raise self._garbage("INFO?", reply, "height, width >= 1 and 1..16 bits")
            if expected_shape is not None and tuple(expected_shape) != (h, w):
                raise DriverError(
                    f"{self.family} {name!r} at {self.address!r}: panel is {h}x{w}; "
                    f"expected {expected_shape[0]}x{expected_shape[1]} (expected_shape)"
                )
            self._geometry = (h, w, bits)
        except Exception:
            self.close()
            raise

        self.height: Parameter = self.add_parameter(
            "height", unit="px", get_cmd=lambda: self._geometry[0], set_cmd=False,
            docstring="Panel height in pixels (rows).",
        )
        self.width: Parameter = self.add_parameter(
            "width", unit="px", get_cmd=lambda: self._geometry[1], set_cmd=False,
            docstring="Panel width in pixels (columns).",
        )
        self.bit_depth: Parameter = self.add_parameter(
            "bit_depth", unit="bit", get_cmd=lambda: self._geometry[2], set_cmd=False,
            docstring="Gray-level depth in bits per pixel.",
        )
        self.timeout: Parameter = self.add_parameter(
            "timeout", unit="s", get_cmd=lambda: self._timeout, set_cmd=self._set_timeout,
            vals=Numbers(0.001, 600.0), docstring="Reply timeout in seconds (per frame acknowledgement).",
        )

    def _set_timeout(self, seconds: float) -> None:
        self._timeout = float(seconds)
        if self._sock is not None:
            self._sock.settimeout(self._timeout)

    @property
    def shape(self) -> tuple[int, int]:
        """Panel shape (height, width) in pixels."""
        return self._geometry[0], self._geometry[1]

    # --- transport ----------------------------------------------------------------------------

    def _garbage(self, cmd: str, reply: str, expected: str) -> DriverError:
        return DriverError(
            f"{self.family} {self.name!r} at {self.address!r}: replied {reply!r} to {cmd!r}; expected {expected}"
        )

    def _request(self, data: bytes, label: str) -> str:
        with self._lock:
            sock = self._sock
            if sock is None:
                raise DriverError(
                    f"{self.family} {self.name!r} at {self.address!r}: link closed after an earlier fault; "
                    "expected a fresh connection (close and reconnect)"
                )
            try:
                self._rx.clear()
                sock.sendall(data)
                while b"\n" not in self._rx:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionResetError("server closed the connection")
                    self._rx.extend(chunk)
            except (TimeoutError, socket.timeout) as exc:
                self._drop_link()
                raise DriverError(
                    f"{self.family} {self.name!r} at {self.address!r}: no reply to {label!r} within "
                    f"{self._timeout:g} s (timeout); expected 'OK'"
                ) from exc
            except OSError as exc:
                self._drop_link()
                raise DriverError(
                    f"{self.family} {self.name!r} at {self.address!r}: connection failed during {label!r} "
                    f"({type(exc).__name__}: {exc}); expected 'OK'"
                ) from exc
            idx = self._rx.index(b"\n")
            line = bytes(self._rx[:idx]).decode("ascii", errors="replace").strip()
            del self._rx[: idx + 1]
            return line

    def _drop_link(self) -> None:
        """After a fault the stream position is unknown: close the socket; a new instance must reconnect."""
        self._rx.clear()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:  # pragma: no cover
                pass
            self._sock = None

    # --- operations ---------------------------------------------------------------------------

    def write_frame(self, frame: np.ndarray) -> None:
        """Display one (height, width) integer frame of gray levels 0..2**bit_depth-1; validated before sending."""
        h, w, bits = self._geometry
        pixels = validate_frame(frame, h, w, bits, f"{self.family} {self.name!r}")
        payload = pixels.tobytes()
        header = f"FRAME {h} {w} {bits} {len(payload)}"
        reply = self._request(header.encode("ascii") + b"\n" + payload, header)
        if reply == "OK":
            return
        if reply.startswith("ERR"):
            raise DriverError(
                f"{self.family} {self.name!r} at {self.address!r}: frame rejected with {reply!r}; expected 'OK'"
            )
        raise self._garbage(header, reply, "'OK' or 'ERR <text>'")

    def blank(self, level: int = 0) -> None:
        """Display a uniform frame at gray ``level`` (default 0)."""
        h, w, _ = self._geometry
        self.write_frame(np.full((h, w), int(level), dtype=np.int64))

    def get_idn(self) -> dict[str, str | None]:
        """Identity: the protocol reports only geometry, so model is '<h>x<w>@<bits>bit'."""
        h, w, bits = getattr(self, "_geometry", (0, 0, 0))
        return {"vendor": None, "model": f"{h}x{w}@{bits}bit", "serial": None, "firmware": None}

    def close(self) -> None:
        """Close the TCP connection and deregister the instrument."""
        sock = getattr(self, "_sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass
            self._sock = None
        super().close()
