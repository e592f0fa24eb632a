"""SCPI multichannel source port adapter (volts): the hal.safety VoltageDevice, one batched write per call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.station._link import Link

__all__ = ["ScpiSourceDevice"]


class ScpiSourceDevice:
    """VoltageDevice (hal.safety) on a ScpiSource: bank channel k = driver channel k+1; one batched write per call."""

    def __init__(self, link: Link) -> None:
        self.link, self.name = link, link.name
        self.n_channels = int(link.driver.n_channels)

    @property
    def epoch(self) -> int:
        """Connection epoch (a reconnect invalidates read-back caches)."""
        return self.link.epoch

    def read_voltages(self) -> NDArray[np.float64]:
        """``:SOUR:VOLT? (@1..n)`` (V)."""
        def op(drv: Any) -> NDArray[np.float64]:
            v = np.asarray(drv.get_voltages(), np.float64)
            self.link.tick()
            return v

        return self.link.run(":SOUR:VOLT?", op)

    def write_voltages(self, volts: Mapping[int, float]) -> None:
        """``:SOUR:VOLT v..,(@c..);*OPC?`` for the given channels (0-based)."""
        chans = sorted(volts)

        def op(drv: Any) -> None:
            drv.set_voltages([volts[c] for c in chans], [c + 1 for c in chans])
            self.link.tick()

        self.link.run(":SOUR:VOLT", op)

    def enable(self, channels: Sequence[int], current_limit: float | None = None) -> None:
        """Close the relays of channels (0-based) that are open, after zeroing their set-points (no jump);
        lower each channel's current compliance to `current_limit` (A) first (never raise it)."""
        def op(drv: Any) -> None:
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

        self.link.run(":OUTP ON", op)

    def disable(self) -> None:
        """Every set-point to 0 V, then every relay open (safe state)."""
        def op(drv: Any) -> None:
            drv.zero_all()
            drv.output_off()
            self.link.tick(2)

        self.link.run(":OUTP OFF", op)
