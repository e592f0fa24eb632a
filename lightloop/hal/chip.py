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
  uniformly lossy mesh), e(l-1) = 2 Re(v(l)) * g'(p(l-1)) on the activation ports. Uneven per-waveguide
  loss makes the time-reversed field reach a tap as (P P^H) conj(v) instead of eta^{2d} conj(v); with a
  calibrated loss model (ChipLayer.loss_model, readout routine) the model's difference between the exact
  gradient and this reading is added (a first-order correction, ~1 % of the gradient).
The adjoint needs layers that are unitary up to uniform loss (the time-reversed field must retrace the
adjoint), so 'svd' layers (attenuators in the path) serve finite differences only.

Physics-aware training (gradient `physics_aware`) needs only the forward acquisitions: model_gradients /
model_prediction / refine_model take the backward pass through the calibrated mesh model and fit its phase offsets
to measured forward batches (``lightloop.hal.chip_model``).

Ports: ``lightloop.hal.ports`` (integrated-chip section); roles: ``lightloop.hal.chip_roles`` and
``lightloop.hal.phase_shifters``; this module: the ChipProcessor.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError
from lightloop.hal.chip_model import ChipModel
from lightloop.hal.chip_roles import ChipLayer, EOActivation, ForwardSource, PowerDetector
from lightloop.hal.processor import ForwardTaps, OpticalProcessor

__all__ = ["ChipProcessor", "PHASE_BOUND"]

#: trainer bounds on phase parameters (rad); the bank wraps phases into one period anyway
PHASE_BOUND = 32 * np.pi


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
        #: acquisitions averaged per detector read of the adjoint procedure (noise falls as 1 / sqrt(n))
        self.averages = 1

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
        self._notify("program")
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
        return ForwardTaps(inputs=ports[:, :n], pre=pre, post=post,
                           extra={"ports": ports, "volts": [lay.bank.written_volts for lay in self.layers]})

    def _check_forward(self, delta_out: NDArray) -> None:
        if self._x is None or delta_out.shape != (self._x.shape[0], self.n_out):
            raise RuntimeError("chip processor: call forward(x) on the same batch before the backward pass")

    def _output_error(self, delta_out: NDArray) -> NDArray:
        lay = self.layers[-1]
        e = np.zeros((delta_out.shape[0], lay.n_ports), self._rd)
        e[:, : self.n_out] = delta_out * self._rd(self.output_gain / delta_out.shape[0])
        return e

    def _read(self, acquire: Any) -> NDArray:
        """One acquisition, or the mean of `averages` acquisitions of the same light (noise / sqrt(n))."""
        first = acquire()
        if self.averages == 1:
            return first
        acc = first.astype(np.result_type(first.dtype, np.float64), copy=True)
        for _ in range(self.averages - 1):
            acc += acquire()
        return (acc / self.averages).astype(first.dtype, copy=False)

    def _layer_adjoint(self, l: int, e: NDArray, z: NDArray, i_fwd: NDArray | None,
                       grads: bool) -> tuple[NDArray | None, NDArray]:
        """Backward pass (and, if grads, the adjoint and sum exposures) of layer l.

        Returns (phase gradients or None, adjoint field dL/da at the layer inputs)."""
        lay = self.layers[l]
        n_avg = self.averages
        # dL/dz with p = gain |z|^2 (designed 1 / T, or the calibrated photodiode power per receiver field^2)
        gain = self._rd(lay.detector_gain) if lay.power_gain is None else np.asarray(lay.power_gain, self._rd)
        s = e * np.conj(z) * gain
        peak = lay.adjoint_source.command_peak(s)
        if peak == 0.0:
            return (np.zeros(lay.bank.n_channels, self._rd) if grads else None), np.zeros_like(s)
        kappa = self.adjoint_field / peak
        # 2. backward: forward light off, adjoint injected at the outputs, field read at the inputs
        self.source.dark()
        lay.adjoint_source.inject((s * kappa).astype(self._cd))
        v = self._read(lay.in_receiver.acquire)
        lay.adjoint_source.off()
        self._count(n_avg)
        g = None
        if grads:
            # 3. adjoint exposure: the time-reversed adjoint -i conj(v) alone, injected at the inputs
            tr = (self._cd(-1j) * np.conj(v)).astype(self._cd)
            v_peak = lay.injector.command_peak(tr)
            r = min(1.0, lay.injector.max_field / v_peak) if v_peak > 0 else 1.0
            lay.injector.inject((self._cd(-1j * r) * np.conj(v)).astype(self._cd))
            i_adj = self._read(lay.monitor.acquire)
            # 4. sum exposure: forward light back on, time-reversed adjoint still injected
            self.source.on()
            i_sum = self._read(lay.monitor.acquire)
            lay.injector.off()
            self._count(2 * n_avg)
            diff = i_sum - i_fwd - i_adj
            if self.eta != 1.0:
                diff = diff / (self.eta ** (2 * lay.tap_depth)).astype(self._rd)
            g = (diff / (kappa * r)).astype(self._rd)
            if lay.loss_model is not None:
                g = g + self._loss_bias(lay, z, s)
        else:
            self.source.on()
        return g, v / self._rd(kappa)

    def _loss_bias(self, lay: ChipLayer, z: NDArray, s: NDArray) -> NDArray:
        """Model difference (exact - time-reversed reading) of the phase gradients of one layer (rad^-1 loss units).

        Uneven per-waveguide loss makes the time-reversed adjoint reach a tap as (P P^H) conj(v) rather than
        eta^{2d} conj(v) (P: the lossy mesh from the inputs to the tap); the calibrated loss model (readout)
        predicts that bias from the layer's input fields (solved from the measured outputs) and the adjoint
        source s, and the difference is added to the measured gradient (a first-order correction: the model's
        own error enters only multiplied by the loss spread)."""
        m = lay.loss_model.layer(lay.bank.cal.phase(lay.bank.written_volts))   # type: ignore[union-attr]
        x = np.linalg.solve(m.matrix(), np.asarray(z, np.complex128).T).T
        _, fu = m.forward(x, record=True)
        v_in, fv = m.backward(np.asarray(s, np.complex128), record=True)
        _, fw = m.forward(-1j * np.conj(v_in), record=True)
        exact = -2 * np.imag(np.sum(fu * fv, 0))
        reading = 2 * np.real(np.sum(fu * np.conj(fw), 0))
        if self.eta != 1.0:
            reading = reading / self.eta ** (2 * lay.tap_depth)
        return (exact - reading).astype(self._rd)

    def _forward_state(self, need_monitors: bool) -> tuple[list, list, list]:
        """Acquire, with the forward light on, the layer output fields, the slopes and the forward taps."""
        self.source.on()
        z = [self._read(lay.out_receiver.acquire) for lay in self.layers]
        slopes = [self._read(act.acquire_slope) for act in self.activations]
        i_fwd = [self._read(lay.monitor.acquire) for lay in self.layers] if need_monitors else [None] * len(self.layers)
        self._count(self.averages * (len(z) + len(slopes) + (len(self.layers) if need_monitors else 0)))
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
        self._notify("backward")
        if "adjoint" not in self.capabilities:
            raise ConfigError("chip processor: in-situ adjoint gradients need 'unitary' mesh layers")
        gs, _ = self._adjoint(np.asarray(delta_out, self._rd), grads=True)
        return gs  # type: ignore[return-value]

    def backward(self, delta_out: NDArray) -> list[NDArray]:
        """Optical backward pass: delta(l) = B dL/dp(l) per hidden layer (measured), then delta_out."""
        self._notify("backward")
        delta_out = np.asarray(delta_out, self._rd)
        _, errs = self._adjoint(delta_out, grads=False)
        b = self._rd(delta_out.shape[0])
        return [e * b for e in errs] + [delta_out]

    def activation_slope(self, layer: int, pre: NDArray) -> NDArray:
        """Calibrated model slope g'(p) of the activations after layer `layer`."""
        return self.activations[layer].slope_model(pre)

    # --- calibrated model (physics_aware, twin refinement): lightloop.hal.chip_model -------------------
    @property
    def chip_model(self) -> ChipModel:
        """The calibrated differentiable model of the mesh layers and its fitted phase-offset correction (rad)."""
        if self.__dict__.get("_chip_model") is None:
            self._chip_model = ChipModel(self)
        return self._chip_model

    def check_model(self) -> None:
        """ConfigError if a layer has no calibrated model ('svd' layers, mismatched calibration shapes)."""
        for l in range(len(self.layers)):
            self.chip_model._optics(l)

    def model_gradients(self, taps: ForwardTaps, delta_out: NDArray) -> list[NDArray]:
        """dL/dphase (rad^-1) backward through the calibrated model at the measured forward state (no acquisition)."""
        return self.chip_model.gradients(taps, delta_out)

    def model_prediction(self, taps: ForwardTaps) -> list[NDArray]:
        """The calibrated model's p(l) of every layer from the measured inputs (as taps.pre)."""
        return self.chip_model.prediction(taps)

    def refine_model(self, history: Sequence[ForwardTaps]) -> dict[str, float]:
        """Fit the model's per-shifter phase-offset correction (rad) to the measured powers of recent batches."""
        return self.chip_model.refine(history)

    # --- bookkeeping -----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Twin state plus the model's fitted phase-offset correction (rad per shifter), for an exact resume."""
        return {**super().snapshot(), "model_correction": [c.copy() for c in self.chip_model.correction]}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore `snapshot` state (a snapshot without a model correction keeps the current one)."""
        corr = state.get("model_correction")
        if corr is not None:
            corr = self.chip_model.checked_correction(corr)
        super().restore(state)
        if corr is not None:
            self.chip_model.correction = corr

    def summary_fields(self) -> dict[str, Any]:
        """Chip figures for the run summary (then the station's, on instruments)."""
        return {**self.info, "phase_shifters": int(sum(l.bank.n_channels for l in self.layers)),
                "clipped_phase_writes": int(sum(l.bank.clipped_total for l in self.layers)),
                **super().summary_fields()}

    def device_safe_state(self) -> None:
        """Light off, injections dark, heaters and ring biases to 0 V."""
        try:
            self.source.dark()
            self._idle_injection()
        finally:
            for lay in self.layers:
                lay.bank.safe_state()
            for act in self.activations:
                act.safe_state()
