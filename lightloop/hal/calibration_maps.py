"""Calibration maps: the HAL's knowledge of each device, as measured (nominal until calibrated)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import CalibrationError
from lightloop.physics.vapor_cell import VaporCellPhysics

__all__ = ["GrayLevelLUT", "DMDFillMap", "VaporCellMap", "HomodyneMap"]


@dataclass
class GrayLevelLUT:
    """SLM gray level -> phase (rad), 256 monotonic entries; inverted by interpolation."""

    phase_rad: NDArray[np.float64] = field(default_factory=lambda: 2 * np.pi * np.arange(256) / 256.0)

    def __post_init__(self) -> None:
        self.phase_rad = np.asarray(self.phase_rad, dtype=np.float64)
        if self.phase_rad.shape != (256,) or np.any(np.diff(self.phase_rad) <= 0):
            raise CalibrationError("SLM LUT: expected 256 strictly increasing phases (rad)")
        self._grid = np.arange(256, dtype=np.float64)
        self._bin_gray: NDArray[np.uint8] | None = None   # built on first use; the table is immutable
        self._bin_edge: NDArray[np.bool_] | None = None
        self._pair_table: NDArray[np.uint32] | None = None

    @classmethod
    def power_law(cls, phase_max_rad: float, gamma: float) -> "GrayLevelLUT":
        """phase(g) = phase_max * (g / 255)**gamma, the usual liquid-crystal response model."""
        g = np.arange(256, dtype=np.float64)
        return cls(phase_max_rad * (g / 255.0) ** gamma)

    def gray_for_phase(self, phase_rad: NDArray) -> NDArray[np.uint8]:
        """Nearest 8-bit gray level for each phase (wrapped to [0, 2 pi)); exact, table-accelerated."""
        if self._bin_gray is None:
            self._build_bins()
        p = np.mod(np.asarray(phase_rad, dtype=np.float64), 2 * np.pi)
        i = np.minimum((p * (_N_BINS / (2 * np.pi))).astype(np.int64), _N_BINS - 1)
        g = self._bin_gray[i]
        edge = self._bin_edge[i]                           # bins holding a decision boundary: exact path
        if edge.any():
            g[edge] = self._exact_gray(p[edge])
        return g

    def _exact_gray(self, phase_rad: NDArray) -> NDArray[np.uint8]:
        """Reference rule: interpolate the gray index, round; phases past the top wrap to 0 when nearer 2 pi."""
        p = np.mod(phase_rad, 2 * np.pi)                   # idempotent on already-wrapped phases
        wrap = p > 0.5 * (self.phase_rad[-1] + 2 * np.pi)
        g = np.where(wrap, 0.0, np.interp(p, self.phase_rad, self._grid))
        return np.clip(np.rint(g), 0, 255).astype(np.uint8)

    def checkerboard_grays(self, passive: NDArray) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
        """Checkerboard gray levels (g+, g-) for passive amplitudes in [-1, 1]; exact, table-accelerated for float32."""
        passive = np.asarray(passive)
        if passive.dtype != np.float32:
            return self._checkerboard_exact(passive)
        if passive.ndim == 2 and passive.flags.f_contiguous and not passive.flags.c_contiguous:
            gp, gm = self.checkerboard_grays(passive.T)     # elementwise: column-major in, column-major out
            return gp.T, gm.T
        if self._pair_table is None:
            self._pair_table = self._build_pair_table()
        passive = np.ascontiguousarray(passive)
        v = np.take(self._pair_table, passive.view(np.uint32) >> _PAIR_SHIFT)   # g+ | g- << 8 | edge << 16
        gp, gm = v.astype(np.uint8), (v >> 8).astype(np.uint8)
        edge = np.flatnonzero(v > 0xFFFF)                      # bins holding a decision boundary: exact path
        if edge.size:
            gp.reshape(-1)[edge], gm.reshape(-1)[edge] = self._checkerboard_exact(passive.reshape(-1)[edge])
        return gp, gm

    def _checkerboard_exact(self, passive: NDArray) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
        """Reference rule: |w| = cos(alpha), phases s +- alpha with s = pi for w < 0, each to its nearest gray level."""
        alpha = np.arccos(np.abs(passive))
        s = np.where(passive < 0, np.pi, 0.0)
        return self.gray_for_phase(s + alpha), self.gray_for_phase(s - alpha)

    def _build_pair_table(self) -> NDArray[np.uint32]:
        """(g+, g-) of every float32 bit-pattern bin (2**_PAIR_SHIFT patterns) with |w| <= 1; others flagged exact."""
        table = np.full(1 << (32 - _PAIR_SHIFT), 1 << 16, dtype=np.uint32)
        top = np.float32(1.0).view(np.uint32) >> _PAIR_SHIFT      # the bin holding |w| = 1
        for sign in (0, 1 << (31 - _PAIR_SHIFT)):
            k = np.arange(top + 1, dtype=np.uint32) + np.uint32(sign)
            lo = (k << _PAIR_SHIFT).view(np.float32)
            hi = ((k << _PAIR_SHIFT) | np.uint32((1 << _PAIR_SHIFT) - 1)).view(np.float32)
            hi = np.where(np.abs(hi) > 1, lo, hi)                 # the |w| = 1 bin: only 1.0 itself is valid
            (gp, gm), (hp, hm) = self._checkerboard_exact(lo), self._checkerboard_exact(hi)
            edge = (gp != hp) | (gm != hm)
            near = edge.copy()                                   # one bin of margin each side of a boundary
            near[1:] |= edge[:-1]
            near[:-1] |= edge[1:]
            edge = near
            edge[-1] = True                                      # values just above 1 (never written) stay exact
            table[k] = gp.astype(np.uint32) | (gm.astype(np.uint32) << 8) | (edge.astype(np.uint32) << 16)
        return table

    def _build_bins(self) -> None:
        """Gray level of every phase bin of width 2 pi / _N_BINS, and which bins straddle a boundary."""
        edges = np.arange(_N_BINS + 1) * (2 * np.pi / _N_BINS)
        at = self._exact_gray(edges)
        inner = self._exact_gray(np.nextafter(edges[1:], 0))     # just below each bin's upper edge
        self._bin_gray = at[:-1].copy()
        # a boundary inside a bin, or on its lower edge (the rounding of x * bins may land either side)
        self._bin_edge = (at[:-1] != inner) | (at[:-1] != np.roll(inner, 1))


#: phase bins of the gray-level lookup (2 pi / 65536 = 1e-4 rad, 250x finer than one gray level)
_N_BINS = 1 << 16
#: float32 bit patterns per bin of the checkerboard lookup (4096: 2048 bins per octave of |w|)
_PAIR_SHIFT = 12


@dataclass
class DMDFillMap:
    """DMD block fill fraction -> amplitude, sampled at every mirror count 0..k^2."""

    amplitude: NDArray[np.float64]

    @classmethod
    def linear(cls, block_pixels: int) -> "DMDFillMap":
        """Nominal map amplitude = n / k^2."""
        n = block_pixels**2
        return cls(np.arange(n + 1, dtype=np.float64) / n)

    def __post_init__(self) -> None:
        self.amplitude = np.asarray(self.amplitude, dtype=np.float64)
        if self.amplitude.ndim != 1 or self.amplitude.size < 2 or np.any(np.diff(self.amplitude) <= 0):
            raise CalibrationError("DMD fill map: expected k^2 + 1 strictly increasing amplitudes")

    @classmethod
    def power_law(cls, block_pixels: int, nonlinearity: float) -> "DMDFillMap":
        """amplitude = (n / k^2)**(1 + nonlinearity), n = 0 .. k^2 on-mirrors."""
        n = block_pixels**2
        return cls((np.arange(n + 1, dtype=np.float64) / n) ** (1.0 + nonlinearity))

    def count_for_amplitude(self, a: NDArray) -> NDArray[np.uint16]:
        """Nearest on-mirror count for amplitudes a in [0, 1]."""
        counts = np.interp(a, self.amplitude, np.arange(self.amplitude.size, dtype=np.float64))
        return np.rint(counts).astype(np.uint16)


@dataclass
class VaporCellMap:
    """Vapor-cell temperature -> optical depth: a0 = n_Rb(T_read + offset) * sigma_l (Steck vapour law)."""

    sigma_l_m3: float = 1.3e-17
    thermometer_offset_k: float = 0.0

    def optical_depth(self, temperature_k: float) -> float:
        """Optical depth a0 at the controller's temperature reading (K)."""
        return VaporCellPhysics(self.sigma_l_m3).optical_depth(temperature_k + self.thermometer_offset_k)

    def temperature_for(self, a0: float, t_min_k: float, t_max_k: float) -> float:
        """Controller set-point (K) that gives a0, clamped to [t_min_k, t_max_k]."""
        off = self.thermometer_offset_k
        t = VaporCellPhysics(self.sigma_l_m3).temperature_for(a0, t_min_k + off, t_max_k + off)
        return t - off


@dataclass
class HomodyneMap:
    """Per-channel homodyne calibration: field = (V - offset) / (gain cos(theta))."""

    gain_v: NDArray[np.float64]
    offset_v: NDArray[np.float64]
    lo_phase_rad: NDArray[np.float64]

    @property
    def effective_gain_v(self) -> NDArray[np.float64]:
        """gain * cos(theta): volts per unit of real field in each channel."""
        return np.asarray(self.gain_v, dtype=np.float64) * np.cos(self.lo_phase_rad)

    @classmethod
    def unity(cls, n: int, gain_v: float = 1.0) -> "HomodyneMap":
        """Nominal map: equal gains, zero offsets, LO locked at theta = 0."""
        return cls(np.full(n, gain_v), np.zeros(n), np.zeros(n))

    def __post_init__(self) -> None:
        self._scale = (1.0 / (np.asarray(self.gain_v) * np.cos(self.lo_phase_rad))).astype(np.float32)
        self._offset = np.asarray(self.offset_v, dtype=np.float32)
        self.identity = bool(np.all(self._scale == 1.0) and np.all(self._offset == 0.0))

    def field(self, volts: NDArray) -> NDArray:
        """Field estimate (saturation units) from detector volts."""
        if self.identity:
            return volts
        return (volts - self._offset) * self._scale
