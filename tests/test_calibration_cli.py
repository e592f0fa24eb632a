"""`lightloop calibrate ROUTINE|all --config FILE [--json]` end to end, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO
from lightloop.cli import main


@pytest.fixture
def run(capsys, monkeypatch):
    """In-process `lightloop ...` (argparse, handlers and error printing as in the console script)."""
    monkeypatch.chdir(REPO)

    def _run(*args):
        code = main(list(args))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return _run


def _config(tmp_path, extra=""):
    text = (REPO / "lab_configs" / "free_space_sa.yaml").read_text()
    text = text.replace("  twin:\n", f"  calibration:\n    store: cal-store\n{extra}  twin:\n")
    f = tmp_path / "bench.yaml"
    f.write_text(text)
    return f


def test_calibrate_all_json_summary_pngs_store_and_truth_errors(tmp_path, run):
    cfg = _config(tmp_path)
    p = run("calibrate", "all", "--config", str(cfg), "--json", "--no-progress", "--hidden", "12",
            "--plots", str(tmp_path / "plots"))
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout.strip().splitlines()[-1])
    assert [r["routine"] for r in s["routines"]] == ["slm_lut", "lo_phase", "fringing", "homodyne",
                                                     "saturable_absorber", "vapor_cell"]
    assert s["layer_sizes"] == [64, 12, 10] and s["saved"] and s["twin_truth"]["all_within_tolerance"]
    for r in s["routines"]:
        assert r["status"] == "ok" and r["measurements"]["acquisitions"] > 0
        assert all(r["truth_error"]["within_tolerance"].values()), r["truth_error"]
        assert r["record"].startswith(str(tmp_path / "cal-store"))
    assert s["routines"][1]["truth_error"]["max_abs_rad"] < 0.02  # LO phases within 0.02 rad
    pngs = sorted(x.name for x in (tmp_path / "plots").glob("*.png"))
    assert "slm_lut_layer0.png" in pngs and "vapor_cell0.png" in pngs and len(pngs) >= 7
    # human summary, one routine, starting from the stored records
    p = run("calibrate", "homodyne", "--config", str(cfg), "--no-progress", "--hidden", "12", "--no-plots")
    assert p.returncode == 0, p.stderr
    assert "homodyne" in p.stdout and "vs truth" in p.stdout and "within tolerance" in p.stdout
    # training on the bench loads the calibration; a corrupted record is one clear error line
    rec = next((tmp_path / "cal-store" / "free-space-sa-twin" / "fringing").glob("*.json"))
    rec.write_text("{not json")
    p = run("train", "--config", str(cfg), "--hidden", "12", "--epochs", "1", "--out", str(tmp_path / "run"))
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith("lightloop: error:") and str(rec) in lines[0] and "invalid JSON" in lines[0]


def test_calibrate_errors_are_one_line(tmp_path, run):
    cfg = _config(tmp_path)
    for args, fragment in [
        (("calibrate", "telepathy", "--config", str(cfg)), "unknown calibration routine 'telepathy'"),
        (("calibrate", "dmd_fill", "--config", str(cfg)), "routine 'dmd_fill' does not apply to this bench"),
        (("calibrate", "all", "--config", str(tmp_path / "nope.yaml")), "nope.yaml: config file not found"),
    ]:
        p = run(*args, "--no-progress", "--no-plots")
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert p.returncode == 2 and len(lines) == 1, p.stderr
        assert lines[0].startswith("lightloop: error:") and fragment in lines[0], lines[0]


def test_console_script_prints_one_line_error(tmp_path):
    env = {**os.environ, "LIGHTLOOP_OFFLINE": "1", "MPLBACKEND": "Agg"}
    p = subprocess.run([sys.executable, "-m", "lightloop", "calibrate", "telepathy", "--no-plots"], capture_output=True,
                       text=True, timeout=120, env=env, cwd=REPO)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "unknown calibration routine 'telepathy'" in lines[0]


def test_calibrate_all_on_the_chip_config_reports_truth_errors(tmp_path, run):
    p = run("calibrate", "all", "--config", "lab_configs/integrated_chip.yaml", "--json", "--no-progress",
            "--hidden", "2", "--store", str(tmp_path / "store"), "--option", "mesh_targets=1")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout.strip().splitlines()[-1])
    got = {r["routine"]: r for r in s["routines"]}
    assert set(got) == {"phase_shifters", "crosstalk", "mesh", "readout", "activation"} and all(r["status"] == "ok" for r in got.values())
    for r in got.values():
        assert r["record"] and all(r["truth_error"]["within_tolerance"].values()), r
    assert got["phase_shifters"]["plots"] and got["mesh"]["plots"]
    assert got["phase_shifters"]["measurements"]["acquisitions"] > 0
