"""Error budget on every path: chip tap monitors and 'svd' layers, flow network, digital bench, run records,
`calibrate --check` (an injected miscalibration fails exactly the paths through it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from lightloop.bench import BuildOverrides, build_processor
from lightloop.check import PathResult, run_budget
from lightloop.cli import main
from lightloop.config import load_config
from lightloop.schema import CheckSettings

CONFIGS = Path(__file__).resolve().parents[1] / "lightloop" / "lab_configs"
S = CheckSettings(samples=32)


def _config(tmp_path: Path, name: str, ideal: bool = True, **proc: Any) -> Path:
    """A shipped config on the iris shape: ideal or realistic twin, a private calibration store, processor keys."""
    data = yaml.safe_load((CONFIGS / name).read_text())
    kind = data["processor"]["kind"]
    if kind in ("free_space", "integrated_chip"):
        data["processor"]["hidden"] = [8]
        data["processor"].setdefault("calibration", {})["store"] = str(tmp_path / "store")
        data["processor"].setdefault("twin" if kind == "free_space" else "chip", {})["ideal"] = ideal
    elif kind == "flow_network":
        data["processor"]["twin"]["ideal"] = ideal
    else:
        data["processor"]["hidden"] = [6]
        data.pop("feedback", None)
    data["processor"].update(proc)
    data["training"] = {**data.get("training", {}), "dataset": "iris", "epochs": 1}
    path = tmp_path / f"paths_{name}"
    path.write_text(yaml.safe_dump(data))
    return path


def _build(path: Path) -> tuple:
    cfg = load_config(path)
    return cfg, build_processor(cfg, 4, 3, BuildOverrides())


def _failed(paths: list[PathResult]) -> list[str]:
    return [p.name for p in paths if not p.passed]


def _get(paths: list[PathResult], name: str) -> PathResult:
    return next(p for p in paths if p.name == name)


def test_chip_tap_gain_miscalibration_fails_exactly_that_monitors_three_tap_paths(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "integrated_chip.yaml"))
    with proc:
        paths, _ = run_budget(proc, S)
        assert _failed(paths) == []
        assert {"layer0.taps", "layer1.taps", "layer0.taps_injected", "layer0.taps_adjoint"} <= {p.name for p in paths}
        assert _get(paths, "layer1.taps").stats["signal_rms"] > 0   # the model predicts light at the taps
        mon = proc.layers[1].monitor   # the stored tap gain of layer 1 is 20 % too high: readings fall 1/1.2
        mon.set_gain(mon.gain * 1.2, mon.offset)
        paths, _ = run_budget(proc, S)
    assert _failed(paths) == ["layer1.taps", "layer1.taps_injected", "layer1.taps_adjoint"]
    assert _get(paths, "layer1.taps").stats["gain_error"] == pytest.approx(1 / 1.2 - 1, abs=0.01)


def test_chip_tap_offset_fails_the_dark_reading_too(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "integrated_chip.yaml"))
    with proc:
        paths, _ = run_budget(proc, S)
        mon = proc.layers[0].monitor   # the stored dark offset is off by 10 % of the taps' rms intensity
        mon.set_gain(mon.gain, mon.offset - 0.1 * _get(paths, "layer0.taps").stats["signal_rms"] * mon.gain)
        paths, _ = run_budget(proc, S)
    assert set(_failed(paths)) == {"layer0.taps", "layer0.taps_injected", "layer0.taps_adjoint", "detector.taps0.dark"}


def test_chip_svd_layers_are_in_the_budget_and_a_wrong_amplifier_gain_fails_their_field_paths(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "integrated_chip.yaml", layer="svd", svd_gain=2.0))
    with proc:
        paths, notes = run_budget(proc, S, svd_gain=2.0)   # the design gain: the model holds
        assert _failed(paths) == [] and any("svd" in n for n in notes)
        names = {p.name for p in paths}
        assert {f"layer{l}.{k}" for l in (0, 1) for k in ("mesh", "mesh_injected", "adjoint", "taps",
                                                           "taps_injected", "taps_adjoint")} <= names
        paths, _ = run_budget(proc, S, svd_gain=2.4)       # a model 20 % too strong in field
    # every field through an amplifier and the backward light's taps (it meets the amplifier first); the forward
    # taps sit before it, the photodiodes read measured fields
    assert set(_failed(paths)) == {f"layer{l}.{k}" for l in (0, 1)
                                   for k in ("mesh", "mesh_injected", "adjoint", "taps_adjoint")}
    assert _get(paths, "layer0.mesh_injected").stats["gain_error"] == pytest.approx(2.0 / 2.4 - 1, abs=0.01)


class _ScaledConductances:
    """A conductance port whose device takes `gain` x the written value (the HAL's conductance map is off)."""

    def __init__(self, port: Any, gain: float):
        self.port, self.gain, self.n_edges = port, gain, port.n_edges

    def write_conductances(self, siemens: np.ndarray) -> None:
        self.port.write_conductances(np.asarray(siemens) * self.gain)


class _ScaledProbe:
    """A potential probe reading gain x the potentials plus an offset (V)."""

    def __init__(self, port: Any, gain: float = 1.0, offset: float = 0.0):
        self.port, self.gain, self.offset, self.n_nodes = port, gain, offset, port.n_nodes

    def acquire(self) -> np.ndarray:
        return np.asarray(self.port.acquire()) * self.gain + self.offset


def test_flow_network_conductance_map_error_fails_every_path_through_the_conductances(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "flow_network.yaml"))
    with proc:
        paths, _ = run_budget(proc, S)
        assert _failed(paths) == []
        assert [p.name for p in paths] == ["network.potentials", "output.drops", "feedback.potentials", "clamp.nudged",
                                           "detector.probe.dark", "detector.feedback_probe.dark"]
        net = proc.network
        net.conductance_port = _ScaledConductances(net.conductance_port, 1.2)   # the bench conducts 20 % more
        paths, _ = run_budget(proc, S)
    assert _failed(paths) == ["network.potentials", "output.drops", "feedback.potentials", "clamp.nudged"]
    assert _get(paths, "network.potentials").stats["gain_error"] == pytest.approx(1 / 1.2 - 1, abs=1e-3)


def test_flow_network_hal_conductance_map_is_what_the_budget_checks(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "flow_network.yaml"))
    with proc:
        proc.model.set_gain(0.8)   # the HAL's calibrated map believes every edge conducts 20 % less than it does
        paths, _ = run_budget(proc, S)
        assert _failed(paths) == ["network.potentials", "output.drops", "feedback.potentials", "clamp.nudged"]
        assert _get(paths, "feedback.potentials").stats["gain_error"] == pytest.approx(0.8 - 1, abs=1e-3)
        proc.model.set_gain(1.0)
        paths, _ = run_budget(proc, S)
    assert _failed(paths) == []


def test_flow_network_feedback_probe_gain_fails_only_the_feedback_path(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "flow_network.yaml"))
    with proc:
        net = proc.network
        net.feedback_probe = _ScaledProbe(net.feedback_probe, gain=1.1)
        paths, _ = run_budget(proc, S)
    assert _failed(paths) == ["feedback.potentials"]
    assert _get(paths, "feedback.potentials").stats["gain_error"] == pytest.approx(0.1, abs=1e-3)


def test_flow_network_probe_offset_fails_potentials_clamp_and_dark_but_not_the_drops(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "flow_network.yaml"))
    with proc:
        paths, _ = run_budget(proc, S)
        off = 0.2 * _get(paths, "network.potentials").stats["signal_rms"]   # a common offset cancels in a drop
        proc.network.probe = _ScaledProbe(proc.network.probe, offset=off)
        paths, _ = run_budget(proc, S)
    assert _failed(paths) == ["network.potentials", "clamp.nudged", "detector.probe.dark"]


def test_realistic_flow_twin_passes_within_the_default_bounds(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "flow_network.yaml", ideal=False))
    with proc:
        paths, _ = run_budget(proc, S)
    assert _failed(paths) == []
    pot = _get(paths, "network.potentials").stats   # 1 % programming spread and 0.1 mV probe noise are measurable
    assert 0 < pot["model_error_rms"] and 0 < pot["noise_rms"] < 1e-3


def test_digital_bench_paths_are_exact(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "digital_mlp.yaml"))
    with proc:
        paths, notes = run_budget(proc, S)
    assert [p.name for p in paths] == ["layer0.forward", "layer0.nonlinearity", "layer1.forward", "output.activation",
                                       "layer0.backward", "output.error"]
    assert _failed(paths) == [] and any("exact" in n for n in notes)
    for p in paths:   # float32 arithmetic against the float64 model: exact to rounding, no noise
        assert abs(p.stats["gain_error"]) < 1e-5 and p.stats["noise_rms"] == 0.0


def test_cli_check_writes_a_run_folder_with_its_record_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _config(tmp_path, "flow_network.yaml")
    out = tmp_path / "run"
    # (the PNG: test_check.py::test_cli_check_writes_json_and_png_and_exits_0; --no-plot keeps this test fast)
    assert main(["check", "--config", str(cfg), "--samples", "8", "--out", str(out), "--no-plot"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("error budget: PASS (6 of 6 paths")
    for name in ("record.json", "config.yaml", "station.json", "summary.json", "run.log", "check.json"):
        assert (out / name).is_file(), name
    rec = json.loads((out / "record.json").read_text())
    assert rec["kind"] == "check" and rec["status"] == "finished" and rec["versions"]["lightloop"]
    assert {"check.json", "config.yaml", "station.json", "summary.json"} <= set(rec["files"])
    assert "check.png" not in rec["files"] and not (out / "check.png").exists()
    assert rec["config"]["file"] == str(cfg.absolute()) and rec["summary"]["passed"]
    assert yaml.safe_load((out / "config.yaml").read_text())["processor"]["kind"] == "flow_network"


def test_calibrate_check_runs_after_the_routines_and_a_failing_path_exits_1_keeping_the_records(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIGHTLOOP_RUNS_DIR", str(tmp_path / "runs"))
    # the realistic twin calibrated by the homodyne routine only: its vapor-cell map is still nominal
    cfg = _config(tmp_path, "free_space_sa.yaml", ideal=False)
    code = main(["calibrate", "homodyne", "--config", str(cfg), "--no-plots", "--no-progress", "--check"])
    out = capsys.readouterr().out
    assert code == 1 and "homodyne             ok" in out   # the routine succeeded; the check failed
    assert "FAIL layer0.nonlinearity" in out and "error budget: FAIL" in out
    assert out.index("calibration of") < out.index("FAIL layer0.nonlinearity")   # calibration table, then the budget
    assert list((tmp_path / "store").rglob("*homodyne*"))          # the calibration record is stored
    check_dir = Path(out.strip().splitlines()[-1].split("record in ")[-1])
    assert check_dir.name == "check" and check_dir.parent.parent == tmp_path / "runs"
    summary = json.loads((check_dir / "check.json").read_text())
    assert not summary["passed"] and "layer0.nonlinearity" in summary["failed"]
    rec = json.loads((check_dir / "record.json").read_text())
    assert [r["routine"] for r in rec["calibration_records"]] == ["homodyne"]   # the fresh record is what it checked
    outer = json.loads((check_dir.parent / "summary.json").read_text())      # the calibrate record holds the verdict
    assert outer["check"]["failed"] == summary["failed"]
