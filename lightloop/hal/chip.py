"""The integrated photonic chip (Ashtiani, Idjadi, Kim, Nature 2026; Pai et al., Science 2023) as an
OpticalProcessor: MZI-mesh layers set by thermo-optic phase shifters, opto-electronic activations that
also output their slope, tap monitors at every phase shifter, and in-situ adjoint gradients.

Network (batch-first, fields in sqrt(power) units of the chip's reference power):

    a(0) = encoder(x): ports [s (2x - 1) ..., b, ..., 0 ...]  (signed IQ amplitudes, bias ports)
    z(l) = U(l) a(l-1)                     (mesh layer l, complex)
    p(l) = |z(l)|^2                         (photodiodes of the activation, or the output detectors)
    a(l) = g(p(l))                          (ring modulator on a fresh supply carrier, real)
    output = G p(L)[:, :n_out]              (output detectors, transimpedance gain G)

Trainable parameters are the phases (rad) of every phase shifter of a layer, in the layer's channel
order ([theta..., phi...] of each MZI block, then attenuators / output screen where present). Phases
are periodic; the bank wraps them (see lightloop.hal.phase_shifters for the voltage policy).

In-situ gradient of layer l (Hughes 2018; Pai 2023), with delta = z(L) - t and L = 1/(2B) sum ||delta||^2:
  e(L) = G delta / B on the detected ports;   s(l) = e(l) * conj(z(l)) / T(l)  (adjoint source, dL/dz;
  the photodiodes have the designed gain 1/T(l) that undoes the layer's nominal loss)
  1. forward light on:   I_fwd(l) at every tap (one exposure integrating the batch); z(l) at the coherent
     receivers; the activation slopes g'(p(l))
  2. forward light off, s(l) injected backward at the outputs: the adjoint v(l) at the input receivers
  3. the time-reversed adjoint -i conj(v(l)) alone, injected at the inputs: I_adj(l) at every tap
  4. forward light on, time-reversed adjoint still injected: I_sum(l)
  dL/dphi = (I_sum - I_fwd - I_adj) / eta^{2d}, d = MZI columns between the input and the tap
  (eta = calibrated amplitude transmission per column; Hughes 2018 Eq. 7 - exact for a lossless or
  uniformly lossy mesh; reading I_adj from the time-reversed field rather than the backward one keeps
  non-uniform loss from biasing the gradient), e(l-1) = 2 Re(v(l)) * g'(p(l-1)) on the activation ports.
The adjoint needs layers that are unitary up to uniform loss (the time-reversed field must retrace the
adjoint), so 'svd' layers (attenuators in the path) serve finite differences only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError, InstrumentError, SafetyLimitError
from lightloop.hal.phase_shifters import PhaseShifterBank
from lightloop.hal.processor import ForwardTaps, OpticalProcessor
from lightloop.physics.mzi import decompose, eo_activation, eo_activation_slope, random_unitary

__all__ = [
    "ForwardLightPort",
    "FieldSourcePortC",
    "TapMonitorPort",
    "CoherentReceiverPort",
    "PhotodiodePort",
    "ActivationPort",
    "ForwardSource",
    "FieldInjector",
    "MeshMonitor",
    "CoherentReceiver",
    "PowerDetector",
    "EOActivationModel",
    "EOActivation",
    "ChipLayer",
    "ChipProcessor",
    "PHASE_BOUND",
]

#: trainer bounds on phase parameters (rad); the bank wraps phases into one period anyway
PHASE_BOUND = 32 * np.pi


# --- ports (device units) -------------------------------------------------------------------------------
@runtime_checkable
class ForwardLightPort(Protocol):
    """Input IQ-modulator array (complex field patterns, one per sample) and the forward-path laser gate
    (the gate also feeds the activations' supply carriers)."""

    n_channels: int

    def write_fields(self, fields: NDArray[np.complex64]) -> None: ...

    def set_enabled(self, on: bool) -> None: ...


@runtime_checkable
class FieldSourcePortC(Protocol):
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


# --- roles (physical units) -----------------------------------------------------------------------------
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
    """An IQ-modulator array injecting complex fields; peak amplitude limited to max_field."""

    def __init__(self, port: FieldSourcePortC, max_field: float = 10.0, name: str = "injector"):
        self.port, self.n, self.max_field, self.name = port, port.n_channels, float(max_field), name
        self.active = False

    def inject(self, fields: NDArray) -> None:
        """Inject fields (batch, n); refuses peaks beyond max_field (nothing written)."""
        if fields.ndim != 2 or fields.shape[1] != self.n:
            raise ValueError(f"{self.name}: expected (batch, {self.n}) fields, got {fields.shape}")
        peak = float(np.max(np.abs(fields))) if fields.size else 0.0
        if not np.isfinite(peak):
            raise SafetyLimitError(f"{self.name}: fields contain NaN or inf; nothing written")
        if peak > self.max_field * (1 + 1e-6):
            raise SafetyLimitError(f"{self.name}: peak field {peak:.4g} exceeds max_field {self.max_field:.4g}; nothing written")
        self.port.write_fields(fields)
        self.active = True

    def off(self) -> None:
        """Dark."""
        if self.active:
            self.port.write_fields(None)
            self.active = False


def _finite(a: NDArray, what: str) -> NDArray:
    if not np.all(np.isfinite(a)):
        raise InstrumentError(f"{what}: acquisition returned NaN or inf")
    return a


class MeshMonitor:
    """Tap photodiodes at every phase shifter of a layer: batch-integrated intensities (field units squared).

    One exposure spans the displayed batch (the gradient needs only sum_b), so a read costs one frame
    whatever the batch size."""

    def __init__(self, port: TapMonitorPort, gain_v: float | NDArray = 1.0, offset_v: float | NDArray = 0.0,
                 name: str = "mesh monitor"):
        self.port, self.name = port, name
        self.gain = np.broadcast_to(np.asarray(gain_v, np.float32), (port.n_taps,)).copy()
        self.offset = np.broadcast_to(np.asarray(offset_v, np.float32), (port.n_taps,)).copy()
        self._unity = bool(np.all(self.gain == 1) and np.all(self.offset == 0))

    @property
    def n_taps(self) -> int:
        """Number of taps (= phase shifters of the layer)."""
        return self.port.n_taps

    def acquire(self) -> NDArray:
        """Intensities (n_taps,) at the taps for the light now in the chip, summed over the batch."""
        v = _finite(self.port.acquire(), self.name)
        return v if self._unity else (v - self.offset) / self.gain


class CoherentReceiver:
    """IQ receivers returning calibrated complex fields."""

    def __init__(self, port: CoherentReceiverPort, gain_v: float = 1.0, name: str = "coherent receiver"):
        self.port, self.gain, self.name = port, complex(gain_v), name

    @property
    def n_channels(self) -> int:
        """Number of receivers."""
        return self.port.n_channels

    def acquire(self) -> NDArray:
        """Complex fields (batch, n)."""
        v = _finite(self.port.acquire(), self.name)
        return v if self.gain == 1 else v / np.complex64(self.gain)


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


@dataclass
class EOActivationModel:
    """Calibrated ring-modulator activation: a(p) = sqrt(P_s T(delta + k p)) (lightloop.physics.mzi)."""

    k: float = 3.0
    t_min: float = 0.0
    supply: float = 1.0
    detuning: float = 0.0
    detuning_per_volt: float = 1.0   # ring bias: resonance shift (linewidths) per volt
    pd_gain_v: float = 1.0           # photodiode volts per unit power
    slope_gain_v: float = 1.0        # slope-output volts per unit of da/dp

    def transfer(self, p: NDArray) -> NDArray:
        """a(p)."""
        return eo_activation(p, self.detuning, self.k, self.t_min, self.supply)

    def slope(self, p: NDArray) -> NDArray:
        """a'(p)."""
        return eo_activation_slope(p, self.detuning, self.k, self.t_min, self.supply)


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
        self.model.detuning = float(np.mean(d))

    def acquire(self) -> NDArray:
        """Photodiode powers p (batch, n)."""
        v = _finite(self.port.acquire_power(), self.name)
        return v if self.model.pd_gain_v == 1 else v * np.float32(1.0 / self.model.pd_gain_v)

    def acquire_slope(self) -> NDArray:
        """The chip's activation-slope output g'(p) (batch, n) for the light now in the chip."""
        v = _finite(self.port.acquire_slope(), self.name)
        return v if self.model.slope_gain_v == 1 else v * np.float32(1.0 / self.model.slope_gain_v)

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


class ChipProcessor(OpticalProcessor):
    """Mesh layers, EO activations after every hidden layer, power detection at the output."""

    def __init__(self, source: ForwardSource, layers: Sequence[ChipLayer], activations: Sequence[EOActivation],
                 output: PowerDetector, n_out: int, *, output_gain: float = 1.0, adjoint_field: float = 1.0,
                 eta_per_column: float = 1.0, stateful: Sequence[Any] = (), info: dict[str, Any] | None = None,
                 precision: str = "single"):
        if len(activations) != len(layers) - 1:
            raise ConfigError("chip processor: need one activation bank per hidden layer")
        self.source, self.layers, self.activations, self.output = source, list(layers), list(activations), output
        self.n_out, self.output_gain = int(n_out), float(output_gain)
        self.adjoint_field, self.eta = float(adjoint_field), float(eta_per_column)
        self._stateful = list(stateful)
        self.info = dict(info or {})
        if precision not in ("single", "double"):
            raise ConfigError(f"chip processor: precision must be 'single' or 'double', got {precision!r}")
        self._rd = np.float32 if precision == "single" else np.float64
        self._cd = np.complex64 if precision == "single" else np.complex128
        self._sizes = (source.n_features, *[a.n_channels for a in activations], self.n_out)
        prev = source.n_ports
        for i, lay in enumerate(self.layers):
            if lay.n_ports < prev or (i < len(activations) and lay.n_ports < activations[i].n_channels):
                raise ConfigError(f"chip processor: layer {i} has {lay.n_ports} ports, too few for its inputs/outputs")
            prev = self.activations[i].n_channels if i < len(self.activations) else 0
        if self.layers[-1].n_ports < self.n_out or output.n_channels != self.n_out:
            raise ConfigError("chip processor: output detectors do not match n_out")
        self.capabilities = frozenset({"adjoint"}) if all(l.kind == "unitary" for l in self.layers) else frozenset()
        self._x: NDArray | None = None

    # --- contract ------------------------------------------------------------------------------------
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """(features, hidden..., classes)."""
        return self._sizes

    def parameter_shapes(self) -> list[tuple[int, ...]]:
        """One flat phase vector per layer (its phase-shifter channels)."""
        return [(l.bank.n_channels,) for l in self.layers]

    def parameter_bounds(self) -> list[tuple[float, float]]:
        """+-32 pi rad: phases are periodic and wrapped by the banks; the bound only stops runaway values."""
        return [(-PHASE_BOUND, PHASE_BOUND) for _ in self.layers]

    def init_parameters(self, rng: np.random.Generator, scale: float) -> list[NDArray[np.float32]]:
        """Haar-random meshes (Pai et al., PRApplied 11, 064044 (2019): trains far better than uniform
        phases); scale is not used - a phase has no natural small value."""
        return [lay.random_phases(rng).astype(np.float32) for lay in self.layers]

    def program(self, params: Sequence[NDArray]) -> None:
        """Write every layer's phases (one batched heater write per layer)."""
        if len(params) != len(self.layers):
            raise ValueError(f"chip processor: expected {len(self.layers)} phase arrays, got {len(params)}")
        for lay, p in zip(self.layers, params):
            lay.bank.set_phases(np.asarray(p, np.float64))

    def _idle_injection(self) -> None:
        for lay in self.layers:
            lay.injector.off()
            lay.adjoint_source.off()

    def forward(self, x: NDArray) -> ForwardTaps:
        """Encode x, open the forward path, acquire the activation photodiodes and the output detectors."""
        self._idle_injection()
        ports = self.source.display(x)
        pre, post = [], []
        for act in self.activations:
            p = act.acquire()
            pre.append(p)
            post.append(act.transfer_model(p).astype(self._rd, copy=False))
        out = self.output.acquire() * self._rd(self.output_gain)
        pre.append(out)
        post.append(out)
        self._count(len(self.activations) + 1)
        self._x = x
        n = self.source.n_features
        return ForwardTaps(inputs=ports[:, :n], pre=pre, post=post, extra={"ports": ports})

    def _check_forward(self, delta_out: NDArray) -> None:
        if self._x is None or delta_out.shape != (self._x.shape[0], self.n_out):
            raise RuntimeError("chip processor: call forward(x) on the same batch before the backward pass")

    def _output_error(self, delta_out: NDArray) -> NDArray:
        lay = self.layers[-1]
        e = np.zeros((delta_out.shape[0], lay.n_ports), self._rd)
        e[:, : self.n_out] = delta_out * self._rd(self.output_gain / delta_out.shape[0])
        return e

    def _layer_adjoint(self, l: int, e: NDArray, z: NDArray, i_fwd: NDArray | None,
                       grads: bool) -> tuple[NDArray | None, NDArray]:
        """Backward pass (and, if grads, the adjoint and sum exposures) of layer l.

        Returns (phase gradients or None, adjoint field dL/da at the layer inputs)."""
        lay = self.layers[l]
        s = e * np.conj(z) * self._rd(lay.detector_gain)      # dL/dz with p = detector_gain |z|^2
        peak = float(np.max(np.abs(s))) if s.size else 0.0
        if peak == 0.0:
            return (np.zeros(lay.bank.n_channels, self._rd) if grads else None), np.zeros_like(s)
        kappa = self.adjoint_field / peak
        # 2. backward: forward light off, adjoint injected at the outputs, field read at the inputs
        self.source.dark()
        lay.adjoint_source.inject((s * kappa).astype(self._cd))
        v = lay.in_receiver.acquire()
        lay.adjoint_source.off()
        self._count(1)
        g = None
        if grads:
            # 3. adjoint exposure: the time-reversed adjoint -i conj(v) alone, injected at the inputs
            v_peak = float(np.max(np.abs(v)))
            r = min(1.0, lay.injector.max_field / v_peak) if v_peak > 0 else 1.0
            lay.injector.inject((self._cd(-1j * r) * np.conj(v)).astype(self._cd))
            i_adj = lay.monitor.acquire()
            # 4. sum exposure: forward light back on, time-reversed adjoint still injected
            self.source.on()
            i_sum = lay.monitor.acquire()
            lay.injector.off()
            self._count(2)
            diff = i_sum - i_fwd - i_adj
            if self.eta != 1.0:
                diff = diff / (self.eta ** (2 * lay.tap_depth)).astype(self._rd)
            g = (diff / (kappa * r)).astype(self._rd)
        else:
            self.source.on()
        return g, v / self._rd(kappa)

    def _forward_state(self, need_monitors: bool) -> tuple[list, list, list]:
        """Acquire, with the forward light on, the layer output fields, the slopes and the forward taps."""
        self.source.on()
        z = [lay.out_receiver.acquire() for lay in self.layers]
        slopes = [act.acquire_slope() for act in self.activations]
        i_fwd = [lay.monitor.acquire() for lay in self.layers] if need_monitors else [None] * len(self.layers)
        self._count(len(z) + len(slopes) + (len(self.layers) if need_monitors else 0))
        return z, slopes, i_fwd

    def _adjoint(self, delta_out: NDArray, grads: bool) -> tuple[list, list]:
        self._check_forward(delta_out)
        z, slopes, i_fwd = self._forward_state(grads)
        e = self._output_error(delta_out)
        gs: list[NDArray | None] = [None] * len(self.layers)
        errs: list[NDArray] = []
        for l in range(len(self.layers) - 1, -1, -1):
            g, v = self._layer_adjoint(l, e, z[l], i_fwd[l], grads)
            gs[l] = g
            if l > 0:
                n_prev = self.activations[l - 1].n_channels
                dl_da = 2 * np.real(v[:, :n_prev])
                e_prev = (dl_da * slopes[l - 1]).astype(self._rd)
                errs.append(e_prev)
                e = np.zeros((e_prev.shape[0], self.layers[l - 1].n_ports), self._rd)
                e[:, :n_prev] = e_prev
        self._idle_injection()
        errs.reverse()
        return gs, errs

    def measure_phase_gradients(self, delta_out: NDArray) -> list[NDArray[np.float32]]:
        """In-situ adjoint gradients dL/dphase of every layer from forward, adjoint and sum intensities at the
        taps; delta_out = B dL/dz (z - t for L = 1/(2B) sum ||z - t||^2). Call right after forward(x)."""
        if "adjoint" not in self.capabilities:
            raise ConfigError("chip processor: in-situ adjoint gradients need 'unitary' mesh layers")
        gs, _ = self._adjoint(np.asarray(delta_out, self._rd), grads=True)
        return gs  # type: ignore[return-value]

    def backward(self, delta_out: NDArray) -> list[NDArray]:
        """Optical backward pass: delta(l) = B dL/dp(l) per hidden layer (measured), then delta_out."""
        delta_out = np.asarray(delta_out, self._rd)
        _, errs = self._adjoint(delta_out, grads=False)
        b = self._rd(delta_out.shape[0])
        return [e * b for e in errs] + [delta_out]

    def activation_slope(self, layer: int, pre: NDArray) -> NDArray:
        """Calibrated model slope g'(p) of the activations after layer `layer`."""
        return self.activations[layer].slope_model(pre)

    # --- bookkeeping -----------------------------------------------------------------------------------
    def summary_fields(self) -> dict[str, Any]:
        """Chip figures for the run summary."""
        return {**self.info, "phase_shifters": int(sum(l.bank.n_channels for l in self.layers)),
                "clipped_phase_writes": int(sum(l.bank.clipped_total for l in self.layers))}

    def snapshot(self) -> dict[str, Any]:
        """Twin state (noise generators, drift) for exact resume."""
        return {str(i): s.snapshot() for i, s in enumerate(self._stateful)}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore `snapshot` state."""
        for i, s in enumerate(self._stateful):
            if str(i) in state:
                s.restore(state[str(i)])

    def safe_state(self) -> None:
        """Light off, injections dark, heaters and ring biases to 0 V."""
        try:
            self.source.dark()
            self._idle_injection()
        finally:
            for lay in self.layers:
                lay.bank.safe_state()
            for act in self.activations:
                act.safe_state()
