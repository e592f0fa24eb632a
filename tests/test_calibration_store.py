"""Calibration store: versioned NPZ + JSON records, automatic loading by the bench builder, and one clear
error line (or a warning, per config) for corrupted, foreign, other-instrument or too-old records."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import warnings

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.calibration.base import RunContext
from lightloop.calibration.runner import calibrate
from lightloop.calibration.store import CalibrationStore, CalibrationWarning
from lightloop.errors import CalibrationError

SIZES = (16, 10, 4)


def _cfg(free_space_cfg, store, seed=7, **cal):
    c = free_space_cfg.model_copy(deep=True)
    c.processor.twin.truth_seed = seed
    c.processor.calibration.store = str(store)
    for k, v in cal.items():
        setattr(c.processor.calibration, k, v)
    return c


def _build(cfg):
    return build_processor(cfg, SIZES[0], SIZES[-1], BuildOverrides(hidden=list(SIZES[1:-1])))


@pytest.fixture(scope="module")
def _template(tmp_path_factory):
    """One calibration of every routine of the seed-7 bench (made once per module)."""
    from lightloop.cli import default_config_path
    from lightloop.config import load_config

    root = tmp_path_factory.mktemp("template")
    cfg = _cfg(load_config(default_config_path()), root / "store")
    proc = _build(cfg)
    assert proc.calibration_log == []  # empty store: nominal maps
    outcomes = calibrate(proc, ["all"], RunContext(), CalibrationStore(root / "store"), cfg.bench)
    return root / "store", proc, outcomes


@pytest.fixture
def stored(free_space_cfg, tmp_path, _template):
    """A private copy of the template store; returns (cfg, calibrated processor (read-only), outcomes)."""
    src, proc, outcomes = _template
    shutil.copytree(src, tmp_path / "store")
    return _cfg(free_space_cfg, tmp_path / "store"), proc, outcomes


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_records_are_versioned_npz_plus_json(stored, tmp_path):
    cfg, proc, outcomes = stored
    root = tmp_path / "store" / cfg.bench
    for o in outcomes:
        files = sorted((root / o.routine).iterdir())
        assert [f.suffix for f in files] == [".json", ".npz"] and files[0].name.startswith("v0001_")
        meta = json.loads(files[0].read_text())
        for key in ("bench", "instruments", "created_utc", "routine_version", "fit", "counts", "layout", "npz_sha256"):
            assert key in meta
        assert meta["bench"] == cfg.bench and meta["layout"]["layer_sizes"] == list(SIZES)
        assert all(ident.startswith("lightloop,") for ident in meta["instruments"].values())
    # a second run of one routine adds v0002 and leaves v0001 alone
    calibrate(_build(cfg), ["homodyne"], RunContext(), CalibrationStore(tmp_path / "store"), cfg.bench)
    names = sorted(p.name[:5] for p in (root / "homodyne").glob("*.json"))
    assert names == ["v0001", "v0002"]


def test_builder_loads_the_newest_records_into_the_hal(stored):
    cfg, proc, outcomes = stored
    fresh = _build(cfg)
    assert [r["routine"] for r in fresh.calibration_log] == [o.routine for o in outcomes]
    np.testing.assert_array_equal(fresh.weights[0].lut.phase_rad, proc.weights[0].lut.phase_rad)
    np.testing.assert_array_equal(fresh.pre_taps[0].cal.gain_v, proc.pre_taps[0].cal.gain_v)
    np.testing.assert_array_equal(fresh.error_taps[0].cal.lo_phase_rad, proc.error_taps[0].cal.lo_phase_rad)
    assert fresh.pre_taps[1].lo_shift_rad == proc.pre_taps[1].lo_shift_rad != 0.0  # LO actuator re-set
    assert fresh.weights[0].efficiency == proc.weights[0].efficiency
    assert fresh.weights[1].fringing == proc.weights[1].fringing
    assert fresh.absorbers[0].map == proc.absorbers[0].map
    assert fresh.emulator.true_optical_depth(0) == pytest.approx(10.0, rel=0.03)  # set-point from the calibrated map


def test_corrupted_json_and_npz_give_one_clear_error(stored, tmp_path):
    cfg, _, _ = stored
    j = next((tmp_path / "store" / cfg.bench / "homodyne").glob("*.json"))
    text = j.read_text()
    j.write_text(text[: len(text) // 2])
    with pytest.raises(CalibrationError) as exc:
        _build(cfg)
    assert str(j) in _one_line(exc) and "invalid JSON" in str(exc.value)
    j.write_text(text)
    npz = j.with_suffix(".npz")
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    npz.write_bytes(bytes(blob))
    with pytest.raises(CalibrationError) as exc:
        _build(cfg)
    assert str(npz) in _one_line(exc) and "SHA-256" in str(exc.value)
    npz.unlink()
    with pytest.raises(CalibrationError, match="calibration arrays missing"):
        _build(cfg)


def test_other_bench_name(stored, tmp_path):
    cfg, _, _ = stored
    j = next((tmp_path / "store" / cfg.bench / "vapor_cell").glob("*.json"))
    meta = json.loads(j.read_text())
    meta["bench"] = "someone-elses-bench"
    j.write_text(json.dumps(meta))
    with pytest.raises(CalibrationError) as exc:
        _build(cfg)
    assert "bench: recorded on 'someone-elses-bench'" in _one_line(exc)
    # warn: a warning, and the foreign record is not applied (nominal vapor map, others loaded)
    wcfg = _cfg(cfg, tmp_path / "store", on_mismatch="warn")
    with pytest.warns(CalibrationWarning, match="someone-elses-bench"):
        proc = _build(wcfg)
    assert "vapor_cell" not in [r["routine"] for r in proc.calibration_log]
    assert "homodyne" in [r["routine"] for r in proc.calibration_log]


def test_other_instrument_serial(stored):
    cfg, _, _ = stored
    other = _cfg(cfg, cfg.processor.calibration.store, seed=8)  # another twin: other serial numbers
    with pytest.raises(CalibrationError) as exc:
        _build(other)
    msg = _one_line(exc)
    assert "instruments." in msg and "calibrated with 'lightloop," in msg and "T7" in msg and "T8" in msg


def test_other_layout_is_a_mismatch(stored):
    cfg, _, _ = stored
    with pytest.raises(CalibrationError, match=r"layout\.layer_sizes: calibrated for \[16, 10, 4\]"):
        build_processor(cfg, 16, 4, BuildOverrides(hidden=[12]))


def test_too_old_calibration(stored, tmp_path):
    cfg, _, _ = stored
    for j in (tmp_path / "store" / cfg.bench).glob("*/*.json"):
        meta = json.loads(j.read_text())
        meta["created_utc"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)).isoformat()
        j.write_text(json.dumps(meta))
    old = _cfg(cfg, tmp_path / "store", max_age_days=30)
    with pytest.raises(CalibrationError) as exc:
        _build(old)
    assert "days old, the config allows 30" in _one_line(exc)
    warn = _cfg(cfg, tmp_path / "store", max_age_days=30, on_mismatch="warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proc = _build(warn)
    assert sum(issubclass(w.category, CalibrationWarning) for w in caught) == 6
    assert len(proc.calibration_log) == 6  # stale but right bench: still applied, with a warning


def test_store_without_records_and_bad_arrays(free_space_cfg, tmp_path):
    cfg = _cfg(free_space_cfg, tmp_path / "nothing-here")
    assert _build(cfg).calibration_log == []
    store = CalibrationStore(tmp_path / "s")
    proc = _build(cfg)
    out = calibrate(proc, ["saturable_absorber"], RunContext(), store, cfg.bench)
    j = out[0].path
    meta = json.loads(open(j).read())
    meta["arrays"]["a0"]["shape"] = [7]
    open(j, "w").write(json.dumps(meta))
    with pytest.raises(CalibrationError, match=r"array 'a0': shape \[1\], metadata declares \[7\]"):
        store.read(j)
    with pytest.raises(CalibrationError, match="no calibration store"):
        CalibrationStore(None)
