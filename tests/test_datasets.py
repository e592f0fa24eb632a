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
    with pytest.raises(DatasetError, match="x.gz: gzip: not readable .*expected a gzip-compressed IDX file"):
        read_idx_gz(p)
    with gzip.open(p, "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DatasetError, match="magic: 00 00 0d 01; expected 00 00 08"):
        read_idx_gz(p)
    _write_idx(p, np.zeros((3, 2)))
    raw = gzip.decompress(p.read_bytes())[:-2]
    p.write_bytes(gzip.compress(raw))
    with pytest.raises(DatasetError, match=r"data: header says \(3, 2\) .* holds 4 bytes; expected the sizes to match"):
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


def _raw_idx(path, header, data=b""):
    with gzip.open(path, "wb") as f:
        f.write(header + data)


@pytest.mark.parametrize("header, data, fragment", [
    (b"\x00\x00\x08\x00", b"", "magic: 0 dimensions; expected 1"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x00", b"", r"dimension 0 is 0 .*expected every dimension > 0"),
    (b"\x00\x00\x08\x01\x00\x00", b"", "header: 6 bytes; expected 8 bytes"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x05\x00\x00\x00\x02", b"\x00" * 10, "magic: 2 dimensions; expected 1"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05", b"\x00" * 6, r"holds 6 bytes; expected the sizes to match"),
])
def test_idx_header_problems_name_the_file_and_field(tmp_path, header, data, fragment):
    p = tmp_path / "labels.gz"
    _raw_idx(p, header, data)
    with pytest.raises(DatasetError, match=f"labels.gz: .*{fragment}"):
        read_idx_gz(p, ndim=1)


def test_labels_outside_the_class_range_and_count_mismatch(tmp_path):
    _fake_mnist(tmp_path)
    labels = np.zeros(20)
    labels[7] = 10
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz: label 7: 10; expected a class in 0..9"):
        load_idx(tmp_path, download=False, verify=False)
    assert load_idx(tmp_path, download=False, verify=False, n_classes=11)[1][7] == 10
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz: count: 19 labels for 20 images"):
        load_idx(tmp_path, download=False, verify=False)


def test_malformed_checksum_listing_is_an_error(tmp_path):
    _fake_mnist(tmp_path)
    (tmp_path / "SHA256SUMS").write_text("# sums\n\nnot-a-sum  train-images-idx3-ubyte.gz\n")
    with pytest.raises(DatasetError, match="SHA256SUMS: line 3: .*expected '<64 hex digits>  <file name>'"):
        load_idx(tmp_path, download=False)


def test_csv_sets_from_data_dir_are_validated(tmp_path):
    src = (tmp_path / "iris.csv")
    good = "150,4,setosa,versicolor,virginica\n" + "".join(
        f"{1 + i % 5}.0,{2 + i % 3}.0,{i % 7}.5,0.{i % 9},{i % 3}\n" for i in range(30))
    src.write_text(good)
    d = load_dataset("iris", tmp_path)
    assert d.n_classes == 3 and d.x_train.shape[1] == 4 and d.x_train.shape[0] + d.x_test.shape[0] == 30
    for bad, fragment in [("1,2,3,4,3\n", "line 2: label '3'; expected a class in 0..2"),
                          ("1,2,3,0\n", "line 2: 4 columns; expected 4 features and a label"),
                          ("1,2,x,4,0\n", "line 2: '1,2,x,4,0'; expected 5 numbers"),
                          ("1,2,nan,4,0\n", "line 2: a non-finite value; expected finite numbers"),
                          ("1,2,3,4,0.5\n", "line 2: label '0.5'; expected a class")]:
        src.write_text(good.splitlines(keepends=True)[0] + bad + "".join(good.splitlines(keepends=True)[1:]))
        with pytest.raises(DatasetError, match=f"iris.csv: {fragment}"):
            load_dataset("iris", tmp_path)
