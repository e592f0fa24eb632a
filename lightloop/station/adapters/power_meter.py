"""Power-meter port adapter: optical power read-back (W)."""

from __future__ import annotations

from typing import Any

from lightloop.station._link import BadReplyError, Link

__all__ = ["PowerMeterDevice"]


class PowerMeterDevice:
    """Optical power read-back on an OpticalPowerMeter driver; a reading the sensor cannot give is read again."""

    def __init__(self, link: Link) -> None:
        self.link, self.name = link, link.name

    def read_power(self) -> float:
        """``MEAS:POW?`` (W); NaN, inf or outside [-1 %, 110 %] of the sensor's range is a bad reading (retried)."""
        def op(drv: Any) -> float:
            p = float(drv.power())
            self.link.tick()
            full = float(getattr(drv, "max_power", float("inf")))
            if not -0.01 * full <= p <= 1.1 * full:
                raise BadReplyError(f"power meter {self.name!r}: bad reading {p!r} W; expected a value within the "
                                    f"sensor's range [0, {full:g}] W")
            return p

        return self.link.run("MEAS:POW?", op)
