"""Digitiser port adapters of the integrated chip: power arrays, coherent receivers (I/Q interleaved), tap monitors.

Every HAL acquisition is one fresh exposure of the light now in the chip: ``DIG CHANc`` + ``*OPC?``, then the
channel's transfer (``WAV:SOUR``, ``WAV:PRE?``, ``WAV:DATA?``), with ``ACQ:POIN`` only when the batch size
changed. A record holds ``points = max(min_points, batch)`` patterns; the rows past the batch (no pattern shown)
are discarded. Readings are divided by the channel's front-end gain (volts per unit of power or field).

Auto-range (the configured ``chN.range`` is the starting point): a record with a code at either rail of the ADC
is taken again on a 4x larger range (never a silently clipped number; at the largest range: InstrumentError);
eight records in a row whose peaks use less than 1/16 of the half-range set a smaller range for the next
acquisition (8x their largest peak, at most 4x smaller per step, never below the smallest), so a tap reading of one probe pattern and the sum
over a training batch both keep 12-15 bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import InstrumentError
from lightloop.station._clock import BenchClock
from lightloop.station._link import Link

__all__ = ["ChipDigitizer", "PowerArray", "FieldArray", "TapArray"]


class ChipDigitizer:
    """One digitiser serving several of the chip's detector arrays (one array per channel)."""

    #: consecutive records below 1/16 of the half-range before the range shrinks (a channel that alternates small
    #: and large readings - adjoint-only and sum exposures - keeps the range of the large ones)
    shrink_after = 8

    def __init__(self, link: Link, clock: BenchClock, min_points: int = 16, autorange: bool = True) -> None:
        self.link, self.clock, self.min_points, self.autorange = link, clock, int(min_points), bool(autorange)
        self._points: int | None = None
        self._channels: set[int] = set()
        self._range: dict[int, float] = {}
        self._quiet: dict[int, int] = {}
        self._quiet_peak: dict[int, float] = {}
        self.range_changes = 0
        link.on_connect(lambda d: self.invalidate())

    def invalidate(self) -> None:
        """Forget the record length and ranges (after a reconnect: rebooted, or the config's ranges re-applied)."""
        self._points = None
        self._range.clear()
        self._quiet.clear()
        self._quiet_peak.clear()

    def claim(self, channel: int) -> int:
        """Reserve one channel for one detector array."""
        if channel in self._channels:
            raise InstrumentError(f"digitizer {self.link.name!r}: channel {channel} serves two detector arrays")
        self._channels.add(int(channel))
        return int(channel)

    def _at_rail(self, drv: Any, channel: int, volts: NDArray[np.float64]) -> bool:
        pre = getattr(drv, "last_preamble", {}).get(channel)
        if pre is None or volts.size == 0 or not pre.y_increment:
            return False
        codes = (volts - pre.y_origin) / pre.y_increment + pre.y_reference
        bits = 8 * np.dtype(pre.dtype).itemsize
        hi, lo = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
        return bool(float(codes.max()) >= hi - 0.5 or float(codes.min()) <= lo + 0.5)

    def _current_range(self, drv: Any, channel: int) -> float:
        if channel not in self._range:
            par = drv.channels[channel - 1].range
            r = par.cache.get(get_if_invalid=False)
            if r is None:
                r = par()
                self.link.tick()
            self._range[channel] = float(r)
        return self._range[channel]

    def _set_range(self, drv: Any, channel: int, volts: float) -> None:
        drv.channels[channel - 1].range(volts)
        self.link.tick()
        self._range[channel] = float(volts)
        self.range_changes += 1

    def _take(self, drv: Any, channel: int) -> NDArray[np.float64]:
        """DIG + transfer of one channel, re-taken on a larger range while a code sits at the rail."""
        lo_r, hi_r = (float(x) for x in getattr(drv, "range_limits", (0.0, float("inf"))))
        for _ in range(8):
            drv.digitize([channel])
            self.link.tick(2)
            volts = np.asarray(drv.fetch(channel), np.float64)
            self.link.tick(3)
            if not self._at_rail(drv, channel, volts):
                break
            r = self._current_range(drv, channel) if self.autorange else hi_r
            if r >= hi_r * (1 - 1e-9):
                raise InstrumentError(f"digitizer {self.link.name!r} CHAN{channel}: reading at the ADC rail on the "
                                      f"largest range {r:g} V (overrange); expected readings inside the range: lower "
                                      "the channel's volts_per_unit")
            self._set_range(drv, channel, min(hi_r, 4 * r))
        if self.autorange and volts.size:
            r = self._current_range(drv, channel)
            peak = float(np.max(np.abs(volts)))
            quiet = self._quiet.get(channel, 0) + 1 if peak < r / 32 else 0   # peak below 1/16 of the half-range
            self._quiet[channel] = quiet
            if quiet >= self.shrink_after and r > lo_r * (1 + 1e-9):
                self._set_range(drv, channel, max(lo_r, 8 * self._quiet_peak.pop(channel, peak), r / 4))
                self._quiet[channel] = 0
            elif quiet:
                self._quiet_peak[channel] = max(peak, self._quiet_peak.get(channel, 0.0))
            else:
                self._quiet_peak.pop(channel, None)
        return volts

    def record(self, channel: int, per_point: int, integrated: bool = False) -> NDArray[np.float64]:
        """Volts of one fresh acquisition of `channel`: (batch, per_point), or (per_point,) for an integrated one."""
        link = self.link

        def op(drv: Any) -> NDArray[np.float64]:
            batch = self.clock.batch
            if batch < 1:
                raise InstrumentError(f"digitizer {link.name!r}: acquisition requested before any pattern was shown")
            points = max(self.min_points, batch)
            if self._points != points:
                drv.record_length(points)
                link.tick()
                self._points = points
            volts = self._take(drv, channel)
            if integrated:
                if volts.size == per_point:                    # an integrating readout: one value per detector
                    return volts
                if volts.size == points * per_point:           # a sampling readout: integrate the shown patterns
                    return volts.reshape(points, per_point)[:batch].sum(axis=0)
            elif volts.size == points * per_point:
                return volts.reshape(points, per_point)[:batch]
            want = f"{per_point} (integrated) or {points * per_point}" if integrated else f"{points * per_point}"
            raise InstrumentError(f"digitizer {link.name!r} CHAN{channel}: {volts.size} samples; expected {want} "
                                  f"({points} patterns x {per_point} values)")

        return link.run(f"CHAN{channel}", op)


class _ChannelArray:
    """One digitiser channel claimed for one detector array of n values per pattern, scaled by its front-end gain."""

    def __init__(self, digitizer: ChipDigitizer, channel: int, n: int, volts_per_unit: float = 1.0) -> None:
        self.dig, self.channel, self.n = digitizer, digitizer.claim(channel), int(n)
        self.scale = 1.0 / float(volts_per_unit)

    @property
    def identity(self) -> str:
        """Identity of the digitiser and channel."""
        return f"{self.dig.link.identity}/CHAN{self.channel}"


class PowerArray(_ChannelArray):
    """PhotodiodePort / activation read-out: one channel carrying n photodiodes (power units = V / volts_per_unit)."""

    @property
    def n_channels(self) -> int:
        """Number of photodiodes."""
        return self.n

    def acquire(self) -> NDArray[np.float32]:
        """Readings (batch, n)."""
        return (self.dig.record(self.channel, self.n) * self.scale).astype(np.float32)


class FieldArray(_ChannelArray):
    """CoherentReceiverPort: one channel carrying n IQ receivers, I and Q interleaved per pattern."""

    @property
    def n_channels(self) -> int:
        """Number of receivers."""
        return self.n

    def acquire(self) -> NDArray[np.complex64]:
        """Complex readings (batch, n)."""
        v = self.dig.record(self.channel, 2 * self.n) * self.scale
        return (v[:, 0::2] + 1j * v[:, 1::2]).astype(np.complex64)


class TapArray(_ChannelArray):
    """TapMonitorPort: one channel carrying the n_taps monitors of a mesh layer, integrated over the batch exposure."""

    @property
    def n_taps(self) -> int:
        """Number of taps."""
        return self.n

    def acquire(self) -> NDArray[np.float32]:
        """Batch-integrated readings (n_taps,)."""
        return (self.dig.record(self.channel, self.n, integrated=True) * self.scale).astype(np.float32)
