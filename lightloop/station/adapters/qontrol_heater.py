"""Qontrol heater-driver port adapter (volts): VoltageDevice and HeaterPort, one pipelined transaction per call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.hal.safety import Range
from lightloop.station._link import Link
from lightloop.station.adapters._bank import LinkedVoltageDevice

__all__ = ["QontrolHeaterDevice"]


class QontrolHeaterDevice(LinkedVoltageDevice):
    """VoltageDevice (hal.safety) and HeaterPort on a QontrolHeater: one pipelined transaction per call."""

    read_label = "V?"
    resolution = 1e-4   # V: the wire carries 4 decimals

    def __init__(self, link: Link, limit: Range | None = None, current: Range | None = None) -> None:
        self._attach(link)
        if limit is not None or current is not None:
            link.run("VMAX=", lambda d: self._narrow(d, limit, current))   # a fault here is retried like any other
            link.on_connect(lambda d: self._narrow(d, limit, current))

    def _narrow(self, drv: Any, limit: Range | None, current: Range | None) -> None:
        """Lower each channel's VMAX (V) and IMAX (A) above our limits (never raise them)."""
        for ch in drv.channels:
            for par, lim in ((ch.vmax, limit), (ch.imax, current)):
                if lim is None:
                    continue
                now = par.cache.get(get_if_invalid=False)
                if now is None or now > lim.high:
                    par(lim.high)
                    self.link.tick()

    def write_voltages(self, volts: Mapping[int, float]) -> NDArray[np.float64]:
        """``V{c}=...`` then ``V{c}?`` lines for the given channels (sorted) in one pipelined transaction: the read-back."""
        def op(drv: Any) -> NDArray[np.float64]:
            got = drv.set_voltages({int(c): float(volts[c]) for c in sorted(volts)}, readback=True)
            self.link.tick()
            return np.asarray(got, np.float64)

        return self.link.run("V=", op)

    # HeaterPort (raw; the HAL wraps this device in a SafeVoltageBank)
    def set_voltages(self, voltages: Sequence[float]) -> None:
        """All channels in one transaction."""
        self.write_voltages(dict(enumerate(float(v) for v in voltages)))

    def get_voltages(self) -> NDArray[np.float64]:
        """All channel set-points (V)."""
        return self.read_voltages()
