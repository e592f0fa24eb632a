"""Balanced homodyne detection: V = gain |E_LO| Re(E exp(-i theta)) + offset + noise, then an ADC."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["HomodynePhysics"]


@dataclass
class HomodynePhysics:
    """One array of homodyne channels; gain in V per unit field (LO amplitude folded in), theta in rad."""

    gain_v: NDArray[np.float64]
    lo_phase_rad: NDArray[np.float64]
    offset_v: NDArray[np.float64]
    shot_noise: float = 0.0  # field-units std of the LO shot (vacuum) noise
    electronic_noise_v: float = 0.0
    adc_bits: int | None = None
    full_scale_v: float = 10.0
    _phasor: NDArray[np.complex128] = field(init=False, repr=False)
    _ideal: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._phasor = np.exp(-1j * np.asarray(self.lo_phase_rad, dtype=float))
        self._ideal = (
            bool(np.all(self.gain_v == 1.0) and np.all(self.lo_phase_rad == 0.0) and np.all(self.offset_v == 0.0))
            and self.shot_noise == 0.0
            and self.electronic_noise_v == 0.0
            and self.adc_bits is None
        )

    @property
    def ideal(self) -> bool:
        """True when the detector returns the field itself (unit gain, no noise, no ADC)."""
        return self._ideal

    def read(self, e: NDArray, rng: np.random.Generator) -> NDArray[np.float32]:
        """Detector voltages (batch, channels) for the field E (batch, channels)."""
        if self._ideal:
            return e.real if np.iscomplexobj(e) else e
        # float64 throughout, in place; the same operations in the same order as the textbook form
        # v = clip(round((gain (quad + s n1) + offset + e n2) / lsb) lsb), one noise draw after the other
        v = (e * self._phasor).real.copy() if np.iscomplexobj(e) else e * self._phasor.real
        if self.shot_noise:
            noise = rng.standard_normal(v.shape)
            noise *= self.shot_noise
            v += noise
        v *= self.gain_v
        v += self.offset_v
        if self.electronic_noise_v:
            noise = rng.standard_normal(v.shape)
            noise *= self.electronic_noise_v
            v += noise
        if self.adc_bits is not None:
            lsb = 2.0 * self.full_scale_v / 2**self.adc_bits
            v /= lsb
            np.round(v, out=v)
            v *= lsb
            np.maximum(v, -self.full_scale_v, out=v)
            np.minimum(v, self.full_scale_v - lsb, out=v)
        return v.astype(np.float32)
