"""Wire twin of ``lightloop.drivers.digitizer``: a multichannel digitiser (SCPI; ``WAV:DATA?`` as IEEE 488.2 blocks)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.simulators.wire._scpi import Reply, ScpiDevice, _fmt, _parse_bool, ieee_block

__all__ = ["DigitizerTwin"]


class DigitizerTwin(ScpiDevice):
    """Multichannel digitiser: each CHAN is an array of detectors; one record = `points` samples per detector.

    ``DIG CHANa,CHANb`` calls ``acquire(channels, points)`` which returns volts per channel, shape
    (points, detectors) - drawn in the order the channels are listed. ``WAV:DATA?`` sends the record of
    ``WAV:SOUR`` as int8/int16 codes, row-major (sample, detector): volts = code * yinc + yorig with
    yinc = range / 2**bits and yorig = the channel offset.
    """

    idn = "lightloop,WIRE-TWIN-DIGITIZER,0,1.0"

    def __init__(self, name: str, n_channels: int,
                 acquire: Callable[[list[int], int], dict[int, NDArray[np.floating[Any]]]],
                 detectors: dict[int, int] | None = None, max_points: int = 10_000_000) -> None:
        super().__init__(name)
        self.n, self.acquire, self.max_points = int(n_channels), acquire, int(max_points)
        self.detectors = dict(detectors or {})
        self.reset()
        self.prop("WAV:BYT", set=lambda a: None if a.upper() == "LSBF" else self.error(-224, "Illegal parameter value"))
        self.prop("WAV:UNS", set=lambda a: None if not _parse_bool(a) else self.error(-224, "Illegal parameter value"))
        self.prop("ACQ:SRAT", get=lambda: _fmt(self.srate), set=lambda a: setattr(self, "srate", float(a)))
        self.prop("ACQ:POIN", get=lambda: str(self.points), set=self._set_points)
        self.prop("WAV:FORM", get=lambda: self.form, set=self._set_form)
        self.prop("TRIG:SOUR", get=lambda: self.trig, set=lambda a: setattr(self, "trig", a.upper()))
        self.prop("TRIG:LEV", get=lambda: _fmt(self.level), set=lambda a: setattr(self, "level", float(a)))
        self.prop("WAV:SOUR", get=lambda: f"CHAN{self.source}", set=self._set_source)
        self.prop("WAV:PRE", get=self._preamble)
        self.prop("WAV:DATA", get=self._data)  # type: ignore[arg-type]
        p = self.pattern
        p(r"CHAN(\d+):DISP\s+(\S+)", lambda m: self._chset(m, "disp", _parse_bool))
        p(r"CHAN(\d+):DISP\?", lambda m: "1" if self.disp[self._ch(m.group(1))] else "0")
        p(r"CHAN(\d+):RANG\s+(\S+)", lambda m: self._chset(m, "rang", float))
        p(r"CHAN(\d+):RANG\?", lambda m: _fmt(self.rang[self._ch(m.group(1))]))
        p(r"CHAN(\d+):OFFS\s+(\S+)", lambda m: self._chset(m, "offs", float))
        p(r"CHAN(\d+):OFFS\?", lambda m: _fmt(self.offs[self._ch(m.group(1))]))
        p(r"CHAN(\d+):COUP\s+(DC|AC)", lambda m: self._chset(m, "coup", str.upper))
        p(r"CHAN(\d+):COUP\?", lambda m: self.coup[self._ch(m.group(1))])
        p(r"DIG\s+(CHAN\d+(?:\s*,\s*CHAN\d+)*)", self._digitize)

    def reset(self) -> None:
        self.srate, self.points, self.form, self.trig, self.level, self.source = 1e6, 1000, "WORD", "EXT", 0.0, 1
        self.disp = [True] * self.n
        self.rang = [20.0] * self.n
        self.offs = [0.0] * self.n
        self.coup = ["DC"] * self.n
        self.records: dict[int, NDArray[np.floating[Any]]] = {}

    def reboot(self) -> None:
        """Power cycle: default settings (record length, format, ranges), no records, empty error queue."""
        self.reset()
        self.errors.clear()

    def _ch(self, text: str) -> int:
        c = int(text)
        if not 1 <= c <= self.n:
            raise ValueError(text)
        return c - 1

    def _chset(self, m: re.Match[str], attr: str, cast: Callable[[str], Any]) -> Reply:
        getattr(self, attr)[self._ch(m.group(1))] = cast(m.group(2))
        return None

    def _set_points(self, arg: str) -> None:
        n = int(float(arg))
        if not 16 <= n <= self.max_points:
            self.error(-222, "Data out of range")
            return
        self.points = n

    def _set_form(self, arg: str) -> None:
        if arg.upper() not in ("WORD", "BYTE"):
            self.error(-224, "Illegal parameter value")
            return
        self.form = arg.upper()

    def _set_source(self, arg: str) -> None:
        m = re.fullmatch(r"CHAN(\d+)", arg.strip(), re.IGNORECASE)
        if not m:
            raise ValueError(arg)
        self.source = self._ch(m.group(1)) + 1

    def _digitize(self, m: re.Match[str]) -> Reply:
        channels = [self._ch(t.strip()[4:]) + 1 for t in m.group(1).split(",")]
        self.records = {c: np.asarray(v) for c, v in self.acquire(channels, self.points).items()}
        return None

    def _bits(self) -> int:
        return 16 if self.form == "WORD" else 8

    def _scale(self, c: int) -> tuple[float, float]:
        return self.rang[c - 1] / 2.0 ** self._bits(), self.offs[c - 1]

    def _npoints(self, c: int) -> int:
        rec = self.records.get(c)
        return int(rec.size) if rec is not None else self.points * self.detectors.get(c, 1)

    def _preamble(self) -> str:
        c = self.source
        yinc, yorig = self._scale(c)
        fmt = 1 if self.form == "WORD" else 0
        return f"{fmt},0,{self._npoints(c)},1,{_fmt(1.0 / self.srate)},0,0,{_fmt(yinc)},{_fmt(yorig)},0"

    def _data(self) -> bytes:
        c = self.source
        rec = self.records.get(c)
        if rec is None:
            self.error(-230, "Data corrupt or stale")
            rec = np.zeros((self.points, self.detectors.get(c, 1)))
        yinc, yorig = self._scale(c)
        bits = self._bits()
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        codes = np.clip(np.rint((np.asarray(rec, np.float64).reshape(-1) - yorig) / yinc), lo, hi)
        dtype = "<i2" if bits == 16 else "i1"
        return ieee_block(codes.astype(dtype).tobytes())
