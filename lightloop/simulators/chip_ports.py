"""Twins of the integrated chip's devices: the HAL ports (one class per role) on a ChipEmulator.

Each twin is a thin device-unit view of :class:`lightloop.simulators.chip.ChipEmulator` (heater driver volts,
IQ source fields, tap / receiver / photodiode volts); the heater driver enforces its hardware limit like the
real driver.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import InstrumentError
from lightloop.simulators.chip import ChipEmulator

__all__ = ["HeaterDriverTwin", "ForwardSourceTwin", "InjectorTwin", "AdjointSourceTwin", "TapMonitorTwin",
           "OutputReceiverTwin", "InputReceiverTwin", "ActivationTwin", "OutputDetectorTwin"]


class HeaterDriverTwin:
    """Multichannel heater driver of one mesh layer; enforces its hardware limit like the real driver."""

    def __init__(self, emu: ChipEmulator, layer: int, v_hw_max: float = 12.0):
        self.emu, self.layer, self.v_hw_max = emu, layer, float(v_hw_max)
        self.n_channels = emu.layers[layer].n_shifters
        self.transactions = 0

    def set_voltages(self, voltages: Any) -> None:
        """One batched write (V)."""
        v = np.asarray(voltages, np.float64)
        if v.shape != (self.n_channels,):
            raise InstrumentError(f"heater twin {self.layer}: expected {self.n_channels} voltages, got {v.shape}")
        if not (v.min(initial=0.0) >= 0 and v.max(initial=0.0) <= self.v_hw_max):   # NaN fails both; inf the 2nd
            raise InstrumentError(f"heater twin {self.layer}: E07 over vmax (hardware limit {self.v_hw_max} V)")
        self.transactions += 1
        self.emu.set_heater_volts(self.layer, v)

    def get_voltages(self) -> NDArray[np.float64]:
        """Set-points (V)."""
        return self.emu.volts[self.layer].copy()


class ForwardSourceTwin:
    """Input IQ modulators and the forward-path gate."""

    def __init__(self, emu: ChipEmulator):
        self.emu = emu
        self.n_channels = emu.ports[0]

    def write_fields(self, fields: NDArray) -> None:
        """Field patterns (batch, N1)."""
        self.emu.set_inputs(fields)

    def set_enabled(self, on: bool) -> None:
        """Open / close the forward laser path."""
        self.emu.set_forward_light(on)


class InjectorTwin:
    """IQ injection at the inputs of a layer (time-reversed adjoint)."""

    def __init__(self, emu: ChipEmulator, layer: int):
        self.emu, self.layer = emu, layer
        self.n_channels = emu.ports[layer]

    def write_fields(self, fields: NDArray | None) -> None:
        """Inject (batch, n) or go dark (None)."""
        self.emu.set_injection(self.layer, fields)


class AdjointSourceTwin(InjectorTwin):
    """IQ injection backward at the outputs of a layer (adjoint source)."""

    def write_fields(self, fields: NDArray | None) -> None:
        """Inject (batch, n) backward or go dark (None)."""
        self.emu.set_adjoint(self.layer, fields)


class TapMonitorTwin:
    """Tap photodiodes at every phase shifter of a layer."""

    def __init__(self, emu: ChipEmulator, layer: int):
        self.emu, self.layer = emu, layer
        self.n_taps = emu.layers[layer].n_shifters

    def acquire(self) -> NDArray:
        """Volts (batch, taps)."""
        return self.emu.read_taps(self.layer)


class OutputReceiverTwin:
    """Coherent receivers at a layer's outputs."""

    def __init__(self, emu: ChipEmulator, layer: int):
        self.emu, self.layer = emu, layer
        self.n_channels = emu.ports[layer]

    def acquire(self) -> NDArray:
        """Complex volts (batch, n)."""
        return self.emu.read_output_fields(self.layer)


class InputReceiverTwin(OutputReceiverTwin):
    """Coherent receivers at a layer's inputs (backward light)."""

    def acquire(self) -> NDArray:
        """Complex volts (batch, n)."""
        return self.emu.read_input_fields(self.layer)


class ActivationTwin:
    """Photodiode-driven ring modulators of a hidden layer, with the slope output."""

    def __init__(self, emu: ChipEmulator, layer: int):
        self.emu, self.layer = emu, layer
        self.n_channels = emu.design.hidden[layer]

    def set_bias_voltages(self, volts: NDArray) -> None:
        """Ring bias voltages (V)."""
        self.emu.set_ring_bias(self.layer, volts)

    def acquire_power(self) -> NDArray:
        """Photodiode volts."""
        return self.emu.read_activation_power(self.layer)

    def acquire_slope(self) -> NDArray:
        """Slope-output volts."""
        return self.emu.read_activation_slope(self.layer)


class OutputDetectorTwin:
    """Output photodiodes."""

    def __init__(self, emu: ChipEmulator):
        self.emu = emu
        self.n_channels = emu.design.n_out

    def acquire(self) -> NDArray:
        """Volts (batch, n_out)."""
        return self.emu.read_output_power()
