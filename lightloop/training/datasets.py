"""Datasets: MNIST-family IDX gzip files (checksum-verified) and the bundled small sets (8x8 digits, Iris).

Every set is returned as float32 features in [0, 1] (batch-first) and int64 labels.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import DatasetError
from lightloop.plugins import import_plugins

__all__ = ["Dataset", "load_dataset", "register_dataset", "DATASET_LOADERS", "load_idx", "read_idx_gz", "DATASETS", "default_data_dir", "one_hot"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
#: official SHA-256 of the MNIST files (used when the directory has no SHA256SUMS)
MNIST_SHA256 = {
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


@dataclass
class Dataset:
    """Train/test split: x (n, features) float32 in [0, 1], y (n,) int64 class labels."""

    name: str
    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    n_classes: int

    @property
    def n_features(self) -> int:
        """Input features per sample."""
        return int(self.x_train.shape[1])


def one_hot(y: NDArray[np.integer], n_classes: int) -> NDArray[np.float32]:
    """One-hot targets (n, n_classes) float32."""
    out = np.zeros((y.size, n_classes), np.float32)
    out[np.arange(y.size), y] = 1.0
    return out


def default_data_dir() -> Path:
    """$LIGHTLOOP_DATA_DIR, else ~/.cache/lightloop."""
    env = os.environ.get("LIGHTLOOP_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "lightloop"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected_sums(directory: Path) -> dict[str, str]:
    sums = dict(MNIST_SHA256)
    listing = directory / "SHA256SUMS"
    if listing.is_file():
        for line in listing.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def read_idx_gz(path: Path) -> NDArray[np.uint8]:
    """Parse one gzip IDX file (magic 0x00 0x00 0x08 ndim, big-endian dims, uint8 data)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable gzip IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: bad IDX magic; expected 00 00 08 <ndim> (unsigned byte data)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise DatasetError(f"{path}: IDX size mismatch; header says {dims} but file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _download(name: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in MNIST_MIRRORS:
        try:
            with urllib.request.urlopen(mirror + name, timeout=20) as r, tempfile.NamedTemporaryFile(
                    dir=directory, delete=False) as tmp:
                shutil.copyfileobj(r, tmp)
            os.replace(tmp.name, directory / name)
            return
        except OSError as exc:  # no network, HTTP error
            errors.append(f"{mirror}: {exc}")
    raise DatasetError(f"{directory / name}: missing, and download failed ({'; '.join(errors)})")


def load_idx(directory: Path | str, *, download: bool = True, verify: bool = True) -> tuple[NDArray, ...]:
    """(x_train, y_train, x_test, y_test) from the four MNIST-family IDX files in a directory.

    Missing files are downloaded unless download=False or $LIGHTLOOP_OFFLINE is set.
    """
    directory = Path(directory)
    if not (directory / MNIST_FILES["train_images"]).exists() and (directory / "mnist").is_dir():
        directory = directory / "mnist"
    sums = _expected_sums(directory)
    arrays = []
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        name = MNIST_FILES[key]
        path = directory / name
        if not path.is_file():
            if not download or os.environ.get("LIGHTLOOP_OFFLINE"):
                raise DatasetError(f"{path}: file missing (expected the MNIST IDX gzip file {name})")
            _download(name, directory)
        if verify and name in sums:
            got = _sha256(path)
            if got != sums[name]:
                raise DatasetError(f"{path}: SHA-256 mismatch; expected {sums[name]}, got {got} (corrupt or wrong file)")
        arrays.append(read_idx_gz(path))
    xtr, ytr, xte, yte = arrays
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise DatasetError(f"{directory}: image and label counts differ")
    return xtr, ytr, xte, yte


def _stratified_split(x: NDArray, y: NDArray, test_fraction: float, seed: int) -> tuple[NDArray, ...]:
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.append(idx[: int(round(test_fraction * idx.size))])
    te = np.sort(np.concatenate(test_idx))
    mask = np.ones(y.size, bool)
    mask[te] = False
    return x[mask], y[mask], x[te], y[te]


def _bundled(name: str) -> Path:
    return Path(str(resources.files("lightloop.data").joinpath(name)))


def _load_digits() -> Dataset:
    raw = np.loadtxt(_bundled("digits.csv.gz"), delimiter=",", dtype=np.float64)
    x, y = (raw[:, :-1] / 16.0).astype(np.float32), raw[:, -1].astype(np.int64)
    return Dataset("digits", *_stratified_split(x, y, 0.2, seed=0), n_classes=10)


def _load_iris() -> Dataset:
    raw = np.loadtxt(_bundled("iris.csv"), delimiter=",", skiprows=1, dtype=np.float64)
    x, y = raw[:, :4], raw[:, 4].astype(np.int64)
    xtr, ytr, xte, yte = _stratified_split(x, y, 0.5, seed=0)
    lo, hi = xtr.min(0), xtr.max(0)
    scale = lambda a: np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)  # noqa: E731
    return Dataset("iris", scale(xtr), ytr, scale(xte), yte, n_classes=3)


def _load_mnist(data_dir: Path | None) -> Dataset:
    xtr, ytr, xte, yte = load_idx(data_dir or default_data_dir())
    f = lambda a: (a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)  # noqa: E731
    return Dataset("mnist", f(xtr), ytr.astype(np.int64), f(xte), yte.astype(np.int64), n_classes=10)


#: name -> loader(data_dir) ; plugin modules add more with register_dataset
DATASET_LOADERS: dict[str, Callable[[Path | None], Dataset]] = {
    "digits": lambda d: _load_digits(),
    "iris": lambda d: _load_iris(),
    "mnist": _load_mnist,
}
#: modules that register further datasets when imported
DATASET_PLUGINS = ("lightloop.training.synthetic",)
DATASETS = tuple(DATASET_LOADERS)


def register_dataset(name: str) -> Callable[[Callable[[Path | None], Dataset]], Callable[[Path | None], Dataset]]:
    """Decorator registering loader(data_dir) -> Dataset under name."""
    def deco(fn: Callable[[Path | None], Dataset]) -> Callable[[Path | None], Dataset]:
        DATASET_LOADERS[name] = fn
        return fn
    return deco


def load_dataset(name: str, data_dir: Path | str | None = None) -> Dataset:
    """Load a dataset by name: digits and iris are bundled; mnist reads IDX files from data_dir."""
    if name not in DATASET_LOADERS:
        import_plugins(DATASET_PLUGINS)
    if name not in DATASET_LOADERS:
        raise DatasetError(f"unknown dataset '{name}'; expected one of: {', '.join(sorted(DATASET_LOADERS))}")
    return DATASET_LOADERS[name](Path(data_dir) if data_dir else None)
