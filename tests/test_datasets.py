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


# --- generated 2D tasks that need a hidden layer (issue 13) ------------------------------------------------
def _linear_accuracy(d):
    """Least-squares linear classifier on [x, 1] (a stand-in for any linear model)."""
    a = np.hstack([d.x_train, np.ones((d.x_train.shape[0], 1))])
    w, *_ = np.linalg.lstsq(a, 2.0 * d.y_train - 1.0, rcond=None)
    b = np.hstack([d.x_test, np.ones((d.x_test.shape[0], 1))])
    return float(np.mean((b @ w > 0) == d.y_test))


def _nn1_accuracy(d):
    d2 = ((d.x_test[:, None, :] - d.x_train[None, :, :]) ** 2).sum(-1)
    return float(np.mean(d.y_train[d2.argmin(1)] == d.y_test))


@pytest.mark.parametrize("name", ["spirals", "xor"])
def test_generated_tasks_are_seeded_balanced_and_need_a_hidden_layer(name):
    from lightloop.training.datasets import dataset_names

    a, b = load_dataset(name), load_dataset(name)
    assert name in dataset_names()
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.shape == (2000, 2) and a.x_test.shape == (1000, 2) and a.n_classes == 2
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert 0 <= a.x_train.min() and a.x_train.max() <= 1 and 0 <= a.x_test.min() and a.x_test.max() <= 1
    assert np.bincount(a.y_train).tolist() == [1000, 1000] and np.bincount(a.y_test).tolist() == [500, 500]
    assert not np.isin(a.x_test.view(np.complex64), a.x_train.view(np.complex64)).any()  # independent draws
    assert _linear_accuracy(a) < 0.7          # no linear model solves it ...
    assert _nn1_accuracy(a) > 0.9             # ... but the classes are separable by a nonlinear one


def test_xor_labels_follow_the_quadrant_signs():
    d = load_dataset("xor")
    x = d.x_train * 5.0 - 2.5                # back to plane units
    quadrant = (np.sign(x[:, 0]) != np.sign(x[:, 1])).astype(np.int64)
    assert 0.9 < np.mean(quadrant == d.y_train) < 0.99   # noisy: sd 0.5 blobs cross the axes sometimes


def test_spiral_arms_are_half_a_turn_apart():
    from lightloop.training.datasets import make_spirals

    x, y = make_spirals(4000, np.random.default_rng(0), noise=0.0)
    r, ang = np.hypot(x[:, 0], x[:, 1]), np.arctan2(x[:, 1], x[:, 0])
    t = r * 2 * np.pi * 1.5                  # the arm's parameter, recovered from the radius
    resid = np.angle(np.exp(1j * (ang - t - np.pi * y)))
    assert np.abs(resid).max() < 1e-9 and r.max() <= 1.0


def test_validation_split_is_carved_from_training_data_only():
    from lightloop.training.datasets import validation_split

    d = load_dataset("xor")
    v = validation_split(d, 0.25, seed=0)
    assert v.x_train.shape[0] == 1500 and v.x_test.shape[0] == 500
    assert np.bincount(v.y_test).tolist() == [250, 250]                     # stratified
    rows = lambda a: {r.tobytes() for r in a}  # noqa: E731
    assert rows(v.x_train) | rows(v.x_test) == rows(d.x_train)              # a partition of the training set
    assert not rows(v.x_train) & rows(v.x_test)
    assert not rows(v.x_test) & rows(d.x_test)                              # the test set is never used
    assert not np.array_equal(validation_split(d, 0.25, seed=1).x_test, v.x_test)   # the seed draws the split
    with pytest.raises(DatasetError, match="validation fraction") as info:
        validation_split(d, 1.0)
    assert "\n" not in str(info.value)


def test_cv_folds_validate_every_training_sample_once():
    from lightloop.training.datasets import cv_folds

    d = load_dataset("iris")
    folds = cv_folds(d, 3, seed=0)
    seen = np.concatenate([f.x_test for f in folds])
    assert seen.shape[0] == 75 and len({r.tobytes() for r in seen}) == 75
    for f in folds:
        assert set(np.bincount(f.y_test, minlength=3).tolist()) <= {8, 9}   # stratified: 25 per class in 3 folds
        assert f.x_train.shape[0] + f.x_test.shape[0] == 75
        assert not {r.tobytes() for r in f.x_train} & {r.tobytes() for r in f.x_test}
    with pytest.raises(DatasetError, match="folds"):
        cv_folds(d, 1)


# --- single-output binary tasks (the Ashtiani et al. chip: one output, MSE to 0/1, threshold 0.5) ----------
def test_single_output_targets_and_decisions():
    from lightloop.training.trainer import classes_of, targets_for

    y = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(targets_for(y, 2, 1), [[0.0], [1.0], [1.0], [0.0]])
    assert targets_for(y, 2, 2).shape == (4, 2)                              # two outputs: one-hot as before
    np.testing.assert_array_equal(classes_of(np.array([[0.2], [0.5], [0.9], [-1.0]])), [0, 1, 1, 0])
    np.testing.assert_array_equal(classes_of(np.array([[0.2, 0.3], [0.9, 0.1]])), [1, 0])


def test_chip_with_one_output_learns_a_binary_task():
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.config import load_config
    from lightloop.training.gradients import make_gradient
    from lightloop.training.optimizers import make_optimizer
    from lightloop.training.trainer import Trainer, TrainSettings, evaluate

    data = load_dataset("xor")
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "lab_configs" / "integrated_chip.yaml"
    proc = build_processor(load_config(config), 2, 1, BuildOverrides())
    assert proc.layer_sizes == (2, 8, 1)
    res = Trainer(proc, make_gradient("adjoint"), make_optimizer("adam", 0.03),
                  TrainSettings(epochs=3, batch_size=32, progress=False)).fit(data)
    assert res.test_accuracy > 0.85          # argmax of one output would always say class 0: 50 %
    proc.program(res.params)
    out = proc.forward(data.x_test).output
    acc, loss = evaluate(proc, data.x_test, data.y_test, 2)
    assert out.shape == (1000, 1) and abs(acc - np.mean((out[:, 0] >= 0.5) == data.y_test)) < 0.02
    assert 0 < loss < 0.25                   # MSE against the 0/1 class (one-hot over 1 column would fail)
