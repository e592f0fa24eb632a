"""Rb vapor-cell physics: optical depth a0 = n(T) * sigma_eff * L (Beer-Lambert on the D2 line)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightloop.physics.saturable_absorber import rb_number_density_m3

__all__ = ["VaporCellPhysics"]


@dataclass
class VaporCellPhysics:
    """Vapor cell with effective cross-section x length product sigma_l_m3 (m^3); a0 = n(T) * sigma_l."""

    sigma_l_m3: float = 1.3e-17

    def optical_depth(self, temperature_k: float) -> float:
        """Small-signal optical depth a0 at cell temperature T (K)."""
        return float(rb_number_density_m3(temperature_k) * self.sigma_l_m3)

    def temperature_for(self, a0: float, t_min_k: float = 250.0, t_max_k: float = 500.0) -> float:
        """Cell temperature (K) that gives optical depth a0; clamps to the bracket ends."""
        if a0 <= self.optical_depth(t_min_k):
            return t_min_k
        if a0 >= self.optical_depth(t_max_k):
            return t_max_k
        # lazy: `import lightloop.hal` must not pull scipy.optimize
        from scipy.optimize import brentq

        return float(brentq(lambda t: np.log(self.optical_depth(t)) - np.log(a0), t_min_k, t_max_k, xtol=1e-9))
