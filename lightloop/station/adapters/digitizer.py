"""Digitiser port adapter: each channel an array of detectors, one acquisition per batch and arm (volts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError, InstrumentError
from lightloop.station._clock import BenchClock
from lightloop.station._link import Link

__all__ = ["DigitizerArrays", "DigitizerDetector"]


class DigitizerArrays:
    """One digitiser serving several detector arrays (one per channel), with one acquisition per batch and arm.

    Arms: 'forward' (pre/post taps, after the input display) and 'backward' (error taps, after the probe).
    The first read of an arm after the bench changed sends ``ACQ:POIN`` (only when the batch size
    changed) and ``DIG`` + ``*OPC?`` for every channel of that arm, in registration order; each read
    then transfers its own channel (``WAV:SOUR``, ``WAV:PRE?``, ``WAV:DATA?``).
    """

    def __init__(self, link: Link, clock: BenchClock, min_points: int = 16) -> None:
        self.link, self.clock, self.min_points = link, clock, int(min_points)
        self.arms: dict[str, list[int]] = {"forward": [], "backward": []}
        self._armed: dict[str, tuple[int, int] | None] = {"forward": None, "backward": None}
        self._points: int | None = None
        link.on_connect(lambda d: self.invalidate())

    def invalidate(self) -> None:
        """Forget acquisitions and record length (after a reconnect)."""
        self._armed = {"forward": None, "backward": None}
        self._points = None

    def port(self, channel: int, n_detectors: int, arm: str) -> "DigitizerDetector":
        """DetectorPort for one channel (an array of n_detectors) on arm 'forward' or 'backward'."""
        if arm not in self.arms:
            raise ValueError(f"digitizer {self.link.name!r}: arm must be 'forward' or 'backward', got {arm!r}")
        if channel in self.arms["forward"] + self.arms["backward"]:
            raise ConfigError(f"digitizer {self.link.name!r}: channel {channel} serves two detector arrays; "
                              "expected one array per channel")
        self.arms[arm].append(int(channel))
        return DigitizerDetector(self, int(channel), int(n_detectors), arm)

    def acquire(self, channel: int, n: int, arm: str) -> NDArray[np.float32]:
        """Volts (batch, n) of one channel from the current acquisition of its arm."""
        link = self.link

        def op(drv: Any) -> NDArray[np.float32]:
            batch = self.clock.batch
            if batch < 1:
                raise InstrumentError(f"digitizer {link.name!r}: acquisition requested before any pattern was shown")
            points = max(self.min_points, batch)
            key = (self.clock.gen, points)
            if self._armed[arm] != key:
                if self._points != points:
                    drv.record_length(points)
                    link.tick()
                    self._points = points
                drv.digitize(self.arms[arm])
                link.tick(2)
                self._armed[arm] = key
            volts = drv.fetch(channel)
            link.tick(3)
            if volts.size != points * n:
                raise InstrumentError(
                    f"digitizer {link.name!r} CHAN{channel}: {volts.size} samples; expected {points} patterns x "
                    f"{n} detectors = {points * n}")
            return volts.reshape(points, n)[:batch].astype(np.float32)

        return link.run(f"CHAN{channel}", op)


@dataclass
class DigitizerDetector:
    """DetectorPort: one digitiser channel carrying an array of n_channels detectors."""

    group: DigitizerArrays
    channel: int
    n_channels: int
    arm: str

    @property
    def identity(self) -> str:
        """Identity of the digitiser and channel."""
        return f"{self.group.link.identity}/CHAN{self.channel}"

    def acquire(self) -> NDArray[np.float32]:
        """Detector volts (batch, channels)."""
        return self.group.acquire(self.channel, self.n_channels, self.arm)
