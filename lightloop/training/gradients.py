"""Gradient methods: how one training step obtains dLoss/dparams from the hardware.

Default loss: MSE on one-hot targets, L = 1/(2B) sum_b ||z(L)_b - t_b||^2, so delta(L) = z(L) - t and
dW(l) = delta(l)^T a(l-1) / B (docs/architecture.md, 'The on-chip training step'). Another loss only changes
the output error delta(L) (training.losses).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError
from lightloop.hal.processor import ForwardTaps, OpticalProcessor
from lightloop.plugins import import_plugins
from lightloop.training.losses import Loss, MSELoss

__all__ = [
    "GradientResult",
    "GradientMethod",
    "ExactGradient",
    "PumpProbeGradient",
    "FiniteDifferenceGradient",
    "GRADIENT_METHODS",
    "register_gradient",
    "make_gradient",
    "mse_loss",
]


def mse_loss(output: NDArray, targets: NDArray) -> float:
    """L = 1/(2B) sum ||z - t||^2."""
    return MSELoss().value(output, targets)


@dataclass
class GradientResult:
    """Loss, network output and gradients (same shapes as the parameters) of one batch."""

    loss: float
    output: NDArray
    grads: list[NDArray]
    measurements: int


class GradientMethod(ABC):
    """A way of measuring the loss gradient on a processor."""

    name: ClassVar[str]
    #: processor capability this method needs (None: works on any processor)
    requires: ClassVar[str | None] = None
    #: the loss whose gradient is measured (the Trainer sets it)
    loss: Loss = MSELoss()

    def check(self, processor: OpticalProcessor) -> None:
        """Raise ConfigError if the processor cannot serve this method."""
        if self.requires is not None and self.requires not in processor.capabilities:
            caps = ", ".join(sorted(processor.capabilities)) or "none"
            raise ConfigError(
                f"gradient '{self.name}' is not available on {type(processor).__name__} (it supports: {caps})")

    @abstractmethod
    def __call__(self, processor: OpticalProcessor, params: Sequence[NDArray], x: NDArray,
                 targets: NDArray) -> GradientResult:
        """Measure the gradient for batch x with one-hot targets; params are already programmed."""

    def state_dict(self) -> dict[str, Any]:
        """State kept across steps that an exact resume needs (the Trainer checkpoints it); {}: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (after check(processor)); ValueError if it does not fit."""


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def option_bool(value: object) -> bool | None:
    """A gradient option's true/false value (bools, 0/1, true/false/yes/no/on/off); None if it is none of those."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    return None


def _outer_grads(taps: ForwardTaps, deltas: Sequence[NDArray], like: Sequence[NDArray] = ()) -> list[NDArray]:
    """delta(l)^T a(l-1) / B per layer, each in the memory layout of like[l] (F-ordered: (a^T delta)^T, same sums)."""
    b = np.float32(1.0 / taps.inputs.shape[0])
    fortran = [i < len(like) and like[i].flags.f_contiguous and not like[i].flags.c_contiguous
               for i in range(len(deltas))]
    grads = [(taps.activations(i).T @ d).T if f else d.T @ taps.activations(i)
             for i, (d, f) in enumerate(zip(deltas, fortran))]
    for g in grads:   # scaled in place: the products are fresh arrays (same values as (d.T @ a) * b)
        if g.dtype == np.float32:
            g *= b
    return [g if g.dtype == np.float32 else g * b for g in grads]


GRADIENT_METHODS: dict[str, Callable[..., GradientMethod]] = {}


def register_gradient(cls: type[GradientMethod]) -> type[GradientMethod]:
    """Class decorator adding a method to the registry under cls.name."""
    GRADIENT_METHODS[cls.name] = cls
    return cls


#: modules that register further gradient methods when imported (chip, photon-limited, flow networks)
GRADIENT_PLUGINS = ("lightloop.training.insitu", "lightloop.training.stochastic", "lightloop.training.flow_learning",
                    "lightloop.training.physics_aware")


def gradient_names() -> list[str]:
    """Every gradient method name: built-in, plugin modules and the entry-point group lightloop.gradients."""
    from lightloop.plugins import entry_points_of

    import_plugins(GRADIENT_PLUGINS)
    return sorted(set(GRADIENT_METHODS) | set(entry_points_of("lightloop.gradients")))


def make_gradient(name: str, **options: object) -> GradientMethod:
    """Instantiate a gradient method by name."""
    if name not in GRADIENT_METHODS:
        import_plugins(GRADIENT_PLUGINS)
    if name not in GRADIENT_METHODS:   # a method another package registers (entry-point group lightloop.gradients)
        from lightloop.plugins import entry_points_of, load_entry_point

        if name in entry_points_of("lightloop.gradients"):
            GRADIENT_METHODS[name] = load_entry_point("lightloop.gradients", name)
    if name not in GRADIENT_METHODS:
        from lightloop.plugins import entry_points_of

        known = sorted(set(GRADIENT_METHODS) | set(entry_points_of("lightloop.gradients")))
        raise ConfigError(f"unknown gradient method '{name}'; expected one of: {', '.join(known)}")
    return GRADIENT_METHODS[name](**options)


@register_gradient
class ExactGradient(GradientMethod):
    """Reference: digital backprop from measured taps with the calibrated exact slope g'(z)."""

    name = "exact"
    requires = "exact"

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        taps = processor.forward(x)
        d = self.loss.error(taps.output, targets)
        deltas = [d]
        for i in range(len(params) - 1, 0, -1):
            d = (d @ params[i]) * processor.activation_slope(i - 1, taps.pre[i - 1])
            deltas.append(d)
        deltas.reverse()
        return GradientResult(self.loss.value(taps.output, targets), taps.output, _outer_grads(taps, deltas, params),
                              len(processor.layer_sizes) * 2 - 3)


@register_gradient
class PumpProbeGradient(GradientMethod):
    """Optical backprop: the error travels back as a probe; the vapor cell's T(E) replaces g'(E)."""

    name = "pump_probe"
    requires = "pump_probe"

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        before = processor.measurements
        taps = processor.forward(x)
        deltas = processor.backward(self.loss.error(taps.output, targets))
        return GradientResult(self.loss.value(taps.output, targets), taps.output, _outer_grads(taps, deltas, params),
                              processor.measurements - before)


@register_gradient
class FiniteDifferenceGradient(GradientMethod):
    """Gradient-free baseline: perturb each parameter by +-step and measure the loss (central differences)."""

    name = "finite_difference"
    requires = None

    def __init__(self, step: float = 1e-3, max_parameters: int = 20000):
        self.step, self.max_parameters = float(step), int(max_parameters)

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        n = sum(p.size for p in params)
        if n > self.max_parameters:
            raise ConfigError(f"finite_difference: {n} parameters exceed max_parameters={self.max_parameters} "
                              f"(2 measurements each per step)")
        before = processor.measurements
        work = [np.array(p, dtype=np.float64, order="C") for p in params]   # C: reshape(-1) below must be a view
        grads = [np.zeros_like(p) for p in work]
        for k, p in enumerate(work):
            flat, gflat = p.reshape(-1), grads[k].reshape(-1)
            for j in range(flat.size):
                orig = flat[j]
                losses = []
                for sgn in (1.0, -1.0):
                    flat[j] = orig + sgn * self.step
                    processor.program(work)
                    losses.append(self.loss.value(processor.forward(x).output, targets))
                flat[j] = orig
                gflat[j] = (losses[0] - losses[1]) / (2 * self.step)
        processor.program(params)
        taps = processor.forward(x)
        return GradientResult(self.loss.value(taps.output, targets), taps.output,
                              [g.astype(np.float32) for g in grads], processor.measurements - before)
