"""Thermo-optic phase shifters with hidden truth: per-heater offsets phi0, P_pi and resistance, a thermal
crosstalk matrix on heater powers and a slow random-walk drift of phi0.

True phase (docs/architecture.md, Physics): phase = phi0(t) + (C P) / P_pi, P = V^2 / R; phi0 is normal (sd
phi0_sd_rad) or uniform on [0, 2 pi) (phi0_distribution). The drift is a Wiener process,
phi0(t) = phi0 + sigma_d W(t), sigma_d in rad / sqrt(s), advanced by the emulator clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from lightloop.physics.mzi import thermal_crosstalk, thermo_optic_phase

__all__ = ["ThermoOpticVariation", "HeaterArrayTruth"]


@dataclass
class ThermoOpticVariation:
    """Process variation of a heater array (standard deviations; zeros in ideal mode)."""

    phi0_sd_rad: float = 0.3          # static phase offsets (arm-length mismatch)
    p_pi_rel_sd: float = 0.05         # relative spread of P_pi
    resistance_rel_sd: float = 0.03   # relative spread of heater resistance
    crosstalk_scale_sd: float = 0.2   # per-chip relative error of the crosstalk strength
    crosstalk_pair_sd: float = 0.1    # per-pair relative jitter of the crosstalk coefficients
    drift_rad_per_sqrt_s: float = 1e-3
    phi0_distribution: str = "normal"  # 'normal' (sd phi0_sd_rad) | 'uniform' on [0, 2 pi)

    @classmethod
    def none(cls) -> "ThermoOpticVariation":
        """Ideal: no offsets, spreads, crosstalk errors or drift."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class HeaterArrayTruth:
    """Hidden truth of one heater array (one mesh layer's phase shifters)."""

    phi0: NDArray[np.float64]
    p_pi_w: NDArray[np.float64]
    resistance_ohm: NDArray[np.float64]
    crosstalk: Any                     # scipy.sparse CSR (n, n), C_ii = 1
    drift_rad_per_sqrt_s: float = 0.0
    drift: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.drift is None:
            self.drift = np.zeros_like(self.phi0)

    @property
    def n(self) -> int:
        """Number of heaters."""
        return int(self.phi0.size)

    @classmethod
    def draw(cls, positions: NDArray, rng: np.random.Generator, variation: ThermoOpticVariation, *,
             p_pi_w: float, resistance_ohm: float, crosstalk_nearest: float, crosstalk_decay: float = 1.0,
             crosstalk_cutoff: float = 3.0) -> "HeaterArrayTruth":
        """Draw a heater array at the given (x, y) positions from the process-variation model."""
        n = positions.shape[0]
        v = variation
        if v.phi0_distribution == "uniform":
            phi0 = 2 * np.pi * rng.random(n)
        elif v.phi0_distribution == "normal":
            phi0 = v.phi0_sd_rad * rng.standard_normal(n)
        else:
            raise ValueError(f"thermo-optic variation: phi0_distribution must be 'normal' or 'uniform', "
                             f"got {v.phi0_distribution!r}")
        p_pi = p_pi_w * (1 + v.p_pi_rel_sd * rng.standard_normal(n))
        r = resistance_ohm * (1 + v.resistance_rel_sd * rng.standard_normal(n))
        scale = max(0.0, 1 + v.crosstalk_scale_sd * rng.standard_normal())
        c = thermal_crosstalk(positions, crosstalk_nearest * scale, crosstalk_decay, crosstalk_cutoff).tocoo()
        off = c.row != c.col
        vals = c.data.copy()
        if v.crosstalk_pair_sd and off.any():
            # symmetric jitter: draw per unordered pair
            lo, hi = np.minimum(c.row, c.col), np.maximum(c.row, c.col)
            key = lo.astype(np.int64) * n + hi
            uniq, inv = np.unique(key[off], return_inverse=True)
            jit = 1 + v.crosstalk_pair_sd * rng.standard_normal(uniq.size)
            vals[off] *= np.maximum(jit[inv], 0.0)
        cmat = sparse.csr_matrix((vals, (c.row, c.col)), shape=(n, n))
        return cls(phi0, p_pi, r, cmat, v.drift_rad_per_sqrt_s)

    def phases(self, volts: NDArray) -> NDArray[np.float64]:
        """True phases (rad) for heater voltages (V) at the current drift state."""
        return thermo_optic_phase(volts, self.phi0 + self.drift, self.p_pi_w, self.resistance_ohm, self.crosstalk)

    def advance(self, dt_s: float, rng: np.random.Generator) -> None:
        """Let phi0 drift for dt seconds (Wiener increment sigma_d sqrt(dt) per heater)."""
        if self.drift_rad_per_sqrt_s > 0 and dt_s > 0:
            self.drift += self.drift_rad_per_sqrt_s * np.sqrt(dt_s) * rng.standard_normal(self.n)
