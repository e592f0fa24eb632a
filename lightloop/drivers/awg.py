"""Multichannel arbitrary-waveform / IQ DAC generator: one IQ modulator drive (I and Q outputs) per channel (SCPI).

The whole batch of patterns of every listed channel travels in ONE binary upload, verified by its checksum in the
same transaction; with ``TRIG:SOUR EXT`` the digitiser's acquisition trigger steps through the sequence (one
point per pattern, points = patterns per acquisition).

Wire grammar (ASCII commands terminated by ``\\n``; channels numbered from 1; channel lists always explicit):

===================================================  ==========================================================
command                                              reply
===================================================  ==========================================================
``*IDN?`` / ``*RST`` / ``*CLS``                      identity / (none) / (none)
``*OPC?``                                            ``1``
``SYST:ERR?``                                        ``+0,"No error"`` or ``<code>,"<text>"``
``SOUR{ch}:VOLT:AMPL <V>`` / ``SOUR{ch}:VOLT:AMPL?`` full-scale amplitude (V) of channel ch's I and Q outputs
``SOUR{ch}:VOLT:AMPL <V>;...;SOUR{ch}:VOLT:AMPL?``   batched amplitudes verified by their read-back (one line)
``OUTP{ch} ON|OFF`` / ``OUTP{ch}?``                  output relay of one channel (``1``/``0``)
``OUTP ON|OFF,(@c1,..);OUTP? (@c1,..)``              switch several channels; read-back ``1,0,..`` in one line
``OUTP? (@c1,...,cn)``                               ``1,0,...``
``TRIG:SOUR EXT|IMM`` / ``TRIG:SOUR?``               sequence advance: external trigger (the digitiser) / free run
``SEQ:LEN?``                                         points of the longest sequence in memory (0: empty)
``SEQ:DATA (@c1,..,cn),#<n><len><bytes>``            upload: int16 little-endian codes shaped (points, n, 2) [I, Q]
``SEQ:DATA (@..),#<block>;SEQ:DATA:CRC? (@..)``      upload answering its own checksum (the verified form)
``SEQ:DATA:CRC? (@c1,...,cn)``                       CRC-32 (zlib, unsigned decimal) of the stored (points, n, 2)
===================================================  ==========================================================

Codes: 32767 = +full scale (``SOUR{ch}:VOLT:AMPL``), -32767 = -full scale; -32768 is outside the range and an
upload containing it is refused by the instrument (``-222,"Data out of range"``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyvisa.errors
from numpy.typing import ArrayLike, NDArray
from qcodes.instrument import ChannelList, InstrumentChannel
from qcodes.parameters import Parameter
from qcodes.validators import Bool, Enum, Numbers

from lightloop.drivers._base import DriverError, ScpiVisaInstrument, format_channel_list, format_number

__all__ = ["IQArbitraryWaveformGenerator", "IQChannel", "CODE_MAX", "sequence_crc"]

#: int16 code of +full scale
CODE_MAX = 32767


def _on_off(value: bool) -> str:
    return "ON" if value else "OFF"


def sequence_crc(codes: NDArray[np.int16]) -> int:
    """CRC-32 (zlib, unsigned) of int16 little-endian codes as laid out on the wire."""
    return zlib.crc32(np.ascontiguousarray(codes, dtype="<i2").tobytes()) & 0xFFFFFFFF


class IQChannel(InstrumentChannel["IQArbitraryWaveformGenerator"]):
    """One IQ channel: full-scale amplitude (V) of its I and Q DAC outputs and its output relay."""

    def __init__(self, parent: IQArbitraryWaveformGenerator, name: str, channel: int, v_max: float) -> None:
        super().__init__(parent, name)
        self.channel = channel
        ch = channel
        self.amplitude: Parameter = self.add_parameter(
            "amplitude",
            unit="V",
            get_cmd=f"SOUR{ch}:VOLT:AMPL?",
            get_parser=parent.float_parser(f"SOUR{ch}:VOLT:AMPL?"),
            set_cmd=f"SOUR{ch}:VOLT:AMPL {{}}",
            set_parser=format_number,
            vals=Numbers(0.0, v_max),
            docstring="Full-scale amplitude in volts (code 32767) of the I and Q outputs.",
        )
        self.output: Parameter = self.add_parameter(
            "output",
            get_cmd=f"OUTP{ch}?",
            get_parser=parent.bool_parser(f"OUTP{ch}?"),
            set_cmd=f"OUTP{ch} {{}}",
            set_parser=_on_off,
            vals=Bool(),
            docstring="Output relay of the I and Q outputs (True = on).",
        )


class IQArbitraryWaveformGenerator(ScpiVisaInstrument):
    """Multichannel IQ arbitrary-waveform generator: int16 IQ codes per pattern, amplitudes in V, channels from 1."""

    family = "AWG"

    def __init__(
        self,
        name: str,
        address: str,
        n_channels: int = 4,
        v_max: float = 1.0,
        max_points: int = 4096,
        **kwargs: Any,
    ) -> None:
        """Connect to ``address``; ``v_max`` V (full-scale amplitude) and ``max_points`` patterns are the hardware's."""
        if n_channels < 1 or max_points < 1:
            raise ValueError(f"AWG {name!r}: n_channels and max_points must be >= 1, got {n_channels}, {max_points}")
        super().__init__(name, address, **kwargs)
        self.n_channels, self.v_max, self.max_points = int(n_channels), float(v_max), int(max_points)
        self.last_amplitudes: list[float] = []      # read back by the last upload that set amplitudes (V)
        self.trigger_source: Parameter = self.add_parameter(
            "trigger_source",
            get_cmd="TRIG:SOUR?",
            get_parser=self.choice_parser("TRIG:SOUR?", ("EXT", "IMM")),
            set_cmd="TRIG:SOUR {}",
            vals=Enum("EXT", "IMM"),
            docstring="Sequence advance: 'EXT' (one point per external trigger) or 'IMM' (free run).",
        )
        self.sequence_length: Parameter = self.add_parameter(
            "sequence_length",
            unit="points",
            get_cmd="SEQ:LEN?",
            get_parser=self.int_parser("SEQ:LEN?"),
            set_cmd=False,
            docstring="Points (patterns) of the longest sequence in memory; 0 when empty.",
        )
        channels = ChannelList(self, "channels", IQChannel)
        for ch in range(1, self.n_channels + 1):
            module = IQChannel(self, f"ch{ch}", ch, self.v_max)
            channels.append(module)
            self.add_submodule(f"ch{ch}", module)
        self.channels = self.add_submodule("channels", channels.to_channel_tuple())
        self._verify_identity()

    # --- helpers ----------------------------------------------------------------------------------------
    def _channel_numbers(self, channels: Sequence[int] | None) -> list[int]:
        numbers = list(range(1, self.n_channels + 1)) if channels is None else [int(c) for c in channels]
        for c in numbers:
            if not 1 <= c <= self.n_channels:
                raise ValueError(f"AWG {self.name!r}: channel {c} out of range; expected 1..{self.n_channels}")
        if not numbers or len(set(numbers)) != len(numbers):
            raise ValueError(f"AWG {self.name!r}: expected distinct channels, got {numbers}")
        return numbers

    def _parse_list(self, cmd: str, reply: str, n: int, cast: Any = float) -> list[Any]:
        try:
            values = [cast(x) for x in reply.strip().split(",")]
        except ValueError:
            raise self._garbage(cmd, reply, f"{n} comma-separated values") from None
        if len(values) != n:
            raise self._garbage(cmd, reply, f"{n} comma-separated values")
        return values

    def _bool_list(self, cmd: str, reply: str, n: int) -> list[bool]:
        parse = self.bool_parser(cmd)
        parts = reply.strip().split(",")
        if len(parts) != n:
            raise self._garbage(cmd, reply, f"{n} comma-separated 1/0 values")
        return [parse(p) for p in parts]

    def _send_bytes(self, label: str, data: bytes) -> None:
        try:
            self.visa_handle.write_raw(data)
        except (pyvisa.errors.Error, OSError, ConnectionError) as exc:
            raise self._transport_error(label, exc, "the upload to be accepted") from exc

    def _read_line(self, label: str) -> str:
        try:
            return self.visa_handle.read()
        except (pyvisa.errors.Error, OSError, ConnectionError) as exc:
            raise self._transport_error(label, exc, "a reply") from exc

    # --- amplitudes, outputs ----------------------------------------------------------------------------
    def _amplitudes(self, volts: Sequence[float], numbers: Sequence[int]) -> list[float]:
        """Amplitudes (V), one per channel, each inside the channel's range (ValueError naming the channel)."""
        values = [float(v) for v in volts]
        if len(values) != len(numbers):
            raise ValueError(f"AWG {self.name!r}: got {len(values)} amplitudes for {len(numbers)} channels")
        for c, v in zip(numbers, values):
            try:
                self.channels[c - 1].amplitude.validate(v)
            except ValueError as exc:
                raise ValueError(f"AWG {self.name!r} ch{c}: {exc.args[0]}") from None
        return values

    def set_amplitudes(self, volts: Sequence[float], channels: Sequence[int] | None = None) -> list[float]:
        """Set full-scale amplitudes (V) in ONE line that ends with their read-back; return what the AWG reports."""
        numbers = self._channel_numbers(channels)
        values = self._amplitudes(volts, numbers)
        cmd = ";".join([f"SOUR{c}:VOLT:AMPL {format_number(v)}" for c, v in zip(numbers, values)]
                       + [f"SOUR{c}:VOLT:AMPL?" for c in numbers])
        got = self._parse_list(cmd, self.ask(cmd).replace(";", ","), len(numbers))
        for c, v in zip(numbers, got):
            try:
                self.channels[c - 1].amplitude.cache.set(v)
            except ValueError:
                self.channels[c - 1].amplitude.cache.invalidate()
        return got

    def get_outputs(self, channels: Sequence[int] | None = None) -> list[bool]:
        """Output relay states of many channels in one query."""
        numbers = self._channel_numbers(channels)
        cmd = "OUTP? " + format_channel_list(numbers)
        return self._bool_list(cmd, self.ask(cmd), len(numbers))

    def set_outputs(self, on: bool, channels: Sequence[int] | None = None) -> None:
        """Switch outputs ON/OFF with their read-back in the same line; raises InstrumentError if one did not follow."""
        numbers = self._channel_numbers(channels)
        chl = format_channel_list(numbers)
        cmd = f"OUTP {_on_off(on)},{chl};OUTP? {chl}"
        states = self._bool_list(cmd, self.ask(cmd), len(numbers))
        wrong = [c for c, s in zip(numbers, states) if s != bool(on)]
        for c, s in zip(numbers, states):
            self.channels[c - 1].output.cache.set(s)
        if wrong:
            raise DriverError(f"{self.family} {self.name!r}: channel(s) {wrong} read {'OFF' if on else 'ON'} after "
                              f"OUTP {_on_off(on)}; expected every listed output {_on_off(on)}")

    def output_on(self, channels: Sequence[int] | None = None) -> None:
        """Close the output relays of the given channels (all by default), verified in the same transaction."""
        self.set_outputs(True, channels)

    def output_off(self, channels: Sequence[int] | None = None) -> None:
        """Open the output relays of the given channels (all by default), verified in the same transaction."""
        self.set_outputs(False, channels)

    # --- sequences --------------------------------------------------------------------------------------
    def _codes(self, codes: ArrayLike, n: int) -> NDArray[np.int16]:
        arr = np.asarray(codes)
        if arr.ndim != 3 or arr.shape[1:] != (n, 2):
            raise ValueError(f"AWG {self.name!r}: expected codes of shape (points, {n}, 2), got {arr.shape}")
        if not 1 <= arr.shape[0] <= self.max_points:
            raise ValueError(f"AWG {self.name!r}: {arr.shape[0]} points; expected 1..{self.max_points} (sequence memory)")
        if arr.dtype.kind not in "iu":
            raise ValueError(f"AWG {self.name!r}: codes of dtype {arr.dtype}; expected integers")
        if arr.size and (int(arr.min()) < -CODE_MAX or int(arr.max()) > CODE_MAX):
            raise ValueError(f"AWG {self.name!r}: codes in [{int(arr.min())}, {int(arr.max())}]; "
                             f"expected -{CODE_MAX}..{CODE_MAX}")
        return np.ascontiguousarray(arr, dtype="<i2")

    def upload(self, codes: ArrayLike, channels: Sequence[int] | None = None, verify: bool = True,
               amplitudes: Sequence[float] | None = None) -> int:
        """Upload one sequence (points, len(channels), 2) of int16 [I, Q] codes in ONE transaction; return its CRC-32.

        ``verify=True`` ends the message with ``;SEQ:DATA:CRC? (@..)`` and checks the checksum the AWG computes from
        what it stored (a garbled upload is an InstrumentError naming both checksums). ``amplitudes`` (V, one per
        channel) are set at the start of the same line, before the sequence plays, and read back at its end
        (``last_amplitudes``): an amplitude changed behind the host's back never drives a new sequence."""
        numbers = self._channel_numbers(channels)
        data = self._codes(codes, len(numbers))
        payload = data.tobytes()
        length = str(len(payload))
        chl = format_channel_list(numbers)
        head = tail_q = ""
        if amplitudes is not None:
            values = self._amplitudes(amplitudes, numbers)
            head = "".join(f"SOUR{c}:VOLT:AMPL {format_number(v)};" for c, v in zip(numbers, values))
            tail_q = "".join(f";SOUR{c}:VOLT:AMPL?" for c in numbers)
        label = f"{head}SEQ:DATA {chl},#{len(length)}{length}<{len(payload)} bytes>"
        block = f"#{len(length)}{length}".encode("ascii") + payload
        tail = (f";SEQ:DATA:CRC? {chl}" if verify else "") + tail_q + "\n"
        want = zlib.crc32(payload) & 0xFFFFFFFF
        self._send_bytes(label, f"{head}SEQ:DATA {chl},".encode("ascii") + block + tail.encode("ascii"))
        if verify or tail_q:
            reply = self._read_line(label + tail.strip()).strip()
            parts = reply.split(";")
            if verify:
                self._check_crc(label + tail.strip(), parts[0], want)
                parts = parts[1:]
            if tail_q:
                got = self._parse_list(label + tail_q, ",".join(parts), len(numbers))
                for c, v in zip(numbers, got):
                    self.channels[c - 1].amplitude.cache.set(v)
                self.last_amplitudes = got
        return want

    def _check_crc(self, cmd: str, reply: str, want: int) -> None:
        try:
            got = int(reply.strip())
        except ValueError:
            raise self._garbage(cmd, reply, "an unsigned CRC-32") from None
        if got != want:
            raise self._garbage(cmd, reply, f"CRC-32 {want} of the uploaded codes")

    def stored_crc(self, channels: Sequence[int] | None = None) -> int:
        """``SEQ:DATA:CRC? (@..)``: CRC-32 of the sequence the AWG holds for those channels."""
        numbers = self._channel_numbers(channels)
        cmd = "SEQ:DATA:CRC? " + format_channel_list(numbers)
        reply = self.ask(cmd)
        try:
            return int(reply.strip())
        except ValueError:
            raise self._garbage(cmd, reply, "an unsigned CRC-32") from None

    def zero(self, channels: Sequence[int] | None = None, points: int | None = None) -> int:
        """Upload zeros to the channels (all by default): ``points`` patterns, by default the current ``SEQ:LEN?``
        (at least 1); returns the verified CRC-32."""
        numbers = self._channel_numbers(channels)
        n = int(points) if points is not None else max(1, int(self.sequence_length()))
        return self.upload(np.zeros((n, len(numbers), 2), np.int16), numbers)

    def arm(self) -> None:
        """``TRIG:SOUR EXT``: each external trigger (the digitiser's acquisition) plays the next pattern."""
        self.trigger_source("EXT")
