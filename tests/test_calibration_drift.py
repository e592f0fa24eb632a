"""Twin drift (LO phases, vapor temperature) and re-calibration during training."""

from __future__ import annotations

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.calibration.base import RunContext
from lightloop.calibration.drift import ReadoutMonitor, RecalibrationHook
from lightloop.calibration.runner import calibrate
from lightloop.training.datasets import load_dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings


def _drifting(free_space_cfg, sizes=(16, 10, 4), lo=0.1, temp=0.3, ideal=False, common=0.0, **cal):
    c = free_space_cfg.model_copy(deep=True)
    c.processor.twin.drift.lo_phase_rad_per_sqrt_s = lo
    c.processor.twin.drift.lo_phase_common_rad_per_sqrt_s = common
    c.processor.twin.drift.cell_temperature_k_per_sqrt_s = temp
    c.processor.twin.drift.seed = 3
    if cal:
        from lightloop.benches.free_space import RecalibrationSettings

        c.processor.calibration.recalibrate = RecalibrationSettings(**cal)
    return build_processor(c, sizes[0], sizes[-1], BuildOverrides(hidden=list(sizes[1:-1]), ideal=ideal))


def test_drift_is_off_by_default_and_in_ideal_mode(free_space_cfg, make_bench):
    assert not make_bench((6, 4, 3), ideal=False).emulator.drift.active
    proc = _drifting(free_space_cfg, ideal=True)
    assert not proc.emulator.drift.active


def test_drift_is_a_seeded_random_walk_in_simulated_time(free_space_cfg):
    a, b = _drifting(free_space_cfg), _drifting(free_space_cfg)
    lo0 = a.emulator.truth.pre[0].lo_phase_rad.copy()
    off0 = a.emulator.truth.thermometer_offset_k.copy()
    x = np.random.default_rng(0).random((500, 16)).astype(np.float32)
    for p in (a, b):
        p.forward(x)  # 500 frames at 1 ms: 0.5 s of drift
    da = a.emulator.truth.pre[0].lo_phase_rad - lo0
    assert a.emulator.clock_s == pytest.approx(0.5)
    assert 0.01 < np.std(da) < 0.2  # 0.1 rad/sqrt(s) over 0.5 s: ~0.07 rad
    np.testing.assert_array_equal(da, b.emulator.truth.pre[0].lo_phase_rad - lo0)
    assert np.all(a.emulator.truth.thermometer_offset_k != off0)
    # exact resume: restoring a snapshot replays the same drift and noise
    snap = a.snapshot()
    y1 = [a.forward(x).output for _ in range(2)]
    a.restore(snap)
    y2 = [a.forward(x).output for _ in range(2)]
    np.testing.assert_array_equal(y1[1], y2[1])


def test_monitor_sees_drift_and_recalibration_recovers(free_space_cfg):
    from lightloop.simulators.free_space import Drift

    proc = _drifting(free_space_cfg, lo=0.02, common=0.15, temp=0.3)
    emu = proc.emulator
    drift, emu.drift = emu.drift, Drift()  # calibrate the bench still, then let it drift
    calibrate(proc, ["all"], RunContext())
    emu.drift = drift
    mon = ReadoutMonitor(proc)
    fresh = mon.measure()["max"]
    assert fresh < 0.04  # floor: 8-bit weights and detector noise
    emu.advance(100.0)  # 100 s later: LO phases ~1.5 rad off and the cell temperature ~3 K away
    assert mon.measure()["max"] > 0.3
    hook = RecalibrationHook(proc, ["lo_phase", "saturable_absorber"])
    hook.recalibrate(step=0, reason="test")
    assert mon.measure()["max"] < 0.05
    assert abs(proc.absorbers[0].optical_depth / emu.true_optical_depth(0) - 1) < 0.03
    # the LO actuators re-locked every array: true LO phases are back near zero
    assert max(np.abs(d.lo_phase_rad).max() for d in emu.truth.pre) < 0.3
    assert hook.events[0]["status"] == {"lo_phase": "ok", "saturable_absorber": "ok"}


def test_trainer_calls_hooks_and_config_wires_recalibration(free_space_cfg):
    data = load_dataset("iris")
    proc = _drifting(free_space_cfg, sizes=(4, 6, 3), lo=0.05, common=0.5, temp=0.5, check_every_steps=5,
                     max_check_error=0.08)
    assert isinstance(proc.recalibration, RecalibrationHook) and proc.step_hooks == [proc.recalibration]
    calibrate(proc, ["all"], RunContext())
    seen = []
    trainer = Trainer(proc, make_gradient("pump_probe"), make_optimizer("adam", 0.02),
                      TrainSettings(epochs=2, batch_size=16, progress=False), hooks=[seen.append])
    res = trainer.fit(data)
    steps = 2 * int(np.ceil(data.x_train.shape[0] / 16))
    assert [s["global_step"] for s in seen] == list(range(1, steps + 1))
    summary = proc.recalibration.summary()
    assert len(summary["checks"]) == steps // 5
    assert summary["recalibrations"] >= 1 and all(e["reason"].startswith("readout error") for e in summary["events"])
    assert np.isfinite(res.test_accuracy)
