"""Device ports: the device-unit interfaces that twins (simulators) and driver adapters implement.

A port speaks device units (gray levels, mirror counts, kelvin, volts); the HAL roles on top of
it speak physical units and own limits and calibration maps. This module is the one home of the
ports of every bench, a section per bench:

* free space (roles: ``lightloop.hal.free_space_roles``)
* integrated chip (roles: ``lightloop.hal.chip_roles``, ``lightloop.hal.phase_shifters``)
* flow network (roles: ``lightloop.hal.flow_network_roles``)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    # free space
    "FieldSourcePort",
    "AmplitudeWeightPort",
    "SLMBlockPort",
    "DMDBlockPort",
    "TemperaturePort",
    "DetectorPort",
    # integrated chip
    "HeaterPort",
    "ForwardLightPort",
    "FieldInjectionPort",
    "TapMonitorPort",
    "CoherentReceiverPort",
    "PhotodiodePort",
    "ActivationPort",
    # flow network
    "ConductancePort",
    "PairCurrentPort",
    "PotentialProbePort",
    "PairClampPort",
]


# --- free space -----------------------------------------------------------------------------------------

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


# --- integrated chip ------------------------------------------------------------------------------------
@runtime_checkable
class HeaterPort(Protocol):
    """A multichannel heater driver (volts); set_voltages is one batched transaction."""

    n_channels: int

    def set_voltages(self, voltages: Sequence[float]) -> None: ...

    def get_voltages(self) -> Sequence[float]: ...


@runtime_checkable
class ForwardLightPort(Protocol):
    """Input IQ-modulator array (complex field patterns, one per sample) and the forward-path laser gate
    (the gate also feeds the activations' supply carriers)."""

    n_channels: int

    def write_fields(self, fields: NDArray[np.complex64]) -> None: ...

    def set_enabled(self, on: bool) -> None: ...


@runtime_checkable
class FieldInjectionPort(Protocol):
    """An IQ-modulator array injecting complex fields (batch, n) into the chip; None turns it dark."""

    n_channels: int

    def write_fields(self, fields: NDArray[np.complex64] | None) -> None: ...


@runtime_checkable
class TapMonitorPort(Protocol):
    """Photodiodes on the taps at every phase shifter of a layer: volts (n_taps,), one exposure that
    integrates the whole displayed batch."""

    n_taps: int

    def acquire(self) -> NDArray[np.float32]: ...


@runtime_checkable
class CoherentReceiverPort(Protocol):
    """Coherent (IQ) receivers on n waveguides: complex volts (batch, n)."""

    n_channels: int

    def acquire(self) -> NDArray[np.complex64]: ...


@runtime_checkable
class PhotodiodePort(Protocol):
    """Power detectors: volts (batch, n)."""

    n_channels: int

    def acquire(self) -> NDArray[np.float32]: ...


@runtime_checkable
class ActivationPort(Protocol):
    """Opto-electronic activations: ring bias voltages, photodiode volts and slope-output volts."""

    n_channels: int

    def set_bias_voltages(self, volts: NDArray[np.float64]) -> None: ...

    def acquire_power(self) -> NDArray[np.float32]: ...

    def acquire_slope(self) -> NDArray[np.float32]: ...


# --- flow network (siemens, amperes, volts) -------------------------------------------------------------
@runtime_checkable
class ConductancePort(Protocol):
    """Tunable edge conductances: one batched write of every edge (S)."""

    n_edges: int

    def write_conductances(self, siemens: NDArray[np.float64]) -> None: ...


@runtime_checkable
class PairCurrentPort(Protocol):
    """Current sources across fixed node pairs (+I into the first node, -I out of the second), A.

    `set_currents` takes a batch of frames (batch, n_pairs); the probes then report one record per frame.
    """

    n_pairs: int

    def set_currents(self, amps: NDArray[np.float64]) -> None: ...


@runtime_checkable
class PotentialProbePort(Protocol):
    """Node-potential probes relative to the ground node: (batch, n_nodes) V for the frames last driven."""

    n_nodes: int

    def acquire(self) -> NDArray[np.float64]: ...


@runtime_checkable
class PairClampPort(Protocol):
    """Thevenin sources across the output pairs: EMF (batch, n_pairs) V behind conductance g (S, inf: ideal).

    `release` disconnects them (open circuit).
    """

    n_pairs: int

    def set_clamp(self, emf: NDArray[np.float64], conductance: float) -> None: ...

    def release(self) -> None: ...
