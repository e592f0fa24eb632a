"""SCPI multichannel voltage source (SMU / precision supply, Keysight-like command set).

Wire grammar (ASCII lines terminated by ``\\n`` both ways; numbers formatted with
:func:`~lightloop.drivers._base.format_number`, e.g. ``1.25``, ``0``, ``1e-05``;
channel lists are always explicit, ``(@1,2,3)``):

=============================================  ==============================================
command                                        reply
=============================================  ==============================================
``*IDN?``                                      ``vendor,model,serial,firmware``
``*RST`` / ``*CLS``                            (none)
``*OPC?``                                      ``1``
``SYST:ERR?``                                  ``+0,"No error"`` or ``<code>,"<text>"``
``:SOUR{ch}:VOLT <V>``                         (none)
``:SOUR{ch}:VOLT?``                            ``<V>``
``:SOUR{ch}:CURR:LIM <A>``                     (none)
``:SOUR{ch}:CURR:LIM?``                        ``<A>``
``:OUTP{ch} ON|OFF``                           (none)
``:OUTP{ch}?``                                 ``1`` or ``0``
``:MEAS{ch}:VOLT?`` / ``:MEAS{ch}:CURR?``      ``<V>`` / ``<A>``
``:SOUR:VOLT v1,...,vn,(@c1,...,cn);*OPC?``    ``1``  (batched write, one transaction)
``:SOUR:VOLT v..,(@c..);:SOUR:VOLT? (@c..)``   ``v1,...,vn`` (batched write verified by its read-back)
``:SOUR:VOLT? (@c1,...,cn)``                   ``v1,...,vn``
``:MEAS:CURR? (@c1,...,cn)``                   ``i1,...,in``
``:OUTP ON|OFF,(@c1,...,cn)``                  (none)
=============================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qcodes.instrument import ChannelList, InstrumentChannel
from qcodes.parameters import Parameter
from qcodes.validators import Bool, Numbers

from lightloop.drivers._base import (
    ScpiVisaInstrument,
    format_channel_list,
    format_number,
)

__all__ = ["ScpiSource", "ScpiSourceChannel"]


def _on_off(value: bool) -> str:
    return "ON" if value else "OFF"


class ScpiSourceChannel(InstrumentChannel["ScpiSource"]):
    """One output channel of a :class:`ScpiSource` (voltage in V, current in A)."""

    def __init__(
        self, parent: ScpiSource, name: str, channel: int, v_max: float, i_max: float
    ) -> None:
        super().__init__(parent, name)
        self.channel = channel
        ch = channel
        self.voltage: Parameter = self.add_parameter(
            "voltage",
            label=f"Ch{ch} voltage setpoint",
            unit="V",
            get_cmd=f":SOUR{ch}:VOLT?",
            get_parser=parent.float_parser(f":SOUR{ch}:VOLT?"),
            set_cmd=f":SOUR{ch}:VOLT {{}}",
            set_parser=format_number,
            vals=Numbers(-v_max, v_max),
            docstring="Voltage setpoint in volts.",
        )
        self.current_limit: Parameter = self.add_parameter(
            "current_limit",
            label=f"Ch{ch} current limit",
            unit="A",
            get_cmd=f":SOUR{ch}:CURR:LIM?",
            get_parser=parent.float_parser(f":SOUR{ch}:CURR:LIM?"),
            set_cmd=f":SOUR{ch}:CURR:LIM {{}}",
            set_parser=format_number,
            vals=Numbers(0.0, i_max),
            docstring="Current compliance limit in amperes.",
        )
        self.output: Parameter = self.add_parameter(
            "output",
            label=f"Ch{ch} output enabled",
            get_cmd=f":OUTP{ch}?",
            get_parser=parent.bool_parser(f":OUTP{ch}?"),
            set_cmd=f":OUTP{ch} {{}}",
            set_parser=_on_off,
            vals=Bool(),
            docstring="Output relay state (True = on).",
        )
        self.measured_voltage: Parameter = self.add_parameter(
            "measured_voltage",
            label=f"Ch{ch} measured voltage",
            unit="V",
            get_cmd=f":MEAS{ch}:VOLT?",
            get_parser=parent.float_parser(f":MEAS{ch}:VOLT?"),
            set_cmd=False,
            docstring="Measured output voltage in volts.",
        )
        self.measured_current: Parameter = self.add_parameter(
            "measured_current",
            label=f"Ch{ch} measured current",
            unit="A",
            get_cmd=f":MEAS{ch}:CURR?",
            get_parser=parent.float_parser(f":MEAS{ch}:CURR?"),
            set_cmd=False,
            docstring="Measured output current in amperes.",
        )


class ScpiSource(ScpiVisaInstrument):
    """SCPI multichannel voltage source; voltages in V, currents in A, channels numbered from 1."""

    family = "SCPI source"

    def __init__(
        self,
        name: str,
        address: str,
        n_channels: int = 4,
        v_max: float = 20.0,
        i_max: float = 0.1,
        **kwargs: Any,
    ) -> None:
        """Connect to ``address`` (VISA resource); ``v_max`` V and ``i_max`` A are the hardware ranges."""
        if n_channels < 1:
            raise ValueError(f"ScpiSource {name!r}: n_channels must be >= 1, got {n_channels}")
        super().__init__(name, address, **kwargs)
        self.n_channels = int(n_channels)
        self.v_max = float(v_max)
        self.i_max = float(i_max)
        channels = ChannelList(self, "channels", ScpiSourceChannel)
        for ch in range(1, self.n_channels + 1):
            module = ScpiSourceChannel(self, f"ch{ch}", ch, self.v_max, self.i_max)
            channels.append(module)
            self.add_submodule(f"ch{ch}", module)
        self.channels = self.add_submodule("channels", channels.to_channel_tuple())
        self._verify_identity()

    # --- helpers --------------------------------------------------------------------------

    def _channel_numbers(self, channels: Sequence[int] | None) -> list[int]:
        if channels is None:
            return list(range(1, self.n_channels + 1))
        out = [int(c) for c in channels]
        for c in out:
            if not 1 <= c <= self.n_channels:
                raise ValueError(
                    f"ScpiSource {self.name!r}: channel {c} out of range; expected 1..{self.n_channels}"
                )
        if len(set(out)) != len(out):
            raise ValueError(f"ScpiSource {self.name!r}: duplicate channels in {out}")
        return out

    def _channel(self, number: int) -> ScpiSourceChannel:
        return self.channels[number - 1]

    def _parse_list(self, cmd: str, reply: str, n: int) -> list[float]:
        try:
            values = [float(x) for x in reply.strip().split(",")]
        except ValueError:
            raise self._garbage(cmd, reply, f"{n} comma-separated numbers") from None
        if len(values) != n:
            raise self._garbage(cmd, reply, f"{n} comma-separated numbers")
        return values

    # --- batched operations ---------------------------------------------------------------

    def set_voltages(
        self, voltages: Sequence[float], channels: Sequence[int] | None = None, wait: bool = True,
        readback: bool = False,
    ) -> list[float] | None:
        """Set many channel voltages (V) in ONE transaction; every value is validated before anything is sent.

        ``readback=True`` ends the command with ``;:SOUR:VOLT? (@..)`` instead of ``;*OPC?`` and returns the
        set-points the source reports (same round trip)."""
        numbers = self._channel_numbers(channels)
        values = [float(v) for v in voltages]
        if len(values) != len(numbers):
            raise ValueError(
                f"ScpiSource {self.name!r}: got {len(values)} voltages for {len(numbers)} channels"
            )
        for c, v in zip(numbers, values):
            try:
                self._channel(c).voltage.validate(v)
            except ValueError as exc:
                raise ValueError(f"ScpiSource {self.name!r} ch{c}: {exc.args[0]}") from None
        cmd = ":SOUR:VOLT " + ",".join(format_number(v) for v in values) + "," + format_channel_list(numbers)
        if readback:
            full = cmd + ";:SOUR:VOLT? " + format_channel_list(numbers)
            got = self._parse_list(full, self.ask(full), len(numbers))
            for c, v in zip(numbers, got):
                try:
                    self._channel(c).voltage.cache.set(v)
                except ValueError:      # moved by hand outside the validator: forget it
                    self._channel(c).voltage.cache.invalidate()
            return got
        if wait:
            reply = self.ask(cmd + ";*OPC?")
            if reply.strip() not in ("1", "+1"):
                raise self._garbage(cmd + ";*OPC?", reply, "'1'")
        else:
            self.write(cmd)
        for c, v in zip(numbers, values):
            self._channel(c).voltage.cache.set(v)
        return None

    def get_voltages(self, channels: Sequence[int] | None = None) -> list[float]:
        """Read the voltage setpoints (V) of many channels in one query."""
        numbers = self._channel_numbers(channels)
        cmd = ":SOUR:VOLT? " + format_channel_list(numbers)
        return self._parse_list(cmd, self.ask(cmd), len(numbers))

    def measure_currents(self, channels: Sequence[int] | None = None) -> list[float]:
        """Measure the output currents (A) of many channels in one query."""
        numbers = self._channel_numbers(channels)
        cmd = ":MEAS:CURR? " + format_channel_list(numbers)
        return self._parse_list(cmd, self.ask(cmd), len(numbers))

    def output_on(self, channels: Sequence[int] | None = None) -> None:
        """Close the output relays of the given channels (all by default) in one command."""
        numbers = self._channel_numbers(channels)
        self.write(":OUTP ON," + format_channel_list(numbers))
        for c in numbers:
            self._channel(c).output.cache.set(True)

    def output_off(self, channels: Sequence[int] | None = None) -> None:
        """Open the output relays of the given channels (all by default) in one command."""
        numbers = self._channel_numbers(channels)
        self.write(":OUTP OFF," + format_channel_list(numbers))
        for c in numbers:
            self._channel(c).output.cache.set(False)

    def zero_all(self) -> None:
        """Set every channel's voltage setpoint to 0 V in one transaction."""
        self.set_voltages([0.0] * self.n_channels)
