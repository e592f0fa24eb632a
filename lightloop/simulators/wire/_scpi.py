"""The SCPI line machinery the wire twins of the SCPI instruments share (private to ``simulators.wire``).

* :class:`ScpiDevice` - newline-terminated SCPI with compound commands (``a;b?``), ``*IDN?``, ``*OPC?``,
  an error queue for ``SYST:ERR?``; a property table (``NAME value`` / ``NAME?``) and regex commands.
  Subclasses: the twins in ``temperature_controller``, ``laser_controller``, ``power_meter``,
  ``scpi_source``, ``digitizer`` and (line framing only) ``qontrol_heater``.
* :func:`ieee_block` - IEEE 488.2 definite-length blocks (the digitiser's ``WAV:DATA?``).
* small helpers: :data:`Reply`, ``_fmt`` (number formatting), ``_parse_bool`` (``ON``/``OFF``/``1``/``0``).

Devices know nothing about a bench: physics reaches them through callbacks (``on_frame``,
``acquire``, ``on_change``, a cell port). Each device may carry a *safety envelope* (the configured
limits); every received value outside it is recorded with :meth:`Endpoint.violation`.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

from lightloop.simulators.wire.server import DropConnection, Endpoint, Session

__all__ = ["Reply", "ScpiDevice", "ieee_block"]

Reply = str | bytes | None


def ieee_block(payload: bytes) -> bytes:
    """IEEE 488.2 definite-length block ``#<n><len><payload>``."""
    length = str(len(payload)).encode("ascii")
    return b"#" + str(len(length)).encode("ascii") + length + payload


def _fmt(x: float) -> str:
    return repr(float(x))


def _parse_bool(text: str) -> bool:
    t = text.strip().upper()
    if t in ("ON", "1", "+1"):
        return True
    if t in ("OFF", "0", "+0"):
        return False
    raise ValueError(text)


def _split_compound(line: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in line:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == ";" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [c.strip() for c in out if c.strip()]


class _LineSession(Session):
    """Newline-framed commands; one reply line per query (compound replies joined by ';')."""

    def __init__(self, device: "ScpiDevice", max_line: int = 1 << 16) -> None:
        self.device, self.buf, self.max_line = device, bytearray(), max_line

    def feed(self, data: bytes) -> bytes:
        self.buf.extend(data)
        out = bytearray()
        while True:
            idx = self.buf.find(b"\n")
            if idx < 0:
                if len(self.buf) > self.max_line:
                    raise DropConnection("line too long")
                return bytes(out)
            raw = bytes(self.buf[:idx]).decode("latin-1").rstrip("\r")
            del self.buf[: idx + 1]
            reply = self.device.handle_line(raw)
            if reply is not None:
                filtered = self.device.filter_reply(reply)
                if filtered is not None:
                    out.extend(filtered)


class ScpiDevice(Endpoint):
    """Generic SCPI instrument: properties (``NAME value`` / ``NAME?``) and regex commands."""

    transport = "visa"
    idn = "lightloop,WIRE-TWIN,0,1.0"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        vendor, model, _, firmware = (type(self).idn.split(",") + ["", "", "", ""])[:4]
        self.idn = f"{vendor},{model},{name},{firmware}"   # serial = the instrument's name in the config
        self.errors: deque[str] = deque(maxlen=32)
        self._props: dict[str, tuple[Callable[[], str] | None, Callable[[str], None] | None]] = {}
        self._patterns: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Reply]]] = []
        self.prop("*IDN", get=lambda: self.idn)
        self.prop("*OPC", get=lambda: "1")
        self.prop("SYST:ERR", get=self._pop_error)
        for cmd in ("*RST", "*CLS"):
            self.pattern(re.escape(cmd), self._common)

    def session(self) -> Session:
        return _LineSession(self)

    # --- table ------------------------------------------------------------------------------------------
    def prop(self, name: str, get: Callable[[], str] | None = None, set: Callable[[str], None] | None = None) -> None:
        """Register ``NAME?`` (get -> reply text) and/or ``NAME <arg>`` (set(arg))."""
        self._props[name.upper()] = (get, set)

    def pattern(self, regex: str, fn: Callable[[re.Match[str]], Reply]) -> None:
        """Register a command matched (case-insensitively, whole text without a leading ':') by regex."""
        self._patterns.append((re.compile(regex, re.IGNORECASE), fn))

    def error(self, code: int, text: str) -> None:
        """Queue an SCPI error for ``SYST:ERR?``."""
        self.errors.append(f'{code},"{text}"')

    def _pop_error(self) -> str:
        return self.errors.popleft() if self.errors else '+0,"No error"'

    def _common(self, m: re.Match[str]) -> Reply:
        if m.group(0).upper() == "*CLS":
            self.errors.clear()
        else:
            self.reset()
        return None

    def reset(self) -> None:
        """``*RST``: subclasses restore defaults."""

    # --- dispatch ---------------------------------------------------------------------------------------
    def handle_line(self, line: str) -> bytes | None:
        """Handle one received line (maybe compound); the reply line or None."""
        replies: list[bytes] = []
        self.log(line)   # one record per message line (= one transaction of the client)
        for cmd in _split_compound(line):
            try:
                r = self.handle(cmd)
            except ValueError:
                self.error(-104, "Data type error")
                r = None
            if isinstance(r, str):
                replies.append(r.encode("latin-1"))
            elif isinstance(r, bytes):
                replies.append(r)
        if not replies:
            return None
        return b";".join(replies) + b"\n"

    def handle(self, cmd: str) -> Reply:
        """One simple command -> reply text/bytes or None."""
        key = cmd.strip().lstrip(":")
        head, _, arg = key.partition(" ")
        name = head.upper()
        if name.endswith("?") and not arg:
            entry = self._props.get(name[:-1])
            if entry is not None and entry[0] is not None:
                return entry[0]()
        elif arg:
            entry = self._props.get(name)
            if entry is not None and entry[1] is not None:
                entry[1](arg.strip())
                return None
        for regex, fn in self._patterns:
            m = regex.fullmatch(key)
            if m:
                return fn(m)
        self.error(-113, "Undefined header")
        return None
