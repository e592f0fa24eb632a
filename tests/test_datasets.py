"""Dataset loaders: bundled sets, IDX parsing, checksums and clear errors."""

import gzip
import shutil

import numpy as np
import pytest

from conftest import mnist_dir
from lightloop.errors import DatasetError
from lightloop.training.datasets import load_dataset, load_idx, read_idx_gz


def test_bundled_sets_are_scaled_and_stratified():
    d = load_dataset("digits")
    assert d.x_train.shape == (1438, 64) and d.x_test.shape == (359, 64)
    assert d.x_train.dtype == np.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert set(np.unique(d.y_test)) == set(range(10))
    i = load_dataset("iris")
    assert i.x_train.shape == (75, 4) and np.bincount(i.y_train).tolist() == [25, 25, 25]


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_mnist(d, n=20):
    rng = np.random.default_rng(0)
    _write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    _write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    _write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28)))
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 5))


def _sums(d):
    import hashlib

    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(d.glob("*.gz"))]
    (d / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def test_idx_round_trip_and_local_checksums(tmp_path):
    _fake_mnist(tmp_path)
    _sums(tmp_path)
    xtr, ytr, xte, yte = load_idx(tmp_path, download=False)
    assert xtr.shape == (20, 28, 28) and ytr.shape == (20,) and xte.shape == (5, 28, 28)


def test_missing_file_names_the_file(tmp_path):
    _fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: file missing"):
        load_idx(tmp_path, download=False, verify=False)


def test_wrong_checksum_is_an_error(tmp_path):
    _fake_mnist(tmp_path)
    _sums(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(20))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz: SHA-256 mismatch"):
        load_idx(tmp_path, download=False)


def test_corrupt_gzip_and_bad_magic(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetError, match="x.gz: not a readable gzip IDX file"):
        read_idx_gz(p)
    with gzip.open(p, "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DatasetError, match="bad IDX magic"):
        read_idx_gz(p)
    _write_idx(p, np.zeros((3, 2)))
    raw = gzip.decompress(p.read_bytes())[:-2]
    p.write_bytes(gzip.compress(raw))
    with pytest.raises(DatasetError, match="size mismatch"):
        read_idx_gz(p)


def test_official_mnist_checksums_and_shapes():
    d = mnist_dir()
    if d is None:
        pytest.skip("MNIST not found (set LIGHTLOOP_DATA_DIR)")
    data = load_dataset("mnist", d)
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert np.bincount(data.y_test).sum() == 10000


def test_tampered_copy_of_mnist_fails_the_builtin_checksum(tmp_path):
    d = mnist_dir()
    if d is None:
        pytest.skip("MNIST not found (set LIGHTLOOP_DATA_DIR)")
    for f in d.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    p.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match="SHA-256 mismatch"):
        load_idx(tmp_path, download=False)
