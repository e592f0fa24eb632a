"""Bench error budget (`lightloop check`): a calibrated twin passes, an injected miscalibration fails the right path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lightloop.bench import BuildOverrides, build_processor
from lightloop.check import PathResult, path_stats, run_budget
from lightloop.cli import main
from lightloop.config import load_config
from lightloop.hal.phase_shifters import ThermoOpticCalibration
from lightloop.schema import CheckSettings

CONFIGS = Path(__file__).resolve().parents[1] / "lightloop" / "lab_configs"


def _config(tmp_path: Path, name: str, ideal: bool = True, **top: object) -> Path:
    """A copy of a shipped config: small hidden layer, an empty private calibration store, extra top-level keys."""
    data = yaml.safe_load((CONFIGS / name).read_text())
    data["processor"]["hidden"] = [8]
    data["processor"].setdefault("calibration", {})["store"] = str(tmp_path / "store")
    twin = "twin" if data["processor"]["kind"] == "free_space" else "chip"
    data["processor"].setdefault(twin, {})["ideal"] = ideal
    data["training"] = {**data.get("training", {}), "dataset": "iris", "epochs": 1}
    data.update(top)
    path = tmp_path / f"check_{name}"
    path.write_text(yaml.safe_dump(data))
    return path


def _build(path: Path) -> tuple:
    cfg = load_config(path)
    return cfg, build_processor(cfg, 4, 3, BuildOverrides())   # the iris shape, as `calibrate` sizes it


def _failed(paths: list[PathResult]) -> list[str]:
    return [p.name for p in paths if not p.passed]


def test_stats_recover_a_known_gain_offset_and_noise() -> None:
    rng = np.random.default_rng(0)
    model = rng.normal(size=4000)
    noise = 0.01 * rng.normal(size=(2, 4000))
    res = PathResult("p", "real", "V", 1.1 * model + 0.2 + noise[0], model, 1.1 * model + 0.2 + noise[1])
    s = path_stats(res)
    assert s["gain_error"] == pytest.approx(0.1, abs=2e-3) and s["offset"] == pytest.approx(0.2, abs=2e-3)
    assert s["noise_rms"] == pytest.approx(0.01, rel=0.05) and s["model_error_rms"] < 2e-3
    assert s["residual_rel"] == 0.0   # pure noise is not a model error
    bent = PathResult("p", "real", "V", model + 0.05 * model**2 + noise[0], model, model + 0.05 * model**2 + noise[1])
    assert path_stats(bent)["residual_rel"] > 0.05   # an unmodelled curvature is
    z = model[:2000] + 1j * model[2000:]
    s = path_stats(PathResult("c", "complex", "field", z * 0.9 * np.exp(0.3j), z))
    assert s["gain_error"] == pytest.approx(-0.1) and s["phase_error_rad"] == pytest.approx(0.3)


def test_free_space_passes_then_an_injected_efficiency_fails_the_paths_through_that_block(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "free_space_sa.yaml"))
    with proc:
        paths, _ = run_budget(proc, CheckSettings(samples=32))
        names = {p.name for p in paths}
        assert {"layer0.forward", "layer1.forward", "layer0.nonlinearity", "layer0.backward",
                "detector.pre0.dark", "detector.error0.dark"} <= names
        assert _failed(paths) == []
        # the HAL believes layer 0's 4f efficiency is 20 % higher than it is: its amplifier gain falls 1/1.2
        eff = proc.weights[0].efficiency
        proc.weights[0].set_efficiency(eff * 1.2)
        paths, _ = run_budget(proc, CheckSettings(samples=32))
        assert _failed(paths) == ["layer0.forward"]
        bad = next(p for p in paths if p.name == "layer0.forward")
        assert bad.stats["gain_error"] == pytest.approx(1 / 1.2 - 1, abs=0.01)
        # the same error in layer 1: the backward probe crosses layer 1's block too, so both paths see it
        proc.weights[0].set_efficiency(eff)
        proc.weights[1].set_efficiency(proc.weights[1].efficiency * 1.2)
        paths, _ = run_budget(proc, CheckSettings(samples=32))
    assert _failed(paths) == ["layer1.forward", "layer0.backward"]


def test_free_space_injected_vapor_cell_map_fails_nonlinearity_and_backward(tmp_path: Path) -> None:
    from lightloop.hal.calibration_maps import VaporCellMap

    cfg, proc = _build(_config(tmp_path, "free_space_sa.yaml"))
    with proc:
        sa = proc.absorbers[0]
        sa.set_map(VaporCellMap(cfg.processor.vapor_cell.sigma_l_m3 * 1.5))   # a cell map 50 % too strong
        paths, _ = run_budget(proc, CheckSettings(samples=32))
    assert _failed(paths) == ["layer0.nonlinearity", "layer0.backward"]


def test_calibrated_realistic_free_space_passes_and_a_scaled_calibrated_gain_fails(tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture) -> None:
    path = _config(tmp_path, "free_space_sa.yaml", ideal=False)
    assert main(["calibrate", "all", "--config", str(path), "--no-plots", "--no-progress"]) == 0
    cfg, proc = _build(path)
    with proc:
        assert len(proc.calibration_log) >= 5          # the store's records are what the HAL uses
        paths, _ = run_budget(proc, CheckSettings(samples=32))
        assert _failed(paths) == []
        noisy = next(p for p in paths if p.name == "layer0.backward")
        assert 0 < noisy.stats["noise_rel"] < 1         # the weak probe: noisy, yet within the default bound
        blk = proc.weights[1]                           # the calibrated 4f efficiency of layer 1, 10 % too high
        blk.set_efficiency(blk.efficiency * 1.1)
        paths, _ = run_budget(proc, CheckSettings(samples=32))
    assert "layer1.forward" in _failed(paths) and "layer0.forward" not in _failed(paths)
    assert not any(n.startswith("detector.") or "nonlinearity" in n for n in _failed(paths))


def test_free_space_injected_detector_offset_fails_its_dark_path(tmp_path: Path) -> None:
    from lightloop.hal.calibration_maps import HomodyneMap

    cfg, proc = _build(_config(tmp_path, "free_space_sa.yaml"))
    with proc:
        n = proc.post_taps[0].n_channels   # the stored offset of post-cell detector 0 is 0.1 V off
        proc.post_taps[0].set_calibration(HomodyneMap(np.ones(n), np.full(n, 0.1), np.zeros(n)))
        paths, _ = run_budget(proc, CheckSettings(samples=32))
    failed = _failed(paths)
    assert "detector.post0.dark" in failed and "layer0.nonlinearity" in failed
    assert not {"detector.pre0.dark", "detector.pre1.dark", "layer0.forward", "layer0.backward"} & set(failed)


def test_chip_passes_then_a_shifted_phase_fails_that_layers_mesh_and_adjoint(tmp_path: Path) -> None:
    cfg, proc = _build(_config(tmp_path, "integrated_chip.yaml"))
    with proc:
        paths, notes = run_budget(proc, CheckSettings(samples=32))
        assert _failed(paths) == [] and notes == []
        assert {"layer0.mesh", "layer1.mesh", "layer0.adjoint", "layer1.mesh_injected", "layer0.photodiodes", "output.detectors",
                "layer0.activation_slope", "detector.taps0.dark", "layer0.taps", "layer1.taps_injected",
                "layer1.taps_adjoint"} <= {p.name for p in paths}
        bank = proc.layers[1].bank
        c = bank.cal   # the stored heater offset phi0 of one phase shifter is 0.4 rad off
        bank.cal = ThermoOpticCalibration(c.phi0 + 0.4 * (np.arange(c.n) == 2), c.p_pi_w, c.resistance_ohm,
                                          c.crosstalk)
        paths, _ = run_budget(proc, CheckSettings(samples=32))
    # the injected random complex fields see it (the activations' real positive fields of layer1.mesh hardly do)
    assert _failed(paths) == ["layer1.mesh_injected", "layer1.adjoint"]


def test_cli_check_writes_json_and_png_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _config(tmp_path, "free_space_sa.yaml")
    assert main(["check", "--config", str(cfg), "--samples", "16", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["passed"] and summary["samples"] == 16
    assert json.loads((tmp_path / "out" / "check.json").read_text())["paths"][0]["name"] == "layer0.forward"
    assert (tmp_path / "out" / "check.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_check_exits_1_when_a_bound_fails(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # the uncalibrated realistic twin (nominal maps) is outside a 1 % gain bound on some path
    cfg = _config(tmp_path, "free_space_sa.yaml", ideal=False, check={"bounds": {"max_gain_error": 0.01}})
    assert main(["check", "--config", str(cfg), "--samples", "16", "--out", str(tmp_path / "o"), "--no-plot"]) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not summary["passed"] and summary["failed"]


@pytest.mark.parametrize("check, field", [({"bounds": {"max_gain_error": -1}}, "check.bounds.max_gain_error"),
                                          ({"samples": 2}, "check.samples"),
                                          ({"bounds": {"max_gain": 0.1}}, "check.bounds.max_gain")])
def test_bad_check_bounds_are_one_line_naming_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             check: dict, field: str) -> None:
    cfg = _config(tmp_path, "free_space_sa.yaml", check=check)
    assert main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lightloop: error:")
    assert str(cfg) in err and field in err and "expected" in err


def test_train_check_gate_refuses_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _config(tmp_path, "free_space_sa.yaml", ideal=False, check={"bounds": {"max_gain_error": 0.01}})
    code = main(["train", "--config", str(cfg), "--check", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    line = next(l for l in err if l.startswith("lightloop: error:"))
    assert "check" in line and "outside the error budget" in line and str(cfg) in line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
