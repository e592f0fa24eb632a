"""Shared plumbing of a multichannel voltage source adapter: link epoch, reconnect hook, batched read-back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.station._link import Link

__all__ = ["LinkedVoltageDevice"]


class LinkedVoltageDevice:
    """Base of the hal.safety VoltageDevice adapters: one counted `get_voltages()` transaction per read-back."""

    link: Link
    name: str
    #: label of the read-back query in transaction stats and messages
    read_label = "VOLT?"

    def _attach(self, link: Link) -> None:
        self.link, self.name = link, link.name
        self.n_channels = int(link.driver.n_channels)

    @property
    def epoch(self) -> int:
        """Connection epoch (+1 on every reconnect)."""
        return self.link.epoch

    def on_reconnect(self, fn: Callable[[], None]) -> None:
        """Run fn() after every reconnect, after the adapter's own re-establishing steps registered before it - except
        while the station is securing the bench: the safe state must not ramp outputs back to their run values (nor
        stop at an out-of-limit read-back before it has switched the outputs off)."""
        self.link.on_connect(lambda drv: None if self.link.securing else fn())

    def read_voltages(self) -> NDArray[np.float64]:
        """Every channel's voltage set-point in one transaction (V)."""
        def op(drv: Any) -> NDArray[np.float64]:
            v = np.asarray(drv.get_voltages(), np.float64)
            self.link.tick()
            return v

        return self.link.run(self.read_label, op)
