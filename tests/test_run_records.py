"""Run records (issue 14 item 1): provenance files next to every train / calibrate / sweep run, a QCoDeS
DataSet per training run (read back with qcodes' own loader), NetCDF export (read back with xarray), and
`lightloop runs list | show | compare | plot | export` with one-line errors on bad input."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO
from lightloop.cli import main
from lightloop.records import RunRecording
from lightloop.records import provenance as pv

TRAIN = ["train", "--dataset", "iris", "--hidden", "4", "--epochs", "1", "--ideal", "--no-progress", "--json"]


def _train(capsys, out: Path, *extra: str) -> dict:
    assert main([*TRAIN, "--out", str(out), *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _readme_blocks() -> tuple[list[str], str]:
    """The shell commands and the Python snippet of the README's "Run records" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Run records", 1)[1].split("\n## ", 1)[0]
    shell, python = re.findall(r"```\n(.*?)```", section, re.S)[0], re.findall(r"```python\n(.*?)```", section, re.S)[0]
    return [ln.split("#", 1)[0].strip() for ln in shell.splitlines() if ln.startswith("lightloop ")], python


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The README's commands in a fresh folder (two tiny ideal free-space trainings on iris, 1 epoch, lr 0.005
    and 0.01, then runs list/show/compare/plot/export) and its Python snippet; then run A resumed to 2 epochs."""
    import contextlib
    import io
    import os
    import shlex

    work = tmp_path_factory.mktemp("records")
    root = work / "runs"
    commands, python = _readme_blocks()
    here, runs_env = os.getcwd(), os.environ.pop("LIGHTLOOP_RUNS_DIR", None)   # the README's ./runs default
    buf, outs = io.StringIO(), {}
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(buf):
            for command in commands:
                argv = shlex.split(command)[1:]
                code = main([*argv, "--no-progress", "--json"] if argv[0] == "train" else argv)
                assert code == 0, command
                if argv[0] == "train":
                    outs[Path(argv[argv.index("--out") + 1]).name] = json.loads(buf.getvalue().splitlines()[-1])
        scope: dict = {}
        exec(compile(python, "README.md", "exec"), scope)   # noqa: S102 - the README's own example
        readme = {"commands": commands, "stdout": buf.getvalue(), "scope": scope}
        first = json.loads((root / "iris-a" / "summary.json").read_text())
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):   # resume A to 2 epochs: one dataset with both sessions' steps
            assert main([*shlex.split(commands[0])[1:], "--no-progress", "--json", "--resume", "--epochs", "2"]) == 0
        outs["a2"] = json.loads(buf.getvalue().strip().splitlines()[-1])
    finally:
        os.chdir(here)
        if runs_env is not None:
            os.environ["LIGHTLOOP_RUNS_DIR"] = runs_env
    return root, outs, first, readme


def test_a_training_run_writes_every_record(two_runs):
    root, outs, _, _ = two_runs
    run = root / "iris-b"
    rec = json.loads((run / "record.json").read_text())
    assert rec["kind"] == "train" and rec["status"] == "finished" and rec["bench"] == "free-space-sa-twin"
    # command line: the parsed options of this run, and the process argv
    assert rec["command"]["options"]["lr"] == 0.01 and rec["command"]["options"]["hidden"] == [4]
    assert isinstance(rec["command"]["argv"], list) and rec["command"]["cwd"]
    # versions
    import numpy
    import qcodes

    import lightloop
    v = rec["versions"]
    assert (v["lightloop"], v["numpy"], v["qcodes"]) == (lightloop.__version__, numpy.__version__, qcodes.__version__)
    assert re.fullmatch(r"3\.\d+\.\d+", v["python"])
    # git revision of this checkout (tolerated absent when the tests run outside one)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    if head.returncode == 0:
        assert rec["git"]["revision"] == head.stdout.strip()
    else:
        assert rec["git"] is None
    # resolved config: the file with the run's command-line settings applied, loadable as a lab config
    from lightloop.config import load_config

    cfg = load_config(run / "config.yaml")
    assert cfg.training.lr == 0.01 and cfg.training.epochs == 1 and cfg.training.dataset == "iris"
    assert cfg.processor.hidden == [4] and cfg.processor.twin.ideal is True
    # station snapshot of a twin bench: the public twin settings (seeds), no instruments, no hidden truth
    st = json.loads((run / "station.json").read_text())
    assert st["lightloop"]["instruments"] == "twin" and st["station"]["instruments"] == {}
    assert st["lightloop"]["twin"]["processor.twin"]["truth_seed"] == cfg.processor.twin.truth_seed
    assert st["lightloop"]["twin"]["processor.twin"]["ideal"] is True
    # the summary JSON is exactly what --json printed
    assert json.loads((run / "summary.json").read_text()) == outs["iris-b"] == rec["summary"]
    assert rec["calibration_records"] == []
    # the log file holds the run's per-epoch line; the handler is gone after the run
    assert "epoch 1/1" in (run / "run.log").read_text()
    assert not [h for h in logging.getLogger("lightloop").handlers if isinstance(h, logging.FileHandler)]
    assert set(rec["files"]) >= {"config.yaml", "station.json", "summary.json", "run.log", "run.db"}


def test_the_training_dataset_opens_with_qcodes_own_loader(two_runs):
    from qcodes.dataset import connect, load_by_guid, load_by_run_spec

    root, outs, first, _ = two_runs
    run = root / "iris-a"
    rec = json.loads((run / "record.json").read_text())
    conn = connect(str(run / "run.db"), read_only=True)
    ds = load_by_run_spec(captured_run_id=1, conn=conn)
    assert ds.guid == rec["dataset"]["guid"] == load_by_guid(rec["dataset"]["guid"], conn=conn).guid
    assert ds.exp_name == "lightloop" and ds.sample_name == "free-space-sa-twin"
    data = ds.get_parameter_data()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert list(data["test_accuracy"]["epoch"]) == [1, 2]
    assert np.allclose(data["test_accuracy"]["test_accuracy"], [m["test_accuracy"] for m in metrics])
    assert np.allclose(data["train_loss"]["train_loss"], [m["train_loss"] for m in metrics])
    # per-step losses of BOTH sessions (the resume kept the first session's steps from the earlier run.db)
    steps = data["step_loss"]
    assert list(steps["global_step"]) == list(range(1, len(steps["global_step"]) + 1))
    half = len(steps["global_step"]) // 2
    assert half >= 1 and list(data["step_epoch"]["step_epoch"]) == [1] * half + [2] * half
    assert np.all(np.isfinite(steps["step_loss"]))
    # snapshot and provenance as metadata
    import qcodes

    station = json.loads((run / "station.json").read_text())
    assert json.loads(ds.metadata["lightloop_station"]) == station
    # the dataset's own snapshot is ours, unless a default qcodes.Station (a lab's) supplied one
    assert ds.snapshot == station or (qcodes.Station.default is not None and "station" in ds.snapshot)
    prov = json.loads(ds.metadata["lightloop_provenance"])
    assert prov["command"]["options"]["resume"] is True and len(prov["sessions"]) == 1
    assert prov["sessions"][0]["status"] == "finished"
    assert json.loads(ds.metadata["lightloop_summary"])["epochs"] == 2 == outs["a2"]["epochs"]
    assert first["epochs"] == 1


def test_export_netcdf_opens_with_xarray(two_runs, tmp_path, capsys):
    import xarray as xr

    root, _, _, _ = two_runs
    out = tmp_path / "a.nc"
    code, stdout, _ = _cli(capsys, "runs", "--root", str(root), "export", "iris-a", "--netcdf", str(out))
    assert code == 0 and str(out) in stdout
    with xr.open_dataset(out) as x:
        metrics = [json.loads(line) for line in (root / "iris-a" / "metrics.jsonl").read_text().splitlines()]
        assert list(x["epoch"].values) == [1, 2]
        assert np.allclose(x["test_loss"].values, [m["test_loss"] for m in metrics])
        assert x["step_loss"].dims == ("global_step",) and x.sizes["global_step"] >= 2
        assert json.loads(x.attrs["lightloop_record"])["kind"] == "train"
        assert x.attrs["guid"] == json.loads((root / "iris-a" / "record.json").read_text())["dataset"]["guid"]


def test_runs_list_show_compare_plot(two_runs, tmp_path, capsys):
    root, outs, _, _ = two_runs
    code, out, _ = _cli(capsys, "runs", "--root", str(root), "list")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and lines[0].startswith("run")
    acc = f"{outs['iris-b']['test_accuracy']:.4f}"
    assert any(str(root / "iris-b") in ln and "finished" in ln and acc in ln for ln in lines)
    code, out, _ = _cli(capsys, "runs", "--root", str(root), "show", "iris-b")
    assert code == 0 and "(train, finished)" in out
    assert "--lr 0.01" in out and "qcodes" in out and "QCoDeS dataset: run.db" in out
    code, out, _ = _cli(capsys, "runs", "--root", str(root), "compare", "iris-a", "iris-b", "--json")
    cmp = json.loads(out)
    assert code == 0 and cmp["differences"]["config.training.lr"] == [0.005, 0.01]
    assert cmp["differences"]["config.training.epochs"] == [2, 1]   # A was resumed to 2 epochs
    assert "config.processor.hidden" not in cmp["differences"]
    code, out, _ = _cli(capsys, "runs", "--root", str(root), "compare", "iris-a", "iris-b")
    assert "config.training.lr: 0.005 -> 0.01" in out
    png = tmp_path / "curves.png"
    code, out, _ = _cli(capsys, "runs", "--root", str(root), "plot", "iris-a", str(root / "iris-b"), "--out", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, fragment", [
    (["show", "no-such-run"], "no-such-run: RUN: no such run folder"),
    (["show", "."], "RUN: not a run folder (no record.json)"),
    (["compare", "iris-a", "nope"], "nope: RUN: no such run folder"),
    (["export", "cal", "--netcdf", "x.nc"], "no run.db (a calibrate run"),
    (["export", "iris-a"], "--netcdf"),
])
def test_bad_input_is_one_line_exit_2(two_runs, tmp_path, monkeypatch, capsys, args, fragment):
    root, _, _, _ = two_runs
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIGHTLOOP_RUNS_DIR", raising=False)    # the default root: ./runs
    (tmp_path / "runs").symlink_to(root)
    cal = tmp_path / "runs_cal"
    with RunRecording(cal, "calibrate"):
        pass
    if args[1] == "cal":
        args = [args[0], str(cal), *args[2:]]
    with pytest.raises(SystemExit) if args == ["export", "iris-a"] else _nothing() as exc:
        code = main(["runs", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightloop: error:") and fragment in err[0], err
    assert (exc.value.code if exc is not None else code) == 2


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


class _Instrument:
    """A stand-in QCoDeS instrument: snapshot(update=False) from cached values only."""

    def __init__(self, fail=False):
        self.fail, self.calls = fail, []

    def snapshot(self, update=False):
        self.calls.append(update)
        if self.fail:
            raise RuntimeError("bus error")
        return {"name": "laser", "parameters": {"current": {"value": 0.12, "unit": "A"}}}


def test_station_snapshot_calibration_ids_and_steps_from_a_processor(tmp_path):
    from types import SimpleNamespace

    good, bad = _Instrument(), _Instrument(fail=True)
    station = SimpleNamespace(mode="drivers", links={
        "laser": SimpleNamespace(driver=good, identity="Acme,LC-1,42"),
        "scope": SimpleNamespace(driver=bad, identity="Acme,DSO,7"),
        "slm": SimpleNamespace(driver=None, identity="slm slm (disconnected)")})
    log = [{"routine": "slm_lut", "record_version": 3, "created_utc": "2026-01-01T00:00:00+00:00", "path": "/s/x"}]
    proc = SimpleNamespace(station=station, calibration_log=log, bench_name="lab", step_hooks=[],
                           emulator=SimpleNamespace(truth="hidden"))
    cfg = SimpleNamespace(bench="lab", processor=SimpleNamespace(twin=None), emulator=None, feedback=None)
    with RunRecording(tmp_path, "train", cfg=None) as rec:
        rec.cfg = cfg
        rec.attach(proc)
        for k in range(3):
            proc.step_hooks[-1]({"epoch": 1, "step": k, "global_step": k + 1, "loss": 0.5 - 0.1 * k})
        rec.finish({"test_accuracy": 0.5, "epochs": 1}, history=[{"epoch": 1, "test_accuracy": 0.5}])
    st = json.loads((tmp_path / "station.json").read_text())
    assert st["station"]["instruments"]["laser"]["parameters"]["current"]["value"] == 0.12
    assert good.calls and not any(good.calls)          # cached values only: no wire traffic for the snapshot
    assert "bus error" in st["station"]["instruments"]["scope"]["snapshot_error"]
    assert st["station"]["instruments"]["slm"] == {"connected": False}
    assert st["lightloop"]["identities"]["laser"] == "Acme,LC-1,42" and st["lightloop"]["twin"] == {}
    assert "hidden" not in (tmp_path / "station.json").read_text()
    rec_json = json.loads((tmp_path / "record.json").read_text())
    assert rec_json["calibration_records"] == log
    from lightloop.records.dataset import load_training_dataset

    data = load_training_dataset(tmp_path).get_parameter_data("step_loss")["step_loss"]
    assert np.allclose(data["step_loss"], [0.5, 0.4, 0.3]) and list(data["global_step"]) == [1, 2, 3]


def test_a_failing_run_is_recorded_and_its_log_handler_removed(tmp_path):
    logger = logging.getLogger("lightloop")
    before = list(logger.handlers)
    with pytest.raises(ValueError):
        with RunRecording(tmp_path, "calibrate"):
            logging.getLogger("lightloop.calibration").warning("fit residual high")
            raise ValueError("fit did not converge\nsecond line")
    assert logger.handlers == before
    rec = json.loads((tmp_path / "record.json").read_text())
    assert rec["status"] == "failed" and rec["error"] == "ValueError: fit did not converge second line"
    assert "fit residual high" in (tmp_path / "run.log").read_text()


def test_git_revision_is_none_without_git_or_outside_a_checkout(tmp_path, monkeypatch):
    assert pv.git_revision(tmp_path) is None                  # not a checkout
    monkeypatch.setenv("PATH", str(tmp_path))                 # no git executable at all
    assert pv.git_revision() is None


def test_calibrate_and_sweep_write_records(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = _cli(capsys, "calibrate", "homodyne", "--hidden", "4", "--no-save", "--no-progress", "--json",
                        "--plots", str(tmp_path / "cal"), "--option", "dark_frames=64", "--option",
                        "backward_frames=64", "--option", "sweep_frames=8")
    summary = json.loads(out.strip().splitlines()[-1])
    rec = json.loads((tmp_path / "cal" / "record.json").read_text())
    assert rec["kind"] == "calibrate" and rec["status"] == "finished" and summary["record"] == str(tmp_path / "cal")
    assert rec["summary"]["routines"][0]["routine"] == "homodyne" and (tmp_path / "cal" / "config.yaml").is_file()
    assert json.loads((tmp_path / "cal" / "station.json").read_text())["lightloop"]["instruments"] == "twin"
    code, out, _ = _cli(capsys, "sweep", "--grid", "lr=0.01", "--set", "epochs=1", "--set", "dataset=iris",
                        "--set", "hidden=4", "--set", "ideal=true", "--scheduler", "synchronous", "--no-progress",
                        "--out", str(tmp_path / "sw"))
    assert code == 0
    rec = json.loads((tmp_path / "sw" / "record.json").read_text())
    assert rec["kind"] == "sweep" and rec["status"] == "finished" and rec["settings"]["grid"] == {"lr": [0.01]}
    assert rec["summary"]["runs"] == 1 and (tmp_path / "sw" / "run.log").is_file()
    point = json.loads((tmp_path / "sw" / "runs" / "lr=0.01_r0" / "record.json").read_text())
    assert point["kind"] == "train" and point["dataset"]["epochs"] == 1
    code, out, _ = _cli(capsys, "runs", "--root", str(tmp_path), "list", "--json")
    kinds = sorted(r["kind"] for r in json.loads(out))
    assert kinds == ["calibrate", "sweep", "train"]



def test_the_readme_run_records_examples_work(two_runs):
    _, _, _, readme = two_runs
    actions = {c.split()[2] for c in readme["commands"] if c.startswith("lightloop runs")}
    assert len(readme["commands"]) >= 7 and actions >= {"list", "show", "compare", "plot", "export"}
    assert "config.training.lr: 0.005 -> 0.01" in readme["stdout"]
    scope = readme["scope"]
    assert list(scope["epochs"]["epoch"]) == [1] and json.loads(scope["provenance"])["kind"] == "train"
    assert scope["curves"].sizes["epoch"] == 1
    scope["curves"].close()


def test_a_refused_resume_leaves_the_run_record_as_it_was(two_runs, capsys):
    root, _, _, readme = two_runs
    run = root / "iris-b"
    before = {n: (run / n).read_bytes() for n in ("record.json", "config.yaml", "summary.json")}
    import shlex

    argv = shlex.split(readme["commands"][1])[1:]
    argv[argv.index("--lr") + 1], argv[argv.index("--out") + 1] = "0.3", str(run)
    code = main([*argv, "--resume", "--epochs", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "settings" in err and "lr" in err
    assert {n: (run / n).read_bytes() for n in before} == before
    assert "run refused" in (run / "run.log").read_text()


def test_a_database_failure_keeps_the_finished_run_and_says_why(tmp_path, monkeypatch, capsys):
    import lightloop.records.dataset as dset

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(dset, "write_training_dataset", broken)
    with RunRecording(tmp_path, "train") as rec:
        pass
    rec.finish({"test_accuracy": 0.5}, history=[{"epoch": 1, "test_accuracy": 0.5}])
    got = json.loads((tmp_path / "record.json").read_text())
    assert got["status"] == "finished" and got["dataset"] == {"error": "OSError: disk full"}
    assert "run.db" not in got["files"] and not (tmp_path / "run.db").exists()
    from lightloop.runs_cli import show_text

    assert "QCoDeS dataset: not written (OSError: disk full)" in show_text(tmp_path, got)


def test_a_labs_default_qcodes_station_snapshot_is_kept(tmp_path, monkeypatch):
    import qcodes

    from lightloop.records.dataset import load_training_dataset, write_training_dataset

    monkeypatch.setattr(qcodes.Station, "default", None)
    qcodes.Station()   # the lab's station becomes the default one
    ours = {"station": {"instruments": {}}, "lightloop": {"instruments": "twin"}}
    write_training_dataset(tmp_path, "run", "bench", [{"epoch": 1, "test_accuracy": 0.5}], {}, ours, {})
    ds = load_training_dataset(tmp_path)
    assert json.loads(ds.metadata["lightloop_station"]) == ours and "lightloop" not in ds.snapshot
    monkeypatch.setattr(qcodes.Station, "default", None)
    write_training_dataset(tmp_path, "run", "bench", [{"epoch": 1, "test_accuracy": 0.5}], {}, ours, {})
    assert load_training_dataset(tmp_path).snapshot == ours
