"""The free-space SA bench as an OpticalProcessor (Guo et al. 2021): SLM/DMD weights, vapor cells, homodyne taps."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.hal.free_space_roles import (
    HomodyneDetector,
    InputEncoder,
    ProbeSource,
    SaturableAbsorber,
    WeightBlock,
)
from lightloop.hal.processor import ForwardTaps, OpticalProcessor

__all__ = ["FreeSpaceProcessor"]


class FreeSpaceProcessor(OpticalProcessor):
    """L weight layers; a vapor cell after every hidden layer; linear output.

    Taps: pre-SA fields z(l) and post-SA fields a(l) forward, errors delta(l) backward.
    """

    capabilities = frozenset({"exact", "pump_probe"})

    def __init__(
        self,
        encoder: InputEncoder,
        probe: ProbeSource,
        weights: Sequence[WeightBlock],
        absorbers: Sequence[SaturableAbsorber],
        pre_taps: Sequence[HomodyneDetector],
        post_taps: Sequence[HomodyneDetector],
        error_taps: Sequence[HomodyneDetector],
        stateful: Sequence[Any] = (),
    ):
        n_layers = len(weights)
        if not (len(absorbers) == len(post_taps) == len(error_taps) == n_layers - 1 and len(pre_taps) == n_layers):
            raise ValueError("free-space processor: need L weight blocks and pre taps, L-1 absorbers, post and error taps")
        self.encoder, self.probe = encoder, probe
        self.weights, self.absorbers = list(weights), list(absorbers)
        self.pre_taps, self.post_taps, self.error_taps = list(pre_taps), list(post_taps), list(error_taps)
        self._stateful = list(stateful)
        sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
        for a, b in zip(weights[:-1], weights[1:]):
            if b.shape[1] != a.shape[0]:
                raise ValueError(f"free-space processor: layer shapes {a.shape} and {b.shape} do not chain")
        self._sizes = tuple(sizes)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Neurons per layer, input first."""
        return self._sizes

    def parameter_shapes(self) -> list[tuple[int, ...]]:
        """Weight matrix shapes (out, in) per layer."""
        return [w.shape for w in self.weights]

    def parameter_bounds(self) -> list[tuple[float, float]]:
        """+-max_weight per layer (passive transmission times amplifier gain)."""
        return [(-w.max_weight, w.max_weight) for w in self.weights]

    def init_parameters(self, rng: np.random.Generator, scale: float) -> list[NDArray[np.float32]]:
        """Weights drawn from N(0, scale^2), clipped to the realisable range, in each layer's parameter_order."""
        out = []
        for (lo, hi), shape, order in zip(self.parameter_bounds(), self.parameter_shapes(), self.parameter_orders()):
            out.append(np.clip(rng.normal(0.0, scale, size=shape), lo, hi).astype(np.float32, order=order))
        return out

    def parameter_orders(self) -> list[str]:
        """Memory layout per weight layer: 'F' for hidden layers of column-reading blocks (analog twin), else 'C'.

        Same values either way; an F-ordered hidden layer makes the twin's forward product an NN one (about 20 %
        faster at 784x128). The output layer stays C: its small product's NN and NT kernels round differently.
        """
        last = len(self.weights) - 1
        return [w.param_order if i < last else "C" for i, w in enumerate(self.weights)]

    def set_optical_depth(self, a0: float) -> None:
        """Set every vapor cell to optical depth a0."""
        for sa in self.absorbers:
            sa.set_optical_depth(a0)

    def program(self, params: Sequence[NDArray]) -> None:
        """Write every layer's weights (one frame per weight device)."""
        self._notify("program")
        for block, w in zip(self.weights, params):
            block.write(w)

    def forward(self, x: NDArray) -> ForwardTaps:
        """Display x and acquire every forward tap (one acquisition per detector array)."""
        self.encoder.display(x)
        pre = [d.acquire() for d in self.pre_taps]
        post = [d.acquire() for d in self.post_taps] + [pre[-1]]
        self._count(len(self.pre_taps) + len(self.post_taps))
        return ForwardTaps(inputs=x * self.encoder.field_scale if self.encoder.field_scale != 1 else x,
                           pre=pre, post=post)

    #: backward acquisitions averaged per error tap (detector noise on the weak probe falls as 1/sqrt(n))
    error_averages: int = 1
    #: 'single': one probe per step; 'differential': probes +delta and -delta, half their difference (any
    #: detector offset or stray light even in delta cancels; twice the backward acquisitions)
    error_readout: str = "single"

    def backward(self, delta_out: NDArray) -> list[NDArray]:
        """Inject delta(L) as a weak probe; acquire delta(l) = (W(l+1)^T delta(l+1)) * T(z(l)) at each cell."""
        self._notify("backward")
        n = int(self.error_averages)
        scale = self.probe.display(delta_out)
        errs = self._acquire_errors(n)
        if self.error_readout == "differential":
            self.probe.display(-delta_out)
            errs = [p - m for p, m in zip(errs, self._acquire_errors(n))]
            n *= 2
        inv = np.float32(1.0 / (scale * n))
        return [e * inv for e in errs] + [delta_out]

    def _acquire_errors(self, n: int) -> list[NDArray]:
        """Sum of n acquisitions of every error tap (detector volts mapped to fields)."""
        errs = []
        for d in self.error_taps:
            acc = d.acquire()
            for _ in range(n - 1):
                acc = acc + d.acquire()
            errs.append(acc)
        self._count(len(self.error_taps) * n)
        return errs

    def activation_slope(self, layer: int, pre: NDArray) -> NDArray:
        """Calibrated model slope g'(z) of the absorber after weight layer `layer` (0-based)."""
        return self.absorbers[layer].slope_model(pre)

    def probe_transmission(self, layer: int, pre: NDArray) -> NDArray:
        """Calibrated model of the probe transmission T(z) of the absorber after weight layer `layer`."""
        return self.absorbers[layer].transmission_model(pre)

    def summary_fields(self) -> dict[str, Any]:
        """Bench figures for the run summary (then the station's, on instruments)."""
        return {"optical_depth": self.absorbers[0].optical_depth if self.absorbers else None,
                **super().summary_fields()}

    def device_safe_state(self) -> None:
        """Sources dark, weights zero, heaters to their lowest set-point."""
        self.encoder.port.write_fields(np.zeros((1, self.encoder.n), np.float32))
        self.probe.port.write_fields(np.zeros((1, self.probe.n), np.float32))
        for sa in self.absorbers:
            sa.safe_state()
