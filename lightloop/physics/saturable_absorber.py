"""Saturable absorption and gain saturation (Guo et al., Photon. Res. 2021; arXiv 1912.12256).

Fields are amplitudes normalised to the saturation field, so E**2 is the intensity in units
of the saturation intensity. The optical depth a0 is the small-signal absorption (a0 > 0);
a gain medium is the same law with a0 -> -g0.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "sa_forward",
    "sa_transmission",
    "sa_slope",
    "gain_forward",
    "gain_slope",
    "rb_vapor_pressure_pa",
    "rb_number_density_m3",
    "BOLTZMANN_J_PER_K",
]

BOLTZMANN_J_PER_K = 1.380649e-23


def _intensity(e: NDArray) -> NDArray:
    """|E|^2 for real or complex fields (saturation units)."""
    if np.iscomplexobj(e):
        return e.real * e.real + e.imag * e.imag
    return e * e


def sa_transmission(e: ArrayLike, a0: float) -> NDArray:
    """Probe amplitude transmission T(E) = exp(-(a0/2) / (1 + |E|^2)) in the pump field E."""
    e = np.asarray(e)
    return np.exp((-0.5 * a0) / (1.0 + _intensity(e)))


def sa_forward(e: ArrayLike, a0: float) -> NDArray:
    """Transmitted pump field g(E) = E * exp(-(a0/2) / (1 + |E|^2))."""
    e = np.asarray(e)
    return e * sa_transmission(e, a0)


def sa_slope(e: ArrayLike, a0: float) -> NDArray:
    """Exact slope g'(E) = T(E) * (1 + a0 E^2 / (1 + E^2)^2) for real E."""
    e = np.asarray(e)
    i = _intensity(e)
    return sa_transmission(e, a0) * (1.0 + a0 * i / (1.0 + i) ** 2)


def gain_forward(e: ArrayLike, g0: float) -> NDArray:
    """Saturable gain: g(E) with a0 replaced by -g0 (g0 >= 0 small-signal gain)."""
    return sa_forward(e, -g0)


def gain_slope(e: ArrayLike, g0: float) -> NDArray:
    """Slope of saturable gain: g'(E) with a0 replaced by -g0."""
    return sa_slope(e, -g0)


def rb_vapor_pressure_pa(temperature_k: ArrayLike) -> NDArray:
    """Rubidium saturated vapour pressure in Pa (Steck, 'Rubidium 87 D Line Data', Eqs. 1-2)."""
    t = np.asarray(temperature_k, dtype=float)
    melting_k = 312.46
    log10_torr = np.where(
        t < melting_k,
        2.881 + 4.857 - 4215.0 / t,  # solid phase
        2.881 + 4.312 - 4040.0 / t,  # liquid phase
    )
    return 10.0**log10_torr * 133.322368


def rb_number_density_m3(temperature_k: ArrayLike) -> NDArray:
    """Rubidium atom number density n = P / (k_B T) in m^-3 at cell temperature T (K)."""
    t = np.asarray(temperature_k, dtype=float)
    return rb_vapor_pressure_pa(t) / (BOLTZMANN_J_PER_K * t)
