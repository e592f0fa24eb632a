"""Roles of the integrated photonic chip (physical units: fields in sqrt(power) units of the chip's
reference power, phases in rad): the encoder and forward-light gate, field injectors, tap monitors,
coherent receivers, output detectors, opto-electronic activations and the devices of one mesh layer.

Each role wraps a device-unit port of ``lightloop.hal.ports`` (integrated-chip section), owns its limits
and calibration and checks every command before it reaches the port. The phase-shifter bank role lives in
``lightloop.hal.phase_shifters``; the processor built from these roles is ``lightloop.hal.chip``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError, InstrumentError, SafetyLimitError
from lightloop.hal.phase_shifters import PhaseShifterBank
from lightloop.hal.ports import (
    ActivationPort,
    CoherentReceiverPort,
    FieldInjectionPort,
    ForwardLightPort,
    PhotodiodePort,
    TapMonitorPort,
)
from lightloop.physics.mesh import MeshErrors, MeshLayer
from lightloop.physics.mzi import decompose, eo_activation, eo_activation_slope, random_unitary

__all__ = [
    "ForwardSource",
    "FieldInjector",
    "MeshMonitor",
    "CoherentReceiver",
    "PowerDetector",
    "EOActivationModel",
    "EOActivation",
    "MeshLossModel",
    "ChipLayer",
]


class ForwardSource:
    """Encodes x in [0, 1] as port amplitudes [s (2x - 1) | s x, bias..., 0...] and gates the forward light."""

    def __init__(self, port: ForwardLightPort, n_features: int, field_scale: float = 1.0, signed: bool = True,
                 bias_ports: int = 0, bias_amplitude: float = 1.0, max_field: float = 10.0,
                 dtype: type = np.float32):
        if n_features + bias_ports > port.n_channels:
            raise ConfigError(f"chip encoder: {n_features} features + {bias_ports} bias ports exceed "
                              f"{port.n_channels} input ports")
        if not 0 < field_scale <= max_field or not 0 <= bias_amplitude <= max_field:
            raise ConfigError(f"chip encoder: field_scale and bias_amplitude must be in (0, {max_field}]")
        self.port, self.n_features, self.n_ports = port, n_features, port.n_channels
        self.field_scale, self.signed = float(field_scale), bool(signed)
        self.bias_ports, self.bias_amplitude = int(bias_ports), float(bias_amplitude)
        self.dtype = np.dtype(dtype)
        self.cdtype = np.dtype(np.complex64 if self.dtype == np.float32 else np.complex128)
        self.enabled = False

    def encode(self, x: NDArray) -> NDArray:
        """Port amplitudes (batch, n_ports) for features x (batch, n_features) in [0, 1]."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"chip encoder: expected a batch of shape (batch, {self.n_features}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("chip encoder: input contains NaN or inf")
        out = np.zeros((x.shape[0], self.n_ports), self.dtype)
        xs = np.clip(x, 0.0, 1.0)
        out[:, : self.n_features] = self.field_scale * ((2 * xs - 1) if self.signed else xs)
        out[:, self.n_features: self.n_features + self.bias_ports] = self.bias_amplitude
        return out

    def display(self, x: NDArray) -> NDArray:
        """Show the batch and open the forward path; returns the port amplitudes."""
        f = self.encode(x)
        self.port.write_fields(f.astype(self.cdtype))
        self.on()
        return f

    def on(self) -> None:
        """Open the forward laser path."""
        if not self.enabled:
            self.port.set_enabled(True)
            self.enabled = True

    def dark(self) -> None:
        """Close the forward laser path (inputs and activation carriers)."""
        if self.enabled:
            self.port.set_enabled(False)
            self.enabled = False


class FieldInjector:
    """An IQ-modulator array injecting complex fields; peak commanded amplitude limited to max_field.

    gain: calibrated complex transmission per channel (field in the chip per unit commanded field); fields
    are pre-compensated (divided by it) before the write, so the chip receives the requested fields."""

    def __init__(self, port: FieldInjectionPort, max_field: float = 10.0, name: str = "injector"):
        self.port, self.n, self.max_field, self.name = port, port.n_channels, float(max_field), name
        self.active = False
        self.set_gain(1.0)

    def set_gain(self, gain: complex | NDArray) -> None:
        """Calibrated complex gain per channel (1: uncalibrated; nothing is written)."""
        g = np.broadcast_to(np.asarray(gain, np.complex128), (self.n,)).copy()
        if not np.all(np.isfinite(g)) or np.any(np.abs(g) <= 0):
            raise ConfigError(f"{self.name}: gains must be finite and non-zero")
        self.gain, self._unity = g, bool(np.all(g == 1))

    def command(self, fields: NDArray) -> NDArray:
        """Commanded fields (what the port writes) for the requested fields in the chip."""
        return fields if self._unity else (fields / self.gain).astype(fields.dtype, copy=False)

    def command_peak(self, fields: NDArray) -> float:
        """Peak commanded amplitude for the requested fields."""
        return float(np.max(np.abs(self.command(fields)))) if fields.size else 0.0

    def inject(self, fields: NDArray) -> None:
        """Inject fields (batch, n) (pre-compensated by the gain); refuses commanded peaks beyond max_field
        (nothing written)."""
        if fields.ndim != 2 or fields.shape[1] != self.n:
            raise ValueError(f"{self.name}: expected (batch, {self.n}) fields, got {fields.shape}")
        cmd = self.command(fields)
        peak = float(np.max(np.abs(cmd))) if cmd.size else 0.0
        if not np.isfinite(peak):
            raise SafetyLimitError(f"{self.name}: fields contain NaN or inf; nothing written")
        if peak > self.max_field * (1 + 1e-6):
            raise SafetyLimitError(f"{self.name}: peak field {peak:.4g} exceeds max_field {self.max_field:.4g}; nothing written")
        self.port.write_fields(cmd)
        self.active = True

    def off(self) -> None:
        """Dark."""
        if self.active:
            self.port.write_fields(None)
            self.active = False


def _finite(a: NDArray, what: str) -> NDArray:
    # a finite sum proves every element finite (NaN and inf propagate into it); only a sum that is not finite
    # (NaN / inf present, or an overflow of huge readings) is checked element by element
    if not np.isfinite(np.add.reduce(a, axis=None)) and not np.isfinite(a).all():
        raise InstrumentError(f"{what}: acquisition returned NaN or inf")
    return a


class MeshMonitor:
    """Tap photodiodes at every phase shifter of a layer: batch-integrated intensities (field units squared).

    One exposure spans the displayed batch (the gradient needs only sum_b), so a read costs one frame
    whatever the batch size."""

    def __init__(self, port: TapMonitorPort, gain_v: float | NDArray = 1.0, offset_v: float | NDArray = 0.0,
                 name: str = "mesh monitor"):
        self.port, self.name = port, name
        self.set_gain(gain_v, offset_v)

    def set_gain(self, gain_v: float | NDArray, offset_v: float | NDArray = 0.0) -> None:
        """Calibrated volts per unit intensity and dark offset (volts) per tap."""
        g = np.broadcast_to(np.asarray(gain_v, np.float64), (self.port.n_taps,)).copy()
        o = np.broadcast_to(np.asarray(offset_v, np.float64), (self.port.n_taps,)).copy()
        if not np.all(np.isfinite(g)) or np.any(g <= 0) or not np.all(np.isfinite(o)):
            raise ConfigError(f"{self.name}: tap gains must be finite and > 0, offsets finite")
        self.gain, self.offset = g, o
        self._unity = bool(np.all(g == 1) and np.all(o == 0))

    @property
    def n_taps(self) -> int:
        """Number of taps (= phase shifters of the layer)."""
        return self.port.n_taps

    def acquire(self) -> NDArray:
        """Intensities (n_taps,) at the taps for the light now in the chip, summed over the batch."""
        v = _finite(self.port.acquire(), self.name)
        return v if self._unity else ((v - self.offset) / self.gain).astype(v.dtype, copy=False)


class CoherentReceiver:
    """IQ receivers returning calibrated complex fields (reading / complex gain per channel)."""

    def __init__(self, port: CoherentReceiverPort, gain_v: complex | NDArray = 1.0, name: str = "coherent receiver"):
        self.port, self.name = port, name
        self.set_gain(gain_v)

    def set_gain(self, gain_v: complex | NDArray) -> None:
        """Calibrated complex volts per unit field, per receiver."""
        g = np.broadcast_to(np.asarray(gain_v, np.complex128), (self.port.n_channels,)).copy()
        if not np.all(np.isfinite(g)) or np.any(np.abs(g) <= 0):
            raise ConfigError(f"{self.name}: gains must be finite and non-zero")
        self.gain, self._unity = g, bool(np.all(g == 1))

    @property
    def n_channels(self) -> int:
        """Number of receivers."""
        return self.port.n_channels

    def acquire(self) -> NDArray:
        """Complex fields (batch, n)."""
        v = _finite(self.port.acquire(), self.name)
        return v if self._unity else (v / self.gain).astype(v.dtype, copy=False)


class PowerDetector:
    """Output photodiodes returning calibrated powers."""

    def __init__(self, port: PhotodiodePort, gain_v: float = 1.0, name: str = "output detectors"):
        self.port, self.gain, self.name = port, float(gain_v), name

    @property
    def n_channels(self) -> int:
        """Number of detectors."""
        return self.port.n_channels

    def acquire(self) -> NDArray:
        """Powers (batch, n)."""
        v = _finite(self.port.acquire(), self.name)
        return v if self.gain == 1 else v * np.float32(1.0 / self.gain)


def _per_neuron(value: float | NDArray, dtype: np.dtype | None) -> float | NDArray:
    """A model parameter as given (scalar) or as an array of the readings' float dtype (one per neuron)."""
    if np.ndim(value) == 0:
        return float(value)
    return np.asarray(value, dtype if dtype is not None and dtype.kind == "f" else np.float64)


@dataclass
class EOActivationModel:
    """Calibrated ring-modulator activation: a(p) = sqrt(P_s T(delta + delta_0 + k p)) (lightloop.physics.mzi);
    k, supply, the detunings (linewidths) and the slope gain are scalars or one value per neuron."""

    k: float | NDArray = 3.0               # resonance shift (linewidths) per unit photodiode power
    t_min: float = 0.0
    supply: float | NDArray = 1.0          # supply carrier power (reference power units)
    detuning: float | NDArray = 0.0        # commanded bias detuning: detuning_per_volt x bias volts (linewidths)
    detuning_per_volt: float = 1.0   # ring bias: resonance shift (linewidths) per volt
    pd_gain_v: float = 1.0           # photodiode volts per unit power
    slope_gain_v: float | NDArray = 1.0   # slope-output volts per unit of da/dp (scalar or per neuron)
    detuning_offset: float | NDArray = 0.0   # calibrated resonance offset at 0 V bias (linewidths, per neuron)

    def _args(self, p: NDArray) -> tuple:
        dt = np.asarray(p).dtype
        det = _per_neuron(np.asarray(self.detuning, np.float64) + np.asarray(self.detuning_offset, np.float64), dt)
        return det, _per_neuron(self.k, dt), self.t_min, _per_neuron(self.supply, dt)

    def transfer(self, p: NDArray) -> NDArray:
        """a(p) (field units; per-neuron parameters broadcast over the last axis)."""
        return eo_activation(p, *self._args(p))

    def slope(self, p: NDArray) -> NDArray:
        """a'(p) (field per unit power)."""
        return eo_activation_slope(p, *self._args(p))


class EOActivation:
    """Opto-electronic activations of one hidden layer (photodiode -> ring modulator) with slope output."""

    def __init__(self, port: ActivationPort, model: EOActivationModel | None = None, v_bias_max: float = 5.0,
                 name: str = "EO activation"):
        self.port, self.model, self.v_bias_max, self.name = port, model or EOActivationModel(), float(v_bias_max), name

    @property
    def n_channels(self) -> int:
        """Number of neurons."""
        return self.port.n_channels

    def set_detuning(self, detuning: float | NDArray) -> None:
        """Bias every ring to a detuning (linewidths) through its bias voltage (checked against v_bias_max)."""
        d = np.broadcast_to(np.asarray(detuning, np.float64), (self.n_channels,))
        v = d / self.model.detuning_per_volt
        if not np.all(np.isfinite(v)) or np.any(np.abs(v) > self.v_bias_max):
            raise SafetyLimitError(f"{self.name}: detuning {detuning} needs |V| > {self.v_bias_max} V; nothing written")
        self.port.set_bias_voltages(v)
        self.model.detuning = float(d[0]) if d.size and np.all(d == d[0]) else d.copy()

    def set_calibration(self, k: float | NDArray, supply: float | NDArray, detuning_offset: float | NDArray,
                        slope_gain_v: float | NDArray) -> None:
        """Calibrated ring parameters, scalars or one per neuron: k (linewidths per unit power) > 0, supply
        (reference power units) > 0, resonance offset (linewidths) and slope-output gain (volts per da/dp) != 0."""
        n = self.n_channels
        vals = {}
        for field, value, rule in (("k", k, "> 0"), ("supply", supply, "> 0"), ("detuning_offset", detuning_offset, ""),
                                   ("slope_gain_v", slope_gain_v, "!= 0")):
            a = np.asarray(value, np.float64)
            if a.ndim > 1 or (a.ndim == 1 and a.shape != (n,)):
                raise ConfigError(f"{self.name}: {field}: expected a scalar or {n} values (one per neuron), got shape "
                                  f"{a.shape}")
            bad = ~np.isfinite(a) | ((a <= 0) if rule == "> 0" else (a == 0) if rule else np.zeros(a.shape, bool))
            if np.any(bad):
                raise ConfigError(f"{self.name}: {field}: expected finite values {rule}".rstrip() +
                                  f", got {float(np.ravel(a)[np.argmax(np.ravel(bad))])!r}")
            vals[field] = float(a) if a.ndim == 0 else a.copy()
        m = self.model
        m.k, m.supply, m.detuning_offset, m.slope_gain_v = (vals["k"], vals["supply"], vals["detuning_offset"],
                                                           vals["slope_gain_v"])

    def acquire(self) -> NDArray:
        """Photodiode powers p (batch, n)."""
        v = _finite(self.port.acquire_power(), self.name)
        return v if self.model.pd_gain_v == 1 else v * np.float32(1.0 / self.model.pd_gain_v)

    def acquire_slope(self) -> NDArray:
        """The chip's activation-slope output g'(p) (batch, n) for the light now in the chip."""
        v = _finite(self.port.acquire_slope(), self.name)
        g = np.asarray(self.model.slope_gain_v, np.float64)
        return v if np.all(g == 1) else (v / g).astype(v.dtype, copy=False)

    def transfer_model(self, p: NDArray) -> NDArray:
        """Calibrated a(p)."""
        return self.model.transfer(p)

    def slope_model(self, p: NDArray) -> NDArray:
        """Calibrated a'(p)."""
        return self.model.slope(p)

    def safe_state(self) -> None:
        """Ring biases to 0 V."""
        self.port.set_bias_voltages(np.zeros(self.n_channels))


@dataclass
class MeshLossModel:
    """Calibrated optics of one unitary layer with its per-waveguide loss (physics.mesh geometry): coupler errors
    alpha1, alpha2 (rad, per MZI), amplitude transmission eta (columns, ports) of every waveguide per column and
    a phase offset (rad) per phase shifter added to the bank's calibrated phases."""

    mesh: str
    alpha1: NDArray[np.float64]
    alpha2: NDArray[np.float64]
    eta: NDArray[np.float64]
    phase_offset: NDArray[np.float64]
    screen: bool = False

    def layer(self, phases: NDArray) -> MeshLayer:
        """The model layer (complex128) set to the bank's calibrated phases (rad) plus the offsets."""
        key = np.asarray(phases, np.float64)
        hit = getattr(self, "_cache", None)
        if hit is None:
            errs = MeshErrors(np.asarray(self.alpha1, np.float64), np.asarray(self.alpha2, np.float64),
                              np.asarray(self.eta, np.float64))
            hit = [MeshLayer.build("unitary", self.eta.shape[1], self.mesh, [errs], dtype=np.complex128,
                                   screen=self.screen), None]
            self._cache = hit
        if hit[1] is None or hit[1].shape != key.shape or np.any(hit[1] != key):
            hit[0].set_phases(key + self.phase_offset)
            hit[1] = key.copy()
        return hit[0]


@dataclass
class ChipLayer:
    """HAL devices of one mesh layer."""

    kind: str                       # 'unitary' | 'svd'
    n_ports: int
    bank: PhaseShifterBank
    monitor: MeshMonitor
    out_receiver: CoherentReceiver  # forward fields at the layer outputs
    in_receiver: CoherentReceiver   # backward (adjoint) fields at the layer inputs
    adjoint_source: FieldInjector   # backward injection at the outputs
    injector: FieldInjector         # forward injection at the inputs (time-reversed adjoint)
    tap_depth: NDArray[np.intp]     # MZI columns between the layer input and each tap
    detector_gain: float = 1.0      # designed photodiode gain 1 / T: p = detector_gain |z|^2 (T = nominal
                                    # power transmission of the layer, so powers read as if lossless)
    mesh: str = "rectangular"       # 'rectangular' | 'triangular'
    screen: bool = False            # output phase screen present (unitary layers)
    couplers: NDArray[np.float64] | None = None   # calibrated coupler errors (2, n_mzi) rad: [alpha1, alpha2]
    power_gain: NDArray[np.float64] | None = None  # calibrated p / |z|^2 per output port (photodiode power per
                                    # calibrated receiver field squared) used in dL/dz; None: detector_gain
    loss_model: MeshLossModel | None = None  # calibrated per-waveguide loss model: the adjoint gradient adds the
                                    # model's (exact - time-reversed) difference, the bias uneven loss leaves

    def random_phases(self, rng: np.random.Generator) -> NDArray[np.float64]:
        """Phases of a Haar-random layer (decomposed Haar unitaries; uniform attenuator settings)."""
        n = self.n_ports
        if self.kind == "unitary":
            m = decompose(random_unitary(n, rng), self.mesh)
            parts = [m.theta, m.phi] + ([m.out_phase] if self.screen else [])
        else:
            m1, m2 = decompose(random_unitary(n, rng), self.mesh), decompose(random_unitary(n, rng), self.mesh)
            parts = [m1.theta, m1.phi, rng.uniform(0, np.pi, n), rng.uniform(0, 2 * np.pi, n),
                     m2.theta, m2.phi, m2.out_phase]
        out = np.concatenate(parts)
        if out.size != self.bank.n_channels:
            raise ConfigError(f"chip layer: {out.size} phases for {self.bank.n_channels} phase shifters")
        return out
