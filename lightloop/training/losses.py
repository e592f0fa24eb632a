"""Losses on the measured output z(L): value and output error delta(L) = dL/dz * B."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError

__all__ = ["Loss", "MSELoss", "SoftmaxCrossEntropyLoss", "make_loss", "LOSSES"]


class Loss:
    """A loss L(z, t) averaged over the batch; error() returns B * dL/dz (per-sample error)."""

    name = "loss"

    def value(self, output: NDArray, targets: NDArray) -> float:
        """Batch-mean loss."""
        raise NotImplementedError

    def error(self, output: NDArray, targets: NDArray) -> NDArray:
        """Per-sample output error delta(L) (batch, n_out)."""
        raise NotImplementedError


class MSELoss(Loss):
    """L = 1/(2B) sum ||z - t||^2; delta(L) = z - t (Guo et al. 2021; docs/architecture.md)."""

    name = "mse"

    def value(self, output, targets):  # type: ignore[override]
        d = output - targets
        return float(0.5 * np.einsum("ij,ij->", d, d) / output.shape[0])

    def error(self, output, targets):  # type: ignore[override]
        return output - targets


class SoftmaxCrossEntropyLoss(Loss):
    """L = -1/B sum t . log softmax(z); delta(L) = softmax(z) - t (digital softmax on measured z)."""

    name = "cross_entropy"

    @staticmethod
    def _log_softmax(z: NDArray) -> NDArray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def value(self, output, targets):  # type: ignore[override]
        return float(-np.einsum("ij,ij->", targets, self._log_softmax(output)) / output.shape[0])

    def error(self, output, targets):  # type: ignore[override]
        return (np.exp(self._log_softmax(output)) - targets).astype(output.dtype, copy=False)


LOSSES = {"mse": MSELoss, "cross_entropy": SoftmaxCrossEntropyLoss}


def make_loss(name: str) -> Loss:
    """Loss by name: mse or cross_entropy."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss '{name}'; expected one of: {', '.join(LOSSES)}")
    return LOSSES[name]()
