"""A plain digital (numpy) multilayer perceptron behind the OpticalProcessor contract.

This is NOT a model of optical hardware: it is the reference network of the biophoton paper
(Zarkeshian, Kergan, Ghobadi, Nicola & Simon, "Photons guided by axons may enable
backpropagation-based learning in the brain", Sci. Rep. 12, 20720 (2022), arXiv:2203.11135):
784 inputs, sigmoid hidden units with biases, sigmoid outputs, MSE loss. It lets every gradient
method that wraps a backward pass (notably `stochastic_photonic`) run on the paper's own network
and be compared with the optical benches through one Trainer.

Conventions (docs/architecture.md): batch-first float32, z = a @ W.T with W of shape (out, in). Biases are a
constant-1 "bias unit" appended to the input and to every hidden activation, so W(l) has shape
(n_out, n_in + 1) and its last column is the bias; the taps `inputs` and `post[l]` of hidden layers
carry that unit as their last column, so every gradient method's outer product dW = delta^T a
covers the bias too. `post[-1]` is the network output (no bias unit).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

from lightloop.hal.processor import ForwardTaps, OpticalProcessor

__all__ = ["DigitalProcessor"]

Activation = Literal["sigmoid", "linear"]


def _augment(a: NDArray) -> NDArray[np.float32]:
    """Append the constant-1 bias unit: (B, n) -> (B, n + 1)."""
    out = np.empty((a.shape[0], a.shape[1] + 1), np.float32)
    out[:, :-1] = a
    out[:, -1] = 1.0
    return out


class DigitalProcessor(OpticalProcessor):
    """Digital MLP (sigmoid hidden units, sigmoid or linear outputs, biases): exact backprop as `backward`.

    capabilities: 'pump_probe' only - this processor has a backward pass (here exact digital backprop
    including the output nonlinearity's slope). The generic 'exact' method assumes bias-free weight
    matrices and a linear output, so it is not offered; `backward` IS the exact gradient here.
    An optional `feedback_channel` (a HAL PhotonCountingArray) may be attached by the bench.
    """

    def __init__(self, layer_sizes: Sequence[int], output_activation: Activation = "sigmoid",
                 max_weight: float = 100.0):
        sizes = tuple(int(n) for n in layer_sizes)
        if len(sizes) < 2 or any(n < 1 for n in sizes):
            raise ValueError(f"digital network: need at least input and output sizes >= 1, got {sizes}")
        if output_activation not in ("sigmoid", "linear"):
            raise ValueError(f"digital network: output_activation must be 'sigmoid' or 'linear', got {output_activation!r}")
        self._sizes = sizes
        self.output_activation = output_activation
        self.max_weight = float(max_weight)
        self.capabilities = frozenset({"pump_probe"})
        self._params: list[NDArray[np.float32]] = [np.zeros(s, np.float32) for s in self.parameter_shapes()]
        self._last: ForwardTaps | None = None
        self.feedback_channel: Any = None

    # --- contract -------------------------------------------------------------------------
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Neurons per layer, input first (bias units not counted)."""
        return self._sizes

    def parameter_shapes(self) -> list[tuple[int, ...]]:
        """(n_out, n_in + 1) per layer: weights plus a bias column."""
        return [(self._sizes[i + 1], self._sizes[i] + 1) for i in range(len(self._sizes) - 1)]

    def parameter_bounds(self) -> list[tuple[float, float]]:
        """+-max_weight (a digital network has no physical range; this only guards against blow-up)."""
        return [(-self.max_weight, self.max_weight)] * (len(self._sizes) - 1)

    def init_parameters(self, rng: np.random.Generator, scale: float) -> list[NDArray[np.float32]]:
        """Weights and biases drawn from N(0, scale^2)."""
        return [np.clip(rng.normal(0.0, scale, size=s), -self.max_weight, self.max_weight).astype(np.float32)
                for s in self.parameter_shapes()]

    def program(self, params: Sequence[NDArray]) -> None:
        """Use these parameter arrays (held by reference, like a device holding its last frame)."""
        for p, s in zip(params, self.parameter_shapes()):
            if p.shape != s:
                raise ValueError(f"digital network: expected parameter shape {s}, got {p.shape}")
        self._params = [p if p.dtype == np.float32 else p.astype(np.float32) for p in params]
        self._last = None

    def forward(self, x: NDArray) -> ForwardTaps:
        """Propagate a batch x (B, n_in); taps carry the bias unit on inputs and hidden activations."""
        if x.ndim != 2 or x.shape[1] != self._sizes[0]:
            raise ValueError(f"digital network: expected a batch of shape (batch, {self._sizes[0]}), got {x.shape}")
        a = _augment(x)
        inputs = a
        pre: list[NDArray] = []
        post: list[NDArray] = []
        n_layers = len(self._params)
        for i, w in enumerate(self._params):
            z = a @ w.T
            pre.append(z)
            if i < n_layers - 1:
                h = expit(z)
                a = _augment(h)
                post.append(a)
            else:
                post.append(expit(z) if self.output_activation == "sigmoid" else z)
        self._count(1)
        self._last = ForwardTaps(inputs=inputs, pre=pre, post=post)
        return self._last

    def backward(self, delta_out: NDArray) -> list[NDArray]:
        """Exact backprop of dL/dy: delta(L) = delta_out * f'(z(L)); delta(l) = (delta(l+1) W(l+1)) * s'(z(l))."""
        taps = self._last
        if taps is None:
            raise RuntimeError("digital network: backward() needs a forward() of the same batch first")
        if delta_out.shape != taps.output.shape:
            raise ValueError(f"digital network: output error shape {delta_out.shape} does not match the "
                             f"output {taps.output.shape}")
        y = taps.output
        d = delta_out * (y * (1.0 - y)) if self.output_activation == "sigmoid" else delta_out
        d = d.astype(np.float32, copy=False)
        deltas = [d]
        for i in range(len(self._params) - 1, 0, -1):
            h = taps.post[i - 1][:, :-1]
            d = (d @ self._params[i][:, :-1]) * (h * (1.0 - h))
            deltas.append(d)
        deltas.reverse()
        self._count(1)
        return deltas

    def activation_slope(self, layer: int, pre: NDArray) -> NDArray:
        """Sigmoid slope s'(z) of hidden layer `layer` (0-based)."""
        s = expit(pre)
        return s * (1.0 - s)

    # --- extras -----------------------------------------------------------------------------
    def summary_fields(self) -> dict[str, Any]:
        """Network figures (and feedback-channel photon statistics) for the run summary."""
        out: dict[str, Any] = {"network": f"digital-mlp/{self.output_activation}-output"}
        if self.feedback_channel is not None:
            out.update(self.feedback_channel.summary_fields())
        return out

    def snapshot(self) -> dict[str, Any]:
        """The feedback channel's twin state (random generator), if one is attached."""
        fc = self.feedback_channel
        return {"feedback_channel": fc.snapshot()} if fc is not None else {}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore `snapshot` state."""
        if self.feedback_channel is not None and "feedback_channel" in state:
            self.feedback_channel.restore(state["feedback_channel"])

    def safe_state(self) -> None:
        """Nothing to switch off in a digital model; a feedback channel goes dark."""
        if self.feedback_channel is not None:
            self.feedback_channel.safe_state()
