"""Datasets for the integrated chip: two nonlinear 2D tasks and MNIST reduced to 64 features.

* ``circles`` - two concentric rings (radii 1 and 0.5, Gaussian noise 0.08), the classic nonlinear
  2D benchmark of Ashtiani et al. (Nature 2026);
* ``moons`` - two interleaved half-moons (noise 0.1);
* ``mnist64`` - MNIST (read with load_idx from the data directory, default $LIGHTLOOP_DATA_DIR) reduced to
  the 8 x 8 lowest spatial frequencies of its orthonormal 2D DCT-II (a real low-frequency Fourier crop),
  each coefficient divided by its training-set standard deviation and each sample normalised to unit
  norm, so that an encoder with signed amplitudes (2x - 1) sends every image with the same optical power
  (Williamson et al. 2019; Pai et al. 2023).

Every generator is a seeded numpy Generator; each set has a held-out test set drawn independently.
Features are float32 in [0, 1]: the 2D sets map the plane affinely (fixed, data-independent ranges).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lightloop.training.datasets import Dataset, default_data_dir, load_idx, register_dataset

__all__ = ["make_circles", "make_moons", "dct_features", "load_circles", "load_moons", "load_mnist64",
           "N_TRAIN_2D", "N_TEST_2D"]

N_TRAIN_2D = 2000
N_TEST_2D = 1000
_SEED_TRAIN, _SEED_TEST = 2026, 2027


def _shuffle(x: NDArray, y: NDArray, rng: np.random.Generator) -> tuple[NDArray, NDArray]:
    p = rng.permutation(y.size)
    return x[p], y[p]


def make_circles(n: int, rng: np.random.Generator, noise: float = 0.08, factor: float = 0.5) -> tuple[NDArray, NDArray]:
    """Two concentric rings (outer radius 1 = class 0, inner radius `factor` = class 1), raw plane coordinates."""
    n0 = n // 2
    n1 = n - n0
    t0 = rng.uniform(0, 2 * np.pi, n0)
    t1 = rng.uniform(0, 2 * np.pi, n1)
    x = np.concatenate([np.stack([np.cos(t0), np.sin(t0)], 1), factor * np.stack([np.cos(t1), np.sin(t1)], 1)])
    x = x + noise * rng.standard_normal(x.shape)
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    return _shuffle(x, y, rng)


def make_moons(n: int, rng: np.random.Generator, noise: float = 0.1) -> tuple[NDArray, NDArray]:
    """Two interleaved half-moons (upper = class 0, lower = class 1), raw plane coordinates."""
    n0 = n // 2
    n1 = n - n0
    t0 = rng.uniform(0, np.pi, n0)
    t1 = rng.uniform(0, np.pi, n1)
    x = np.concatenate([np.stack([np.cos(t0), np.sin(t0)], 1),
                        np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)])
    x = x + noise * rng.standard_normal(x.shape)
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    return _shuffle(x, y, rng)


def _to_unit(x: NDArray, lo: NDArray, hi: NDArray) -> NDArray[np.float32]:
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _two_d(name: str, maker, lo: list[float], hi: list[float]) -> Dataset:
    xtr, ytr = maker(N_TRAIN_2D, np.random.default_rng(_SEED_TRAIN))
    xte, yte = maker(N_TEST_2D, np.random.default_rng(_SEED_TEST))
    lo_a, hi_a = np.array(lo), np.array(hi)
    return Dataset(name, _to_unit(xtr, lo_a, hi_a), ytr, _to_unit(xte, lo_a, hi_a), yte, n_classes=2)


@register_dataset("circles")
def load_circles(data_dir: Path | None = None) -> Dataset:
    """Concentric rings, 2000 train / 1000 test; the square [-1.5, 1.5]^2 maps to [0, 1]^2."""
    return _two_d("circles", make_circles, [-1.5, -1.5], [1.5, 1.5])


@register_dataset("moons")
def load_moons(data_dir: Path | None = None) -> Dataset:
    """Interleaved half-moons, 2000 train / 1000 test; [-1.5, 2.5] x [-1.25, 1.75] maps to [0, 1]^2."""
    return _two_d("moons", make_moons, [-1.5, -1.25], [2.5, 1.75])


def dct_features(images: NDArray, k: int = 8) -> NDArray[np.float64]:
    """k x k lowest-frequency coefficients of the orthonormal 2D DCT-II of each image, flattened (n, k^2)."""
    from scipy.fft import dctn

    out = np.empty((images.shape[0], k * k))
    step = 5000
    for i in range(0, images.shape[0], step):
        block = images[i: i + step].astype(np.float64) / 255.0
        out[i: i + step] = dctn(block, type=2, norm="ortho", axes=(1, 2))[:, :k, :k].reshape(-1, k * k)
    return out


@register_dataset("mnist64")
def load_mnist64(data_dir: Path | None = None) -> Dataset:
    """MNIST as 64 DCT features per image, unit-normalised, mapped to [0, 1] by x = (f + 1) / 2."""
    xtr, ytr, xte, yte = load_idx(data_dir or default_data_dir())
    ftr, fte = dct_features(xtr), dct_features(xte)
    sd = ftr.std(axis=0)           # equalise the coefficients' spread (training-set statistics only)

    def feats(f: NDArray) -> NDArray[np.float32]:
        f = f / sd
        f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        return ((f + 1.0) * 0.5).astype(np.float32)

    return Dataset("mnist64", feats(ftr), ytr.astype(np.int64), feats(fte), yte.astype(np.int64), n_classes=10)
