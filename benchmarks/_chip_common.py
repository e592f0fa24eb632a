"""Shared helpers of the integrated-chip benchmarks (config loading, one training run, digital baselines)."""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # the chip's matrices are tiny: BLAS threads only contend

import copy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lightloop.bench import BuildOverrides, build_processor  # noqa: E402
from lightloop.config import parse_config  # noqa: E402
from lightloop.hal.chip import ChipProcessor  # noqa: E402
from lightloop.training.datasets import Dataset  # noqa: E402
from lightloop.training.gradients import make_gradient  # noqa: E402
from lightloop.training.optimizers import make_optimizer  # noqa: E402
from lightloop.training.trainer import Trainer, TrainResult, TrainSettings, evaluate  # noqa: E402

CONFIG = ROOT / "lightloop" / "lab_configs" / "integrated_chip.yaml"
RAW = yaml.safe_load(CONFIG.read_text())


#: fabrication-spread settings of processor.chip.variation (every *_sd* key; drift is not a spread)
SPREAD_KEYS = tuple(k for k in RAW["processor"]["chip"]["variation"] if "_sd" in k)


def scale_variation(var: Any, scale: float, phi0: str = "normal") -> None:
    """Draw phi0 from `phi0` (normal | uniform) and multiply every OTHER fabrication spread of `var` by `scale`."""
    var.phi0_distribution = phi0
    for k in SPREAD_KEYS:
        if not k.startswith("phi0"):
            setattr(var, k, getattr(var, k) * scale)


def spread_edits(scale: float) -> dict[str, float]:
    """Edits scaling every fabrication spread of the lab config by `scale` (1 = the config's own)."""
    var = RAW["processor"]["chip"]["variation"]
    return {f"chip.variation.{k}": float(var[k]) * scale for k in SPREAD_KEYS}


def chip(data: Dataset, *, ideal: bool, chip_seed: int = 1, noise_seed: int = 0,
         edits: dict[str, Any] | None = None, precision: str = "single", hidden: list[int] | None = None,
         n_out: int | None = None) -> ChipProcessor:
    """A chip processor from the lab config (processor-section edits as {'a.b': value}); n_out defaults to
    the number of classes (1: a single output trained to the class 0/1, thresholded at 0.5)."""
    raw = copy.deepcopy(RAW)
    for key, value in (edits or {}).items():
        target = raw["processor"]
        parts = key.split(".")
        for p in parts[:-1]:
            target = target[p]
        target[parts[-1]] = value
    cfg = parse_config(raw, str(CONFIG))
    ov = BuildOverrides(ideal=ideal, hidden=hidden,
                        extra={"chip_seed": chip_seed, "noise_seed": noise_seed, "precision": precision})
    return build_processor(cfg, data.n_features, n_out or data.n_classes, ov)


def train(proc: ChipProcessor, data: Dataset, *, epochs: int, batch_size: int = 32, lr: float = 0.03,
          seed: int = 0, gradient: str = "adjoint", **options: Any) -> TrainResult:
    """Train with the foundation's Trainer (Adam); returns its result (params included)."""
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, seed=seed, progress=False)
    trainer = Trainer(proc, make_gradient(gradient, **options), make_optimizer("adam", lr), settings)
    return trainer.fit(data)


def accuracy_with(proc: ChipProcessor, params: list, data: Dataset) -> float:
    """Program params onto a chip (nominal calibration) and measure its test accuracy."""
    proc.program(params)
    return evaluate(proc, data.x_test, data.y_test, data.n_classes)[0]


def logistic_regression(data: Dataset, l2: float = 1e-3) -> float:
    """Test accuracy of multinomial logistic regression on the raw features (L-BFGS, L2 penalty l2 / 2 |W|^2)."""
    from scipy.optimize import minimize

    x = np.hstack([data.x_train, np.ones((data.x_train.shape[0], 1))]).astype(np.float64)
    t = np.eye(data.n_classes)[data.y_train]
    shape = (x.shape[1], data.n_classes)

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        w = w.reshape(shape)
        z = x @ w
        z -= z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        reg = w.copy()
        reg[-1] = 0.0                                    # no penalty on the intercept
        loss = -np.sum(t * logp) / x.shape[0] + 0.5 * l2 * np.sum(reg * reg)
        grad = x.T @ (np.exp(logp) - t) / x.shape[0] + l2 * reg
        return float(loss), grad.ravel()

    w = minimize(f, np.zeros(np.prod(shape)), jac=True, method="L-BFGS-B", options={"maxiter": 2000}).x
    xt = np.hstack([data.x_test, np.ones((data.x_test.shape[0], 1))])
    return float(np.mean((xt @ w.reshape(shape)).argmax(1) == data.y_test))


def knn(data: Dataset, k: int = 15) -> float:
    """Test accuracy of k-nearest-neighbours (Euclidean, majority vote, ties to the nearest class order)."""
    xtr = data.x_train.astype(np.float64)
    correct = 0
    for i in range(0, data.x_test.shape[0], 500):
        xb = data.x_test[i: i + 500].astype(np.float64)
        d2 = (xb * xb).sum(1)[:, None] - 2 * xb @ xtr.T + (xtr * xtr).sum(1)[None, :]
        nn = np.argsort(d2, axis=1, kind="stable")[:, :k]
        votes = np.zeros((xb.shape[0], data.n_classes))
        np.add.at(votes, (np.arange(xb.shape[0])[:, None], data.y_train[nn]), 1.0)
        correct += int(np.sum(votes.argmax(1) == data.y_test[i: i + 500]))
    return correct / data.x_test.shape[0]


def stats(values: list[float]) -> dict[str, float]:
    """mean / std / min / max of a list."""
    a = np.asarray(values, float)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


class Timer:
    """Wall-clock seconds since creation."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
