"""Gradient-approximation diagnostics: how far a hardware gradient is from the reference one.

Guo et al. (Photon. Res. 9, B71 (2021), Fig. 3) judge the pump-probe scheme by the similarity S of
the optically obtained gradient to the true one as the optical depth grows. We could not retrieve
the paper's exact definition of S, so this module measures it three ways, all through the HAL:

  S_all    cosine of the two gradients over every weight of the network (one vector);
  S_layer  the same per layer (the output layer's gradients are identical by construction);
  S_slope  cosine of the probe transmission T(z) and the calibrated exact slope g'(z) over the
           hidden pre-activation fields of the probe batch (the element-wise approximation itself).

`GradientSimilarityMonitor` is a Trainer step hook that records them on a fixed probe batch
during training, so S is measured on the fields a network actually visits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.hal.processor import OpticalProcessor
from lightloop.training.gradients import GradientMethod, make_gradient
from lightloop.training.losses import make_loss

__all__ = ["cosine", "gradient_similarity", "GradientSimilarityMonitor"]


def cosine(a: NDArray, b: NDArray) -> float:
    """Cosine similarity of two arrays taken as flat vectors (float64); nan if either is zero."""
    a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    return float(a64 @ b64 / (na * nb)) if na > 0 and nb > 0 else float("nan")


def gradient_similarity(processor: OpticalProcessor, params: Sequence[NDArray], x: NDArray, targets: NDArray,
                        method: GradientMethod, reference: GradientMethod) -> dict[str, Any]:
    """S_all, S_layer and (for processors with a calibrated slope) S_slope of method vs reference on one batch."""
    processor.program(list(params))
    g_ref = reference(processor, params, x, targets).grads
    g_hw = method(processor, params, x, targets).grads
    out: dict[str, Any] = {
        "S_all": cosine(np.concatenate([g.ravel() for g in g_ref]), np.concatenate([g.ravel() for g in g_hw])),
        "S_layer": [cosine(r, h) for r, h in zip(g_ref, g_hw)],
    }
    slope = getattr(processor, "activation_slope", None)
    transmission = getattr(processor, "probe_transmission", None)
    if slope is not None and transmission is not None:
        taps = processor.forward(x)
        t = np.concatenate([np.ravel(transmission(i, z)) for i, z in enumerate(taps.pre[:-1])])
        g = np.concatenate([np.ravel(slope(i, z)) for i, z in enumerate(taps.pre[:-1])])
        out["S_slope"] = cosine(t, g)
    return out


@dataclass
class GradientSimilarityMonitor:
    """Trainer step hook: every `every` steps, S of `method` against `reference` on a fixed probe batch."""

    processor: OpticalProcessor
    x: NDArray
    targets: NDArray
    method: str = "pump_probe"
    reference: str = "exact"
    loss: str = "mse"
    every: int = 100
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._method, self._reference = make_gradient(self.method), make_gradient(self.reference)
        self._method.loss = self._reference.loss = make_loss(self.loss)

    def __call__(self, info: dict[str, Any]) -> None:
        """Record S at this step when due (the Trainer re-programs the processor before its next step)."""
        if info["global_step"] % self.every:
            return
        rec = gradient_similarity(self.processor, info["params"], self.x, self.targets, self._method, self._reference)
        self.records.append({"global_step": info["global_step"], **rec})

    def mean(self, key: str = "S_all") -> float:
        """Mean of a scalar similarity over the records (nan when nothing was recorded)."""
        vals = [r[key] for r in self.records if key in r]
        return float(np.mean(vals)) if vals else float("nan")
