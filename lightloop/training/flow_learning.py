r"""Local learning rules of a flow (resistor) network: chemical signalling, equilibrium propagation, coupled learning.

All three measure on a processor with the matching capability (the HAL `FlowProcessor`): it drives the
inputs as currents, probes node potentials, and offers a non-interfering feedback channel
(`feedback(E) -> u`) and an output clamp (`nudged(x, t, beta)`, `clamped(x, drops)`). Notation of
`lightloop.hal.flow_network`: v free potentials, Delta v output drops, t desired drops of the
sample's class (t = targets @ T with T = taps.extra["desired"]), C = 1/2 ||Delta v - t||^2 per sample.

Sign convention: each method returns grad = -dw/alpha, batch-averaged, so the Trainer's SGD step with
lr = alpha applies exactly the rule's local update dw = -alpha * grad:

  chemical_signaling (ASS22)   E = -eta (Delta v - t) at the output pairs, L(w) u = E,
                               grad_e = < u_e v_e >               = eta dC/dw_e exactly
  equilibrium_propagation      nudged state v^b: outputs tied through conductance beta to sources t,
  (Scellier & Bengio 2017)     grad_e = eta/(2 beta) < (v^b_e)^2 - (v_e)^2 >  -> eta dC/dw_e as beta -> 0
  coupled_learning             clamped state v^C: output drops held at Delta v + nudge (t - Delta v),
  (Stern et al. 2021)          grad_e = eta/(2 nudge) < (v^C_e)^2 - (v_e)^2 >
                               -> the PRESSURE-feedback variant as nudge -> 0 (gradient of the cost in
                               the metric G^{-1}, G the output transfer resistance; equals
                               chemical signalling only when G = identity; see flow_network's docstring)

(ASS22: Anisetti, Scellier & Schwarz, arXiv:2203.12098.) Each method costs two probe acquisitions per
batch (free state + feedback / nudged / clamped state).

Loss: these rules descend the flow cost C, so their `loss` is `FlowCost`, computed from the processor's
scores (taps.output = -C_k per class) and the one-hot targets: value = -<sum_k t_k s_k> = <C>. The
Trainer's default "mse" maps onto it (C is the MSE of the output drops against the desired drops);
another loss (cross_entropy) is refused, because the physical rules cannot descend it.
Options not given fall back to the processor's `learning_defaults` (the bench's eta and nudge).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError
from lightloop.hal.processor import OpticalProcessor
from lightloop.training.gradients import GradientMethod, GradientResult, register_gradient
from lightloop.training.losses import Loss, MSELoss

__all__ = ["FlowCost", "ChemicalSignalingGradient", "EquilibriumPropagationGradient", "CoupledLearningGradient"]


class FlowCost(Loss):
    """Flow cost C = 1/2 ||Delta v - t||^2 from scores s_k = -C_k and one-hot targets: <C> = -<sum_k t_k s_k>."""

    name = "flow_cost"

    def value(self, output, targets):  # type: ignore[override]
        return float(-np.einsum("ij,ij->", targets, output) / output.shape[0])

    def error(self, output, targets):  # type: ignore[override]
        return -np.asarray(targets, dtype=output.dtype)


def _positive(value: Any, name: str, method: str, upper: float | None = None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{method}: {name} must be a number, got {value!r}") from None
    if not (np.isfinite(v) and v > 0 and (upper is None or v <= upper)):
        rng = f"(0, {upper}]" if upper is not None else "> 0"
        raise ConfigError(f"{method}: {name} must be {rng}, got {value!r}")
    return v


class _FlowRule(GradientMethod):
    """Shared parts: option defaults from the processor, the flow-cost loss, the free measurement."""

    _cost = FlowCost()

    def __init__(self, eta: float | None = None):
        self.eta = _positive(eta, "eta", self.name)

    @property  # type: ignore[override]
    def loss(self) -> Loss:
        """Always the flow cost (the Trainer's 'mse' maps onto it)."""
        return self._cost

    @loss.setter
    def loss(self, value: Loss) -> None:
        if not isinstance(value, (MSELoss, FlowCost)):
            raise ConfigError(f"gradient '{self.name}': a flow network descends its flow cost (loss 'mse'); "
                              f"loss '{getattr(value, 'name', value)}' is not available")

    def _option(self, processor: OpticalProcessor, name: str, value: float | None, default: float) -> float:
        if value is not None:
            return value
        return float(getattr(processor, "learning_defaults", {}).get(name, default))

    def _free(self, processor: OpticalProcessor, x: NDArray, targets: NDArray):
        taps = processor.forward(x)
        v = taps.extra["potentials"]
        drops = taps.extra["drops"]
        t = np.asarray(targets, np.float64) @ taps.extra["desired"]
        return taps, v, drops, t

    def _result(self, processor: OpticalProcessor, taps: Any, targets: NDArray, grad: NDArray,
                before: int) -> GradientResult:
        return GradientResult(self._cost.value(taps.output, targets), taps.output, [grad.astype(np.float32)],
                              processor.measurements - before)


@register_gradient
class ChemicalSignalingGradient(_FlowRule):
    """ASS22: feedback currents -eta (Delta v - t) at the outputs; grad_e = <u_e v_e> = eta dC/dw_e (exact)."""

    name = "chemical_signaling"
    requires = "chemical_signaling"

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        before = processor.measurements
        eta = self._option(processor, "eta", self.eta, 1.0)
        taps, v, drops, t = self._free(processor, x, targets)
        u = processor.feedback(-eta * (drops - t))
        grad = np.mean(processor.edge_drops(u) * processor.edge_drops(v), axis=0)
        return self._result(processor, taps, targets, grad, before)


@register_gradient
class EquilibriumPropagationGradient(_FlowRule):
    """SB17 on the network: grad_e = eta/(2 beta) <(v^beta_e)^2 - (v_e)^2>, outputs nudged through conductance beta."""

    name = "equilibrium_propagation"
    requires = "equilibrium_propagation"

    def __init__(self, beta: float | None = None, eta: float | None = None, nudge: float | None = None):
        super().__init__(eta)
        beta, nudge = _positive(beta, "beta", self.name), _positive(nudge, "nudge", self.name)
        if beta is not None and nudge is not None and beta != nudge:
            raise ConfigError(f"{self.name}: give beta or nudge (the same option), not both")
        self.beta = beta if beta is not None else nudge

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        before = processor.measurements
        eta = self._option(processor, "eta", self.eta, 1.0)
        beta = self._option(processor, "nudge", self.beta, 1e-2)
        taps, v, drops, t = self._free(processor, x, targets)
        vb = processor.edge_drops(processor.nudged(x, t, beta))
        v0 = processor.edge_drops(v)
        grad = eta / (2.0 * beta) * np.mean(vb * vb - v0 * v0, axis=0)
        return self._result(processor, taps, targets, grad, before)


@register_gradient
class CoupledLearningGradient(_FlowRule):
    """SHRL21: clamp Dv + nudge (t - Dv); grad_e = eta/(2 nudge) <(v^C_e)^2 - (v_e)^2> (pressure-feedback limit)."""

    name = "coupled_learning"
    requires = "coupled_learning"

    def __init__(self, nudge: float | None = None, eta: float | None = None, beta: float | None = None):
        super().__init__(eta)
        nudge, beta = _positive(nudge, "nudge", self.name, 1.0), _positive(beta, "beta", self.name, 1.0)
        if beta is not None and nudge is not None and beta != nudge:
            raise ConfigError(f"{self.name}: give nudge or beta (the same option), not both")
        self.nudge = nudge if nudge is not None else beta

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        before = processor.measurements
        eta = self._option(processor, "eta", self.eta, 1.0)
        nudge = self._option(processor, "nudge", self.nudge, 1e-2)
        if not 0.0 < nudge <= 1.0:
            raise ConfigError(f"{self.name}: nudge must lie in (0, 1], got {nudge}")
        taps, v, drops, t = self._free(processor, x, targets)
        vc = processor.edge_drops(processor.clamped(x, drops + nudge * (t - drops)))
        v0 = processor.edge_drops(v)
        grad = eta / (2.0 * nudge) * np.mean(vc * vc - v0 * v0, axis=0)
        return self._result(processor, taps, targets, grad, before)
