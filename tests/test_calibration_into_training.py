"""Calibration reaches training without editing YAML (issue 14 item 8): `calibrate` writes to the default store
(or --store), `train` loads from it (or --calibration-store)."""

from __future__ import annotations

import json

from lightloop.cli import main

from conftest import REPO

CHIP = REPO / "lab_configs" / "integrated_chip.yaml"
DIGITAL = REPO / "lab_configs" / "digital_mlp.yaml"
SMALL = ["--config", str(CHIP), "--hidden", "2", "--dataset", "circles"]


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_calibrate_then_train_uses_the_default_store(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIGHTLOOP_CALIBRATION_STORE", str(tmp_path / "default"))
    assert main(["calibrate", "phase_shifters", *SMALL, "--json", "--no-plots", "--no-progress"]) == 0
    cal = _last_json(capsys)
    assert cal["saved"] and cal["store"] == str(tmp_path / "default")
    assert main(["train", *SMALL, "--epochs", "1", "--json", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    summary = _last_json(capsys)
    assert [s.split(" ")[0] for s in summary["calibration_loaded"]] == ["phase_shifters"]


def test_an_explicit_store_flag_on_both_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIGHTLOOP_CALIBRATION_STORE", str(tmp_path / "empty-default"))
    store = tmp_path / "lab-store"
    assert main(["calibrate", "phase_shifters", *SMALL, "--store", str(store), "--no-plots", "--no-progress",
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["train", *SMALL, "--epochs", "1", "--json", "--no-progress", "--out", str(tmp_path / "plain")]) == 0
    assert "calibration_loaded" not in _last_json(capsys)          # nothing in the default store: nominal maps
    assert main(["train", *SMALL, "--epochs", "1", "--json", "--no-progress", "--calibration-store", str(store),
                 "--out", str(tmp_path / "run")]) == 0
    assert "phase_shifters" in " ".join(_last_json(capsys)["calibration_loaded"])


def test_a_store_flag_on_a_bench_without_calibration_is_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(DIGITAL), "--calibration-store", str(tmp_path), "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightloop: error: --calibration-store: a 'digital' bench") and "\n" not in err
