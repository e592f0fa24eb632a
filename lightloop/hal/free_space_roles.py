"""Free-space bench roles in physical units: input encoder, weight blocks, vapor cell, homodyne array."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError, SafetyLimitError
from lightloop.hal.calibration_maps import DMDFillMap, GrayLevelLUT, HomodyneMap, VaporCellMap
from lightloop.hal.ports import (
    AmplitudeWeightPort,
    DetectorPort,
    DMDBlockPort,
    FieldSourcePort,
    SLMBlockPort,
    TemperaturePort,
)
from lightloop.physics.saturable_absorber import sa_forward, sa_slope, sa_transmission

__all__ = [
    "InputEncoder",
    "ProbeSource",
    "WeightBlock",
    "AnalogWeightBlock",
    "SLMWeightBlock",
    "DMDWeightBlock",
    "SaturableAbsorber",
    "HomodyneDetector",
]


class InputEncoder:
    """Forward source: shows inputs x in [0, 1] as field amplitudes E = field_scale * x (saturation units)."""

    def __init__(self, port: FieldSourcePort, n: int, field_scale: float = 1.0, max_field: float = 10.0):
        if not 0 < field_scale <= max_field:
            raise ConfigError(f"input encoder: field_scale must be in (0, {max_field}], got {field_scale}")
        self.port, self.n, self.field_scale, self.max_field = port, n, np.float32(field_scale), max_field

    def display(self, x: NDArray) -> None:
        """Display a batch x (batch, n) of pixel values in [0, 1]."""
        if x.ndim != 2 or x.shape[1] != self.n:
            raise ValueError(f"input encoder: expected a batch of shape (batch, {self.n}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("input encoder: input contains NaN or inf")
        fields = x * self.field_scale if self.field_scale != 1 else x
        self.port.write_fields(fields)


class ProbeSource:
    """Backward source: injects the output error as a weak probe of peak amplitude probe_field."""

    def __init__(self, port: FieldSourcePort, n: int, probe_field: float = 0.1):
        if probe_field <= 0:
            raise ConfigError(f"probe source: probe_field must be > 0, got {probe_field}")
        self.port, self.n, self.probe_field = port, n, float(probe_field)

    def display(self, delta: NDArray) -> float:
        """Inject delta (batch, n) scaled to the probe amplitude; returns the field per unit of delta."""
        peak = float(np.max(np.abs(delta))) if delta.size else 0.0
        scale = self.probe_field / peak if peak > 0 else 1.0
        self.port.write_fields((delta * scale).astype(np.float32, copy=False))
        return scale


class WeightBlock(ABC):
    """A weight matrix W (out, in) realised as W = gain * efficiency * W_passive, |W_passive| <= 1."""

    def __init__(self, shape: tuple[int, int], max_weight: float, efficiency: float):
        if max_weight <= 0 or not 0 < efficiency <= 1:
            raise ConfigError(f"weight block: need max_weight > 0 and 0 < efficiency <= 1, got {max_weight}, {efficiency}")
        self.shape, self.max_weight, self.efficiency = shape, float(max_weight), float(efficiency)
        self.amplifier_gain = self.max_weight / self.efficiency

    def write(self, weights: NDArray) -> None:
        """Program effective weights W (dimensionless); values beyond +-max_weight are clipped."""
        if weights.shape != self.shape:
            raise ValueError(f"weight block: expected shape {self.shape}, got {weights.shape}")
        passive = np.clip(weights * np.float32(1.0 / self.max_weight), -1.0, 1.0)
        self._write_passive(passive.astype(np.float32, copy=False))

    @abstractmethod
    def _write_passive(self, passive: NDArray[np.float32]) -> None:
        """Write passive transmissions in [-1, 1]."""


class AnalogWeightBlock(WeightBlock):
    """Ideal analog amplitude modulator (no LUT, no quantisation)."""

    def __init__(self, port: AmplitudeWeightPort, shape: tuple[int, int], max_weight: float = 1.0, efficiency: float = 0.5):
        super().__init__(shape, max_weight, efficiency)
        self.port = port
        port.set_amplifier_gain(self.amplifier_gain)

    def _write_passive(self, passive: NDArray[np.float32]) -> None:
        self.port.write_amplitudes(passive)


class SLMWeightBlock(WeightBlock):
    """Phase-SLM checkerboard blocks: |w| = cos(alpha), phases s +- alpha, s = pi for w < 0."""

    def __init__(self, port: SLMBlockPort, shape: tuple[int, int], lut: GrayLevelLUT | None = None,
                 max_weight: float = 1.0, efficiency: float = 0.5):
        super().__init__(shape, max_weight, efficiency)
        self.port, self.lut = port, lut or GrayLevelLUT()
        port.set_amplifier_gain(self.amplifier_gain)

    def gray_levels(self, passive: NDArray) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
        """Checkerboard gray levels (g+, g-) for passive amplitudes in [-1, 1]."""
        alpha = np.arccos(np.abs(passive))
        s = np.where(passive < 0, np.pi, 0.0)
        return self.lut.gray_for_phase(s + alpha), self.lut.gray_for_phase(s - alpha)

    def _write_passive(self, passive: NDArray[np.float32]) -> None:
        self.port.write_blocks(*self.gray_levels(passive))


class DMDWeightBlock(WeightBlock):
    """DMD differential block pairs: positive weights on the + block, negative on the - block."""

    def __init__(self, port: DMDBlockPort, shape: tuple[int, int], fill_map: DMDFillMap | None = None,
                 max_weight: float = 1.0, efficiency: float = 0.5):
        super().__init__(shape, max_weight, efficiency)
        self.port = port
        self.fill_map = fill_map or DMDFillMap.linear(port.block_pixels)
        port.set_amplifier_gain(self.amplifier_gain)

    def _write_passive(self, passive: NDArray[np.float32]) -> None:
        counts = self.fill_map.count_for_amplitude(np.abs(passive))
        zero = np.zeros_like(counts)
        self.port.write_blocks(np.where(passive > 0, counts, zero), np.where(passive < 0, counts, zero))


@dataclass
class TemperatureLimits:
    """Vapor-cell heater limits (K)."""

    t_min_k: float = 273.15
    t_max_k: float = 423.15


class SaturableAbsorber:
    """Rb vapor-cell saturable absorber: optical depth set through the cell temperature."""

    def __init__(self, port: TemperaturePort, cell_map: VaporCellMap | None = None,
                 limits: TemperatureLimits | None = None):
        self.port, self.map, self.limits = port, cell_map or VaporCellMap(), limits or TemperatureLimits()
        self._a0 = self.map.optical_depth(self.port.read_temperature())

    def set_optical_depth(self, a0: float) -> float:
        """Heat the cell to the temperature giving a0 (clamped to the heater limits); returns the K set-point."""
        if not np.isfinite(a0) or a0 < 0:
            raise ConfigError(f"saturable absorber: optical depth must be >= 0 (a vapor cell cannot amplify), got {a0}")
        t = self.map.temperature_for(a0, self.limits.t_min_k, self.limits.t_max_k)
        self.set_temperature(t)
        return t

    def set_temperature(self, kelvin: float) -> None:
        """Write a cell temperature set-point (K) after checking the limits."""
        if not self.limits.t_min_k <= kelvin <= self.limits.t_max_k:
            raise SafetyLimitError(
                f"saturable absorber: set-point {kelvin:.2f} K outside limits "
                f"[{self.limits.t_min_k:.2f}, {self.limits.t_max_k:.2f}] K; nothing written")
        self.port.set_temperature(kelvin)
        self._a0 = self.map.optical_depth(kelvin)

    @property
    def optical_depth(self) -> float:
        """Optical depth a0 the calibration predicts at the current set-point."""
        return self._a0

    def forward_model(self, e: NDArray) -> NDArray:
        """Calibrated model of the transmitted pump g(E)."""
        return sa_forward(e, self._a0)

    def slope_model(self, e: NDArray) -> NDArray:
        """Calibrated model of the exact slope g'(E)."""
        return sa_slope(e, self._a0)

    def transmission_model(self, e: NDArray) -> NDArray:
        """Calibrated model of the probe transmission T(E)."""
        return sa_transmission(e, self._a0)

    def safe_state(self) -> None:
        """Heater to its lowest allowed set-point."""
        self.port.set_temperature(self.limits.t_min_k)


class HomodyneDetector:
    """Array of homodyne channels returning calibrated field estimates (saturation units)."""

    def __init__(self, port: DetectorPort, cal: HomodyneMap | None = None):
        self.port = port
        self.cal = cal or HomodyneMap.unity(port.n_channels)

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return self.port.n_channels

    def acquire(self) -> NDArray[np.float32]:
        """One acquisition: calibrated fields (batch, channels)."""
        v = self.port.acquire()
        if not np.isfinite(v).all():
            from lightloop.errors import InstrumentError

            raise InstrumentError("homodyne detector: acquisition returned NaN or inf")
        return self.cal.field(v)
