"""Oscilloscope / digitiser for homodyne traces with IEEE 488.2 binary block waveform transfer (SCPI).

Wire grammar (ASCII commands terminated by ``\\n``; channels numbered from 1):

==========================================  ====================================================
command                                     reply
==========================================  ====================================================
``*IDN?`` / ``*RST`` / ``*CLS``             identity / (none) / (none)
``*OPC?``                                   ``1`` (after the last acquisition completed)
``SYST:ERR?``                               ``+0,"No error"`` or ``<code>,"<text>"``
``WAV:BYT LSBF`` / ``WAV:UNS OFF``          (none; sent once at connect: little-endian, signed)
``ACQ:SRAT <Sa/s>`` / ``ACQ:SRAT?``         sample rate
``ACQ:POIN <n>`` / ``ACQ:POIN?``            record length in samples
``WAV:FORM WORD|BYTE`` / ``WAV:FORM?``      int16 / int8 transfer
``TRIG:SOUR EXT|IMM|CHAN<n>`` / ``?``       trigger source
``TRIG:LEV <V>`` / ``TRIG:LEV?``            trigger level
``CHAN<n>:DISP ON|OFF`` / ``?``             channel enabled (``1``/``0``)
``CHAN<n>:RANG <V>`` / ``?``                full-scale vertical range
``CHAN<n>:OFFS <V>`` / ``?``                vertical offset
``CHAN<n>:COUP DC|AC`` / ``?``              input coupling
``DIG CHAN1,CHAN3``                         (none) start one acquisition on those channels
``WAV:SOUR CHAN<n>`` / ``WAV:SOUR?``        waveform transfer source
``WAV:PRE?``                                ``format,type,points,count,xinc,xorig,xref,yinc,yorig,yref``
``WAV:DATA?``                               ``#<n><len><len bytes>`` then ``\\n``
==========================================  ====================================================

Preamble (Keysight convention): format 0 = BYTE (int8), 1 = WORD (int16, byte order LSBF);
``volts = (code - yref) * yinc + yorig`` and ``t = (i - xref) * xinc + xorig``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyvisa.errors
from qcodes.instrument import ChannelList, InstrumentChannel
from qcodes.parameters import Parameter
from qcodes.validators import Bool, Enum, Ints, Numbers

from lightloop.drivers._base import DriverError, ScpiVisaInstrument, format_number

__all__ = [
    "Digitizer",
    "DigitizerChannel",
    "WaveformPreamble",
    "build_ieee_block",
    "parse_ieee_block",
    "read_ieee_block",
    "parse_preamble",
    "codes_to_volts",
]

_MAX_BLOCK = 2**31  # refuse absurd lengths from a corrupted header


def _block_error(source: str, what: str) -> DriverError:
    return DriverError(
        f"IEEE 488.2 block from {source}: {what}; expected '#<n digits><length><length bytes>'"
    )


def build_ieee_block(payload: bytes) -> bytes:
    """Wrap ``payload`` in an IEEE 488.2 definite-length block ``#<n><len><payload>`` (no terminator)."""
    length = str(len(payload)).encode("ascii")
    if len(length) > 9:
        raise ValueError(f"payload of {len(payload)} bytes is too long for a definite-length block")
    return b"#" + str(len(length)).encode("ascii") + length + bytes(payload)


def read_ieee_block(read_exact: Callable[[int], bytes], source: str = "instrument") -> bytes:
    """Read one definite-length block through ``read_exact(n) -> n bytes``; return the payload bytes."""
    head = read_exact(2)
    if len(head) < 2:
        raise _block_error(source, f"truncated header {head!r}")
    if head[:1] != b"#":
        raise _block_error(source, f"header starts with {head[:1]!r}, not '#'")
    digit = head[1:2]
    if digit == b"0":
        raise _block_error(source, "indefinite-length block '#0' is not supported")
    if not digit.isdigit():
        raise _block_error(source, f"length-digit count {digit!r} is not 1-9")
    n = int(digit)
    length_text = read_exact(n)
    if len(length_text) < n or not length_text.isdigit():
        raise _block_error(source, f"length field {length_text!r} is not {n} decimal digits")
    length = int(length_text)
    if length > _MAX_BLOCK:
        raise _block_error(source, f"declared length {length} exceeds {_MAX_BLOCK} bytes")
    payload = read_exact(length) if length else b""
    if len(payload) < length:
        raise _block_error(source, f"truncated: got {len(payload)} of {length} payload bytes")
    return bytes(payload)


def parse_ieee_block(data: bytes, source: str = "instrument") -> bytes:
    """Parse a complete block message (optionally ending in ``\\n`` or ``\\r\\n``); return the payload."""
    view = memoryview(bytes(data))
    pos = 0

    def read_exact(k: int) -> bytes:
        nonlocal pos
        chunk = bytes(view[pos : pos + k])
        pos += len(chunk)
        return chunk

    payload = read_ieee_block(read_exact, source)
    rest = bytes(view[pos:])
    if rest not in (b"", b"\n", b"\r\n"):
        shown = rest[:16] + (b"..." if len(rest) > 16 else b"")
        raise _block_error(source, f"{len(rest)} unexpected trailing bytes {shown!r} after the payload")
    return payload


@dataclass(frozen=True)
class WaveformPreamble:
    """Waveform scaling: volts = (code - y_reference) * y_increment + y_origin; seconds likewise on x."""

    format: int
    type: int
    points: int
    count: int
    x_increment: float
    x_origin: float
    x_reference: float
    y_increment: float
    y_origin: float
    y_reference: float

    @property
    def dtype(self) -> np.dtype:
        """Signed little-endian sample type implied by ``format`` (0 = int8, 1 = int16)."""
        return np.dtype("i1") if self.format == 0 else np.dtype("<i2")

    def time_axis(self) -> np.ndarray:
        """Sample times in seconds, shape (points,)."""
        return (np.arange(self.points) - self.x_reference) * self.x_increment + self.x_origin


def parse_preamble(text: str, source: str = "instrument") -> WaveformPreamble:
    """Parse the 10-field ``WAV:PRE?`` reply; anything else raises InstrumentError."""
    fields = text.strip().split(",")
    expected = "10 comma-separated fields 'format,type,points,count,xinc,xorig,xref,yinc,yorig,yref'"
    if len(fields) != 10:
        raise DriverError(f"waveform preamble from {source}: got {text.strip()!r}; expected {expected}")
    try:
        numbers = [float(f) for f in fields]
        if not all(abs(x) < 9.9e37 for x in numbers):   # NaN, inf, SCPI overrange markers
            raise ValueError(text)
        ints = [int(x) for x in numbers[:4]]
        floats = numbers[4:]
    except ValueError:
        raise DriverError(
            f"waveform preamble from {source}: got {text.strip()!r}; expected {expected} (finite numbers)"
        ) from None
    if not 0 <= ints[2] <= _MAX_BLOCK:
        raise DriverError(f"waveform preamble from {source}: {ints[2]} points; expected 0..{_MAX_BLOCK}")
    if ints[0] not in (0, 1):
        raise DriverError(
            f"waveform preamble from {source}: format {ints[0]} unsupported; expected 0 (BYTE) or 1 (WORD)"
        )
    return WaveformPreamble(*ints, *floats)  # type: ignore[arg-type]


def codes_to_volts(payload: bytes, preamble: WaveformPreamble, source: str = "instrument") -> np.ndarray:
    """Convert raw int8/int16 sample bytes to volts (float64) using the preamble scale and offset."""
    dtype = preamble.dtype
    if len(payload) % dtype.itemsize:
        raise DriverError(
            f"waveform data from {source}: {len(payload)} bytes is not a whole number of "
            f"{dtype.itemsize}-byte samples; expected {preamble.points} samples"
        )
    codes = np.frombuffer(payload, dtype=dtype)
    if preamble.points and codes.size != preamble.points:
        raise DriverError(
            f"waveform data from {source}: got {codes.size} samples; expected {preamble.points} (preamble)"
        )
    return (codes.astype(np.float64) - preamble.y_reference) * preamble.y_increment + preamble.y_origin


def _on_off(value: bool) -> str:
    return "ON" if value else "OFF"


class DigitizerChannel(InstrumentChannel["Digitizer"]):
    """One analog input: enable, full-scale range (V), offset (V), coupling."""

    def __init__(self, parent: Digitizer, name: str, channel: int) -> None:
        super().__init__(parent, name)
        self.channel = channel
        n = channel
        self.enabled: Parameter = self.add_parameter(
            "enabled",
            get_cmd=f"CHAN{n}:DISP?",
            get_parser=parent.bool_parser(f"CHAN{n}:DISP?"),
            set_cmd=f"CHAN{n}:DISP {{}}",
            set_parser=_on_off,
            vals=Bool(),
            docstring="Channel acquired and displayed (True = on).",
        )
        self.range: Parameter = self.add_parameter(
            "range",
            unit="V",
            get_cmd=f"CHAN{n}:RANG?",
            get_parser=parent.float_parser(f"CHAN{n}:RANG?"),
            set_cmd=f"CHAN{n}:RANG {{}}",
            set_parser=format_number,
            vals=Numbers(parent.range_limits[0], parent.range_limits[1]),
            docstring="Full-scale vertical range in volts.",
        )
        self.offset: Parameter = self.add_parameter(
            "offset",
            unit="V",
            get_cmd=f"CHAN{n}:OFFS?",
            get_parser=parent.float_parser(f"CHAN{n}:OFFS?"),
            set_cmd=f"CHAN{n}:OFFS {{}}",
            set_parser=format_number,
            vals=Numbers(-parent.max_offset, parent.max_offset),
            docstring="Vertical offset in volts.",
        )
        self.coupling: Parameter = self.add_parameter(
            "coupling",
            get_cmd=f"CHAN{n}:COUP?",
            get_parser=parent.choice_parser(f"CHAN{n}:COUP?", ("DC", "AC")),
            set_cmd=f"CHAN{n}:COUP {{}}",
            vals=Enum("DC", "AC"),
            docstring="Input coupling, 'DC' or 'AC'.",
        )


class Digitizer(ScpiVisaInstrument):
    """Multichannel digitiser returning traces in volts (float64, shape (channels, points))."""

    family = "digitizer"

    def __init__(
        self,
        name: str,
        address: str,
        n_channels: int = 4,
        max_sample_rate: float = 5e9,
        max_points: int = 10_000_000,
        range_limits: tuple[float, float] = (0.008, 40.0),
        max_offset: float = 20.0,
        **kwargs: Any,
    ) -> None:
        """Connect to ``address``; rates in Sa/s, record length in samples, ranges in V."""
        super().__init__(name, address, **kwargs)
        self.n_channels = int(n_channels)
        self.range_limits = (float(range_limits[0]), float(range_limits[1]))
        self.max_offset = float(max_offset)
        self.last_preamble: dict[int, WaveformPreamble] = {}

        self.sample_rate: Parameter = self.add_parameter(
            "sample_rate",
            unit="Sa/s",
            get_cmd="ACQ:SRAT?",
            get_parser=self.float_parser("ACQ:SRAT?"),
            set_cmd="ACQ:SRAT {}",
            set_parser=format_number,
            vals=Numbers(1e3, float(max_sample_rate)),
            docstring="Sample rate in samples per second.",
        )
        self.record_length: Parameter = self.add_parameter(
            "record_length",
            unit="Sa",
            get_cmd="ACQ:POIN?",
            get_parser=self.int_parser("ACQ:POIN?"),
            set_cmd="ACQ:POIN {}",
            vals=Ints(16, int(max_points)),
            docstring="Record length in samples per channel.",
        )
        self.data_format: Parameter = self.add_parameter(
            "data_format",
            get_cmd="WAV:FORM?",
            get_parser=self.choice_parser("WAV:FORM?", ("WORD", "BYTE")),
            set_cmd="WAV:FORM {}",
            val_mapping={"int16": "WORD", "int8": "BYTE"},
            docstring="Sample transfer type: 'int16' (WORD) or 'int8' (BYTE).",
        )
        trigger_sources = ["EXT", "IMM"] + [f"CHAN{c}" for c in range(1, self.n_channels + 1)]
        self.trigger_source: Parameter = self.add_parameter(
            "trigger_source",
            get_cmd="TRIG:SOUR?",
            get_parser=self.choice_parser("TRIG:SOUR?", trigger_sources),
            set_cmd="TRIG:SOUR {}",
            vals=Enum(*trigger_sources),
            docstring="Trigger source: 'EXT', 'IMM' (free run) or 'CHAN<n>'.",
        )
        self.trigger_level: Parameter = self.add_parameter(
            "trigger_level",
            unit="V",
            get_cmd="TRIG:LEV?",
            get_parser=self.float_parser("TRIG:LEV?"),
            set_cmd="TRIG:LEV {}",
            set_parser=format_number,
            vals=Numbers(-self.max_offset, self.max_offset),
            docstring="Trigger level in volts.",
        )
        channels = ChannelList(self, "channels", DigitizerChannel)
        for c in range(1, self.n_channels + 1):
            module = DigitizerChannel(self, f"ch{c}", c)
            channels.append(module)
            self.add_submodule(f"ch{c}", module)
        self.channels = self.add_submodule("channels", channels.to_channel_tuple())
        self._verify_identity()
        try:
            self.write("WAV:BYT LSBF")
            self.write("WAV:UNS OFF")
        except Exception:
            self.close()
            raise

    def _channel_numbers(self, channels: Sequence[int] | None) -> list[int]:
        numbers = list(range(1, self.n_channels + 1)) if channels is None else [int(c) for c in channels]
        for c in numbers:
            if not 1 <= c <= self.n_channels:
                raise ValueError(f"Digitizer {self.name!r}: channel {c} out of range; expected 1..{self.n_channels}")
        if not numbers or len(set(numbers)) != len(numbers):
            raise ValueError(f"Digitizer {self.name!r}: expected distinct channels, got {numbers}")
        return numbers

    def query_block(self, cmd: str) -> bytes:
        """Send ``cmd`` and read one IEEE 488.2 definite-length block reply plus its terminator."""
        self.write(cmd)
        handle = self.visa_handle
        source = f"{self.family} {self.name!r} ({cmd!r})"
        try:
            payload = read_ieee_block(lambda k: handle.read_bytes(k), source)
            term = handle.read_termination
            if term:
                tail = handle.read_bytes(len(term))
                if tail != term.encode("ascii"):
                    raise _block_error(source, f"block followed by {tail!r} instead of {term!r}")
        except (pyvisa.errors.Error, OSError, ConnectionError) as exc:
            raise self._transport_error(cmd, exc, "an IEEE 488.2 block") from exc
        return payload

    def digitize(self, channels: Sequence[int] | None = None) -> None:
        """Acquire one record on ``channels`` (default all) and block until done (``DIG ...`` + ``*OPC?``)."""
        numbers = self._channel_numbers(channels)
        self.write("DIG " + ",".join(f"CHAN{c}" for c in numbers))
        self.wait_complete()

    def fetch(self, channel: int) -> np.ndarray:
        """Transfer the last record of ``channel`` and return it in volts (float64, shape (points,))."""
        (c,) = self._channel_numbers([channel])
        self.write(f"WAV:SOUR CHAN{c}")
        source = f"{self.family} {self.name!r} CHAN{c}"
        preamble = parse_preamble(self.ask("WAV:PRE?"), source)
        volts = codes_to_volts(self.query_block("WAV:DATA?"), preamble, source)
        self.last_preamble[c] = preamble
        return volts

    def acquire(self, channels: Sequence[int] | None = None) -> np.ndarray:
        """Digitize then fetch; volts as float64 of shape (len(channels), points)."""
        numbers = self._channel_numbers(channels)
        self.digitize(numbers)
        traces = [self.fetch(c) for c in numbers]
        lengths = {t.size for t in traces}
        if len(lengths) != 1:
            raise DriverError(
                f"{self.family} {self.name!r}: channels returned different record lengths {sorted(lengths)}; "
                "expected equal lengths"
            )
        return np.stack(traces)
