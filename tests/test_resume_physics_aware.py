"""Exact resume of physics_aware with twin refinement (issue 16): the method state (step count, kept batches, the
weight-model fit, epoch sums) and the chip model's phase-offset correction travel in the checkpoint, so a run cut
after epoch 1 and resumed gives bit-for-bit the parameters and metrics of an uninterrupted one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from lightloop.errors import RunFolderError
from lightloop.training.checkpoint import load_checkpoint, save_checkpoint
from lightloop.training.datasets import Dataset, load_dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import Adam
from lightloop.training.physics_aware import PhysicsAwareGradient
from lightloop.training.trainer import Trainer, TrainSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_chip import make_chip  # noqa: E402
from test_flow_training import small_bench  # noqa: E402

#: metrics that depend on wall-clock time (everything else must be identical)
TIMING = ("epoch_seconds", "epoch_cpu_seconds", "samples_per_second")
OPTIONS = {"refine_every": 4, "refine_window": 4}


@pytest.fixture(scope="module")
def iris() -> Dataset:
    """A 50-sample iris subset: 5 steps of 10 per epoch, so the refits (every 4 steps: 4 | 8) straddle the cut."""
    d = load_dataset("iris")
    i = np.random.default_rng(0).permutation(d.y_train.size)[:50]
    j = np.random.default_rng(1).permutation(d.y_test.size)[:30]
    return Dataset("iris", d.x_train[i], d.y_train[i], d.x_test[j], d.y_test[j], d.n_classes)


def _free_space(make_bench):
    return make_bench((4, 5, 3), ideal=False, a0=5.0)


def _chip():
    return make_chip(n_in=4, n_out=3, ideal=False, hidden=[4])


def _flow():
    return small_bench(n_side=5, ideal=False, n_in=4, n_cls=3)


def _run(make, out, data, epochs, resume=False, lr=5e-3):
    method = make_gradient("physics_aware", **OPTIONS)
    proc = make()
    tr = Trainer(proc, method, Adam(lr), TrainSettings(epochs=epochs, batch_size=10, seed=0, progress=False,
                                                      plot=False), out_dir=out)
    return tr.fit(data, resume=resume), proc


def _same(full, resumed) -> None:
    for a, b in zip(full.params, resumed.params):
        assert np.array_equal(a, b)
    assert len(full.history) == len(resumed.history) == 2
    for h, r in zip(full.history, resumed.history):
        assert _untimed(h) == _untimed(r)


def _untimed(rec: dict) -> dict:
    """An epoch record without its wall-clock figures (the chip's refit reports its own 'seconds')."""
    out = {k: v for k, v in rec.items() if k not in TIMING}
    if "model_fit" in out:
        out["model_fit"] = {k: v for k, v in out["model_fit"].items() if k != "seconds"}
    return out


def _drop(path: str):
    """Checkpoint mutation: delete the key at a '/'-separated path (what an older or incomplete checkpoint lacks)."""
    def mutate(st: dict) -> None:
        *parents, last = path.split("/")
        for p in parents:
            st = st[p]
        del st[last]
    return mutate


def _reset(path: str, value):
    """Checkpoint mutation: set the key at a '/'-separated path to value (one piece of state not restored)."""
    def mutate(st: dict) -> None:
        *parents, last = path.split("/")
        for p in parents:
            st = st[p]
        st[last] = value(st[last])
    return mutate


#: per bench: pieces of the state whose loss must change the resumed run (each one is needed for exactness)
ABLATIONS = {
    "free_space": {"method": _drop("method"), "steps": _reset("method/steps", lambda v: 0),
                   "refiner history": _reset("method/refiner/history", lambda v: []),
                   "refiner gains": _reset("method/refiner/gains", lambda v: [None] * len(v)),
                   "slope scales": _reset("method/refiner/slope_scales", lambda v: [1.0] * len(v))},
    "chip": {"method": _drop("method"), "steps": _reset("method/steps", lambda v: 0),
             "history": _reset("method/history", lambda v: []),
             "model correction": _drop("processor/model_correction")},
    "flow": {"method": _drop("method"), "steps": _reset("method/steps", lambda v: 0),
             "history": _reset("method/history", lambda v: []), "model gain": _drop("processor/model_gain")},
}


@pytest.mark.parametrize("bench", ["free_space", "chip", "flow"])
def test_resumed_refining_run_equals_an_uninterrupted_one(bench, make_bench, iris, tmp_path):
    make = {"free_space": lambda: _free_space(make_bench), "chip": _chip, "flow": _flow}[bench]
    full, _ = _run(make, tmp_path / "full", iris, 2)
    assert [h["model_refits"] for h in full.history] == [1, 1]    # global steps 4 | 8 (5 steps per epoch)
    assert full.history[1]["model_fit"]                            # a refit ran and its figures are reported
    _run(make, tmp_path / "cut", iris, 1)
    st = load_checkpoint(tmp_path / "cut" / "checkpoint.npz")
    kept = st["method"]["refiner"]["history"] if bench == "free_space" else st["method"]["history"]
    assert st["method"]["steps"] == 5 and len(kept) == 4           # the window: the last 4 of 5 batches
    resumed, _ = _run(make, tmp_path / "cut", iris, 2, resume=True)
    _same(full, resumed)
    # the regression: each piece of state matters - an older checkpoint without it resumes, but not exactly
    for i, (name, mutate) in enumerate(ABLATIONS[bench].items()):
        cut = tmp_path / f"cut{i}"
        _run(make, cut, iris, 1)
        st = load_checkpoint(cut / "checkpoint.npz")
        mutate(st)
        save_checkpoint(cut / "checkpoint.npz", st)
        stale, _ = _run(make, cut, iris, 2, resume=True)
        assert not all(np.array_equal(a, b) for a, b in zip(full.params, stale.params)), name  # not exact


def test_a_method_state_that_does_not_fit_is_one_run_folder_error(make_bench, iris, tmp_path):
    _run(lambda: _free_space(make_bench), tmp_path, iris, 1)
    st = load_checkpoint(tmp_path / "checkpoint.npz")
    st["method"]["refiner"]["gains"] = st["method"]["refiner"]["gains"][:1]       # one layer instead of two
    save_checkpoint(tmp_path / "checkpoint.npz", st)
    with pytest.raises(RunFolderError, match=r"checkpoint.npz: method: does not fit this run \(ValueError: refiner "
                                             r"gains: expected a list of 2 entries, got 1\)"):
        _run(lambda: _free_space(make_bench), tmp_path, iris, 2, resume=True)
    st["method"] = [1, 2]
    save_checkpoint(tmp_path / "checkpoint.npz", st)
    with pytest.raises(RunFolderError, match="method: does not fit this run .TypeError: expected an object"):
        _run(lambda: _free_space(make_bench), tmp_path, iris, 2, resume=True)


def test_a_weight_model_state_does_not_fit_an_own_model_processor(make_bench, iris, tmp_path):
    chip = _chip()
    m = make_gradient("physics_aware", **OPTIONS)
    fs = _free_space(make_bench)
    m.check(fs)
    state = m.state_dict()
    other = PhysicsAwareGradient(**OPTIONS)
    with pytest.raises(ValueError, match="expected check"):
        other.load_state_dict(state)
    other.check(chip)
    with pytest.raises(ValueError, match="physics_aware refiner: expected none"):
        other.load_state_dict(state)


def test_chip_snapshot_carries_the_model_correction():
    proc = _chip()
    want = [np.linspace(-0.1, 0.1, c.size) for c in proc.chip_model.correction]
    proc.chip_model.correction = [w.copy() for w in want]
    st = proc.snapshot()
    proc.chip_model.correction = [np.zeros_like(w) for w in want]
    proc.restore(st)
    assert all(np.array_equal(a, b) for a, b in zip(proc.chip_model.correction, want))
    with pytest.raises(ValueError, match="chip model_correction: expected 2 phase-offset vectors"):
        proc.restore({**st, "model_correction": st["model_correction"][:1]})


def test_cli_resume_with_refinement_on_the_digital_bench(tmp_path):
    """`lightloop train --gradient physics_aware --gradient-option refine_every=3 --resume` on the digital MLP (bias
    column, sigmoid output): the resumed run's checkpoint holds the uninterrupted run's parameters and method state."""
    from lightloop.cli import main

    cfg = Path(__file__).resolve().parents[1] / "lab_configs" / "digital_mlp.yaml"
    base = ["train", "--config", str(cfg), "--dataset", "iris", "--hidden", "4",
            "--gradient", "physics_aware", "--gradient-option", "refine_every=3", "--gradient-option",
            "refine_window=2", "--batch-size", "16", "--no-progress"]
    assert main(base + ["--epochs", "2", "--out", str(tmp_path / "full")]) == 0
    assert main(base + ["--epochs", "1", "--out", str(tmp_path / "cut")]) == 0
    assert main(base + ["--epochs", "2", "--out", str(tmp_path / "cut"), "--resume"]) == 0
    full, cut = (load_checkpoint(tmp_path / d / "checkpoint.npz") for d in ("full", "cut"))
    assert all(np.array_equal(a, b) for a, b in zip(full["params"], cut["params"]))
    assert full["method"]["refiner"]["refits"] == cut["method"]["refiner"]["refits"] > 0
    assert [_untimed(h) for h in full["history"]] == [_untimed(h) for h in cut["history"]]
