"""Device ports: the device-unit interfaces that twins (simulators) and driver adapters implement.

A port speaks device units (gray levels, mirror counts, kelvin, volts); the HAL roles on top of
it speak physical units and own limits and calibration maps.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FieldSourcePort",
    "AmplitudeWeightPort",
    "SLMBlockPort",
    "DMDBlockPort",
    "TemperaturePort",
    "DetectorPort",
]


@runtime_checkable
class FieldSourcePort(Protocol):
    """Displays a batch of field patterns (signed amplitudes, saturation units) as a frame sequence."""

    def write_fields(self, fields: NDArray[np.float32]) -> None: ...


@runtime_checkable
class AmplitudeWeightPort(Protocol):
    """An analog amplitude modulator: passive transmissions in [-1, 1], no quantisation."""

    def set_amplifier_gain(self, gain: float) -> None: ...

    def write_amplitudes(self, amplitudes: NDArray[np.float32]) -> None: ...


@runtime_checkable
class SLMBlockPort(Protocol):
    """A phase SLM showing one checkerboard block (gray levels g+, g-) per weight."""

    def set_amplifier_gain(self, gain: float) -> None: ...

    def write_blocks(self, gray_plus: NDArray[np.uint8], gray_minus: NDArray[np.uint8]) -> None: ...


@runtime_checkable
class DMDBlockPort(Protocol):
    """A DMD showing a differential pair of binary blocks (on-mirror counts) per weight."""

    block_pixels: int

    def set_amplifier_gain(self, gain: float) -> None: ...

    def write_blocks(self, on_plus: NDArray[np.uint16], on_minus: NDArray[np.uint16]) -> None: ...


@runtime_checkable
class TemperaturePort(Protocol):
    """A temperature controller (kelvin)."""

    def set_temperature(self, kelvin: float) -> None: ...

    def read_temperature(self) -> float: ...


@runtime_checkable
class DetectorPort(Protocol):
    """An array of detectors acquiring one record per displayed pattern: volts (batch, channels).

    A homodyne array may also implement set_lo_phase_shift(rad): an actuator in its LO path.
    """

    n_channels: int

    def acquire(self) -> NDArray[np.float32]: ...
