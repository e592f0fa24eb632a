"""Emulator of an integrated photonic neural-network chip and the twins of its devices.

One ChipEmulator holds the light path - encoder, mesh layers (lightloop.simulators.mesh), opto-electronic
activations, output detectors, tap monitors, coherent receivers and injection sources - and a HIDDEN
ground truth drawn per chip from a seeded process-variation model (ChipTruth.draw): coupler errors,
waveguide losses, heater phi0 / P_pi / resistance, thermal crosstalk, phi0 drift, ring resonance shifts,
modulator and photodiode gains, tap ratios, receiver and source gain/phase errors. The HAL never reads it.

Light state: the forward path (input modulators + activation supply carriers, gated by one switch), an
optional complex injection at every layer input (the time-reversed adjoint) and an optional backward
injection at every layer output (the adjoint source). Detectors see the light present when they acquire:
a tap monitor reads |forward field|^2 + |backward field|^2 at its phase shifter (directional taps do not
mix the two directions), integrated over the displayed batch in one exposure. The clock advances by a settle time per heater write and an acquisition time per
read; phi0 drifts (Wiener process) and the true phases follow at every heater write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import InstrumentError
from lightloop.physics.mzi import eo_activation, eo_activation_slope, mesh_layout
from lightloop.simulators.mesh import MeshErrors, MeshLayer
from lightloop.simulators.thermo_optic import HeaterArrayTruth, ThermoOpticVariation

__all__ = ["ChipDesign", "ChipVariation", "ChipTruth", "ChipEmulator", "HeaterDriverTwin", "ForwardSourceTwin",
           "InjectorTwin", "AdjointSourceTwin", "TapMonitorTwin", "OutputReceiverTwin", "InputReceiverTwin",
           "ActivationTwin", "OutputDetectorTwin", "layer_ports"]


def layer_ports(n_in: int, hidden: tuple[int, ...], n_out: int, bias_ports: int) -> tuple[int, ...]:
    """Ports of each square mesh layer: N(1) = max(n_in + bias, h1), N(l) = max(h(l-1), h(l))."""
    sizes = (n_in, *hidden, n_out)
    return tuple(max(sizes[i] + (bias_ports if i == 0 else 0), sizes[i + 1]) for i in range(len(sizes) - 1))


@dataclass
class ChipDesign:
    """Nominal (design) description of a chip: what the HAL knows before any calibration."""

    n_in: int
    hidden: tuple[int, ...]
    n_out: int
    layer_kind: str = "unitary"          # 'unitary' | 'svd'
    mesh: str = "rectangular"            # 'rectangular' | 'triangular'
    bias_ports: int = 2
    svd_gain: float = 1.0
    screen: bool = False                 # output phase screen on unitary layers
    loss_db_per_column: float = 0.1      # waveguide + MZI insertion loss per mesh column
    p_pi_w: float = 0.025 / np.pi        # heater power per radian (W/rad)
    resistance_ohm: float = 1000.0
    crosstalk_nearest: float = 0.04      # thermal crosstalk at one mode pitch
    crosstalk_decay: float = 1.0
    crosstalk_cutoff: float = 3.0
    ring_k: float = 3.0                  # resonance shift (linewidths) per unit optical power
    ring_t_min: float = 0.0
    ring_supply: float = 1.0
    ring_detuning_per_volt: float = 1.0
    dtype: Any = np.complex64

    @property
    def ports(self) -> tuple[int, ...]:
        """Ports of every mesh layer."""
        return layer_ports(self.n_in, self.hidden, self.n_out, self.bias_ports)

    @property
    def eta_per_column(self) -> float:
        """Nominal amplitude transmission per mesh column."""
        return float(10 ** (-self.loss_db_per_column / 20))

    def detector_gain(self, layer: MeshLayer) -> float:
        """Designed photodiode gain 1 / T of a layer (T = eta^(2 columns), its nominal power transmission)."""
        return float(self.eta_per_column ** (-2 * layer.loss_columns()))


@dataclass
class ChipVariation:
    """Process variation and noise of the chip (standard deviations); ChipVariation.none() is ideal."""

    coupler_sd_rad: float = 0.02        # beamsplitter error (rad) about the 50:50 point
    loss_sd_db: float = 0.02            # spread of the per-column loss
    thermo: ThermoOpticVariation = field(default_factory=ThermoOpticVariation)
    ring_detuning_sd: float = 0.15      # ring resonance shift (linewidths)
    ring_k_rel_sd: float = 0.05
    supply_rel_sd: float = 0.03
    pd_gain_rel_sd: float = 0.02
    slope_gain_rel_sd: float = 0.03
    monitor_gain_rel_sd: float = 0.03   # tap ratio x responsivity
    receiver_gain_rel_sd: float = 0.02
    receiver_phase_sd: float = 0.02
    source_gain_rel_sd: float = 0.01
    source_phase_sd: float = 0.01
    monitor_noise: float = 1e-3         # shot noise: variance monitor_noise^2 * I per exposure
    monitor_floor: float = 1e-5         # read noise per exposure (intensity units)
    receiver_noise: float = 1e-3        # complex field noise (field units)
    pd_noise: float = 1e-3              # relative noise of a power reading
    slope_noise: float = 1e-3           # absolute noise of the slope output
    acquisition_s: float = 1e-3
    settle_s: float = 1e-3

    @classmethod
    def none(cls) -> "ChipVariation":
        """Ideal chip: no variation, no noise, no drift (time still advances)."""
        zero = {f: 0.0 for f in ("coupler_sd_rad", "loss_sd_db", "ring_detuning_sd", "ring_k_rel_sd",
                                 "supply_rel_sd", "pd_gain_rel_sd", "slope_gain_rel_sd", "monitor_gain_rel_sd",
                                 "receiver_gain_rel_sd", "receiver_phase_sd", "source_gain_rel_sd",
                                 "source_phase_sd", "monitor_noise", "monitor_floor", "receiver_noise",
                                 "pd_noise", "slope_noise")}
        return cls(thermo=ThermoOpticVariation.none(), **zero)

    def without_noise(self) -> "ChipVariation":
        """Same fabrication spread, noise-free detectors."""
        return replace(self, monitor_noise=0.0, monitor_floor=0.0, receiver_noise=0.0, pd_noise=0.0, slope_noise=0.0)


@dataclass
class LayerTruth:
    """Hidden truth of one mesh layer."""

    mesh_errors: list[MeshErrors]
    attenuator: tuple[NDArray, NDArray, NDArray] | None
    heaters: HeaterArrayTruth
    monitor_gain: NDArray[np.float64]
    out_receiver: NDArray[np.complex128]
    in_receiver: NDArray[np.complex128]
    injector: NDArray[np.complex128]
    adjoint_source: NDArray[np.complex128]


@dataclass
class ActivationTruth:
    """Hidden truth of one bank of EO activations."""

    detuning_offset: NDArray[np.float64]
    k: NDArray[np.float64]
    supply: NDArray[np.float64]
    pd_gain: NDArray[np.float64]
    slope_gain: NDArray[np.float64]


@dataclass
class ChipTruth:
    """Hidden ground truth of one chip."""

    seed: int
    layers: list[LayerTruth]
    activations: list[ActivationTruth]
    source: NDArray[np.complex128]
    output_gain: NDArray[np.float64]

    @classmethod
    def draw(cls, design: ChipDesign, variation: ChipVariation, seed: int) -> "ChipTruth":
        """Draw a chip from the process-variation model with a seeded generator."""
        from lightloop.simulators.mesh import MeshLayer as _ML

        rng = np.random.default_rng(seed)
        v = variation
        ports = design.ports
        eta0_db = design.loss_db_per_column
        cplx = lambda n, g, p: (1 + g * rng.standard_normal(n)) * np.exp(1j * p * rng.standard_normal(n))  # noqa: E731
        layers = []
        for n in ports:
            lay = mesh_layout(n, design.mesh)
            n_blocks = 2 if design.layer_kind == "svd" else 1
            errs = []
            for _ in range(n_blocks):
                loss_db = np.maximum(eta0_db + v.loss_sd_db * rng.standard_normal((lay.n_columns, n)), 0.0)
                errs.append(MeshErrors(v.coupler_sd_rad * rng.standard_normal(lay.n_mzi),
                                       v.coupler_sd_rad * rng.standard_normal(lay.n_mzi), 10 ** (-loss_db / 20)))
            att = None
            if design.layer_kind == "svd":
                att_loss = np.maximum(eta0_db + v.loss_sd_db * rng.standard_normal((2, n)), 0.0)
                att = (v.coupler_sd_rad * rng.standard_normal(n), v.coupler_sd_rad * rng.standard_normal(n),
                       10 ** (-att_loss / 20))
            proto = _ML.build(design.layer_kind, n, design.mesh, screen=design.screen)
            heaters = HeaterArrayTruth.draw(proto.heater_positions(), rng, v.thermo, p_pi_w=design.p_pi_w,
                                            resistance_ohm=design.resistance_ohm,
                                            crosstalk_nearest=design.crosstalk_nearest,
                                            crosstalk_decay=design.crosstalk_decay,
                                            crosstalk_cutoff=design.crosstalk_cutoff)
            layers.append(LayerTruth(
                errs, att, heaters,
                monitor_gain=1 + v.monitor_gain_rel_sd * rng.standard_normal(proto.n_shifters),
                out_receiver=cplx(n, v.receiver_gain_rel_sd, v.receiver_phase_sd),
                in_receiver=cplx(n, v.receiver_gain_rel_sd, v.receiver_phase_sd),
                injector=cplx(n, v.source_gain_rel_sd, v.source_phase_sd),
                adjoint_source=cplx(n, v.source_gain_rel_sd, v.source_phase_sd)))
        acts = []
        for h in design.hidden:
            acts.append(ActivationTruth(
                detuning_offset=v.ring_detuning_sd * rng.standard_normal(h),
                k=design.ring_k * (1 + v.ring_k_rel_sd * rng.standard_normal(h)),
                supply=design.ring_supply * (1 + v.supply_rel_sd * rng.standard_normal(h)),
                pd_gain=1 + v.pd_gain_rel_sd * rng.standard_normal(h),
                slope_gain=1 + v.slope_gain_rel_sd * rng.standard_normal(h)))
        source = cplx(ports[0], v.source_gain_rel_sd, v.source_phase_sd)
        out_gain = 1 + v.pd_gain_rel_sd * rng.standard_normal(design.n_out)
        return cls(seed, layers, acts, source, out_gain)


def _power_sum(t: NDArray) -> NDArray[np.float64]:
    """sum_b |t_b|^2 per column (float64 accumulation)."""
    r = t.view(t.real.dtype)      # interleaved re, im
    return np.einsum("ij,ij->j", r, r, dtype=np.float64).reshape(-1, 2).sum(1)


def _gram_rows(x: NDArray) -> NDArray | None:
    """Rows V with V^T conj(V) = x^T conj(x) (at most n of them); None if x carries no light."""
    if x.shape[0] <= x.shape[1]:
        return x if np.any(x) else None
    xd = x.astype(np.complex128)
    g = xd.T @ xd.conj()
    lam, q = np.linalg.eigh(g)
    keep = lam > lam.max(initial=0.0) * 1e-13
    if not keep.any():
        return None
    return np.sqrt(lam[keep])[:, None] * q[:, keep].T


class _Pass:
    """Cached fields of the forward chain for one light state."""

    def __init__(self) -> None:
        self.key: tuple = ()
        self.x_in: list[NDArray] = []
        self.z: list[NDArray] = []
        self.p: list[NDArray] = []


class ChipEmulator:
    """Light path of the chip: encoder -> [mesh, EO activation] ... -> mesh -> output detectors, and back."""

    def __init__(self, design: ChipDesign, truth: ChipTruth, variation: ChipVariation, seed: int = 0):
        self.design, self.truth, self.var = design, truth, variation
        self.rng = np.random.default_rng(seed)
        self.ports = design.ports
        self.n_layers = len(self.ports)
        self.cdtype = np.dtype(design.dtype)
        self.rdtype = np.float32 if self.cdtype == np.complex64 else np.float64
        self.layers: list[MeshLayer] = []
        for n, lt in zip(self.ports, truth.layers):
            self.layers.append(MeshLayer.build(design.layer_kind, n, design.mesh, lt.mesh_errors, lt.attenuator,
                                               design.svd_gain, design.dtype, screen=design.screen))
        self.volts = [np.zeros(l.n_shifters) for l in self.layers]
        #: designed photodiode gains 1 / T(l) (nominal power transmission of each layer)
        self.detector_gain = [design.detector_gain(l) for l in self.layers]
        self.clock_s = 0.0
        self._drift_clock = [0.0] * self.n_layers
        for i in range(self.n_layers):
            self._apply_heaters(i)
        self.ring_bias_v = [np.zeros(h) for h in design.hidden]
        # light state
        self.forward_on = False
        self.inputs: NDArray | None = None
        self.inject: list[NDArray | None] = [None] * self.n_layers
        self.adjoint: list[NDArray | None] = [None] * self.n_layers
        self._gen = 0
        self._heater_gen = [0] * self.n_layers
        self._pass = _Pass()
        self._tap_cache: dict[int, tuple[tuple, NDArray]] = {}
        self.writes = 0
        self.acquisitions = 0
        self.max_heater_volts = 0.0

    # --- clock and heaters --------------------------------------------------------------------------------
    def _tick(self, dt: float) -> None:
        self.clock_s += dt

    def _apply_heaters(self, layer: int) -> None:
        h = self.truth.layers[layer].heaters
        h.advance(self.clock_s - self._drift_clock[layer], self.rng)
        self._drift_clock[layer] = self.clock_s
        self.layers[layer].set_phases(h.phases(self.volts[layer]))

    def set_heater_volts(self, layer: int, volts: NDArray) -> None:
        """Heater voltages of one layer (V); the true phases follow after the settle time."""
        self.volts[layer] = np.asarray(volts, np.float64).copy()
        self.max_heater_volts = max(self.max_heater_volts, float(np.max(self.volts[layer], initial=0.0)))
        self._tick(self.var.settle_s)
        self._apply_heaters(layer)
        self._heater_gen[layer] += 1
        self._gen += 1
        self.writes += 1

    def advance(self, seconds: float) -> None:
        """Let time pass (drift accumulates; the phases update at the next heater write or here)."""
        self._tick(seconds)
        for i in range(self.n_layers):
            self._apply_heaters(i)
            self._heater_gen[i] += 1
        self._gen += 1

    def true_phases(self, layer: int) -> NDArray[np.float64]:
        """Hidden true phases of a layer (twin-truth reports and tests only; never for the HAL)."""
        return self.layers[layer].phases.copy()

    # --- light writes ------------------------------------------------------------------------------------
    def set_inputs(self, fields: NDArray) -> None:
        """Input modulator fields (batch, N1) as requested; the true source gain/phase errors apply."""
        self.inputs = (np.asarray(fields) * self.truth.source.astype(self.cdtype)).astype(self.cdtype)
        self._gen += 1

    def set_forward_light(self, on: bool) -> None:
        """Gate of the forward laser path (inputs and activation supply carriers)."""
        self.forward_on = bool(on)
        self._gen += 1

    def set_injection(self, layer: int, fields: NDArray | None) -> None:
        """Complex fields added at the inputs of a layer (None: dark)."""
        t = self.truth.layers[layer].injector.astype(self.cdtype)
        self.inject[layer] = None if fields is None else (np.asarray(fields) * t).astype(self.cdtype)
        self._gen += 1

    def set_adjoint(self, layer: int, fields: NDArray | None) -> None:
        """Backward fields injected at the outputs of a layer (None: dark)."""
        t = self.truth.layers[layer].adjoint_source.astype(self.cdtype)
        self.adjoint[layer] = None if fields is None else (np.asarray(fields) * t).astype(self.cdtype)
        self._gen += 1

    def set_ring_bias(self, layer: int, volts: NDArray) -> None:
        """Ring-modulator bias voltages of a hidden layer (V)."""
        self.ring_bias_v[layer] = np.asarray(volts, np.float64).copy()
        self._gen += 1

    # --- physics -----------------------------------------------------------------------------------------
    def _batch(self) -> int:
        for a in [self.inputs, *self.inject, *self.adjoint]:
            if a is not None:
                return a.shape[0]
        return 1

    def _activation(self, layer: int, p: NDArray) -> tuple[NDArray, NDArray]:
        t = self.truth.activations[layer]
        det = t.detuning_offset + self.design.ring_detuning_per_volt * self.ring_bias_v[layer]
        a = eo_activation(p, det.astype(self.rdtype), t.k.astype(self.rdtype), self.design.ring_t_min,
                          t.supply.astype(self.rdtype))
        s = eo_activation_slope(p, det.astype(self.rdtype), t.k.astype(self.rdtype), self.design.ring_t_min,
                                t.supply.astype(self.rdtype))
        return a.astype(self.rdtype, copy=False), s.astype(self.rdtype, copy=False)

    def _forward(self) -> _Pass:
        """Forward-propagating fields of every layer for the present light state (cached)."""
        key = (self._gen,)
        if self._pass.key == key:
            return self._pass
        b = self._batch()
        ps = _Pass()
        a: NDArray | None = None
        for l, lay in enumerate(self.layers):
            n = lay.n
            x = np.zeros((b, n), self.cdtype)
            if self.forward_on:
                if l == 0:
                    if self.inputs is not None:
                        if self.inputs.shape[0] != b:
                            raise InstrumentError("chip twin: injected batch does not match the input batch")
                        x[:, : self.inputs.shape[1]] = self.inputs
                elif a is not None:
                    x[:, : a.shape[1]] = a
            if self.inject[l] is not None:
                x = x + self.inject[l]
            z, _ = lay.forward(x)
            ps.x_in.append(x)
            ps.z.append(z)
            if l < self.n_layers - 1:
                h = self.design.hidden[l]
                g = self.detector_gain[l] * self.truth.activations[l].pd_gain
                p = ((z[:, :h].real ** 2 + z[:, :h].imag ** 2) * g.astype(self.rdtype)).astype(self.rdtype)
                ps.p.append(p)
                a = self._activation(l, p)[0] if self.forward_on else None
            else:
                no = self.design.n_out
                g = (self.detector_gain[l] * self.truth.output_gain).astype(self.rdtype)
                ps.p.append(((z[:, :no].real ** 2 + z[:, :no].imag ** 2) * g).astype(self.rdtype))
        ps.key = key
        self._pass = ps
        return ps

    def tap_intensities(self, layer: int) -> NDArray:
        """True tap intensities of a layer integrated over the batch: sum_b |forward|^2 + |backward|^2 (taps,).

        Computed from the batch's field Gram matrix (sum_b x_b x_b^H = V^T conj(V)): propagating the at most
        n rows of V gives the same sums as propagating the B samples, so the cost does not grow with B."""
        key = (self._gen,)
        hit = self._tap_cache.get(layer)
        if hit is not None and hit[0] == key:
            return hit[1]
        fp = self._forward()
        lay = self.layers[layer]
        out = np.zeros(lay.n_shifters, np.float64)
        v = _gram_rows(fp.x_in[layer])
        if v is not None:
            _, t = lay.forward(v.astype(self.cdtype, copy=False), record=True)
            out += _power_sum(t)
        if self.adjoint[layer] is not None:
            v = _gram_rows(self.adjoint[layer])
            if v is not None:
                _, t = lay.backward(v.astype(self.cdtype, copy=False), record=True)
                out += _power_sum(t)
        self._tap_cache[layer] = (key, out)
        return out

    def backward_inputs(self, layer: int) -> NDArray:
        """Backward-propagating fields arriving at a layer's inputs (batch, n)."""
        if self.adjoint[layer] is None:
            return np.zeros((self._batch(), self.layers[layer].n), self.cdtype)
        y, _ = self.layers[layer].backward(self.adjoint[layer])
        return y

    # --- noisy reads -------------------------------------------------------------------------------------
    def _acquire(self) -> None:
        self.acquisitions += 1
        self._tick(self.var.acquisition_s)

    def _noise(self, shape: tuple[int, ...]) -> NDArray:
        return self.rng.standard_normal(shape, dtype=np.float32 if self.rdtype == np.float32 else np.float64)

    def read_taps(self, layer: int) -> NDArray:
        """Tap monitor volts (taps,), one exposure integrating the whole batch: gain * (I + noise), with
        shot noise of variance monitor_noise^2 * I and a read-noise floor monitor_floor per exposure."""
        self._acquire()
        i = self.tap_intensities(layer)
        g = self.truth.layers[layer].monitor_gain
        if self.var.monitor_noise or self.var.monitor_floor:
            sd = np.sqrt(self.var.monitor_noise ** 2 * np.maximum(i, 0.0) + self.var.monitor_floor ** 2)
            i = i + sd * self.rng.standard_normal(i.shape)
        return (i * g).astype(self.rdtype)

    def _cnoise(self, shape: tuple[int, ...], sd: float) -> NDArray:
        if not sd:
            return 0.0  # type: ignore[return-value]
        return (sd / np.sqrt(2)) * (self._noise(shape) + 1j * self._noise(shape))

    def read_output_fields(self, layer: int) -> NDArray:
        """Coherent receivers at a layer's outputs (forward light), complex volts."""
        self._acquire()
        z = self._forward().z[layer] * self.truth.layers[layer].out_receiver.astype(self.cdtype)
        return (z + self._cnoise(z.shape, self.var.receiver_noise)).astype(self.cdtype, copy=False)

    def read_input_fields(self, layer: int) -> NDArray:
        """Coherent receivers at a layer's inputs (backward light), complex volts."""
        self._acquire()
        y = self.backward_inputs(layer) * self.truth.layers[layer].in_receiver.astype(self.cdtype)
        return (y + self._cnoise(y.shape, self.var.receiver_noise)).astype(self.cdtype, copy=False)

    def read_activation_power(self, layer: int) -> NDArray:
        """Activation photodiode volts of hidden layer `layer` (batch, h)."""
        self._acquire()
        p = self._forward().p[layer]      # the photocurrent (responsivity error included) drives the ring
        if self.var.pd_noise:
            p = p * (1 + self.var.pd_noise * self._noise(p.shape))
        return p.astype(self.rdtype, copy=False)

    def read_activation_slope(self, layer: int) -> NDArray:
        """Slope-output volts of hidden layer `layer`: the chip's measured da/dp (batch, h)."""
        self._acquire()
        p = self._forward().p[layer]
        s = self._activation(layer, p)[1] * self.truth.activations[layer].slope_gain.astype(self.rdtype)
        if self.var.slope_noise:
            s = s + self.var.slope_noise * self._noise(s.shape)
        return s.astype(self.rdtype, copy=False)

    def read_output_power(self) -> NDArray:
        """Output photodiode volts (batch, n_out)."""
        self._acquire()
        p = self._forward().p[-1]
        if self.var.pd_noise:
            p = p * (1 + self.var.pd_noise * self._noise(p.shape))
        return p.astype(self.rdtype, copy=False)

    # --- state for resume ----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Noise generator, clock and drift state."""
        return {"rng": self.rng.bit_generator.state, "clock_s": self.clock_s,
                "drift": [lt.heaters.drift.copy() for lt in self.truth.layers],
                "drift_clock": list(self._drift_clock)}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore `snapshot` state."""
        self.rng.bit_generator.state = state["rng"]
        self.clock_s = float(state["clock_s"])
        for lt, d in zip(self.truth.layers, state["drift"]):
            lt.heaters.drift = np.asarray(d, np.float64).copy()
        self._drift_clock = [float(c) for c in state["drift_clock"]]
        for i in range(self.n_layers):
            self.layers[i].set_phases(self.truth.layers[i].heaters.phases(self.volts[i]))
        self._gen += 1


# --- device twins (ports) ------------------------------------------------------------------------------
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
        if np.any(v < 0) or np.any(v > self.v_hw_max) or not np.all(np.isfinite(v)):
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
