"""Shared helpers of the integrated-chip benchmarks (config loading, one training run)."""

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


def chip(data: Dataset, *, ideal: bool, chip_seed: int = 1, noise_seed: int = 0,
         edits: dict[str, Any] | None = None, precision: str = "single") -> ChipProcessor:
    """A chip processor from the lab config (processor-section edits as {'a.b': value})."""
    raw = copy.deepcopy(RAW)
    for key, value in (edits or {}).items():
        target = raw["processor"]
        parts = key.split(".")
        for p in parts[:-1]:
            target = target[p]
        target[parts[-1]] = value
    cfg = parse_config(raw, str(CONFIG))
    ov = BuildOverrides(ideal=ideal, extra={"chip_seed": chip_seed, "noise_seed": noise_seed, "precision": precision})
    return build_processor(cfg, data.n_features, data.n_classes, ov)


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
