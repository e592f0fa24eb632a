"""Physics of free-space weight blocks: phase SLM (8-bit LUT, fringing) and binary DMD pixel blocks.

A weight is one k x k block of pixels; the 4f system with a slit keeps the block's zero
diffraction order, so a block contributes its pixel-averaged complex field.
SLM: a checkerboard of two gray levels g+, g- with phases phi(g+-) gives the block field
(exp(i phi+) + exp(i phi-)) / 2 = exp(i (phi+ + phi-)/2) cos((phi+ - phi-)/2); sign by a pi offset.
DMD: binary mirrors; fraction-on f gives amplitude, sign from a differential pair of blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["SLMPhysics", "DMDPhysics", "apply_fringing"]


def apply_fringing(block_field: NDArray, fringing: float) -> NDArray:
    """Mix each block with its row neighbours: t' = (1 - 2f) t + f (t_left + t_right); zero beyond the edges."""
    if fringing == 0.0:
        return block_field
    out = (1.0 - 2.0 * fringing) * block_field
    out[:, 1:] += fringing * block_field[:, :-1]
    out[:, :-1] += fringing * block_field[:, 1:]
    return out


@dataclass
class SLMPhysics:
    """Phase-only SLM: phase(g) = phase_max * (g / 255)**gamma for 8-bit gray level g."""

    phase_max_rad: float = 2.0 * np.pi * 255.0 / 256.0
    gamma: float = 1.0
    fringing: float = 0.0

    def phase_table(self) -> NDArray[np.float64]:
        """True phase (rad) of each of the 256 gray levels."""
        g = np.arange(256, dtype=np.float64)
        return self.phase_max_rad * (g / 255.0) ** self.gamma

    def block_field(self, gray_plus: NDArray[np.uint8], gray_minus: NDArray[np.uint8]) -> NDArray[np.complex64]:
        """Zero-order complex field of each checkerboard block (dimensionless, |t| <= 1)."""
        table = np.exp(1j * self.phase_table()).astype(np.complex64)
        field = 0.5 * (table[gray_plus] + table[gray_minus])
        return apply_fringing(field, self.fringing)


@dataclass
class DMDPhysics:
    """Binary DMD blocks of k x k mirrors: amplitude = (n/k^2)**(1 + nonlinearity), sign by differential pair."""

    block_pixels: int = 16
    nonlinearity: float = 0.0
    fringing: float = 0.0

    def block_field(self, on_plus: NDArray[np.integer], on_minus: NDArray[np.integer]) -> NDArray[np.float32]:
        """Real field of each differential block pair given its on-mirror counts."""
        n = float(self.block_pixels**2)
        p = (np.asarray(on_plus, dtype=np.float32) / n) ** (1.0 + self.nonlinearity)
        m = (np.asarray(on_minus, dtype=np.float32) / n) ** (1.0 + self.nonlinearity)
        return apply_fringing((p - m).astype(np.float32), self.fringing)
