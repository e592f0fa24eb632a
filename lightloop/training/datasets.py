"""Datasets: MNIST-family IDX gzip files (checksum-verified, validated), the bundled CSV sets (8x8 digits, Iris)
and two generated 2D tasks that need a hidden layer (two interleaved spirals, a noisy XOR of four Gaussian blobs).

Every set is returned as float32 features in [0, 1] (batch-first) and int64 labels. `validation_split` and
`cv_folds` carve validation data out of a training set, so that settings are never chosen on the test set.
The spirals' 1.5 turns were fixed on training data alone: at one turn a 2-8-1 network already validates at 98%.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import DatasetError
from lightloop.plugins import import_plugins

__all__ = ["Dataset", "load_dataset", "register_dataset", "DATASET_LOADERS", "load_idx", "read_idx_gz", "DATASETS", "default_data_dir", "one_hot",
           "read_csv", "dataset_names", "make_spirals", "make_xor", "validation_split", "cv_folds"]

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
        try:
            text = listing.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{listing}: unreadable ({exc}); expected UTF-8 lines '<sha256>  <file name>'") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2 or not _HEX64.match(parts[0]):
                raise DatasetError(f"{listing}: line {n}: {line.strip()[:60]!r}; expected '<64 hex digits>  <file name>'")
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


_HEX64 = re.compile(r"^[0-9A-Fa-f]{64}$")
#: largest uncompressed IDX file read (bytes); MNIST's largest is 47 MB
MAX_IDX_BYTES = 1 << 30


def read_idx_gz(path: Path, ndim: int | None = None) -> NDArray[np.uint8]:
    """Parse one gzip IDX file (magic 0x00 0x00 0x08 ndim, big-endian dims > 0, uint8 data); ndim: required rank."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: gzip: not readable ({exc}); expected a gzip-compressed IDX file") from None
    if len(raw) > MAX_IDX_BYTES:
        raise DatasetError(f"{path}: size: more than {MAX_IDX_BYTES} bytes uncompressed; expected an IDX file below that")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: magic: {raw[:4].hex(' ') or 'empty'}; expected 00 00 08 <ndim> (unsigned byte data)")
    rank = raw[3]
    if rank == 0 or (ndim is not None and rank != ndim):
        want = f"{ndim}" if ndim is not None else ">= 1"
        raise DatasetError(f"{path}: magic: {rank} dimensions; expected {want} "
                           f"({'images: count, rows, columns' if ndim == 3 else 'labels: count' if ndim == 1 else 'IDX'})")
    header = 4 + 4 * rank
    if len(raw) < header:
        raise DatasetError(f"{path}: header: {len(raw)} bytes; expected {header} bytes of header for {rank} dimensions")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    for i, d in enumerate(dims):
        if d == 0:
            raise DatasetError(f"{path}: header: dimension {i} is 0 (dims {dims}); expected every dimension > 0")
    size = 1
    for d in dims:
        size *= d
    if len(raw) - header != size:
        raise DatasetError(f"{path}: data: header says {dims} ({size} bytes) but the file holds {len(raw) - header} "
                           "bytes; expected the sizes to match")
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


def load_idx(directory: Path | str, *, download: bool = True, verify: bool = True,
             n_classes: int | None = 10) -> tuple[NDArray, ...]:
    """(x_train, y_train, x_test, y_test) from the four MNIST-family IDX files in a directory.

    Missing files are downloaded unless download=False or $LIGHTLOOP_OFFLINE is set. Labels must lie in
    0..n_classes-1 (None: no check); images and labels must agree in count, train and test in image shape.
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
        arrays.append(read_idx_gz(path, ndim=3 if key.endswith("images") else 1))
    xtr, ytr, xte, yte = arrays
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        labels = directory / MNIST_FILES[f"{split}_labels"]
        if x.shape[0] != y.shape[0]:
            raise DatasetError(f"{labels}: count: {y.shape[0]} labels for {x.shape[0]} images in "
                               f"{MNIST_FILES[f'{split}_images']}; expected one label per image")
        if n_classes is not None and int(y.max()) >= n_classes:
            bad = int(np.flatnonzero(y >= n_classes)[0])
            raise DatasetError(f"{labels}: label {bad}: {int(y[bad])}; expected a class in 0..{n_classes - 1}")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DatasetError(f"{directory / MNIST_FILES['test_images']}: image shape {xte.shape[1:]}; expected the "
                           f"training images' shape {xtr.shape[1:]}")
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


def read_csv(path: Path, n_features: int, n_classes: int, skiprows: int = 0,
             feature_range: tuple[float, float] | None = None) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """(features, labels) of a numeric CSV: n_features columns then an integer class label in 0..n_classes-1."""
    try:
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as f:
            lines = f.read().splitlines()[skiprows:]
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise DatasetError(f"{path}: file: not readable ({exc}); expected a UTF-8 CSV file") from None
    rows = []
    for n, line in enumerate(lines, skiprows + 1):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != n_features + 1:
            raise DatasetError(f"{path}: line {n}: {len(cells)} columns; expected {n_features} features and a label")
        try:
            row = [float(c) for c in cells]
        except ValueError:
            raise DatasetError(f"{path}: line {n}: {line.strip()[:60]!r}; expected {n_features + 1} numbers") from None
        if not all(np.isfinite(row)):
            raise DatasetError(f"{path}: line {n}: a non-finite value; expected finite numbers")
        if feature_range is not None and not all(feature_range[0] <= v <= feature_range[1] for v in row[:-1]):
            raise DatasetError(f"{path}: line {n}: a feature outside [{feature_range[0]:g}, {feature_range[1]:g}]; "
                               f"expected features in that range")
        label = row[-1]
        if label != int(label) or not 0 <= label < n_classes:
            raise DatasetError(f"{path}: line {n}: label {cells[-1].strip()!r}; expected a class in 0..{n_classes - 1}")
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: rows: none; expected at least one sample")
    raw = np.asarray(rows, dtype=np.float64)
    return raw[:, :-1], raw[:, -1].astype(np.int64)


def _csv_source(name: str, data_dir: Path | None) -> Path:
    """<data_dir>/<name> when the user supplies one, else the bundled copy."""
    if data_dir is not None and (data_dir / name).is_file():
        return data_dir / name
    return _bundled(name)


def _load_digits(data_dir: Path | None = None) -> Dataset:
    x, y = read_csv(_csv_source("digits.csv.gz", data_dir), 64, 10, feature_range=(0.0, 16.0))
    return Dataset("digits", *_stratified_split((x / 16.0).astype(np.float32), y, 0.2, seed=0), n_classes=10)


def _load_iris(data_dir: Path | None = None) -> Dataset:
    x, y = read_csv(_csv_source("iris.csv", data_dir), 4, 3, skiprows=1)
    xtr, ytr, xte, yte = _stratified_split(x, y, 0.5, seed=0)
    lo, hi = xtr.min(0), xtr.max(0)
    if np.any(hi <= lo):
        raise DatasetError(f"{_csv_source('iris.csv', data_dir)}: features: a constant column; expected every "
                           "feature to vary")
    scale = lambda a: np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)  # noqa: E731
    return Dataset("iris", scale(xtr), ytr, scale(xte), yte, n_classes=3)


def _load_mnist(data_dir: Path | None) -> Dataset:
    xtr, ytr, xte, yte = load_idx(data_dir or default_data_dir())
    f = lambda a: (a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)  # noqa: E731
    return Dataset("mnist", f(xtr), ytr.astype(np.int64), f(xte), yte.astype(np.int64), n_classes=10)


#: train / test sizes and generator seeds of the generated 2D sets (test drawn independently of train)
N_TRAIN_GEN, N_TEST_GEN = 2000, 1000
_SEEDS_GEN = {"spirals": (3031, 3032), "xor": (4041, 4042)}


def make_spirals(n: int, rng: np.random.Generator, turns: float = 1.5, noise: float = 0.05) -> tuple[NDArray, NDArray]:
    """Two interleaved spirals r = t / (2 pi turns), angle t (class 0) or t + pi (class 1), plane units (r <= 1)."""
    y = rng.permutation(np.arange(n) % 2).astype(np.int64)
    t = 2 * np.pi * turns * np.sqrt(rng.uniform(0.0, 1.0, n))   # uniform density along the arm's area
    r = t / (2 * np.pi * turns)
    ang = t + np.pi * y
    x = np.stack([r * np.cos(ang), r * np.sin(ang)], 1) + noise * rng.standard_normal((n, 2))
    return x, y


def make_xor(n: int, rng: np.random.Generator, sd: float = 0.5) -> tuple[NDArray, NDArray]:
    """Noisy XOR: four Gaussian blobs (sd) at (+-1, +-1), plane units; class 1 where the centre's signs differ."""
    centres = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    blob = rng.permutation(np.arange(n) % 4)
    x = centres[blob] + sd * rng.standard_normal((n, 2))
    return x, (blob >= 2).astype(np.int64)


def _generated(name: str, maker: Callable[..., tuple[NDArray, NDArray]], half_width: float) -> Dataset:
    """2000 train / 1000 test drawn from independent seeds; the square [-w, w]^2 maps to [0, 1]^2 (clipped)."""
    s_train, s_test = _SEEDS_GEN[name]
    xtr, ytr = maker(N_TRAIN_GEN, np.random.default_rng(s_train))
    xte, yte = maker(N_TEST_GEN, np.random.default_rng(s_test))
    unit = lambda a: np.clip((a + half_width) / (2 * half_width), 0.0, 1.0).astype(np.float32)  # noqa: E731
    return Dataset(name, unit(xtr), ytr, unit(xte), yte, n_classes=2)


def _load_spirals(data_dir: Path | None = None) -> Dataset:
    """Two spirals (1.5 turns, noise 0.05), 2000 train / 1000 test; [-1.2, 1.2]^2 maps to [0, 1]^2."""
    return _generated("spirals", make_spirals, 1.2)


def _load_xor(data_dir: Path | None = None) -> Dataset:
    """Noisy XOR (blob sd 0.5, Bayes accuracy ~95.5%), 2000 train / 1000 test; [-2.5, 2.5]^2 maps to [0, 1]^2."""
    return _generated("xor", make_xor, 2.5)


def validation_split(data: Dataset, fraction: float = 0.25, seed: int = 0) -> Dataset:
    """A Dataset whose train part is (1 - fraction) of data's training set and whose test part is the rest
    (stratified): the validation data settings are chosen on. data's own test set is not used."""
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"validation fraction: {fraction}; expected a number in (0, 1)")
    xtr, ytr, xva, yva = _stratified_split(data.x_train, data.y_train, fraction, seed)
    return Dataset(f"{data.name}-validation", xtr, ytr, xva, yva, n_classes=data.n_classes)


def cv_folds(data: Dataset, k: int = 3, seed: int = 0) -> list[Dataset]:
    """k stratified folds of data's training set: fold i validates on the i-th part, trains on the others."""
    if k < 2:
        raise DatasetError(f"cross-validation folds: {k}; expected k >= 2")
    rng = np.random.default_rng(seed)
    fold = np.empty(data.y_train.size, np.int64)
    for c in np.unique(data.y_train):
        idx = np.flatnonzero(data.y_train == c)
        fold[rng.permutation(idx)] = (np.arange(idx.size) + int(c)) % k
    return [Dataset(f"{data.name}-fold{i}", data.x_train[fold != i], data.y_train[fold != i],
                    data.x_train[fold == i], data.y_train[fold == i], n_classes=data.n_classes) for i in range(k)]


#: name -> loader(data_dir) ; plugin modules add more with register_dataset
DATASET_LOADERS: dict[str, Callable[[Path | None], Dataset]] = {
    "digits": _load_digits,
    "iris": _load_iris,
    "mnist": _load_mnist,
    "spirals": _load_spirals,
    "xor": _load_xor,
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


def dataset_names() -> list[str]:
    """Every registered dataset name (plugins loaded)."""
    import_plugins(DATASET_PLUGINS)
    from lightloop.plugins import entry_points_of   # loaders other packages register (group lightloop.datasets)

    return sorted(set(DATASET_LOADERS) | set(entry_points_of("lightloop.datasets")))


def load_dataset(name: str, data_dir: Path | str | None = None) -> Dataset:
    """Load a dataset by name: digits, iris bundled (or CSVs in data_dir), spirals, xor generated; mnist reads IDX."""
    if name not in DATASET_LOADERS:
        import_plugins(DATASET_PLUGINS)
    if name not in DATASET_LOADERS and name in dataset_names():   # registered by entry point: load it once
        from lightloop.plugins import load_entry_point

        DATASET_LOADERS[name] = load_entry_point("lightloop.datasets", name)
    if name not in DATASET_LOADERS:
        raise DatasetError(f"dataset: unknown dataset {name!r}; expected one of: {', '.join(dataset_names())}")
    if data_dir is not None and Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise DatasetError(f"{data_dir}: --data-dir: a file; expected a directory holding dataset files")
    return DATASET_LOADERS[name](Path(data_dir) if data_dir else None)
