"""Multichannel heater driver (Qontrol-style ASCII over a pyserial URL) for thermo-optic phase shifters.

Transport: any pyserial URL opened with :func:`serial.serial_for_url` - a COM/tty
port, ``socket://127.0.0.1:PORT`` (a loopback twin) or ``loop://``.

Wire grammar (ASCII; every command ends with ``\\n``; every command gets exactly one
reply line ending with ``\\n`` - a trailing ``\\r`` is tolerated). Channels are numbered
from 0. Voltages in V with 4 decimals; currents on the wire in **mA** (4 decimals),
exposed by the driver in A.

=====================  ============================================================
command                reply
=====================  ============================================================
``ID?``                free-text identity, e.g. ``Q8iv-0042``
``NCHAN?``             channel count, e.g. ``16``
``V3=1.2500``          ``OK`` or an error line ``E<nn>:<text>`` (e.g. ``E07:over vmax``)
``V3?``                ``1.2500``  (voltage setpoint, V)
``I3?``                ``12.5000`` (measured current, mA)
``VMAX3=6.0000``       ``OK`` / ``E<nn>:...``
``VMAX3?``             ``6.0000``  (per-channel voltage limit, V)
``IMAX3=20.0000``      ``OK`` / ``E<nn>:...``  (per-channel current limit, mA)
``IMAX3?``             ``20.0000``
=====================  ============================================================

Batched write (one transaction per training step): the driver pipelines N set
commands in ONE ``write()`` - ``V0=..\\nV1=..\\n...V{N-1}=..\\n`` - and then reads exactly N
reply lines, in order. Any ``E..`` reply raises InstrumentError naming every failed
channel (the other channels were applied). Batched reads pipeline ``V0?\\nV1?\\n...`` or
``I0?\\n...`` the same way. A responder must therefore answer each line in order and
must not coalesce replies.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import serial
from qcodes.instrument import ChannelList, Instrument, InstrumentChannel
from qcodes.parameters import Parameter
from qcodes.validators import Numbers

from lightloop.drivers._base import DriverError

__all__ = ["QontrolHeater", "QontrolHeaterChannel"]

_ERROR_LINE = re.compile(r"^E\d+(:.*)?$")


def _fmt(value: float) -> str:
    return f"{float(value) + 0.0:.4f}"  # + 0.0 turns -0.0 into 0.0


class QontrolHeaterChannel(InstrumentChannel["QontrolHeater"]):
    """One heater output: voltage setpoint (V), measured current (A) and per-channel limits."""

    def __init__(self, parent: QontrolHeater, name: str, channel: int, vmax: float) -> None:
        super().__init__(parent, name)
        self.channel = channel
        ch = channel
        self.voltage: Parameter = self.add_parameter(
            "voltage",
            label=f"Heater {ch} voltage",
            unit="V",
            get_cmd=lambda: parent._query_float(f"V{ch}?"),
            set_cmd=lambda v: parent._command(f"V{ch}={_fmt(v)}"),
            vals=Numbers(0.0, vmax),
            docstring="Heater drive voltage in volts (0..vmax).",
        )
        self.current: Parameter = self.add_parameter(
            "current",
            label=f"Heater {ch} current",
            unit="A",
            get_cmd=lambda: parent._query_float(f"I{ch}?") * 1e-3,
            set_cmd=False,
            docstring="Measured heater current in amperes (wire reports mA).",
        )
        self.vmax: Parameter = self.add_parameter(
            "vmax",
            label=f"Heater {ch} voltage limit",
            unit="V",
            get_cmd=lambda: parent._query_float(f"VMAX{ch}?"),
            set_cmd=self._set_vmax,
            vals=Numbers(0.0, parent.v_hw_max),
            docstring="Per-channel voltage limit in volts; also bounds `voltage`.",
        )
        self.vmax.cache.set(vmax)
        self.imax: Parameter = self.add_parameter(
            "imax",
            label=f"Heater {ch} current limit",
            unit="A",
            get_cmd=lambda: parent._query_float(f"IMAX{ch}?") * 1e-3,
            set_cmd=lambda i: parent._command(f"IMAX{ch}={_fmt(i * 1e3)}"),
            vals=Numbers(0.0, parent.i_hw_max),
            docstring="Per-channel current limit in amperes (wire uses mA).",
        )

    def _set_vmax(self, vmax: float) -> None:
        self.parent._command(f"VMAX{self.channel}={_fmt(vmax)}")
        self.voltage.vals = Numbers(0.0, float(vmax))


class QontrolHeater(Instrument):
    """Qontrol-style multichannel heater driver over a pyserial URL; voltages in V, currents in A."""

    family = "Qontrol heater"

    def __init__(
        self,
        name: str,
        url: str,
        n_channels: int | None = None,
        baudrate: int = 115200,
        timeout: float = 1.0,
        v_hw_max: float = 12.0,
        i_hw_max: float = 0.024,
        **kwargs: Any,
    ) -> None:
        """Open ``url`` (pyserial URL); use the first ``n_channels`` (default: all the device reports)."""
        super().__init__(name, **kwargs)
        self.url = url
        self.v_hw_max = float(v_hw_max)
        self.i_hw_max = float(i_hw_max)
        self._timeout = float(timeout)
        self._lock = threading.RLock()
        self._rx = bytearray()
        self._port: Any = None
        try:
            try:
                self._port = serial.serial_for_url(
                    url, baudrate=baudrate, timeout=self._timeout, write_timeout=self._timeout
                )
            except (serial.SerialException, ValueError, OSError) as exc:
                raise DriverError(
                    f"{self.family} {name!r}: cannot open serial URL {url!r} "
                    f"({type(exc).__name__}: {' '.join(str(exc).split())}); "
                    "expected a reachable heater driver (COM/tty port, socket://host:port or loop://)"
                ) from exc
            self.identity = self._query_text("ID?")
            reported = self._query_int("NCHAN?")
            if reported < 1:
                raise self._garbage("NCHAN?", str(reported), "a channel count >= 1")
            if n_channels is None:
                n_channels = reported
            elif not 1 <= n_channels <= reported:
                raise DriverError(
                    f"{self.family} {name!r} at {url!r}: asked for {n_channels} channels but the "
                    f"device reports {reported}; expected 1..{reported}"
                )
            self.n_channels = int(n_channels)
            vmaxes = self._query_floats([f"VMAX{c}?" for c in range(self.n_channels)])
            bad = [(c, v) for c, v in enumerate(vmaxes) if not 0.0 < v < float("inf")]   # NaN, inf, <= 0 V
            if bad:
                raise self._garbage(f"VMAX{bad[0][0]}?", str(bad[0][1]), "a voltage limit > 0 V")
            channels = ChannelList(self, "channels", QontrolHeaterChannel)
            for c, vmax in enumerate(vmaxes):
                module = QontrolHeaterChannel(self, f"ch{c}", c, min(vmax, self.v_hw_max))
                channels.append(module)
                self.add_submodule(f"ch{c}", module)
            self.channels = self.add_submodule("channels", channels.to_channel_tuple())
        except Exception:
            self.close()
            raise
        self.timeout: Parameter = self.add_parameter(
            "timeout",
            unit="s",
            get_cmd=lambda: self._timeout,
            set_cmd=self._set_timeout,
            vals=Numbers(0.001, 600.0),
            docstring="Reply timeout in seconds for every transaction.",
        )

    def _set_timeout(self, seconds: float) -> None:
        self._timeout = float(seconds)
        self._port.timeout = self._timeout
        self._port.write_timeout = self._timeout

    # --- identity / lifecycle ---------------------------------------------------------------

    def get_idn(self) -> dict[str, str | None]:
        """Identity from ``ID?`` (model string only; the protocol has no vendor/serial fields)."""
        return {"vendor": "Qontrol", "model": getattr(self, "identity", None), "serial": None, "firmware": None}

    def close(self) -> None:
        """Close the serial port and deregister the instrument."""
        port = getattr(self, "_port", None)
        if port is not None:
            try:
                port.close()
            except Exception:  # pragma: no cover - best effort on teardown
                pass
        super().close()

    # --- transport ----------------------------------------------------------------------------

    def _fault(self, cmd: str, text: str) -> DriverError:
        return DriverError(f"{self.family} {self.name!r} at {self.url!r}: {text} during {cmd!r}")

    def _garbage(self, cmd: str, reply: str, expected: str) -> DriverError:
        return DriverError(
            f"{self.family} {self.name!r} at {self.url!r}: replied {reply!r} to {cmd!r}; expected {expected}"
        )

    def _transaction(self, commands: Sequence[str]) -> list[str]:
        """Send all ``commands`` in one write and return one stripped reply line per command."""
        if not commands:
            return []
        label = commands[0] if len(commands) == 1 else f"{commands[0]} ... ({len(commands)} commands)"
        payload = "".join(c + "\n" for c in commands).encode("ascii")
        with self._lock:
            port = self._port
            try:
                if self._rx or port.in_waiting:  # stale bytes from an earlier fault: resync
                    self._rx.clear()
                    port.reset_input_buffer()
                port.write(payload)
                port.flush()
                return self._read_lines(len(commands), label)
            except serial.SerialException as exc:
                self._rx.clear()
                raise self._fault(
                    label, f"connection failed ({type(exc).__name__}: {' '.join(str(exc).split())})"
                ) from exc
            except OSError as exc:
                self._rx.clear()
                raise self._fault(label, f"connection failed ({type(exc).__name__}: {exc})") from exc

    def _read_lines(self, n: int, label: str) -> list[str]:
        deadline = time.monotonic() + self._timeout
        port = self._port
        while self._rx.count(b"\n") < n:
            if time.monotonic() > deadline:
                got = self._rx.count(b"\n")
                self._rx.clear()
                raise self._fault(
                    label, f"got {got} of {n} reply lines within {self._timeout:g} s (timeout)"
                )
            chunk = port.read(max(1, port.in_waiting))
            if chunk:
                self._rx.extend(chunk)
        lines: list[str] = []
        for _ in range(n):
            idx = self._rx.index(b"\n")
            raw = bytes(self._rx[:idx])
            del self._rx[: idx + 1]
            lines.append(raw.decode("ascii", errors="replace").strip())
        return lines

    # --- typed helpers ----------------------------------------------------------------------

    def _check_ok(self, cmd: str, reply: str) -> None:
        if reply == "OK":
            return
        if _ERROR_LINE.match(reply):
            raise DriverError(
                f"{self.family} {self.name!r} at {self.url!r}: device rejected {cmd!r} with {reply!r}; expected 'OK'"
            )
        raise self._garbage(cmd, reply, "'OK' or an error line 'Enn:...'")

    def _to_float(self, cmd: str, reply: str) -> float:
        if _ERROR_LINE.match(reply):
            raise DriverError(
                f"{self.family} {self.name!r} at {self.url!r}: device answered {reply!r} to {cmd!r}; expected a number"
            )
        try:
            return float(reply)
        except ValueError:
            raise self._garbage(cmd, reply, "a number") from None

    def _command(self, cmd: str) -> None:
        self._check_ok(cmd, self._transaction([cmd])[0])

    def _query_text(self, cmd: str) -> str:
        reply = self._transaction([cmd])[0]
        if not reply or _ERROR_LINE.match(reply):
            raise self._garbage(cmd, reply, "an identity string")
        return reply

    def _query_int(self, cmd: str) -> int:
        reply = self._transaction([cmd])[0]
        try:
            return int(reply)
        except ValueError:
            raise self._garbage(cmd, reply, "an integer") from None

    def _query_float(self, cmd: str) -> float:
        return self._to_float(cmd, self._transaction([cmd])[0])

    def _query_floats(self, commands: Sequence[str]) -> list[float]:
        replies = self._transaction(commands)
        return [self._to_float(c, r) for c, r in zip(commands, replies)]

    # --- batched operations ---------------------------------------------------------------

    def _normalise(self, voltages: Sequence[float] | Mapping[int, float]) -> dict[int, float]:
        if isinstance(voltages, Mapping):
            items = {int(k): float(v) for k, v in voltages.items()}
        else:
            values = [float(v) for v in voltages]
            if len(values) != self.n_channels:
                raise ValueError(
                    f"{self.family} {self.name!r}: got {len(values)} voltages; expected {self.n_channels} "
                    "(pass a {channel: volts} mapping to write a subset)"
                )
            items = dict(enumerate(values))
        for c, v in items.items():
            if not 0 <= c < self.n_channels:
                raise ValueError(
                    f"{self.family} {self.name!r}: channel {c} out of range; expected 0..{self.n_channels - 1}"
                )
            try:
                self.channels[c].voltage.validate(v)
            except ValueError as exc:
                raise ValueError(f"{self.family} {self.name!r} ch{c}: {exc.args[0]}") from None
        return items

    def set_voltages(self, voltages: Sequence[float] | Mapping[int, float], readback: bool = False) -> list[float] | None:
        """Write heater voltages (V) in ONE pipelined transaction; all values are validated before any byte is sent.

        ``readback=True`` pipelines ``V{c}?`` after the writes (same transaction) and returns the set-points read."""
        items = self._normalise(voltages)
        commands = [f"V{c}={_fmt(v)}" for c, v in items.items()]
        queries = [f"V{c}?" for c in items] if readback else []
        replies = self._transaction(commands + queries)
        got = [self._to_float(q, r) for q, r in zip(queries, replies[len(commands):])]
        replies = replies[:len(commands)]
        failures: list[str] = []
        for (c, v), cmd, reply in zip(items.items(), commands, replies):
            if reply == "OK":
                self.channels[c].voltage.cache.set(v)
            elif _ERROR_LINE.match(reply):
                failures.append(f"ch{c} {reply}")
            else:
                failures.append(f"ch{c} garbage {reply!r}")
        if failures and not readback:   # with a read-back the caller compares what the device holds
            raise DriverError(
                f"{self.family} {self.name!r} at {self.url!r}: batched write rejected for "
                f"{', '.join(failures)}; expected 'OK' for every channel"
            )
        return got if readback else None

    def get_voltages(self) -> list[float]:
        """Read every channel's voltage setpoint (V) in one pipelined transaction."""
        return self._query_floats([f"V{c}?" for c in range(self.n_channels)])

    def get_currents(self) -> list[float]:
        """Read every channel's measured current (A) in one pipelined transaction."""
        return [i * 1e-3 for i in self._query_floats([f"I{c}?" for c in range(self.n_channels)])]

    def zero_all(self) -> None:
        """Set every channel to 0 V in one pipelined transaction."""
        self.set_voltages([0.0] * self.n_channels)
