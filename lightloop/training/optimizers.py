"""First-order optimizers updating parameter arrays in place (float32)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError

__all__ = ["Optimizer", "SGD", "Adam", "make_optimizer"]


class Optimizer:
    """Base optimizer: step(params, grads) updates params in place."""

    def __init__(self, lr: float):
        if not (np.isfinite(lr) and lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {lr}")
        self.lr = float(lr)

    def step(self, params: Sequence[NDArray], grads: Sequence[NDArray]) -> None:
        """Apply one update."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Arrays and counters needed to resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict` output."""


class SGD(Optimizer):
    """Plain (optionally momentum) stochastic gradient descent."""

    def __init__(self, lr: float, momentum: float = 0.0):
        super().__init__(lr)
        self.momentum = float(momentum)
        self.velocity: list[NDArray] | None = None

    def step(self, params, grads):  # type: ignore[override]
        if self.momentum:
            if self.velocity is None:
                self.velocity = [np.zeros_like(p) for p in params]
            for p, g, v in zip(params, grads, self.velocity):
                v *= self.momentum
                v += g
                p -= self.lr * v
        else:
            for p, g in zip(params, grads):
                p -= np.float32(self.lr) * g

    def state_dict(self):  # type: ignore[override]
        return {"velocity": self.velocity}

    def load_state_dict(self, state):  # type: ignore[override]
        self.velocity = state.get("velocity")


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction."""

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(lr)
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.t = 0
        self.m: list[NDArray] | None = None
        self.v: list[NDArray] | None = None

    def step(self, params, grads):  # type: ignore[override]
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        b1, b2 = np.float32(self.b1), np.float32(self.b2)
        c1, c2 = 1 - b1, 1 - b2
        root = math.sqrt(1 - self.b2**self.t)   # the same double as np.sqrt (both correctly rounded)
        step = np.float32(self.lr * root / (1 - self.b1**self.t))
        eps = np.float32(self.eps * root)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            if p.dtype != np.float32 or g.dtype != np.float32 or m.dtype != np.float32 or v.dtype != np.float32:
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * (g * g)
                p -= step * m / (np.sqrt(v) + eps)
                continue
            # the same float32 operations in the same order, written into two scratch arrays (no temporaries)
            s1, s2 = self._scratch(p)
            m *= b1
            np.multiply(c1, g, out=s1)
            m += s1
            v *= b2
            np.multiply(g, g, out=s1)
            s1 *= c2
            v += s1
            np.sqrt(v, out=s1)
            s1 += eps
            np.multiply(step, m, out=s2)
            s2 /= s1
            p -= s2

    def _scratch(self, p: NDArray) -> tuple[NDArray, NDArray]:
        """Two float32 work arrays of a parameter's shape and layout (C or F), kept between steps (not state)."""
        pool = self.__dict__.setdefault("_work", {})
        order = "F" if p.flags.f_contiguous and not p.flags.c_contiguous else "C"
        key = (p.shape, order)
        if key not in pool:
            pool[key] = (np.empty(p.shape, np.float32, order=order), np.empty(p.shape, np.float32, order=order))
        return pool[key]

    def state_dict(self):  # type: ignore[override]
        return {"t": self.t, "m": self.m, "v": self.v}

    def load_state_dict(self, state):  # type: ignore[override]
        self.t, self.m, self.v = int(state["t"]), state["m"], state["v"]


def make_optimizer(name: str, lr: float) -> Optimizer:
    """Optimizer by name: 'adam' or 'sgd'."""
    table = {"adam": Adam, "sgd": SGD}
    if name not in table:
        raise ConfigError(f"unknown optimizer '{name}'; expected one of: adam, sgd")
    return table[name](lr)
