"""Wire twin of ``lightloop.drivers.awg``: a multichannel IQ arbitrary-waveform generator (SCPI; binary ``SEQ:DATA``)."""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.hal.frames import IQ_CODE_MAX, decode_iq
from lightloop.simulators.wire._scpi import Reply, ScpiDevice, _fmt, _LineSession, _parse_bool
from lightloop.simulators.wire.server import DropConnection, Session

__all__ = ["AWGTwin"]

_CHLIST = r"\(@([0-9,\s]+)\)"
_BLOCK_TOKEN = "#BLOCK"


class _BlockLineSession(_LineSession):
    """Newline-framed SCPI whose lines may carry one IEEE 488.2 definite-length block (binary, may hold ``\\n``).

    The block's payload is handed to the device beside the line, in which it is replaced by ``#BLOCK``."""

    def __init__(self, device: "AWGTwin") -> None:
        super().__init__(device)
        self.awg = device

    def feed(self, data: bytes) -> bytes:
        self.buf.extend(data)
        out = bytearray()
        while True:
            nl, hash_ = self.buf.find(b"\n"), self.buf.find(b"#")
            if hash_ < 0 or (0 <= nl < hash_):                 # a plain line (or nothing complete yet)
                if nl < 0:
                    if len(self.buf) > self.max_line:
                        raise DropConnection("line too long")
                    return bytes(out)
                line, payload, end = bytes(self.buf[:nl]), None, nl + 1
            else:                                              # a block starts before the end of the line
                head = bytes(self.buf[hash_:hash_ + 2])
                if len(head) < 2:
                    return bytes(out)
                if not head[1:2].isdigit() or head[1:2] == b"0":
                    raise DropConnection("malformed block header")
                k = int(head[1:2])
                digits = bytes(self.buf[hash_ + 2:hash_ + 2 + k])
                if len(digits) < k:
                    return bytes(out)
                if not digits.isdigit():
                    raise DropConnection("malformed block length")
                length = int(digits)
                if length > self.awg.max_block_bytes:
                    raise DropConnection("block larger than the sequence memory")
                start = hash_ + 2 + k
                nl = self.buf.find(b"\n", start + length)
                if nl < 0:
                    if len(self.buf) - start - length > self.max_line:
                        raise DropConnection("line too long")
                    return bytes(out)
                payload = bytes(self.buf[start:start + length])
                line = bytes(self.buf[:hash_]) + _BLOCK_TOKEN.encode() + bytes(self.buf[start + length:nl])
                end = nl + 1
            del self.buf[:end]
            self.awg.pending_block = payload
            try:
                reply = self.awg.handle_line(line.decode("latin-1").rstrip("\r"))
            finally:
                self.awg.pending_block = None
            if reply is not None:
                filtered = self.awg.filter_reply(reply)
                if filtered is not None:
                    out.extend(filtered)


class AWGTwin(ScpiDevice):
    """IQ AWG: per channel a stored int16 (points, 2) sequence, a full-scale amplitude (V) and an output relay.

    ``on_sequence(channels, volts)`` (1-based channels, complex output volts (points, len(channels)) = (I + iQ) x
    amplitude / 32767, zero where the output is off) runs whenever what those channels emit changes (upload,
    OUTP, amplitude, reboot). Monitors -> ``server.log.violations``: an amplitude above ``envelope`` (V, the
    configured limit), an uploaded pattern whose |I + iQ| exceeds ``code_envelope`` (codes: the configured maximum
    field / full-scale field x 32767), a code -32768 (outside the symmetric DAC range; refused too). ``reboot()`` = power
    cycle (outputs off, memory cleared, amplitudes back to ``default_amplitude``, free-running trigger);
    ``front_panel(channel, amplitude, output)`` changes a channel behind the HAL's back.
    """

    idn = "lightloop,WIRE-TWIN-AWG,0,1.0"

    def __init__(self, name: str, n_channels: int = 4, v_max: float = 1.0, max_points: int = 4096,
                 default_amplitude: float = 0.5,
                 on_sequence: Callable[[list[int], NDArray[np.complex128]], None] | None = None,
                 envelope: float | None = None, code_envelope: float | None = None) -> None:
        super().__init__(name)
        self.n, self.v_max, self.max_points = int(n_channels), float(v_max), int(max_points)
        self.default_amplitude = float(default_amplitude)
        self.on_sequence, self.envelope, self.code_envelope = on_sequence, envelope, code_envelope
        self.max_block_bytes = self.max_points * self.n * 4
        self.pending_block: bytes | None = None
        self.uploads = 0
        self.reset()
        p = self.pattern
        p(r"SOUR(\d+):VOLT:AMPL\s+(\S+)", lambda m: self._set_amplitude(m.group(1), float(m.group(2))))
        p(r"SOUR(\d+):VOLT:AMPL\?", lambda m: _fmt(self.amplitude[self._ch(m.group(1))]))
        p(r"OUTP(\d+)\s+(\S+)", lambda m: self._set_outputs([self._ch(m.group(1))], _parse_bool(m.group(2))))
        p(r"OUTP(\d+)\?", lambda m: "1" if self.outputs[self._ch(m.group(1))] else "0")
        p(r"OUTP\s+(ON|OFF|1|0)\s*,\s*" + _CHLIST, lambda m: self._set_outputs(self._chs(m.group(2)),
                                                                               _parse_bool(m.group(1))))
        p(r"OUTP\?\s*" + _CHLIST, lambda m: ",".join("1" if self.outputs[c] else "0" for c in self._chs(m.group(1))))
        p(r"SEQ:LEN\?", lambda m: str(max((len(s) for s in self.memory), default=0)))
        p(r"SEQ:DATA\s*" + _CHLIST + r"\s*,\s*" + re.escape(_BLOCK_TOKEN), self._upload)
        p(r"SEQ:DATA:CRC\?\s*" + _CHLIST, lambda m: str(self.crc(self._chs(m.group(1)))))
        self.prop("TRIG:SOUR", get=lambda: self.trigger, set=self._set_trigger)

    def session(self) -> Session:
        return _BlockLineSession(self)

    # --- state ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """``*RST``: outputs off, amplitudes at the default, memory cleared, free-running trigger."""
        self.amplitude = np.full(self.n, min(self.default_amplitude, self.v_max))
        self.outputs = np.zeros(self.n, dtype=bool)
        self.memory: list[NDArray[np.int16]] = [np.zeros((0, 2), np.int16) for _ in range(self.n)]
        self.trigger = "IMM"
        self._emit(list(range(self.n)))

    def _locked(self) -> Any:
        return self.server.lock if self.server is not None else contextlib.nullcontext()

    def reboot(self) -> None:
        """Power cycle: outputs off, sequence memory cleared, amplitudes at the default, free-running trigger."""
        with self._locked():
            self.reset()
            self.errors.clear()

    def front_panel(self, channel: int, amplitude: float | None = None, output: bool | None = None) -> None:
        """Change channel `channel` (from 1) by hand (not on the wire: no monitor sees it)."""
        with self._locked():
            c = self._ch(str(channel))
            if amplitude is not None:
                self.amplitude[c] = float(amplitude)
            if output is not None:
                self.outputs[c] = bool(output)
            self._emit([c])

    def sequence(self, channels: Sequence[int]) -> NDArray[np.int16]:
        """Stored codes (points, len(channels), 2) of 1-based channels, shorter sequences padded with zeros."""
        idx = [self._ch(str(c)) for c in channels]
        points = max((len(self.memory[c]) for c in idx), default=0)
        out = np.zeros((points, len(idx), 2), np.int16)
        for k, c in enumerate(idx):
            out[: len(self.memory[c]), k] = self.memory[c]
        return out

    def output_volts(self, channels: Sequence[int]) -> NDArray[np.complex128]:
        """Complex output volts (points, len(channels)) of 1-based channels (zero where the output is off)."""
        idx = [self._ch(str(c)) for c in channels]
        volts = decode_iq(self.sequence(channels), self.amplitude[idx])
        return volts * self.outputs[idx][None, :]

    def crc(self, idx: Sequence[int]) -> int:
        """CRC-32 of the stored (points, n, 2) codes of 0-based channels idx."""
        return zlib.crc32(self.sequence([c + 1 for c in idx]).astype("<i2").tobytes()) & 0xFFFFFFFF

    # --- commands ---------------------------------------------------------------------------------------
    def _ch(self, text: str) -> int:
        c = int(text)
        if not 1 <= c <= self.n:
            raise ValueError(text)
        return c - 1

    def _chs(self, text: str) -> list[int]:
        out = [self._ch(t) for t in text.split(",") if t.strip()]
        if not out or len(set(out)) != len(out):
            raise ValueError(text)
        return out

    def _emit(self, idx: Sequence[int]) -> None:
        if self.on_sequence is not None and len(idx):
            chans = [c + 1 for c in idx]
            self.on_sequence(chans, self.output_volts(chans))

    def _check_envelope(self, idx: Sequence[int]) -> None:
        """Record an amplitude above `envelope` (V) or a stored pattern with |I + iQ| above `code_envelope`."""
        for c in idx:
            if self.envelope is not None and self.amplitude[c] > self.envelope * (1 + 1e-9) + 1e-12:
                self.violation(f"channel {c + 1} amplitude {self.amplitude[c]:g} V above the configured limit "
                               f"{self.envelope:g} V")
            if self.code_envelope is not None and len(self.memory[c]):
                peak = float(np.hypot(self.memory[c][:, 0].astype(np.float64), self.memory[c][:, 1]).max())
                if peak > self.code_envelope + 0.5:
                    self.violation(f"channel {c + 1} pattern |I + iQ| = {peak:.1f} codes above the configured limit "
                                   f"{self.code_envelope:g} codes")

    def _set_amplitude(self, ch: str, volts: float) -> Reply:
        c = self._ch(ch)
        if not (np.isfinite(volts) and 0.0 <= volts <= self.v_max):
            self.error(-222, "Data out of range")
            return None
        self.amplitude[c] = volts
        self._check_envelope([c])
        self._emit([c])
        return None

    def _set_outputs(self, idx: Sequence[int], on: bool) -> Reply:
        for c in idx:
            self.outputs[c] = on
        self._emit(list(idx))
        return None

    def _set_trigger(self, arg: str) -> None:
        if arg.upper() not in ("EXT", "IMM"):
            self.error(-224, "Illegal parameter value")
            return
        self.trigger = arg.upper()

    def _upload(self, m: re.Match[str]) -> Reply:
        idx, payload = self._chs(m.group(1)), self.pending_block
        if payload is None:
            self.error(-161, "Invalid block data")
            return None
        per_point = 4 * len(idx)
        if len(payload) % per_point or not 0 < len(payload) // per_point <= self.max_points:
            self.error(-223, "Too much data" if len(payload) // per_point > self.max_points else "Invalid block data")
            return None
        codes = np.frombuffer(payload, dtype="<i2").reshape(-1, len(idx), 2)
        if int(codes.min()) < -IQ_CODE_MAX:
            self.violation(f"code {int(codes.min())} outside the DAC's symmetric range +-{IQ_CODE_MAX}")
            self.error(-222, "Data out of range")
            return None
        for k, c in enumerate(idx):
            self.memory[c] = codes[:, k, :].astype(np.int16)
        self.uploads += 1
        self._check_envelope(idx)
        self._emit(idx)
        return None
