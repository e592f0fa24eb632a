"""Physics-aware training (Wright et al., Nature 601, 549 (2022)): forward on the processor, backward in its model.

`physics_aware`: one forward pass on the processor (twin or instruments) gives the measured taps a(l), z(l);
the errors then travel back DIGITALLY through the processor's calibrated differentiable model evaluated at
that measured state, never through the twin's hidden truth:

    delta(L) = dL/dy * f'(z(L))                        (f: the model's output nonlinearity; identity if linear)
    delta(l) = (delta(l+1) @ W_model(l+1)) * g'_l(z(l))  (g'_l: processor.activation_slope, the calibrated slope)
    dL/dW(l) = delta(l)^T a(l-1) / B * dW_model/dW

W_model(l) = clip(W(l), parameter_bounds) is the calibrated model of the weights the devices realise for the
requested parameters (the HAL clips to the realisable range; a free-space block pre-compensates its
calibrated fringing, assumed exact inside that range), and dW_model/dW masks the clipped entries to 0.
Differences from `exact` (lightloop.training.gradients): `exact` backpropagates through the requested
parameters and has no bias or output nonlinearity; `physics_aware` uses the model of the realised weights,
handles a bias column (parameters of shape (out, in + 1)) and a sigmoid output (`output_activation`), and
needs only a forward acquisition per step (no optical backward pass).

A processor has a model when its parameters are weight matrices (out, in) or (out, in + 1) and it implements
`activation_slope`; others (e.g. phase-parameterised chips, whose mesh model is not wired here yet) raise a
one-line ConfigError naming what is missing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError
from lightloop.hal.processor import OpticalProcessor
from lightloop.training.gradients import GradientMethod, GradientResult, _outer_grads, register_gradient

__all__ = ["PhysicsAwareGradient", "model_layout", "has_own_model"]


def has_own_model(processor: OpticalProcessor) -> bool:
    """True if the processor implements model_gradients (its parameters are not plain weight matrices)."""
    return type(processor).model_gradients is not OpticalProcessor.model_gradients


def model_layout(processor: OpticalProcessor) -> list[bool] | None:
    """Per weight layer: True if its last parameter column is a bias; None if the processor brings its own
    model (model_gradients); ConfigError if the processor has no model."""
    if has_own_model(processor):
        return None
    name = type(processor).__name__
    sizes, shapes = processor.layer_sizes, processor.parameter_shapes()
    if len(shapes) != len(sizes) - 1:
        raise ConfigError(f"gradient 'physics_aware': {name} has {len(shapes)} parameter arrays for "
                          f"{len(sizes) - 1} layers; expected one weight matrix per layer")
    bias = []
    for i, s in enumerate(shapes):
        if len(s) != 2 or s[0] != sizes[i + 1] or s[1] not in (sizes[i], sizes[i] + 1):
            raise ConfigError(f"gradient 'physics_aware': {name} parameter {i} has shape {tuple(s)}; expected a "
                              f"weight matrix ({sizes[i + 1]}, {sizes[i]}) (a differentiable model of its "
                              f"parameters is missing)")
        bias.append(s[1] == sizes[i] + 1)
    if len(sizes) > 2:
        try:
            processor.activation_slope(0, np.zeros((1, sizes[1]), np.float32))
        except NotImplementedError:
            raise ConfigError(f"gradient 'physics_aware': {name} has no calibrated nonlinearity model; expected "
                              f"an activation_slope(layer, pre) method") from None
    if getattr(processor, "output_activation", "linear") not in ("linear", "sigmoid"):
        raise ConfigError(f"gradient 'physics_aware': {name}.output_activation is "
                          f"{processor.output_activation!r}; expected 'linear' or 'sigmoid'")
    return bias


@register_gradient
class PhysicsAwareGradient(GradientMethod):
    """Forward on the processor; backward through its calibrated model at the measured pre-activations."""

    name = "physics_aware"
    requires = None

    def __init__(self) -> None:
        self._layout: tuple[int, list[bool] | None] | None = None     # (id of the processor, bias columns) of check()

    def check(self, processor: OpticalProcessor) -> None:
        """Raise ConfigError if the processor has no differentiable calibrated model."""
        self._layout = (id(processor), model_layout(processor))

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        if self._layout is None or self._layout[0] != id(processor):   # the model probe runs once, not every step
            self.check(processor)
        bias = self._layout[1]
        before = processor.measurements
        taps = processor.forward(x)
        if bias is None:   # the processor carries its own calibrated model (chip meshes, flow networks)
            d = np.asarray(self.loss.error(taps.output, targets), np.float32)
            grads = processor.model_gradients(taps, d)
            return GradientResult(self.loss.value(taps.output, targets), taps.output, list(grads),
                                  processor.measurements - before)
        w_model, masks = self._realised(processor, params)
        d = self.loss.error(taps.output, targets)
        if getattr(processor, "output_activation", "linear") == "sigmoid":
            y = 1.0 / (1.0 + np.exp(-taps.pre[-1].astype(np.float64)))
            d = d * (y * (1.0 - y))
        d = np.asarray(d, np.float32)
        deltas = [d]
        for i in range(len(params) - 1, 0, -1):
            w = w_model[i][:, :-1] if bias[i] else w_model[i]
            d = (d @ w) * processor.activation_slope(i - 1, taps.pre[i - 1])
            deltas.append(np.asarray(d, np.float32))
        deltas.reverse()
        grads = _outer_grads(taps, deltas, params)
        grads = [g if m is None else g * m for g, m in zip(grads, masks)]
        return GradientResult(self.loss.value(taps.output, targets), taps.output, grads,
                              processor.measurements - before)

    @staticmethod
    def _realised(processor: OpticalProcessor, params: Sequence[NDArray]) -> tuple[list[NDArray], list[NDArray | None]]:
        """Model weights clip(W, bounds) and the clip masks dW_model/dW (None where nothing is clipped)."""
        out, masks = [], []
        for p, (lo, hi) in zip(params, processor.parameter_bounds()):
            inside = (p >= lo) & (p <= hi)
            if inside.all():
                out.append(p)
                masks.append(None)
            else:
                out.append(np.clip(p, lo, hi).astype(p.dtype))
                masks.append(inside.astype(np.float32))
        return out, masks
