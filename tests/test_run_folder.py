"""Run folders (issue 11, defect 7): unique names, a lock held for the run, no silent reuse, verified resume,
crash-proof metric appends, one-line errors for bad --out and bad checkpoints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from lightloop.cli import main
from lightloop.errors import LightloopError, RunFolderError
from lightloop.training.checkpoint import TRAINING_KEYS, load_checkpoint, load_training_checkpoint, save_checkpoint
from lightloop.training.reporting import MetricsLog
from lightloop.training.run_folder import RunFolder, unique_run_dir

from conftest import REPO

#: a tiny in-process twin run: iris, 1 epoch, ideal twin, 4 hidden units (~0.1 s in-process)
SMALL = ["--dataset", "iris", "--epochs", "1", "--ideal", "--hidden", "4", "--no-progress", "--json"]


def train(capsys, *args: str) -> tuple[int, list[str]]:
    """lightloop train in-process; (exit code, non-empty stderr lines)."""
    capsys.readouterr()
    try:
        code = main(["train", *SMALL, *args])
    except SystemExit as exc:          # a flag refused by argparse (its own one-line error, exit 2)
        code = exc.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return code, err


def one_line_error(code: int, err: list[str], *fragments: str) -> str:
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("lightloop: error:")
    for f in fragments:
        assert f in err[0], err[0]
    return err[0]


def epochs_in(out) -> list[int]:
    return [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


# --- unique folders ------------------------------------------------------------------------------
def test_default_run_folders_are_unique_even_in_one_second(tmp_path, monkeypatch, capsys):
    names = {unique_run_dir(tmp_path / "runs", "train") for _ in range(200)}
    assert len(names) == 200 and all(p.is_dir() for p in names)
    assert all(re.fullmatch(r"train-\d{8}-\d{6}-[0-9a-f]{6}", p.name) for p in names)
    monkeypatch.chdir(tmp_path / "runs")            # two real runs without --out, back to back
    monkeypatch.delenv("LIGHTLOOP_RUNS_DIR", raising=False)   # the default folder: ./runs
    t0 = time.time()
    assert train(capsys)[0] == 0 and train(capsys)[0] == 0
    runs = sorted((tmp_path / "runs" / "runs").iterdir())
    assert len(runs) == 2 and time.time() - t0 < 60
    for r in runs:
        assert epochs_in(r) == [1] and (r / "checkpoint.npz").exists()


# --- the lock --------------------------------------------------------------------------------------
def test_a_second_run_on_a_folder_held_by_another_process_fails_at_once(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom lightloop.training.run_folder import RunFolder\n"
         f"with RunFolder({str(out)!r}):\n    print('locked', flush=True)\n    sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        code, err = train(capsys, "--out", str(out))
        assert time.perf_counter() - t0 < 5.0                      # fails at once, no waiting
        one_line_error(code, err, str(out), "in use by another run", f"pid {holder.pid}")
        assert not (out / "metrics.jsonl").exists()                 # the loser wrote nothing
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    code, err = train(capsys, "--out", str(out))                   # the holder is gone: the folder is free
    assert code == 0, err
    assert epochs_in(out) == [1]


def test_the_lock_is_held_for_the_whole_run_and_released_after(tmp_path, capsys):
    out = tmp_path / "run"
    seen = []

    def probe(*_):
        with pytest.raises(RunFolderError, match="in use by another run"):
            RunFolder(out).__enter__()
        seen.append(True)

    from lightloop.training import trainer as trainer_mod

    real = trainer_mod.plot_learning_curve
    trainer_mod.plot_learning_curve = lambda *a, **k: (probe(), real(*a, **k))[1]
    try:
        assert train(capsys, "--out", str(out))[0] == 0
    finally:
        trainer_mod.plot_learning_curve = real
    assert seen == [True]
    with RunFolder(out, resume=True):                               # released after the run
        pass


# --- reuse and resume ----------------------------------------------------------------------------------
def test_rerun_without_resume_is_refused_and_appends_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, "--out", str(out))[0] == 0
    before = (out / "metrics.jsonl").read_bytes()
    one_line_error(*train(capsys, "--out", str(out)), str(out), "holds an earlier run", "--resume")
    assert (out / "metrics.jsonl").read_bytes() == before and epochs_in(out) == [1]


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    one_line_error(*train(capsys, "--out", str(tmp_path / "empty"), "--resume"),
                   str(tmp_path / "empty" / "checkpoint.npz"), "--resume", "found none")
    one_line_error(*train(capsys, "--resume"), "--resume", "--out")


@pytest.mark.parametrize("change, fragment", [
    (["--lr", "0.05"], "lr: 0.005 -> 0.05"),
    (["--gradient", "exact"], "gradient: 'pump_probe' -> 'exact'"),
    (["--batch-size", "8"], "batch_size: 32 -> 8"),
    (["--seed", "3"], "seed: 0 -> 3"),
    (["--hidden", "5"], "hidden: [4] -> [5]"),
    (["--loss", "cross_entropy"], "loss: 'mse' -> 'cross_entropy'"),
])
def test_resume_with_other_settings_names_the_difference(tmp_path, capsys, change, fragment):
    out = tmp_path / "run"
    assert train(capsys, "--out", str(out))[0] == 0
    ckpt = (out / "checkpoint.npz").read_bytes()
    one_line_error(*train(capsys, "--out", str(out), "--resume", "--epochs", "2", *change),
                   str(out / "checkpoint.npz"), fragment, "--accept-change")
    assert (out / "checkpoint.npz").read_bytes() == ckpt and epochs_in(out) == [1]


def test_resume_with_another_config_and_accepting_a_change(tmp_path, capsys):
    cfg = tmp_path / "bench.yaml"
    text = (REPO / "lab_configs" / "free_space_sa.yaml").read_text()
    cfg.write_text(text)
    out = tmp_path / "run"
    assert train(capsys, "--config", str(cfg), "--out", str(out))[0] == 0
    cfg.write_text("# a comment does not change the config\n" + text)
    assert train(capsys, "--config", str(cfg), "--out", str(out), "--resume", "--epochs", "2")[0] == 0
    cfg.write_text(text.replace("optical_depth: 10.0", "optical_depth: 7.0"))
    one_line_error(*train(capsys, "--config", str(cfg), "--out", str(out), "--resume", "--epochs", "3"),
                   "config_sha256")
    code, err = train(capsys, "--config", str(cfg), "--out", str(out), "--resume", "--epochs", "3",
                      "--lr", "0.01", "--accept-change")
    assert code == 0, err
    assert epochs_in(out) == [1, 2, 3]
    manifest = json.loads((out / "run.json").read_text())
    accepted = manifest["changes"][-1]["accepted"]
    assert accepted["lr"] == {"old": 0.005, "new": 0.01} and "config_sha256" in accepted
    assert manifest["fingerprint"]["lr"] == 0.01                   # the next resume checks the new settings
    assert train(capsys, "--config", str(cfg), "--out", str(out), "--resume", "--epochs", "4",
                 "--lr", "0.01")[0] == 0


def test_resume_without_a_manifest_needs_accept_change(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, "--out", str(out))[0] == 0
    (out / "run.json").unlink()                                     # e.g. a folder from an older lightloop
    one_line_error(*train(capsys, "--out", str(out), "--resume", "--epochs", "2"),
                   str(out / "run.json"), "cannot be verified", "--accept-change")
    assert train(capsys, "--out", str(out), "--resume", "--epochs", "2", "--accept-change")[0] == 0
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["changes"][0]["accepted"] == "run.json was missing" and manifest["fingerprint"]["lr"] == 0.005
    assert epochs_in(out) == [1, 2]


def test_a_torn_metrics_line_is_dropped_on_resume_and_resume_stays_exact(tmp_path, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert train(capsys, "--out", str(full), "--epochs", "3")[0] == 0
    assert train(capsys, "--out", str(cut), "--epochs", "2")[0] == 0
    with open(cut / "metrics.jsonl", "ab") as f:                    # killed mid-append of epoch 3
        f.write(b'{"epoch": 3, "train_loss": 0.4')
    code, err = train(capsys, "--out", str(cut), "--epochs", "3", "--resume")
    assert code == 0, err
    assert epochs_in(cut) == [1, 2, 3]
    a, b = load_checkpoint(full / "checkpoint.npz"), load_checkpoint(cut / "checkpoint.npz")
    for p, q in zip(a["params"], b["params"]):
        np.testing.assert_array_equal(p, q)
    assert (full / "metrics.jsonl").read_text().count("test_accuracy") == 3
    assert [json.loads(ln)["test_accuracy"] for ln in (full / "metrics.jsonl").read_text().splitlines()] == \
        [json.loads(ln)["test_accuracy"] for ln in (cut / "metrics.jsonl").read_text().splitlines()]


def test_metric_lines_go_out_in_one_write_each(tmp_path, monkeypatch):
    from lightloop.training import reporting

    calls = []
    real = os.write
    monkeypatch.setattr(reporting.os, "write", lambda fd, data: (calls.append(bytes(data)), real(fd, data))[1])
    log = MetricsLog(tmp_path / "m.jsonl")
    for e in (1, 2, 3):
        log.write({"epoch": e, "loss": 0.5})
    assert len(calls) == 3 and all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in calls)
    (tmp_path / "m.jsonl").write_bytes(b'{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert log.repair() and log.records() == [{"epoch": 1}, {"epoch": 2}]
    assert not log.repair()
    (tmp_path / "m.jsonl").write_bytes(b'{"epoch": 1}\nnot json\n')
    with pytest.raises(RunFolderError, match=r"m.jsonl: line 2: expected a JSON object"):
        log.truncate_after(1)


# --- bad --out, bad checkpoints ------------------------------------------------------------------------
def test_out_that_is_a_file_or_cannot_be_created(tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("x")
    one_line_error(*train(capsys, "--out", str(f)), str(f), "--out", "existing file")
    one_line_error(*train(capsys, "--out", str(f / "sub")), str(f / "sub"), "--out")
    from lightloop.training.run_folder import check_out_dir       # the library path (Trainer) checks too

    with pytest.raises(RunFolderError, match=f"{re.escape(str(f))}: --out: expected a run folder, found an existing"):
        check_out_dir(f)
    with pytest.raises(RunFolderError, match=f"{re.escape(str(f / 'sub'))}: --out: expected a folder that can be"):
        check_out_dir(f / "sub")


def test_out_that_refuses_writes(tmp_path, capsys, monkeypatch):
    """As root chmod does not stop writes: a folder that refuses the write probe stands in for a read-only one."""
    from lightloop.training import run_folder

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(run_folder.tempfile, "mkstemp", refuse)
    one_line_error(*train(capsys, "--out", str(tmp_path / "ro")), str(tmp_path / "ro"), "--out",
                   "expected a writable folder (Permission denied)")
    assert not (tmp_path / "ro" / "metrics.jsonl").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into any folder")
def test_out_that_is_not_writable(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        one_line_error(*train(capsys, "--out", str(ro)), str(ro), "--out", "writable")
    finally:
        ro.chmod(0o700)


def _good_state():
    return {"epoch": 1, "params": [np.zeros((2, 2), np.float32)], "optimizer": {"t": 1}, "rng": {"state": 1},
            "processor": {}, "history": [{"epoch": 1}], "best": {"test_accuracy": 0.5, "epoch": 1}, "tag": ""}


@pytest.mark.parametrize("key", sorted(TRAINING_KEYS))
@pytest.mark.parametrize("damage", ["missing", "wrong type"])
def test_checkpoint_with_a_missing_or_wrong_typed_key(tmp_path, key, damage):
    state = _good_state()
    if damage == "missing":
        del state[key]
    else:
        state[key] = "oops" if key != "params" else ["oops"]
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, state)
    with pytest.raises(RunFolderError) as exc:
        load_training_checkpoint(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: {key}:")
    assert ("missing from the checkpoint" in msg) == (damage == "missing")
    save_checkpoint(path, _good_state())                            # control: the undamaged state loads
    assert load_training_checkpoint(path)["epoch"] == 1


def test_resume_from_a_damaged_checkpoint_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(capsys, "--out", str(out))[0] == 0
    state = load_checkpoint(out / "checkpoint.npz")
    del state["optimizer"]
    save_checkpoint(out / "checkpoint.npz", state)
    one_line_error(*train(capsys, "--out", str(out), "--resume", "--epochs", "2"),
                   str(out / "checkpoint.npz"), "optimizer: missing")
    state = load_checkpoint(out / "checkpoint.npz") | {"optimizer": {}, "rng": {"bit_generator": "nonsense"}}
    save_checkpoint(out / "checkpoint.npz", state)
    one_line_error(*train(capsys, "--out", str(out), "--resume", "--epochs", "2"),
                   str(out / "checkpoint.npz"), "does not fit this run")
    assert epochs_in(out) == [1]


def test_trainer_api_refuses_reuse_and_resume_without_a_folder(make_bench, tmp_path):
    from lightloop.training.datasets import load_dataset
    from lightloop.training.gradients import make_gradient
    from lightloop.training.optimizers import Adam
    from lightloop.training.trainer import Trainer, TrainSettings

    data = load_dataset("iris")

    def trainer(out, **kw):
        return Trainer(make_bench((4, 4, 3), ideal=True, a0=5.0), make_gradient("exact"), Adam(1e-2),
                       TrainSettings(epochs=1, seed=0, progress=False, **kw), out_dir=out)

    trainer(tmp_path).fit(data)
    with pytest.raises(RunFolderError, match="holds an earlier run"):
        trainer(tmp_path).fit(data)
    with pytest.raises(RunFolderError, match=r"trainer\.batch_size: 32 -> 16"):
        trainer(tmp_path, batch_size=16).fit(data, resume=True)
    with pytest.raises(LightloopError, match="resume: expected an output folder"):
        trainer(None).fit(data, resume=True)
