"""Calibration store: versioned NPZ + JSON records, automatic loading by the bench builder, and one clear
error line (or a warning, per config) for corrupted, foreign, other-instrument or too-old records."""

from __future__ import annotations

import datetime as dt
import json
import os
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
    with pytest.raises(CalibrationError, match=r"array 'a0': shape \[1\], expected \[7\] as the metadata declares"):
        store.read(j)
    with pytest.raises(CalibrationError, match="no calibration store"):
        CalibrationStore(None)


# --- issue 11: store lock (defect 9) and paths that stay inside the store (defect 8) --------------------------
def _result(i, routine="homodyne"):
    from lightloop.calibration.base import CalibrationResult

    return CalibrationResult(routine=routine, version="1.0", arrays={"g": np.full(3, float(i))}, meta={"i": i})


_SAVER = """
import os, sys, time
from lightloop.calibration.base import CalibrationResult
from lightloop.calibration.store import CalibrationStore
import numpy as np
root, go, first, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print("ready", flush=True)
t0 = time.monotonic()
while not os.path.exists(go) and time.monotonic() - t0 < 60:
    time.sleep(0.005)
for i in range(first, first + n):
    CalibrationStore(root).save(CalibrationResult("homodyne", "1.0", arrays={"g": np.full(3, float(i))},
                                                  meta={"i": i}), "bench", {"layer_sizes": [1]})
"""


def test_concurrent_saves_from_threads_and_processes_get_distinct_versions_none_lost(tmp_path):
    import subprocess
    import sys
    import threading

    root, go = tmp_path / "store", tmp_path / "go"
    n_proc, n_threads, per = 3, 6, 6
    procs = [subprocess.Popen([sys.executable, "-c", _SAVER, str(root), str(go), str(1000 * (p + 1)), str(per)],
                              stdout=subprocess.PIPE, text=True) for p in range(n_proc)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    store = CalibrationStore(root)
    barrier = threading.Barrier(n_threads)
    failures = []

    def work(t):
        barrier.wait()
        try:
            for k in range(per):
                store.save(_result(10 * t + k), "bench", {"layer_sizes": [1]})
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    go.write_text("go")
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert failures == []
    paths = store.records("bench", "homodyne")
    recs = [store.read(p) for p in paths]                                   # every record complete and verified
    total = (n_proc + n_threads) * per
    assert sorted(r.meta["record_version"] for r in recs) == list(range(1, total + 1))
    assert sorted(int(p.name[1:5]) for p in paths) == list(range(1, total + 1))
    want = sorted([10 * t + k for t in range(n_threads) for k in range(per)]
                  + [1000 * (p + 1) + k for p in range(n_proc) for k in range(per)])
    assert sorted(r.meta["fit"]["i"] for r in recs) == want                 # none lost
    for r in recs:
        np.testing.assert_array_equal(r.arrays["g"], np.full(3, float(r.meta["fit"]["i"])))


def test_a_held_store_lock_is_a_bounded_wait_then_one_line(tmp_path):
    import time

    store = CalibrationStore(tmp_path / "store")
    store.lock_timeout = 0.3
    folder = store.routine_dir("bench", "homodyne")
    with store._locked(folder):                                             # another calibration is saving
        t0 = time.perf_counter()
        with pytest.raises(CalibrationError) as exc:
            store.save(_result(1), "bench", {})
        waited = time.perf_counter() - t0
    assert 0.25 <= waited < 5.0
    msg = _one_line(exc)
    assert str(folder) in msg and "store lock" in msg and "0.3 s" in msg
    assert store.records("bench", "homodyne") == []
    assert store.save(_result(2), "bench", {}).name.startswith("v0001_")   # free again


@pytest.mark.parametrize("name", ["../../escaped", "..", ".", "", "/etc", "a/../../b", "..\\..\\w", "x\x00y"])
def test_names_from_configs_stay_inside_the_store(tmp_path, name):
    store = CalibrationStore(tmp_path / "store")
    root = (tmp_path / "store").resolve()
    for p in (store.routine_dir(name, "homodyne"), store.routine_dir("bench", name), store.plot_dir(name, name)):
        assert p.resolve().is_relative_to(root) and p.resolve() != root
    saved = store.save(_result(1), name, {})
    assert saved.resolve().is_relative_to(root)


def test_containment_holds_even_for_a_sanitised_name_that_is_a_link_outside(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "linked").symlink_to(tmp_path / "outside")
    store = CalibrationStore(tmp_path / "store")
    with pytest.raises(CalibrationError) as exc:
        store.save(_result(1), "linked", {})
    assert "expected a folder inside" in _one_line(exc) and str((tmp_path / "store").resolve()) in str(exc.value)
    assert list((tmp_path / "outside").iterdir()) == []


def test_plot_titles_stay_inside_the_plot_folder(tmp_path):
    from lightloop.calibration.runner import save_plots

    res = _result(1)
    res.plots = [("../../evil", lambda fig: fig.add_subplot().plot([0, 1])),
                 ("homodyne_gains", lambda fig: fig.add_subplot().plot([1, 0]))]
    paths = save_plots(res, tmp_path / "plots")
    assert [os.path.basename(p) for p in paths] == ["evil.png", "homodyne_gains.png"]
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["evil.png", "homodyne_gains.png"]
    assert all(p.parent == tmp_path / "plots" for p in tmp_path.rglob("*.png"))


def test_calibrate_command_with_a_path_like_bench_name_writes_only_inside_the_store(tmp_path, monkeypatch, capsys):
    """The bench-name pattern in the schema is one defence; the store's containment must hold without it."""
    from lightloop import config as config_mod
    from lightloop.cli import main

    from conftest import REPO

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    cfg = work / "bench.yaml"
    cfg.write_text((REPO / "lab_configs" / "free_space_sa.yaml").read_text().replace(
        "  twin:\n", "  calibration:\n    store: cal-store\n  twin:\n"))
    real = config_mod.load_config
    monkeypatch.setattr(config_mod, "load_config",
                        lambda path: real(path).model_copy(update={"bench": "../../escaped"}))
    code = main(["calibrate", "homodyne", "--config", str(cfg), "--no-progress", "--hidden", "6", "--json"])
    assert code == 0, capsys.readouterr().err
    store = (work / "cal-store").resolve()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != cfg]
    assert written and all(p.resolve().is_relative_to(store) for p in written), written
    assert any(p.suffix == ".png" for p in written) and any(p.suffix == ".json" for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and sorted(p.name for p in work.iterdir()) == \
        ["bench.yaml", "cal-store"]
    assert (store / "escaped" / "homodyne").is_dir()                       # the sanitised name, inside the store
