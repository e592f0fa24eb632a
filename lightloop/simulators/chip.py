"""Emulator of an integrated photonic neural-network chip (the light path behind its device twins).

One ChipEmulator holds the light path - encoder, mesh layers (lightloop.physics.mesh), opto-electronic
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

The design, variation model and hidden truth are in `lightloop.simulators.chip_truth`; the twins of the
chip's devices (the HAL ports on this emulator) are in `lightloop.simulators.chip_ports`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import InstrumentError
from lightloop.physics.mzi import eo_activation, eo_activation_slope
from lightloop.simulators.chip_truth import ChipDesign, ChipTruth, ChipVariation
from lightloop.physics.mesh import MeshLayer

__all__ = ["ChipEmulator"]


def _use_qr(batch: int, n: int) -> bool:
    """Compress a batch to its n QR rows only where the QR costs less than the longer pass (measured)."""
    return batch > n and (n >= 24 or batch > 4 * n)


def _gram_rows(x: NDArray) -> NDArray | None:
    """Rows V with V^T conj(V) = x^T conj(x) (at most n of them where that pays); None if x carries no light.

    V = R of x = QR: x^T conj(x) = R^T Q^T conj(Q) conj(R) = R^T conj(R), with no Gram product or eigensolve
    (in complex128: a complex64 QR is 2x faster but moves the trained accuracy by float32 rounding)."""
    if not np.any(x):
        return None
    if not _use_qr(*x.shape):
        return x
    return np.linalg.qr(x.astype(np.complex128), mode="r")


class _Pass:
    """Cached fields of the forward chain for one light state, filled layer by layer as reads need them."""

    def __init__(self, key: tuple = (), batch: int = 1) -> None:
        self.key, self.batch = key, batch
        self.x_in: list[NDArray] = []
        self.xf: list[NDArray | None] = []      # forward-light part of x_in (None: forward light off)
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
        self._gen = 0            # any light or heater change
        self._fgen = 0           # changes of the forward-propagating light (everything but the adjoint sources)
        self._heater_gen = [0] * self.n_layers
        self._pass = _Pass()
        self._tap_cache: dict[int, tuple[tuple, NDArray]] = {}
        self._records: list[list[tuple]] = [[] for _ in range(self.n_layers)]   # (heater gen, fields, tap record)
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
        self._fgen += 1
        self.writes += 1

    def advance(self, seconds: float) -> None:
        """Let time pass (drift accumulates; the phases update at the next heater write or here)."""
        self._tick(seconds)
        for i in range(self.n_layers):
            self._apply_heaters(i)
            self._heater_gen[i] += 1
        self._gen += 1
        self._fgen += 1

    def true_phases(self, layer: int) -> NDArray[np.float64]:
        """Hidden true phases of a layer (twin-truth reports and tests only; never for the HAL)."""
        return self.layers[layer].phases.copy()

    # --- light writes ------------------------------------------------------------------------------------
    def set_inputs(self, fields: NDArray) -> None:
        """Input modulator fields (batch, N1) as requested; the true source gain/phase errors apply."""
        self.inputs = (np.asarray(fields) * self.truth.source.astype(self.cdtype)).astype(self.cdtype)
        self._gen += 1
        self._fgen += 1

    def set_forward_light(self, on: bool) -> None:
        """Gate of the forward laser path (inputs and activation supply carriers)."""
        self.forward_on = bool(on)
        self._gen += 1
        self._fgen += 1

    def set_injection(self, layer: int, fields: NDArray | None) -> None:
        """Complex fields added at the inputs of a layer (None: dark)."""
        t = self.truth.layers[layer].injector.astype(self.cdtype)
        self.inject[layer] = None if fields is None else (np.asarray(fields) * t).astype(self.cdtype)
        self._gen += 1
        self._fgen += 1

    def set_adjoint(self, layer: int, fields: NDArray | None) -> None:
        """Backward fields injected at the outputs of a layer (None: dark)."""
        t = self.truth.layers[layer].adjoint_source.astype(self.cdtype)
        self.adjoint[layer] = None if fields is None else (np.asarray(fields) * t).astype(self.cdtype)
        self._gen += 1

    def set_ring_bias(self, layer: int, volts: NDArray) -> None:
        """Ring-modulator bias voltages of a hidden layer (V)."""
        self.ring_bias_v[layer] = np.asarray(volts, np.float64).copy()
        self._gen += 1
        self._fgen += 1

    # --- physics -----------------------------------------------------------------------------------------
    def _batch(self) -> int:
        for a in [self.inputs, *self.inject, *self.adjoint]:
            if a is not None:
                return a.shape[0]
        return 1

    def _activation(self, layer: int, p: NDArray, slope: bool = False) -> NDArray:
        """Ring-modulator output a(p) of a hidden layer, or its slope da/dp if slope."""
        t = self.truth.activations[layer]
        det = t.detuning_offset + self.design.ring_detuning_per_volt * self.ring_bias_v[layer]
        f = eo_activation_slope if slope else eo_activation
        out = f(p, det.astype(self.rdtype), t.k.astype(self.rdtype), self.design.ring_t_min,
                t.supply.astype(self.rdtype))
        return out.astype(self.rdtype, copy=False)

    def _forward(self, upto: int | None = None, inputs_only: bool = False) -> _Pass:
        """Forward-propagating fields of layers 0..upto (default: all) for the present light state (cached; a
        layer is computed only when a read needs it, so a tap read at layer l never runs the layers after it;
        inputs_only: layer upto's input fields without its outputs)."""
        last = self.n_layers - 1 if upto is None else upto
        b = self._batch()
        ps = self._pass
        if ps.key != (self._fgen, b):
            ps = self._pass = _Pass((self._fgen, b), b)
        for l in range(len(ps.z), last + 1):
            lay = self.layers[l]
            if len(ps.x_in) == l:
                x = np.zeros((b, lay.n), self.cdtype)
                if self.forward_on:
                    if l == 0:
                        if self.inputs is not None:
                            if self.inputs.shape[0] != b:
                                raise InstrumentError("chip twin: injected batch does not match the input batch")
                            x[:, : self.inputs.shape[1]] = self.inputs
                    else:
                        a = self._activation(l - 1, ps.p[l - 1])
                        x[:, : a.shape[1]] = a
                ps.xf.append(x if self.forward_on else None)
                if self.inject[l] is not None:
                    x = x + self.inject[l]
                ps.x_in.append(x)
            if inputs_only and l == last:
                break
            x = ps.x_in[l]
            lit = self.forward_on or self.inject[l] is not None
            z = lay.forward(x)[0] if lit else np.zeros((b, lay.n), self.cdtype)   # a dark layer: no product
            ps.z.append(z)
            if l < self.n_layers - 1:
                h = self.design.hidden[l]
                g = self.detector_gain[l] * self.truth.activations[l].pd_gain
                ps.p.append(((z[:, :h].real ** 2 + z[:, :h].imag ** 2) * g.astype(self.rdtype)).astype(self.rdtype))
            else:
                no = self.design.n_out
                g = (self.detector_gain[l] * self.truth.output_gain).astype(self.rdtype)
                ps.p.append(((z[:, :no].real ** 2 + z[:, :no].imag ** 2) * g).astype(self.rdtype))
        return ps

    def tap_intensities(self, layer: int) -> NDArray:
        """True tap intensities of a layer integrated over the batch: sum_b |forward|^2 + |backward|^2 (taps,).

        Computed from the batch's field Gram matrix (sum_b x_b x_b^H = V^T conj(V)): propagating the at most
        n rows of V gives the same sums as propagating the B samples, so the cost does not grow with B."""
        key = (self._gen,)
        hit = self._tap_cache.get(layer)
        if hit is not None and hit[0] == key:
            return hit[1]
        fp = self._forward(layer, inputs_only=True)
        lay = self.layers[layer]
        out = np.zeros(lay.n_shifters, np.float64)
        xf, xi = fp.xf[layer], self.inject[layer]
        if (xf is not None or xi is not None) and (lay.dense_work(fp.batch) or not _use_qr(fp.batch, lay.n)
                                                   or 2 * fp.batch < 3 * lay.n):
            # one tap record per light component, kept: the sum exposure of the adjoint protocol (forward light
            # + time-reversed injection) adds the forward and injection records instead of a third pass (small
            # layers: each record one product with the dense tap matrices, cheaper than a QR at any batch)
            out = lay.record_powers(*[self._record(layer, x) for x in (xf, xi) if x is not None])
        else:
            v = _gram_rows(fp.x_in[layer])
            if v is not None:
                out += lay.tap_powers(v.astype(self.cdtype, copy=False), forward=True)[1]
        if self.adjoint[layer] is not None:
            v = _gram_rows(self.adjoint[layer])
            if v is not None:
                out += lay.tap_powers(v.astype(self.cdtype, copy=False), forward=False)[1]
        self._tap_cache[layer] = (key, out)
        return out

    def _record(self, layer: int, x: NDArray) -> list[NDArray]:
        """Tap record of forward fields x at a layer (the last two kept per layer, keyed by content and phases)."""
        gen, kept = self._heater_gen[layer], self._records[layer]
        for g, xk, rec in kept:
            if g == gen and (xk is x or (xk.shape == x.shape and np.array_equal(xk, x))):
                return rec
        rec = self.layers[layer].tap_record(x)
        kept.insert(0, (gen, x, rec))
        del kept[2:]
        return rec

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
        w = self._noise((2, *shape))          # one draw: the same stream as real parts, then imaginary parts
        return (sd / np.sqrt(2)) * (w[0] + 1j * w[1])

    def read_output_fields(self, layer: int) -> NDArray:
        """Coherent receivers at a layer's outputs (forward light), complex volts."""
        self._acquire()
        z = self._forward(layer).z[layer] * self.truth.layers[layer].out_receiver.astype(self.cdtype)
        return (z + self._cnoise(z.shape, self.var.receiver_noise)).astype(self.cdtype, copy=False)

    def read_input_fields(self, layer: int) -> NDArray:
        """Coherent receivers at a layer's inputs (backward light), complex volts."""
        self._acquire()
        y = self.backward_inputs(layer) * self.truth.layers[layer].in_receiver.astype(self.cdtype)
        return (y + self._cnoise(y.shape, self.var.receiver_noise)).astype(self.cdtype, copy=False)

    def read_activation_power(self, layer: int) -> NDArray:
        """Activation photodiode volts of hidden layer `layer` (batch, h)."""
        self._acquire()
        p = self._forward(layer).p[layer]      # the photocurrent (responsivity error included) drives the ring
        if self.var.pd_noise:
            p = p * (1 + self.var.pd_noise * self._noise(p.shape))
        return p.astype(self.rdtype, copy=False)

    def read_activation_slope(self, layer: int) -> NDArray:
        """Slope-output volts of hidden layer `layer`: the chip's measured da/dp (batch, h)."""
        self._acquire()
        p = self._forward(layer).p[layer]
        s = self._activation(layer, p, slope=True) * self.truth.activations[layer].slope_gain.astype(self.rdtype)
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
            self._heater_gen[i] += 1
        self._gen += 1
        self._fgen += 1
