"""The OpticalProcessor contract that training talks to: program / forward / backward."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["ForwardTaps", "OpticalProcessor"]


@dataclass
class ForwardTaps:
    """Fields tapped during one forward pass (batch-first, saturation-field units).

    inputs is a(0); pre[l] is z(l+1) before the nonlinearity; post[l] is a(l+1) after it.
    The output layer is linear, so post[-1] is pre[-1].
    """

    inputs: NDArray
    pre: list[NDArray]
    post: list[NDArray]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> NDArray:
        """Network output z(L) (batch, n_out)."""
        return self.post[-1]

    def activations(self, layer: int) -> NDArray:
        """a(layer) for layer = 0 .. L-1 (the input of weight layer `layer`)."""
        return self.inputs if layer == 0 else self.post[layer - 1]


class OpticalProcessor(ABC):
    """A trainable physical network: write parameters, send light forward, send errors backward.

    Parameters are the device-independent trainable quantities of the processor (weights for a
    free-space bench, phases for a mesh chip, conductances for a flow network); the processor
    maps them to device settings through its calibration and clips them to what the hardware
    can realise.
    """

    #: names of the gradient methods this processor can serve (beyond generic ones)
    capabilities: frozenset[str] = frozenset()

    @property
    @abstractmethod
    def layer_sizes(self) -> tuple[int, ...]:
        """Neurons per layer, input first."""

    @abstractmethod
    def parameter_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the trainable parameter arrays."""

    @abstractmethod
    def parameter_bounds(self) -> list[tuple[float, float]]:
        """Realisable (low, high) range of each parameter array."""

    @abstractmethod
    def init_parameters(self, rng: np.random.Generator, scale: float) -> list[NDArray[np.float32]]:
        """Draw initial parameters (for weights: N(0, scale), clipped to the bounds)."""

    @abstractmethod
    def program(self, params: Sequence[NDArray]) -> None:
        """Write parameters to the devices (one batched write per device)."""

    @abstractmethod
    def forward(self, x: NDArray) -> ForwardTaps:
        """Encode a batch x (batch, n_in) in [0, 1], propagate, return the tapped fields."""

    def backward(self, delta_out: NDArray) -> list[NDArray]:
        """Inject the output error as backward light; return tapped errors delta(l), l = 1..L."""
        raise NotImplementedError(f"{type(self).__name__} has no optical backward path")

    @property
    def measurements(self) -> int:
        """Detector acquisitions made so far (one per detector array per batch)."""
        return getattr(self, "_measurements", 0)

    def _count(self, n: int = 1) -> None:
        self._measurements = self.measurements + n

    def snapshot(self) -> dict[str, Any]:
        """Restorable state that is not parameters (e.g. a twin's noise generator); {} for hardware."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what `snapshot` returned."""

    def safe_state(self) -> None:
        """Drive every device to its safe state (outputs to zero, sources off)."""

    def close(self) -> None:
        """Leave the bench in its safe state and release the devices."""
        self.safe_state()

    def __enter__(self) -> "OpticalProcessor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
