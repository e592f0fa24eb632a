"""Power-meter port adapter: optical power read-back (W)."""

from __future__ import annotations

from typing import Any

from lightloop.station._link import Link

__all__ = ["PowerMeterDevice"]


class PowerMeterDevice:
    """Optical power read-back on an OpticalPowerMeter driver."""

    def __init__(self, link: Link) -> None:
        self.link, self.name = link, link.name

    def read_power(self) -> float:
        """``MEAS:POW?`` (W)."""
        def op(drv: Any) -> float:
            p = float(drv.power())
            self.link.tick()
            return p

        return self.link.run("MEAS:POW?", op)
