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
    if block_field.dtype == np.complex64 and block_field.ndim == 2 and block_field.flags.c_contiguous:
        # the same products and sums on the (re, im) float32 view: a real factor scales both parts alike
        flat = block_field.view(np.float32)
        o, lk = flat * (1.0 - 2.0 * fringing), flat * fringing
        o[:, 2:] += lk[:, :-2]
        o[:, :-2] += lk[:, 2:]
        return o.view(np.complex64)
    if block_field.dtype == np.complex64 and block_field.ndim == 2 and block_field.T.flags.c_contiguous:
        # column-major (out, in): the row neighbours are adjacent rows of the (in, 2 out) float32 view, same order
        flat = block_field.T.view(np.float32)
        o, lk = flat * (1.0 - 2.0 * fringing), flat * fringing
        o[1:] += lk[:-1]
        o[:-1] += lk[1:]
        return o.view(np.complex64).T
    out = (1.0 - 2.0 * fringing) * block_field
    leak = fringing * block_field
    out[:, 1:] += leak[:, :-1]
    out[:, :-1] += leak[:, 1:]
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
        gp, gm = np.asarray(gray_plus), np.asarray(gray_minus)
        if gp.dtype != np.uint8 or gm.dtype != np.uint8 or gp.shape != gm.shape:
            table = np.exp(1j * self.phase_table()).astype(np.complex64)
            return apply_fringing(0.5 * (table[gp] + table[gm]), self.fringing)
        pair = (gp.astype(np.uint16) << 8) | gm               # one lookup in the table of every (g+, g-) pair
        if pair.ndim == 2 and pair.flags.f_contiguous and not pair.flags.c_contiguous:   # keep a column-major layout
            field = np.take(self._pair_table(), pair.T).view(np.complex64).T
        else:
            field = np.take(self._pair_table(), pair).view(np.complex64)
        return apply_fringing(field, self.fringing)

    def _pair_table(self) -> NDArray[np.uint64]:
        """0.5 (exp(i phi(g+)) + exp(i phi(g-))) for all 65536 pairs, as complex64 bits (rebuilt if the LUT changes)."""
        key = (float(self.phase_max_rad), float(self.gamma))
        cached = self.__dict__.get("_pairs")
        if cached is None or cached[0] != key:
            table = np.exp(1j * self.phase_table()).astype(np.complex64)
            pairs = (0.5 * (table[:, None] + table[None, :])).astype(np.complex64)
            cached = (key, np.ascontiguousarray(pairs).reshape(-1).view(np.uint64))
            self.__dict__["_pairs"] = cached
        return cached[1]


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
