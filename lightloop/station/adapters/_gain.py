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
    """Amplifier gain through a voltage-controlled amplifier: volts = gain * volts_per_gain on one bank channel."""

    bank: SafeVoltageBank
    channel: int              # 0-based index in the bank
    volts_per_gain: float

    def set(self, gain: float) -> None:
        """Write the control voltage (limits and ramps enforced by the bank)."""
        self.bank.set_channels({self.channel: float(gain) * self.volts_per_gain})


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
        """After a reconnect: show the last frame again (the panel may have been reset)."""
        if self._last is not None:
            drv.write_frame(self._last)
            self.link.tick()

    def _show(self, frame: Any) -> None:
        """Upload a weight frame (one transaction), skipped when the panel already shows it."""
        if self._last is not None and np.array_equal(frame, self._last):
            return

        def op(drv: Any) -> None:
            drv.write_frame(frame)
            self.link.tick()

        self.link.run("write_frame", op)
        self._last = frame
        self.clock.changed()
