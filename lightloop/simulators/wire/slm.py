"""Wire twin of ``lightloop.drivers.slm``: the SLM TCP frame protocol (``INFO?``, ``FRAME h w bits n`` + payload)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.simulators.wire.server import DropConnection, Endpoint, Session

__all__ = ["SLMTwin"]


class _SLMSession(Session):
    def __init__(self, device: "SLMTwin") -> None:
        self.device, self.buf = device, bytearray()
        self.pending: tuple[str, int, int, int, int] | None = None

    def feed(self, data: bytes) -> bytes:
        self.buf.extend(data)
        out = bytearray()
        dev = self.device
        while True:
            if self.pending is None:
                idx = self.buf.find(b"\n")
                if idx < 0:
                    if len(self.buf) > 4096:
                        raise DropConnection("header too long")
                    return bytes(out)
                header = bytes(self.buf[:idx]).decode("latin-1").strip()
                del self.buf[: idx + 1]
                dev.log(header)
                if header == "INFO?":
                    reply = f"OK {dev.height} {dev.width} {dev.bits}\n".encode()
                else:
                    parts = header.split()
                    try:
                        if parts[0] != "FRAME" or len(parts) != 5:
                            raise ValueError
                        h, w, bits, n = (int(p) for p in parts[1:])
                    except (ValueError, IndexError):
                        reply = b"ERR bad header\n"
                    else:
                        if n < 0 or n > 1 << 28:
                            raise DropConnection("absurd frame size")
                        self.pending = (header, h, w, bits, n)
                        continue
                filtered = dev.filter_reply(reply)
                if filtered:
                    out.extend(filtered)
            else:
                header, h, w, bits, n = self.pending
                if len(self.buf) < n:
                    return bytes(out)
                payload = bytes(self.buf[:n])
                del self.buf[:n]
                self.pending = None
                reply = dev.frame(h, w, bits, payload).encode() + b"\n"
                filtered = dev.filter_reply(reply)
                if filtered:
                    out.extend(filtered)


class SLMTwin(Endpoint):
    """SLM frame sink: (height, width) panel of `bits`-bit pixels; `on_frame(frame)` for every accepted frame."""

    transport = "slm"

    def __init__(self, name: str, height: int, width: int, bits: int,
                 on_frame: Callable[[NDArray[np.integer[Any]]], None] | None = None) -> None:
        super().__init__(name)
        self.height, self.width, self.bits, self.on_frame = int(height), int(width), int(bits), on_frame
        self.frames = 0
        self.last: NDArray[np.integer[Any]] | None = None

    def session(self) -> Session:
        return _SLMSession(self)

    def reboot(self) -> None:
        """Power cycle: the panel shows its power-on frame (every pixel at gray level 0) until a frame is sent."""
        dtype = np.dtype(np.uint8) if self.bits <= 8 else np.dtype("<u2")
        self.last = np.zeros((self.height, self.width), dtype=dtype)
        if self.on_frame is not None:
            self.on_frame(self.last)

    def frame(self, h: int, w: int, bits: int, payload: bytes) -> str:
        """Accept one frame; the reply line."""
        if (h, w, bits) != (self.height, self.width, self.bits):
            return f"ERR geometry {h}x{w}@{bits} does not match the panel {self.height}x{self.width}@{self.bits}"
        dtype = np.dtype(np.uint8) if bits <= 8 else np.dtype("<u2")
        if len(payload) != h * w * dtype.itemsize:
            return f"ERR {len(payload)} payload bytes for a {h}x{w}@{bits} frame"
        frame = np.frombuffer(payload, dtype=dtype).reshape(h, w)
        if frame.size and int(frame.max()) >= 2**bits:
            return f"ERR gray level {int(frame.max())} exceeds {bits} bits"
        self.frames += 1
        self.last = frame
        if self.on_frame is not None:
            self.on_frame(frame)
        return "OK"
