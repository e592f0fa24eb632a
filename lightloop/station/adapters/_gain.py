"""Amplifier gain of a weight layer: a control voltage on a source channel, or a fixed gain set by hand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lightloop.errors import ConfigError
from lightloop.hal.safety import SafeVoltageBank
from lightloop.station._clock import BenchClock
from lightloop.station._link import Link

__all__ = ["GainControl", "WeightGain"]


@dataclass
class GainControl:
    """Amplifier gain through a voltage-controlled amplifier: volts = gain * volts_per_gain on one bank channel.

    A reconnect of the source (it may have rebooted to 0 V) marks the gain stale; :meth:`refresh` re-sends it.
    """

    bank: SafeVoltageBank
    channel: int              # 0-based index in the bank
    volts_per_gain: float
    gain: float | None = None     # last gain written (dimensionless)
    stale: bool = False

    def __post_init__(self) -> None:
        link = getattr(self.bank.device, "link", None)
        if link is not None:
            link.on_connect(lambda drv: setattr(self, "stale", True))

    def set(self, gain: float) -> None:
        """Write the control voltage (limits and ramps enforced by the bank)."""
        self.bank.set_channels({self.channel: float(gain) * self.volts_per_gain})
        self.gain, self.stale = float(gain), False

    def refresh(self) -> bool:
        """Re-send the last gain if the source reconnected (or just closed its link) since it was written; True
        when it was re-sent."""
        link = getattr(self.bank.device, "link", None)
        if link is not None and self.gain is not None:
            link.ensure_alive()
        if not self.stale or self.gain is None:
            return False
        self.set(self.gain)
        return True


class WeightGain:
    """Shared part of the SLM and DMD weight adapters: amplifier gain and frame upload (each sets ``self.link``)."""

    link: Link
    clock: BenchClock
    _last: Any = None

    def __init__(self, name: str, gain: GainControl | None, fixed_gain: float | None, clock: BenchClock) -> None:
        self._name, self._gain, self._fixed, self._clock = name, gain, fixed_gain, clock

    @property
    def identity(self) -> str:
        """Identity of the weight device."""
        return self.link.identity

    def set_amplifier_gain(self, gain: float) -> None:
        """Amplifier gain after the 4f sum (control voltage, or check against the bench's fixed gain)."""
        if self._gain is not None:
            self._gain.set(gain)
            self._clock.changed()
        elif self._fixed is not None and not np.isclose(gain, self._fixed, rtol=1e-9, atol=0):
            raise ConfigError(f"weights on {self._name!r}: the block needs amplifier gain {gain:g} (max_weight / "
                              f"efficiency) but roles.weights.fixed_gain is {self._fixed:g}; expected equal values")

    def _resend(self, drv: Any) -> None:
        """After a reconnect: show the last frame again (the panel may have rebooted to its power-on frame)."""
        if self._last is not None:
            drv.write_frame(self._last)
            self.link.tick()
            self.clock.changed()

    def _show(self, frame: Any) -> None:
        """Upload a weight frame (one transaction), skipped when the panel already shows it; a gain lost in a
        reconnect of its source is re-sent first."""
        if self._gain is not None and self._gain.refresh():
            self._clock.changed()
        self.link.ensure_alive()       # a panel that rebooted since the last upload gets its frame back first
        if self._last is not None and np.array_equal(frame, self._last):
            return

        def op(drv: Any) -> None:
            drv.write_frame(frame)
            self.link.tick()

        self.link.run("write_frame", op)
        self._last = frame
        self.clock.changed()
