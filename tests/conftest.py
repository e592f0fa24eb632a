"""Shared fixtures: a small simulated free-space bench built from the default lab config."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.cli import default_config_path
from lightloop.config import load_config

REPO = Path(__file__).resolve().parent.parent

# runs without a store in their config use the default calibration store: keep the suite's runs out of ./runs and
# independent of what a developer calibrated by hand (subprocesses inherit it)
import tempfile  # noqa: E402

os.environ["LIGHTLOOP_CALIBRATION_STORE"] = tempfile.mkdtemp(prefix="lightloop-test-store-")
os.environ["LIGHTLOOP_RUNS_DIR"] = tempfile.mkdtemp(prefix="lightloop-test-runs-")   # default run folders


def mnist_dir() -> Path | None:
    """MNIST directory from LIGHTLOOP_DATA_DIR or ../shared/datasets, if the files are there."""
    for base in (os.environ.get("LIGHTLOOP_DATA_DIR"), REPO.parent / "shared" / "datasets"):
        if base:
            for d in (Path(base), Path(base) / "mnist"):
                if (d / "train-images-idx3-ubyte.gz").is_file():
                    return d
    return None


@pytest.fixture
def free_space_cfg():
    """The default free-space lab config (fresh copy per test)."""
    return load_config(default_config_path())


@pytest.fixture
def make_bench(free_space_cfg):
    """Factory: make_bench(sizes=(n_in, *hidden, n_out), ideal=True, a0=10.0, **processor_overrides)."""

    def make(sizes=(12, 8, 5), ideal=True, a0=10.0, **proc):
        cfg = free_space_cfg.model_copy(deep=True)
        for k, v in proc.items():
            setattr(cfg.processor, k, v)
        return build_processor(cfg, sizes[0], sizes[-1],
                               BuildOverrides(hidden=list(sizes[1:-1]), ideal=ideal, optical_depth=a0))

    return make


@pytest.fixture
def rng():
    """Seeded generator."""
    return np.random.default_rng(1234)
