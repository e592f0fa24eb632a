"""SLM port adapters: field sequence panels (input encoder, backward probe) and phase-SLM weight blocks."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError
from lightloop.hal.frames import encode_fields, render_weight_frame, weight_panel_shape
from lightloop.station._clock import BenchClock
from lightloop.station._link import Link
from lightloop.station.adapters._gain import GainControl, WeightGain

__all__ = ["SLMFieldSource", "SLMWeightBlocks"]


class SLMFieldSource:
    """FieldSourcePort on an SLM sequence panel (row r = pattern r; signed codes around 2**(bits-1)).

    One transaction per display. A batch larger than the panel's rows is an error naming the instrument.
    """

    def __init__(self, link: Link, clock: BenchClock, n: int, full_scale_field: float, role: str = "input",
                 min_rows: int = 16) -> None:
        drv = link.driver
        h, w = drv.shape
        bits = int(drv.bit_depth())
        if w != n:
            raise ConfigError(f"{role} SLM {link.name!r}: panel is {h}x{w}; expected {n} columns (one pixel per field)")
        if bits < 2 or h < min_rows:
            raise ConfigError(f"{role} SLM {link.name!r}: panel {h}x{w} at {bits} bit; expected >= {min_rows} rows "
                              "(sequence slots) and >= 2 bit signed codes")
        self.link, self.clock, self.n, self.role = link, clock, n, role
        self.full_scale, self.bits, self.rows = float(full_scale_field), bits, h
        self.zero = 2 ** (bits - 1)
        self.frame = np.full((h, w), self.zero, dtype=np.uint16 if bits > 8 else np.uint8)
        self._used = 0
        link.on_connect(lambda d: self._send(d))

    @property
    def identity(self) -> str:
        """Identity of the SLM."""
        return self.link.identity

    def _send(self, drv: Any) -> None:
        drv.write_frame(self.frame)
        self.link.tick()
        self.clock.changed()    # also after a reconnect: the panel may have shown its power-on frame meanwhile

    def write_fields(self, fields: NDArray[np.float32]) -> None:
        """Show a batch (batch, n) of signed fields (saturation units) as one frame sequence."""
        f = np.asarray(fields)
        if f.ndim != 2 or f.shape[1] != self.n:
            raise ValueError(f"{self.role} SLM {self.link.name!r}: expected fields of shape (batch, {self.n}), got {f.shape}")
        b = f.shape[0]
        if b > self.rows:
            raise ConfigError(f"{self.role} SLM {self.link.name!r}: a batch of {b} patterns exceeds the panel's "
                              f"{self.rows}-frame sequence; expected batch <= {self.rows} (lower the batch size)")
        if not np.isfinite(f).all():
            raise ValueError(f"{self.role} SLM {self.link.name!r}: fields contain NaN or inf")
        self.frame[:b] = encode_fields(f, self.full_scale, self.bits)
        if self._used > b:
            self.frame[b:self._used] = self.zero
        self._used = b
        self.link.run("write_frame", self._send)
        self.clock.displayed(b)

    def dark(self) -> None:
        """Every pattern at zero field."""
        self.frame[:] = self.zero
        self._used = 0
        self.link.run("write_frame", self._send)
        self.clock.changed()


class SLMWeightBlocks(WeightGain):
    """SLMBlockPort on a phase SLM: one frame per write (skipped when the frame did not change)."""

    def __init__(self, link: Link, clock: BenchClock, shape: tuple[int, int], layout: str = "pairs",
                 block_pixels: int = 1, gain: GainControl | None = None, fixed_gain: float | None = None) -> None:
        super().__init__(link.name, gain, fixed_gain, clock)
        drv = link.driver
        panel = tuple(drv.shape)
        need = weight_panel_shape(shape, layout, block_pixels)
        if panel[0] < need[0] or panel[1] < need[1] or int(drv.bit_depth()) < 8:
            raise ConfigError(f"weight SLM {link.name!r}: panel {panel[0]}x{panel[1]} at {drv.bit_depth()} bit; expected "
                              f">= {need[0]}x{need[1]} at 8 bit for {shape[0]}x{shape[1]} weights in layout {layout!r}")
        self.link, self.clock, self.shape = link, clock, shape
        self.layout, self.block_pixels, self.panel = layout, block_pixels, (int(panel[0]), int(panel[1]))
        self._last: NDArray[np.uint8] | None = None
        link.on_connect(self._resend)

    def write_blocks(self, gray_plus: NDArray[np.uint8], gray_minus: NDArray[np.uint8]) -> None:
        """Display the checkerboard gray levels (out, in) of every weight."""
        if gray_plus.shape != self.shape or gray_minus.shape != self.shape:
            raise ValueError(f"weight SLM {self.link.name!r}: expected gray levels of shape {self.shape}")
        self._show(render_weight_frame(gray_plus, gray_minus, self.layout, self.block_pixels, self.panel))
