"""Instrument address forms (ground floor): VISA TCPIP sockets, host:port and pyserial socket URLs."""

from __future__ import annotations

import re

__all__ = ["address_port"]

_VISA = re.compile(r"^TCPIP\d*::([^:]+)::(\d+)::SOCKET$", re.IGNORECASE)
_HOSTPORT = re.compile(r"^(?:tcp://)?([^:/]+):(\d+)$")
_SERIAL = re.compile(r"^socket://([^:/]+):(\d+)$")


def address_port(driver: str, address: str) -> tuple[str, int]:
    """(host, port) of a TCP address as each driver family writes it; ValueError if it is not a TCP address."""
    pattern = {"slm": _HOSTPORT, "qontrol_heater": _SERIAL}.get(driver, _VISA)
    m = pattern.match(address.strip())
    if not m:
        raise ValueError(address)
    return m.group(1), int(m.group(2))
