"""Shared plumbing for the lightloop drivers: one-line instrument errors and a SCPI VisaInstrument base."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pyvisa
import pyvisa.constants
import pyvisa.errors
from qcodes.instrument import VisaInstrument

from lightloop.errors import InstrumentError

__all__ = [
    "DriverError",
    "ScpiVisaInstrument",
    "format_number",
    "format_channel_list",
    "parse_bool",
]

_SCPI_NO_ERROR = re.compile(r"^\s*[+]?0\s*(,|$)")


class DriverError(InstrumentError):
    """InstrumentError whose text stays on one line when QCoDeS appends context to ``args``."""

    def __str__(self) -> str:
        return "; ".join(str(a) for a in self.args)


def format_number(value: float) -> str:
    """Format a number for an ASCII command: up to 7 significant digits, no padding ('1.25', '0', '1e-05')."""
    text = f"{float(value):.7g}"
    return "0" if text in ("-0", "+0") else text


def format_channel_list(channels: Sequence[int]) -> str:
    """SCPI channel list with explicit comma-separated members, e.g. ``(@1,2,3)``."""
    return "(@" + ",".join(str(int(c)) for c in channels) + ")"


def parse_bool(reply: str) -> bool:
    """Parse an SCPI boolean reply (``1``/``0``/``ON``/``OFF``); raise ValueError otherwise."""
    text = reply.strip().upper()
    if text in ("1", "ON", "+1"):
        return True
    if text in ("0", "OFF", "+0"):
        return False
    raise ValueError(f"expected 1/0/ON/OFF, got {reply!r}")


class ScpiVisaInstrument(VisaInstrument):
    """VisaInstrument that turns VISA faults and garbage replies into one-line InstrumentErrors."""

    default_terminator = "\n"
    default_timeout = 5.0
    #: short family name used in error messages, e.g. "SCPI source"
    family: str = "SCPI instrument"

    # --- connection -------------------------------------------------------------------------

    def _connect_and_handle_error(
        self, address: str, visalib: str | None
    ) -> pyvisa.resources.MessageBasedResource:
        try:
            return self._open_resource(address, visalib)
        except Exception as exc:  # pyvisa raises VisaIOError, ValueError, OSError, ...
            self.close()
            raise DriverError(
                f"{self.family} {self.name!r}: cannot open VISA resource {address!r} "
                f"({type(exc).__name__}: {_one_line(exc)}); expected a reachable instrument at that address"
            ) from exc

    def device_clear(self) -> None:
        """Clear the device buffers; a refused or dropped link becomes InstrumentError (and frees the name)."""
        try:
            super().device_clear()
        except (pyvisa.errors.Error, OSError, ConnectionError) as exc:
            address = getattr(self, "_legacy_address", None)
            self.close()
            raise DriverError(
                f"{self.family} {self.name!r}: cannot open VISA resource {address!r} "
                f"({type(exc).__name__}: {_one_line(exc)}); expected a reachable instrument at that address"
            ) from exc

    # --- transport with clear errors ------------------------------------------------------------

    def _transport_error(self, cmd: str, exc: Exception, expected: str) -> DriverError:
        timeout = getattr(self.visa_handle, "timeout", None)
        if (
            isinstance(exc, pyvisa.errors.VisaIOError)
            and exc.error_code == pyvisa.constants.StatusCode.error_timeout
        ):
            tmo = "?" if timeout is None else f"{timeout / 1000:g}"
            return DriverError(
                f"{self.family} {self.name!r}: no reply to {cmd!r} within {tmo} s (timeout); expected {expected}"
            )
        return DriverError(
            f"{self.family} {self.name!r}: connection failed during {cmd!r} "
            f"({type(exc).__name__}: {_one_line(exc)}); expected {expected}"
        )

    def write_raw(self, cmd: str) -> None:
        """Write one command line; transport faults become InstrumentError."""
        try:
            super().write_raw(cmd)
        except (pyvisa.errors.Error, OSError, ConnectionError) as exc:
            raise self._transport_error(cmd, exc, "the command to be accepted") from exc

    def ask_raw(self, cmd: str) -> str:
        """Query and return the reply line; transport faults become InstrumentError."""
        try:
            return super().ask_raw(cmd)
        except (pyvisa.errors.Error, OSError, ConnectionError) as exc:
            raise self._transport_error(cmd, exc, "a reply") from exc

    # --- reply parsing ----------------------------------------------------------------------

    def _garbage(self, cmd: str, reply: str, expected: str) -> DriverError:
        return DriverError(
            f"{self.family} {self.name!r}: replied {reply!r} to {cmd!r}; expected {expected}"
        )

    def float_parser(self, cmd: str) -> Callable[[str], float]:
        """Return a get_parser that turns a numeric reply into float or raises InstrumentError."""

        def parse(reply: str) -> float:
            try:
                value = float(reply.strip())
            except ValueError:
                raise self._garbage(cmd, reply, "a number") from None
            if not abs(value) < 9.9e37:   # NaN, inf and the SCPI overrange/NaN markers 9.9E37 / 9.91E37
                raise self._garbage(cmd, reply, "a finite number")
            return value

        return parse

    def int_parser(self, cmd: str) -> Callable[[str], int]:
        """Return a get_parser that turns an integer reply into int or raises InstrumentError."""

        def parse(reply: str) -> int:
            text = reply.strip()
            try:
                return int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    raise self._garbage(cmd, reply, "an integer") from None
                if not value.is_integer():
                    raise self._garbage(cmd, reply, "an integer") from None
                return int(value)

        return parse

    def bool_parser(self, cmd: str) -> Callable[[str], bool]:
        """Return a get_parser for 1/0/ON/OFF replies that raises InstrumentError on anything else."""

        def parse(reply: str) -> bool:
            try:
                return parse_bool(reply)
            except ValueError:
                raise self._garbage(cmd, reply, "1, 0, ON or OFF") from None

        return parse

    def choice_parser(self, cmd: str, choices: Sequence[str]) -> Callable[[str], str]:
        """Return a get_parser that accepts one of ``choices`` (case-insensitive) and returns it upper-case."""
        allowed = {c.upper() for c in choices}

        def parse(reply: str) -> str:
            text = reply.strip().strip('"').upper()
            if text not in allowed:
                raise self._garbage(cmd, reply, "one of " + "/".join(sorted(allowed)))
            return text

        return parse

    def _verify_identity(self) -> None:
        """Read ``*IDN?`` once at connect; on any fault close the instrument (freeing its name) and re-raise."""
        try:
            self.idn_info = self.get_idn()
        except Exception:
            self.close()
            raise

    # --- common SCPI operations ----------------------------------------------------------

    def reset(self) -> None:
        """Send ``*RST`` (instrument default state)."""
        self.write("*RST")

    def clear_status(self) -> None:
        """Send ``*CLS`` (clear status and error queue)."""
        self.write("*CLS")

    def wait_complete(self) -> None:
        """Block on ``*OPC?`` until all pending operations finished (reply must be ``1``)."""
        reply = self.ask("*OPC?")
        if reply.strip() not in ("1", "+1"):
            raise self._garbage("*OPC?", reply, "'1'")

    def error_queue(self, max_errors: int = 32) -> list[str]:
        """Read ``SYST:ERR?`` until it reports ``0,...``; return the error strings (empty if none)."""
        errors: list[str] = []
        for _ in range(max_errors):
            reply = self.ask("SYST:ERR?").strip()
            if _SCPI_NO_ERROR.match(reply):
                return errors
            errors.append(reply)
        return errors

    def check_errors(self) -> None:
        """Raise InstrumentError listing the instrument's queued SCPI errors, if any."""
        errors = self.error_queue()
        if errors:
            raise DriverError(
                f"{self.family} {self.name!r}: instrument reported error(s) {' | '.join(errors)}; "
                "expected '0,\"No error\"'"
            )

    def get_idn(self) -> dict[str, str | None]:
        """Parse ``*IDN?`` into vendor/model/serial/firmware; timeouts and garbage become InstrumentError."""
        reply = self.ask("*IDN?")
        parts = [p.strip() for p in reply.strip().split(",", 3)]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise self._garbage("*IDN?", reply, "'vendor,model,serial,firmware'")
        parts += [""] * (4 - len(parts))
        return dict(zip(("vendor", "model", "serial", "firmware"), parts))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
