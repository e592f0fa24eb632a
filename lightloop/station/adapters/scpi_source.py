"""SCPI multichannel source port adapter (volts): the hal.safety VoltageDevice, one batched write per call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.station._link import Link
from lightloop.station.adapters._bank import LinkedVoltageDevice

__all__ = ["ScpiSourceDevice"]


class ScpiSourceDevice(LinkedVoltageDevice):
    """VoltageDevice (hal.safety) on a ScpiSource: bank channel k = driver channel k+1; one batched write per call."""

    read_label = ":SOUR:VOLT?"
    resolution = 1e-9   # V: numbers travel with 7 significant digits (the relative part of the check covers them)

    def __init__(self, link: Link) -> None:
        self._attach(link)
        self._enabled: tuple[list[int], float | None] | None = None
        link.on_connect(self._reenable)

    def write_voltages(self, volts: Mapping[int, float]) -> NDArray[np.float64]:
        """``:SOUR:VOLT v..,(@c..);:SOUR:VOLT? (@c..)`` for the given channels (0-based, sorted): the read-back."""
        chans = sorted(volts)

        def op(drv: Any) -> NDArray[np.float64]:
            got = drv.set_voltages([volts[c] for c in chans], [c + 1 for c in chans], readback=True)
            self.link.tick()
            return np.asarray(got, np.float64)

        return self.link.run(":SOUR:VOLT", op)

    def _apply(self, drv: Any, channels: Sequence[int], current_limit: float | None) -> None:
        states = []
        for c in channels:
            if current_limit is not None:
                now = float(drv.channels[c].current_limit())
                self.link.tick()
                if now > current_limit:
                    drv.channels[c].current_limit(current_limit)
                    self.link.tick()
            states.append(bool(drv.channels[c].output()))
        self.link.tick(len(channels))
        closed = [c for c, on in zip(channels, states) if not on]
        if closed:
            drv.set_voltages([0.0] * len(closed), [c + 1 for c in closed])
            drv.output_on([c + 1 for c in closed])
            self.link.tick(2)

    def _reenable(self, drv: Any) -> None:
        """After a reconnect (the source may have rebooted): compliance lowered again, open relays closed at 0 V."""
        if self._enabled is not None:
            self._apply(drv, *self._enabled)

    def enable(self, channels: Sequence[int], current_limit: float | None = None) -> None:
        """Close the relays of channels (0-based) that are open, after zeroing their set-points (no jump);
        lower each channel's current compliance to `current_limit` (A) first (never raise it). Re-applied
        after every reconnect."""
        self._enabled = (list(channels), current_limit)
        self.link.run(":OUTP ON", lambda drv: self._apply(drv, list(channels), current_limit))

    def disable(self) -> None:
        """Every set-point to 0 V, then every relay open (safe state)."""
        self._enabled = None

        def op(drv: Any) -> None:
            drv.zero_all()
            drv.output_off()
            self.link.tick(2)

        self.link.run(":OUTP OFF", op)
