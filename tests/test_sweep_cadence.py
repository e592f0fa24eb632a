"""Cheap sweep points: the per-point learning-curve PNG is optional, checkpoints follow a wall-clock cadence and a
run killed between two checkpoints still resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path

import numpy as np
import pytest

import lightloop.training.trainer as trainer_mod
from lightloop.cli import main
from lightloop.errors import ConfigError
from lightloop.sweep import AUTO_PLOT_RUNS, SweepSpec
from lightloop.training.checkpoint import load_checkpoint, load_training_checkpoint
from lightloop.training.datasets import load_dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import Adam
from lightloop.training.trainer import Trainer, TrainSettings

ROOT = Path(__file__).resolve().parents[1]
DIGITAL = ROOT / "lab_configs" / "digital_mlp.yaml"
FAST = {"dataset": "digits", "hidden": [8], "epochs": 1, "batch_size": 64, "lr": 0.5}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _pngs(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "runs").rglob("*.png"))


def test_run_plots_off_draws_no_point_png_but_keeps_the_sweep_figures(tmp_path, capsys):
    out = tmp_path / "off"
    argv = ["sweep", "--config", str(DIGITAL), "--grid", "q=1", "--set", "dataset=digits", "--set", "hidden=8",
            "--set", "epochs=1", "--set", "batch_size=64", "--scheduler", "synchronous", "--run-plots", "off",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert _pngs(out) == []
    assert (out / "heatmap.png").exists() and (out / "curve.png").exists() and (out / "summary.csv").exists()
    for run in (out / "runs").iterdir():            # the curve's numbers and the final checkpoint are still there
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
        assert load_training_checkpoint(run / "checkpoint.npz")["epoch"] == 1


def test_run_plots_auto_is_on_for_small_sweeps_only_and_bad_settings_are_refused(tmp_path):
    small = SweepSpec(DIGITAL, {"seed": list(range(AUTO_PLOT_RUNS))}, FAST, 1, tmp_path, None)
    large = SweepSpec(DIGITAL, {"seed": list(range(AUTO_PLOT_RUNS // 2 + 1))}, FAST, 2, tmp_path, None)
    assert {t["run_plots"] for t in small.tasks()} == {True}
    assert {t["run_plots"] for t in large.tasks()} == {False}          # points x repeats counts
    on = SweepSpec(DIGITAL, {"seed": list(range(AUTO_PLOT_RUNS + 1))}, FAST, 1, tmp_path, None, run_plots="on")
    assert {t["run_plots"] for t in on.tasks()} == {True}
    assert {t["checkpoint_seconds"] for t in large.tasks()} == {30.0}
    with pytest.raises(ConfigError, match="--run-plots: expected auto, on or off"):
        SweepSpec(DIGITAL, {"q": [1.0]}, FAST, 1, tmp_path, None, run_plots="sometimes")
    with pytest.raises(ConfigError, match="--checkpoint-seconds: expected seconds >= 0"):
        SweepSpec(DIGITAL, {"q": [1.0]}, FAST, 1, tmp_path, None, checkpoint_seconds=-1.0)


def _trainer(make_bench, out, epochs, every, plot=True):
    proc = make_bench((64, 16, 10), ideal=True, a0=5.0)
    return Trainer(proc, make_gradient("exact"), Adam(5e-3),
                   TrainSettings(epochs=epochs, batch_size=128, seed=3, progress=False, plot=plot,
                                 checkpoint_seconds=every), out_dir=out)


@pytest.fixture
def epoch_clock(monkeypatch):
    """The cadence's clock reads 10 s per finished epoch (set by an eval hook), so the schedule is exact."""
    now = [0.0]
    monkeypatch.setattr(trainer_mod, "_clock", lambda: now[0])

    def hook(epoch, pred):
        now[0] = 10.0 * epoch
    return hook


def test_checkpoints_follow_the_cadence_and_the_last_epoch(make_bench, digits, tmp_path, monkeypatch, epoch_clock):
    saved = []
    real = trainer_mod.save_checkpoint
    monkeypatch.setattr(trainer_mod, "save_checkpoint", lambda p, st: (saved.append((Path(p).name, st["epoch"])),
                                                                       real(p, st)))
    tr = _trainer(make_bench, tmp_path, epochs=7, every=25.0, plot=False)
    tr.eval_hooks.append(epoch_clock)
    tr.fit(digits)
    assert [e for name, e in saved if name == "checkpoint.npz"] == [1, 4, 7]   # the first, 30 s later, the end
    assert all(e in (1, 4, 7) for name, e in saved if name == "best.npz")
    assert not (tmp_path / "learning_curve.png").exists()


def test_fsyncs_per_run_drop_to_the_first_and_last_epoch_with_a_long_cadence(make_bench, digits, tmp_path, monkeypatch):
    calls = []
    real = os.fsync

    def fsync(fd):                    # the run's own fsyncs: checkpoints and the metrics log (not run.json, lock)
        if any(Path(f.filename).name in ("checkpoint.py", "reporting.py") for f in traceback.extract_stack()):
            calls.append(fd)
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    _trainer(make_bench, tmp_path / "every", epochs=5, every=0.0, plot=False).fit(digits)
    per_epoch = len(calls)
    calls.clear()
    _trainer(make_bench, tmp_path / "cadence", epochs=5, every=1e6, plot=False).fit(digits)
    assert per_epoch >= 10            # before: checkpoint + metrics line every epoch (+ best.npz)
    assert 4 <= len(calls) <= 6       # now after epochs 1 and 5: checkpoint.npz, metrics-log sync, best.npz if new


def test_a_run_killed_between_checkpoints_resumes_to_the_uninterrupted_result(make_bench, digits, tmp_path,
                                                                              epoch_clock):
    full = _trainer(make_bench, tmp_path / "full", epochs=7, every=0.0, plot=False).fit(digits)

    def kill(epoch, pred):
        if epoch == 7:
            raise KeyboardInterrupt   # after epoch 6's log line, before any checkpoint since epoch 4
    cut = _trainer(make_bench, tmp_path / "cut", epochs=7, every=25.0, plot=False)
    cut.eval_hooks += [epoch_clock, kill]
    with pytest.raises(KeyboardInterrupt):
        cut.fit(digits)
    assert load_training_checkpoint(tmp_path / "cut" / "checkpoint.npz")["epoch"] == 4
    assert [json.loads(ln)["epoch"] for ln in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()] == \
        [1, 2, 3, 4, 5, 6]
    resumed = _trainer(make_bench, tmp_path / "cut", epochs=7, every=25.0).fit(digits, resume=True)
    for a, b in zip(full.params, resumed.params):
        np.testing.assert_array_equal(a, b)
    assert [h["test_accuracy"] for h in resumed.history] == [h["test_accuracy"] for h in full.history]
    assert [json.loads(ln)["epoch"] for ln in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, 8))
    best_full, best_cut = load_checkpoint(tmp_path / "full" / "best.npz"), load_checkpoint(tmp_path / "cut" / "best.npz")
    assert best_cut["epoch"] == best_full["epoch"] == full.best_epoch
    for a, b in zip(best_full["params"], best_cut["params"]):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "cut" / "learning_curve.png").exists()


def test_a_sweep_point_killed_before_its_next_checkpoint_continues_on_the_re_run(tmp_path, monkeypatch):
    """The first epoch always checkpoints, so the re-run resumes (no 'holds an earlier run' refusal) and matches."""
    from lightloop.sweep import run_point

    fixed = {**FAST, "epochs": 4}
    ref = run_point(SweepSpec(DIGITAL, {"q": [1.0]}, fixed, 1, tmp_path / "ref", None, run_plots="off").tasks()[0])
    task = SweepSpec(DIGITAL, {"q": [1.0]}, fixed, 1, tmp_path / "cut", None, run_plots="off").tasks()[0]
    real = Trainer._epoch

    def dies_at_3(self, epoch, *a):
        if epoch == 3:
            raise RuntimeError("killed")
        return real(self, epoch, *a)
    monkeypatch.setattr(Trainer, "_epoch", dies_at_3)
    assert run_point(task)["status"] == "error"
    assert load_training_checkpoint(Path(task["out"]) / "checkpoint.npz")["epoch"] == 1   # 30 s cadence: epoch 2 not
    monkeypatch.setattr(Trainer, "_epoch", real)
    row = run_point({**task, "run_plots": True})          # a task with plots on draws the point's PNG
    assert row["status"] == "ok" and row["epochs"] == 4 and row["test_accuracy"] == ref["test_accuracy"]
    assert [json.loads(ln)["epoch"] for ln in (Path(task["out"]) / "metrics.jsonl").read_text().splitlines()] == \
        [1, 2, 3, 4]
    assert (Path(task["out"]) / "learning_curve.png").exists()
    assert not (Path(ref["out"]) / "learning_curve.png").exists() and (Path(ref["out"]) / "metrics.jsonl").exists()
