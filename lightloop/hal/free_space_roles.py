"""Free-space bench roles in physical units: input encoder, weight blocks, vapor cell, homodyne array."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

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
    "all_finite",
    "port_identity",
    "InputEncoder",
    "ProbeSource",
    "WeightBlock",
    "AnalogWeightBlock",
    "SLMWeightBlock",
    "DMDWeightBlock",
    "SaturableAbsorber",
    "HomodyneDetector",
]


def all_finite(a: NDArray) -> bool:
    """True when every element of a is finite; exactly np.isfinite(a).all(), via one BLAS dot on the hot path.

    a.a is finite only if every element is (NaN and inf propagate); an overflow of finite values falls back.
    """
    if a.dtype.kind not in "fc":
        return bool(np.isfinite(a).all())
    return math.isfinite(abs(np.vdot(a, a))) or bool(np.isfinite(a).all())


def port_identity(port: object) -> str:
    """Instrument identity of a device port (maker/model/serial as the driver or twin reports it)."""
    ident = getattr(port, "identity", None)
    return str(ident) if ident else type(port).__name__


class InputEncoder:
    """Forward source: shows inputs x in [0, 1] as field amplitudes E = field_scale * x (saturation units)."""

    def __init__(self, port: FieldSourcePort, n: int, field_scale: float = 1.0, max_field: float = 10.0):
        if not 0 < field_scale <= max_field:
            raise ConfigError(f"input encoder: field_scale must be in (0, {max_field}], got {field_scale}")
        self.port, self.n, self.field_scale, self.max_field = port, n, np.float32(field_scale), max_field
        self.frames = 0

    @property
    def identity(self) -> str:
        """Identity of the source instrument."""
        return port_identity(self.port)

    def display_fields(self, fields: NDArray) -> None:
        """Calibration access: display raw field amplitudes (batch, n) in saturation units, |E| <= max_field."""
        fields = np.asarray(fields, dtype=np.float32)
        if fields.ndim != 2 or fields.shape[1] != self.n:
            raise ValueError(f"input encoder: expected fields of shape (batch, {self.n}), got {fields.shape}")
        if not np.isfinite(fields).all() or np.abs(fields).max(initial=0.0) > self.max_field:
            raise SafetyLimitError(f"input encoder: fields must be finite and within +-{self.max_field}; nothing written")
        self.frames += fields.shape[0]
        self.port.write_fields(fields)

    def display(self, x: NDArray) -> None:
        """Display a batch x (batch, n) of pixel values in [0, 1]."""
        if x.ndim != 2 or x.shape[1] != self.n:
            raise ValueError(f"input encoder: expected a batch of shape (batch, {self.n}), got {x.shape}")
        if not all_finite(x):
            raise ValueError("input encoder: input contains NaN or inf")
        fields = x * self.field_scale if self.field_scale != 1 else x
        self.frames += x.shape[0]
        self.port.write_fields(fields)


class ProbeSource:
    """Backward source: injects the output error as a weak probe of peak amplitude probe_field."""

    def __init__(self, port: FieldSourcePort, n: int, probe_field: float = 0.1):
        if probe_field <= 0:
            raise ConfigError(f"probe source: probe_field must be > 0, got {probe_field}")
        self.port, self.n, self.probe_field = port, n, float(probe_field)
        self.frames = 0

    @property
    def identity(self) -> str:
        """Identity of the probe source."""
        return port_identity(self.port)

    def display(self, delta: NDArray) -> float:
        """Inject delta (batch, n) scaled to the probe amplitude; returns the field per unit of delta."""
        peak = float(np.abs(delta).max()) if delta.size else 0.0
        scale = self.probe_field / peak if peak > 0 else 1.0
        self.frames += delta.shape[0]
        fields = delta * scale
        self.port.write_fields(fields if fields.dtype == np.float32 else fields.astype(np.float32))
        return scale

    def display_fields(self, fields: NDArray) -> None:
        """Calibration access: inject raw probe fields (batch, n) in saturation units."""
        fields = np.asarray(fields, dtype=np.float32)
        if fields.ndim != 2 or fields.shape[1] != self.n:
            raise ValueError(f"probe source: expected fields of shape (batch, {self.n}), got {fields.shape}")
        if not np.isfinite(fields).all():
            raise SafetyLimitError("probe source: fields must be finite; nothing written")
        self.frames += fields.shape[0]
        self.port.write_fields(fields)


class WeightBlock(ABC):
    """A weight matrix W (out, in) realised as W = gain * efficiency * W_passive, |W_passive| <= 1.

    efficiency is the calibrated power transfer of the 4f system, slit and amplifier (nominal until
    calibrated); fringing is the calibrated fraction f of each block's field that leaks into each row
    neighbour, t' = (1 - 2f) t + f (t_left + t_right), which `write` pre-compensates when f > 0.
    """

    port: Any
    #: memory layout of the weights this block is fastest to write: 'C' (rows), or 'F' (columns: the analog twin's
    #: forward product a @ W.T then reads W.T row-major, an NN product; write() keeps the layout it is given)
    param_order: str = "C"

    def __init__(self, shape: tuple[int, int], max_weight: float, efficiency: float):
        if max_weight <= 0 or not 0 < efficiency <= 1:
            raise ConfigError(f"weight block: need max_weight > 0 and 0 < efficiency <= 1, got {max_weight}, {efficiency}")
        self.shape, self.max_weight, self.efficiency = shape, float(max_weight), float(efficiency)
        self.amplifier_gain = self.max_weight / self.efficiency
        self.fringing = 0.0
        self.writes = 0
        self._fringe_ab: NDArray | None = None

    @property
    def identity(self) -> str:
        """Identity of the weight device (SLM / DMD / modulator)."""
        return port_identity(self.port)

    def set_efficiency(self, efficiency: float) -> None:
        """Calibration: set the measured efficiency; the amplifier gain becomes max_weight / efficiency."""
        if not np.isfinite(efficiency) or not 0 < efficiency <= 1.5:
            raise ConfigError(f"weight block: calibrated efficiency must be in (0, 1.5], got {efficiency}")
        self.efficiency = float(efficiency)
        self.amplifier_gain = self.max_weight / self.efficiency
        self.port.set_amplifier_gain(self.amplifier_gain)

    def set_fringing(self, fringing: float) -> None:
        """Calibration: row-neighbour leak f in [0, 0.2) that `write` pre-compensates (0: no compensation)."""
        if not np.isfinite(fringing) or not 0 <= fringing < 0.2:
            raise ConfigError(f"weight block: fringing must be in [0, 0.2), got {fringing}")
        self.fringing = float(fringing)
        n = self.shape[1]
        if self.fringing == 0.0 or n < 2:
            self._fringe_ab = None
            return
        ab = np.zeros((3, n))
        ab[0, 1:] = self.fringing
        ab[1, :] = 1.0 - 2.0 * self.fringing
        ab[2, :-1] = self.fringing
        self._fringe_ab = ab

    def write(self, weights: NDArray) -> None:
        """Program effective weights W (dimensionless); values beyond +-max_weight are clipped."""
        if weights.shape != self.shape:
            raise ValueError(f"weight block: expected shape {self.shape}, got {weights.shape}")
        scaled = weights if self.max_weight == 1.0 else weights * np.float32(1.0 / self.max_weight)
        passive = scaled.clip(-1.0, 1.0)  # always a fresh array (in the layout of `weights`): the port may keep it
        if self._fringe_ab is not None:
            from scipy.linalg import solve_banded

            pre = solve_banded((1, 1), self._fringe_ab, passive.T.astype(np.float64), check_finite=False).T
            passive = np.clip(pre, -1.0, 1.0)
        self.writes += 1
        self._write_passive(passive.astype(np.float32, copy=False))

    def write_passive(self, passive: NDArray) -> None:
        """Calibration access: write passive transmissions in [-1, 1] (no scaling, no fringing compensation)."""
        if passive.shape != self.shape:
            raise ValueError(f"weight block: expected shape {self.shape}, got {passive.shape}")
        self.writes += 1
        self._write_passive(np.clip(passive, -1.0, 1.0).astype(np.float32, copy=False))

    @abstractmethod
    def _write_passive(self, passive: NDArray[np.float32]) -> None:
        """Write passive transmissions in [-1, 1]."""


class AnalogWeightBlock(WeightBlock):
    """Ideal analog amplitude modulator (no LUT, no quantisation)."""

    param_order = "F"

    def __init__(self, port: AmplitudeWeightPort, shape: tuple[int, int], max_weight: float = 1.0, efficiency: float = 0.5):
        super().__init__(shape, max_weight, efficiency)
        self.port = port
        port.set_amplifier_gain(self.amplifier_gain)

    def _write_passive(self, passive: NDArray[np.float32]) -> None:
        self.port.write_amplitudes(passive)


class SLMWeightBlock(WeightBlock):
    """Phase-SLM checkerboard blocks: |w| = cos(alpha), phases s +- alpha, s = pi for w < 0."""

    #: column-major hidden weights: gray levels and the twin's block field keep the layout, so the twin's first
    #: product (real inputs, complex SLM field) runs as one real product on the field's (re, im) float32 view
    param_order = "F"

    def __init__(self, port: SLMBlockPort, shape: tuple[int, int], lut: GrayLevelLUT | None = None,
                 max_weight: float = 1.0, efficiency: float = 0.5):
        super().__init__(shape, max_weight, efficiency)
        self.port, self.lut = port, lut or GrayLevelLUT()
        port.set_amplifier_gain(self.amplifier_gain)

    def set_lut(self, lut: GrayLevelLUT) -> None:
        """Calibration: install a measured gray-level -> phase table."""
        self.lut = lut

    def write_gray_levels(self, gray_plus: NDArray, gray_minus: NDArray) -> None:
        """Calibration access: show raw checkerboard gray levels (out, in), bypassing the LUT."""
        gp, gm = np.asarray(gray_plus), np.asarray(gray_minus)
        if gp.shape != self.shape or gm.shape != self.shape:
            raise ValueError(f"SLM block: expected gray levels of shape {self.shape}, got {gp.shape}, {gm.shape}")
        if gp.min() < 0 or gp.max() > 255 or gm.min() < 0 or gm.max() > 255:
            raise SafetyLimitError("SLM block: gray levels must be in 0..255; nothing written")
        self.writes += 1
        self.port.write_blocks(gp.astype(np.uint8), gm.astype(np.uint8))

    def gray_levels(self, passive: NDArray) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
        """Checkerboard gray levels (g+, g-) for passive amplitudes in [-1, 1]: phases s +- arccos|w|, s = pi if w < 0."""
        return self.lut.checkerboard_grays(passive)

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

    @property
    def block_pixels(self) -> int:
        """Mirrors per block side k (k^2 mirrors per block)."""
        return int(self.port.block_pixels)

    def set_fill_map(self, fill_map: DMDFillMap) -> None:
        """Calibration: install a measured mirror-count -> amplitude map."""
        if fill_map.amplitude.size != self.block_pixels**2 + 1:
            raise ConfigError(f"DMD block: fill map needs {self.block_pixels**2 + 1} entries, got {fill_map.amplitude.size}")
        self.fill_map = fill_map

    def write_counts(self, on_plus: NDArray, on_minus: NDArray) -> None:
        """Calibration access: show raw on-mirror counts (out, in) of the + and - blocks."""
        p, m = np.asarray(on_plus), np.asarray(on_minus)
        top = self.block_pixels**2
        if p.shape != self.shape or m.shape != self.shape:
            raise ValueError(f"DMD block: expected counts of shape {self.shape}, got {p.shape}, {m.shape}")
        if p.min() < 0 or m.min() < 0 or p.max() > top or m.max() > top:
            raise SafetyLimitError(f"DMD block: mirror counts must be in 0..{top}; nothing written")
        self.writes += 1
        self.port.write_blocks(p.astype(np.uint16), m.astype(np.uint16))

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
        self._setpoint_k = float(self.port.read_temperature())
        self._a0 = self.map.optical_depth(self._setpoint_k)
        self.target_optical_depth: float | None = None
        self.setpoints = 0

    @property
    def identity(self) -> str:
        """Identity of the heater / temperature controller."""
        return port_identity(self.port)

    def set_optical_depth(self, a0: float) -> float:
        """Heat the cell to the temperature giving a0 (clamped to the heater limits); returns the K set-point."""
        if not np.isfinite(a0) or a0 < 0:
            raise ConfigError(f"saturable absorber: optical depth must be >= 0 (a vapor cell cannot amplify), got {a0}")
        t = self.map.temperature_for(a0, self.limits.t_min_k, self.limits.t_max_k)
        self.set_temperature(t)
        self.target_optical_depth = float(a0)
        return t

    def set_map(self, cell_map: VaporCellMap) -> None:
        """Calibration: install a measured temperature -> a0 map; the set-point is re-derived from the target a0."""
        self.map = cell_map
        if self.target_optical_depth is not None:
            self.set_optical_depth(self.target_optical_depth)
        else:
            self._a0 = self.map.optical_depth(self._setpoint_k)

    def read_temperature(self) -> float:
        """Controller reading (K)."""
        return float(self.port.read_temperature())

    @property
    def setpoint_k(self) -> float:
        """Last temperature set-point written (K)."""
        return self._setpoint_k

    def set_temperature(self, kelvin: float) -> None:
        """Write a cell temperature set-point (K) after checking the limits."""
        if not self.limits.t_min_k <= kelvin <= self.limits.t_max_k:
            raise SafetyLimitError(
                f"saturable absorber: set-point {kelvin:.2f} K outside limits "
                f"[{self.limits.t_min_k:.2f}, {self.limits.t_max_k:.2f}] K; nothing written")
        self.port.set_temperature(kelvin)
        self.setpoints += 1
        self._setpoint_k = float(kelvin)
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
        """Heater output off where the port can do that (a real controller), else the lowest allowed set-point."""
        off = getattr(self.port, "safe_state", None)
        if callable(off):
            off()
        else:
            self.port.set_temperature(self.limits.t_min_k)


class HomodyneDetector:
    """Array of homodyne channels returning calibrated field estimates (saturation units)."""

    def __init__(self, port: DetectorPort, cal: HomodyneMap | None = None):
        self.port = port
        self.cal = cal or HomodyneMap.unity(port.n_channels)
        self.acquisitions = 0
        self.frames = 0
        self.lo_shift_rad = 0.0

    @property
    def has_lo_actuator(self) -> bool:
        """True when the LO path has a phase actuator (the port implements set_lo_phase_shift)."""
        return callable(getattr(self.port, "set_lo_phase_shift", None))

    def set_lo_shift(self, rad: float) -> None:
        """Calibration: LO phase actuator set-point (rad, common to the array); locks the LO phase."""
        if not self.has_lo_actuator:
            raise ConfigError("homodyne detector: this LO path has no phase actuator")
        if not np.isfinite(rad):
            raise SafetyLimitError("homodyne detector: LO phase shift must be finite; nothing written")
        wrapped = float((rad + np.pi) % (2 * np.pi) - np.pi)
        self.port.set_lo_phase_shift(wrapped)
        self.lo_shift_rad = wrapped

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return self.port.n_channels

    @property
    def identity(self) -> str:
        """Identity of the detector array / digitizer."""
        return port_identity(self.port)

    def set_calibration(self, cal: HomodyneMap) -> None:
        """Calibration: install measured per-channel gains, offsets and LO phases."""
        if np.asarray(cal.gain_v).shape != (self.n_channels,):
            raise ConfigError(f"homodyne detector: calibration has {np.asarray(cal.gain_v).size} channels, "
                              f"the array has {self.n_channels}")
        self.cal = cal

    def acquire_volts(self) -> NDArray[np.float32]:
        """Calibration access: one acquisition in raw detector volts (batch, channels)."""
        v = self.port.acquire()
        self.acquisitions += 1
        self.frames += v.shape[0]
        if not np.isfinite(v).all():
            from lightloop.errors import InstrumentError

            raise InstrumentError("homodyne detector: acquisition returned NaN or inf")
        return v

    def acquire(self) -> NDArray[np.float32]:
        """One acquisition: calibrated fields (batch, channels) (acquire_volts inlined: the training hot path)."""
        v = self.port.acquire()
        self.acquisitions += 1
        self.frames += v.shape[0]
        if not all_finite(v):
            from lightloop.errors import InstrumentError

            raise InstrumentError("homodyne detector: acquisition returned NaN or inf")
        return self.cal.field(v)
