"""DMD port adapter: differential binary weight blocks, one frame upload per write."""

from __future__ import annotations


import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError
from lightloop.hal.frames import render_dmd_frame
from lightloop.station._clock import BenchClock
from lightloop.station._link import Link
from lightloop.station.adapters._gain import GainControl, WeightGain

__all__ = ["DMDWeightBlocks"]


class DMDWeightBlocks(WeightGain):
    """DMDBlockPort on a DMD (vendor SDK): differential k x k block pairs, one frame upload per write."""

    def __init__(self, link: Link, clock: BenchClock, shape: tuple[int, int], block_pixels: int,
                 gain: GainControl | None = None, fixed_gain: float | None = None) -> None:
        super().__init__(link.name, gain, fixed_gain, clock)
        panel = tuple(link.driver.shape)
        need = (shape[0] * block_pixels, 2 * shape[1] * block_pixels)
        if panel[0] < need[0] or panel[1] < need[1]:
            raise ConfigError(f"DMD {link.name!r}: {panel[0]}x{panel[1]} mirrors; expected >= {need[0]}x{need[1]} for "
                              f"{shape[0]}x{shape[1]} weights as {block_pixels}x{block_pixels} block pairs")
        self.link, self.clock, self.shape, self.block_pixels = link, clock, shape, int(block_pixels)
        self.panel = (int(panel[0]), int(panel[1]))
        self._last: NDArray[np.bool_] | None = None
        link.on_connect(self._resend)

    def write_blocks(self, on_plus: NDArray[np.uint16], on_minus: NDArray[np.uint16]) -> None:
        """Display on-mirror counts (0..k^2) of the + and - blocks (out, in)."""
        k2 = self.block_pixels**2
        if on_plus.shape != self.shape or on_minus.shape != self.shape:
            raise ValueError(f"DMD {self.link.name!r}: expected mirror counts of shape {self.shape}")
        if int(np.max(on_plus, initial=0)) > k2 or int(np.max(on_minus, initial=0)) > k2:
            raise ValueError(f"DMD {self.link.name!r}: mirror counts exceed the {k2} mirrors of a block")
        self._show(render_dmd_frame(on_plus, on_minus, self.block_pixels, self.panel))
