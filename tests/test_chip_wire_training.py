"""The integrated chip through the real drivers against the wire-level twin (issue 12): same chip and physics as
the in-process twin, in-situ gradients that agree, training steps that track, transactions that do not grow with
the batch, the bench left safe."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.config import load_config
from lightloop.training.datasets import load_dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import make_optimizer

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from _chip_station import chip_wire_config  # noqa: E402
from test_wire_kit import clean_wire  # noqa: F401  (fixture)

TWIN = REPO / "lab_configs" / "integrated_chip.yaml"
WIRE = REPO / "lab_configs" / "wire_integrated_chip.yaml"


def _pair():
    wire = load_config(WIRE)
    wire.processor.calibration.store = None          # nominal maps on both (a local calibration must not leak in)
    return build_processor(load_config(TWIN), 2, 2), build_processor(wire, 2, 2)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_wire_chip_measures_like_the_in_process_chip(clean_wire):
    twin, wire = _pair()
    try:
        for a, b in zip(twin.emulator.truth.layers, wire.emulator.truth.layers):   # the same hidden chip
            np.testing.assert_array_equal(a.heaters.phi0, b.heaters.phi0)
        rng = np.random.default_rng(5)
        params = twin.init_parameters(rng, 1.0)
        x = rng.random((24, 2)).astype(np.float32)
        for proc in (twin, wire):
            proc.program(params)
        ft, fw = twin.forward(x), wire.forward(x)                # heaters reach the chip before the first read
        for a, b in zip(twin.emulator.volts, wire.emulator.volts):
            np.testing.assert_allclose(a, b, atol=1e-4)          # the Qontrol wire carries 4 decimals
        for a, b in zip(ft.pre + ft.post, fw.pre + fw.post):
            assert a.shape == b.shape
            assert np.max(np.abs(a - b)) <= 2e-3 * max(1.0, float(np.max(np.abs(a)))), np.max(np.abs(a - b))
        delta = (ft.pre[-1] - rng.random((24, 2))).astype(np.float32)
        gt, gw = twin.measure_phase_gradients(delta), wire.measure_phase_gradients(delta)
        for a, b in zip(gt, gw):
            assert _cos(a, b) > 0.995 and np.linalg.norm(a - b) <= 0.1 * np.linalg.norm(a)
        stats, server = wire.station.stats, wire.station.server
        heaters = server.endpoints["heaters"]                      # the config's limits reach the driver's cut-offs
        assert float(heaters.vmax.max()) <= 9.0 and float(heaters.imax.max()) <= 20.0   # V and mA (20 mA limit)
        for name in ("iq_awg", "scope", "laser", "ring_bias"):     # every message counted on both ends
            assert stats.per_instrument[name] == server.log.count(name), name
        # the heater driver pipelines one line per channel: a program() is a few round trips (read-back, ramp steps)
        # of 56 lines per bank each, whatever the mesh size
        t0, l0 = stats.per_instrument["heaters"], server.log.count("heaters")
        wire.program(twin.init_parameters(rng, 1.0))
        dt, dl = stats.per_instrument["heaters"] - t0, server.log.count("heaters") - l0
        assert 2 <= dt <= 8 and dl >= 56 * dt, (dt, dl)
        assert not server.log.violations
    finally:
        twin.close()
        wire.close()
    from lightloop.simulators.wire.free_space import twin_report

    rep = twin_report(server)                                       # the instruments' own state after close
    assert rep["safe"], rep["outputs"]
    eps = server.endpoints
    assert not eps["laser"].output and not eps["iq_awg"].outputs.any() and not eps["ring_bias"].outputs.any()
    assert float(np.max(eps["heaters"].volts)) == 0.0


def test_a_few_training_steps_through_the_drivers_track_the_in_process_twin(clean_wire):
    data = load_dataset("circles")
    twin, wire = _pair()
    try:
        params = twin.init_parameters(np.random.default_rng(0), 1.0)
        grad = make_gradient("adjoint")
        opt_t, opt_w = make_optimizer("adam", 0.03), make_optimizer("adam", 0.03)
        pt, pw = [p.copy() for p in params], [p.copy() for p in params]
        counts = []
        for step, batch in enumerate((32, 32, 32, 64, 64, 64)):   # two batch sizes: the cost must not follow them
            sl = slice(step * 64, step * 64 + batch)
            xb, tb = data.x_train[sl], np.eye(2, dtype=np.float32)[data.y_train[sl]]
            twin.program(pt)
            rt = grad(twin, pt, xb, tb)
            before = wire.station.stats.transactions
            wire.program(pw)
            rw = grad(wire, pw, xb, tb)
            counts.append(wire.station.stats.transactions - before)
            assert rw.loss == pytest.approx(rt.loss, rel=5e-3, abs=1e-4)
            for a, b in zip(rt.grads, rw.grads):
                assert _cos(np.ravel(a), np.ravel(b)) > 0.99
            opt_t.step(pt, rt.grads)
            opt_w.step(pw, rw.grads)
        # batch 32 and 64 cost the same; ramp steps of a phase wrap and rare range changes are the only variation
        assert max(counts) - min(counts) <= 8, counts
    finally:
        twin.close()
        wire.close()


def test_chip_calibration_through_the_drivers_recovers_the_truth_and_training_loads_it(tmp_path, capsys, clean_wire):
    import json

    from lightloop.cli import main

    cfg = chip_wire_config(tmp_path, 4, store=tmp_path / "store")
    code = main(["calibrate", "phase_shifters", "--config", str(cfg), "--json", "--no-plots", "--no-progress"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, out
    assert out["twin_truth"]["all_within_tolerance"] is True
    assert out["routines"][0]["status"] == "ok" and out["saved"]
    proc = build_processor(load_config(cfg), 2, 2)
    try:
        assert [r["routine"] for r in proc.calibration_log] == ["phase_shifters"]
        assert "calibration_loaded" in proc.summary_fields()
        # the loaded phi0 are the fitted ones, not the nominal zeros
        assert float(np.max(np.abs(proc.layers[0].bank.cal.phi0))) > 0.05
    finally:
        proc.close()
