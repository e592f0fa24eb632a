"""Training through the real drivers against the wire-level twin: same physics as the in-process twin, bounded
transactions per step, reconnect after a drop, safe stop with the checkpoint intact, `lightloop emulate`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.config import load_config
from lightloop.errors import InstrumentError
from lightloop.training.checkpoint import load_checkpoint
from lightloop.training.datasets import load_dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings

from conftest import REPO
from test_wire_kit import WIRE_YAML, clean_wire, raw, wire_config, write  # noqa: F401  (clean_wire: fixture)

LSB14 = 20.0 / 2**14   # one step of the twin's 14-bit homodyne ADC (V)


def fit(proc, data, epochs=1, out=None, resume=False, seed=0):
    trainer = Trainer(proc, make_gradient("pump_probe"), make_optimizer("adam", 0.005),
                      TrainSettings(epochs=epochs, batch_size=32, seed=seed, progress=False), out_dir=out)
    return trainer.fit(data, resume=resume)


def laser_off(commands):
    """The laser's safe sequence ended the log: output off first, then the set-point to 0 A (read-backs may follow)."""
    heads = [c.split(";")[0] for c in commands if not _query(c)]
    return heads[-2:] == ["OUTP OFF", "SOUR:CURR 0"]


def _query(command):
    """True for a pure query (every part of a compound command ends with '?')."""
    return all(part.strip().endswith("?") for part in command.split(";"))


def heater_off(commands):
    """The heater's last command that is not a query switched its output off."""
    return [c for c in commands if not _query(c)][-1:] == ["OUTP OFF"]


def fast_reconnect(d):
    for spec in d["instruments"].values():
        spec["reconnect"] = {"attempts": 2, "backoff": "10 ms", "budget": 10}


def test_wire_twin_answers_like_the_in_process_twin(clean_wire):
    twin = build_processor(load_config(REPO / "lab_configs" / "free_space_sa.yaml"), 64, 10, BuildOverrides(hidden=[16]))
    wire = build_processor(load_config(WIRE_YAML), 64, 10, BuildOverrides(hidden=[16]))
    try:
        np.testing.assert_array_equal(wire.emulator.truth.efficiency, twin.emulator.truth.efficiency)
        assert wire.emulator.cell_temperature_k[0] == pytest.approx(twin.emulator.cell_temperature_k[0], abs=1e-4)
        rng = np.random.default_rng(3)
        params = [rng.normal(0, 0.2, (16, 64)).astype(np.float32), rng.normal(0, 0.2, (10, 16)).astype(np.float32)]
        x = rng.random((40, 64)).astype(np.float32)
        for proc in (twin, wire):
            proc.program(params)
        for a, b in zip(twin.emulator.weights, wire.emulator.weights):
            np.testing.assert_array_equal(a, b)                       # 8-bit gray levels survive the wire exactly
        ft, fw = twin.forward(x), wire.forward(x)
        for a, b in zip(ft.pre + ft.post, fw.pre + fw.post):
            assert a.shape == b.shape and np.max(np.abs(a - b)) <= LSB14 * 1.001   # 16-bit input codes: <= 1 ADC step
        delta = rng.normal(size=(40, 10)).astype(np.float32)
        for a, b in zip(twin.backward(delta), wire.backward(delta)):
            assert np.max(np.abs(a - b)) <= 1e-3 * np.max(np.abs(a)) + 1e-6
        stats, server = wire.station.stats, wire.station.server
        assert stats.transactions == server.log.count()               # every message counted on both ends
    finally:
        twin.close()
        wire.close()
    assert not server.running
    assert server.log.violations == []


def test_wire_training_matches_the_twin_with_bounded_transactions(clean_wire):
    data = load_dataset("digits")
    ov = BuildOverrides(hidden=[16])
    twin = build_processor(load_config(REPO / "lab_configs" / "free_space_sa.yaml"), data.n_features, data.n_classes, ov)
    with twin:
        ref = fit(twin, data)
    wire = build_processor(load_config(WIRE_YAML), data.n_features, data.n_classes, ov)
    server = wire.station.server
    with wire:
        res = fit(wire, data)
        s = wire.summary_fields()
    assert abs(res.test_accuracy - ref.test_accuracy) <= 0.03, (res.test_accuracy, ref.test_accuracy)
    # 2 weight frames + input frame + DIG/*OPC? + 3 taps x (WAV:SOUR, WAV:PRE?, WAV:DATA?) + probe frame + DIG/*OPC?
    # + 1 tap transfer = 20, + 6 for the -delta probe of the differential readout (its frame, trigger and error-tap
    # transfer) = 26; the short last batch adds one ACQ:POIN
    steps = s["steps_measured"]
    assert s["instruments"] == "wire-twin" and steps == 44
    assert s["transactions_per_step"] == pytest.approx(26 + 1 / steps)
    assert 0 < s["overhead_seconds_per_step"] < s["instrument_seconds_per_step"] + 1.0
    assert s["reconnects"] == 0 and wire.station.stats.transactions == server.log.count()
    # close() left every output safe: laser off first, heater off, control voltages 0 V and relays open
    assert laser_off(server.log.commands("laser"))
    assert heater_off(server.log.commands("cell1_tc")) and server.endpoints["cell1_tc"].output is False
    assert server.log.commands("amplifiers")[-2:] == [":SOUR:VOLT 0,0,(@1,2);*OPC?", ":OUTP OFF,(@1,2)"]
    assert server.log.violations == [] and not server.running


def test_dropped_instrument_is_reconnected_and_the_run_completes(tmp_path, clean_wire):
    data = load_dataset("iris")
    proc = build_processor(wire_config(tmp_path, fast_reconnect), data.n_features, data.n_classes, BuildOverrides(hidden=[8]))
    server = proc.station.server
    with proc:
        server.drop("scope", after=30)            # mid-run, in the middle of an acquisition
        server.drop("w1_slm", after=3, refuse=1)  # and a weight SLM that also refuses the first reconnect
        res = fit(proc, data, epochs=2)
        s = proc.summary_fields()
    assert res.epochs == 2 and np.isfinite(res.test_accuracy)
    assert s["reconnects"] == 2 and proc.station.links["scope"].reconnects == 1


def _eventually(cond, timeout=5.0):
    """True once cond() holds, polling for up to `timeout` s."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_instrument_that_stays_down_stops_the_run_safe_with_checkpoint_intact(tmp_path, clean_wire):
    data = load_dataset("iris")
    cfg_path = write(tmp_path, (lambda d: (fast_reconnect(d), d)[1])(raw()), "wire.yaml")
    out = tmp_path / "run"
    proc = build_processor(load_config(cfg_path), data.n_features, data.n_classes, BuildOverrides(hidden=[8]))
    server = proc.station.server

    def kill_scope(info):
        if info["epoch"] == 2 and info["step"] == 1:
            server.drop("scope", after=2, refuse=1000)   # gone for good

    proc.step_hooks.append(kill_scope)
    try:
        with pytest.raises(InstrumentError) as err:
            fit(proc, data, epochs=3, out=out)
        text = str(err.value)
        assert "digitizer 'scope'" in text and "2 reconnect attempt(s) failed; run stopped" in text and "\n" not in text
        assert proc.station.safe_state_failures == []
        # set commands get no reply: give the server thread time to process what is already on the wire
        assert _eventually(lambda: laser_off(server.log.commands("laser")))
        assert _eventually(lambda: heater_off(server.log.commands("cell1_tc")))
        assert server.endpoints["laser"].output is False and server.endpoints["cell1_tc"].output is False
        assert not server.endpoints["amplifiers"].outputs.any()
        for slm in ("input_slm", "probe_slm"):
            assert np.all(server.endpoints[slm].last == 2**15)      # sources dark
    finally:
        proc.close()
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1
    # the instrument is back: resume from the intact checkpoint
    proc = build_processor(load_config(cfg_path), data.n_features, data.n_classes, BuildOverrides(hidden=[8]))
    with proc:
        res = fit(proc, data, epochs=3, out=out, resume=True)
    assert res.epochs == 3 and [h["epoch"] for h in res.history] == [1, 2, 3]


def test_cli_train_and_emulate(tmp_path, clean_wire, capsys):
    from lightloop.cli import main

    env = {**os.environ, "LIGHTLOOP_OFFLINE": "1"}
    resolved = tmp_path / "resolved.yaml"
    emu = subprocess.Popen([sys.executable, "-m", "lightloop", "emulate", "--config", str(WIRE_YAML),
                            "--layer-sizes", "4", "8", "3", "--duration", "120", "--write-config", str(resolved)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        first = json.loads(emu.stdout.readline())
        assert set(first["addresses"]) == set(raw()["instruments"]) and resolved.is_file()
        assert all("127.0.0.1" in a for a in first["addresses"].values())
        capsys.readouterr()
        code = main(["train", "--config", str(resolved), "--dataset", "iris", "--hidden", "8", "--epochs", "1",
                     "--json", "--no-progress", "--out", str(tmp_path / "run")])
        out = capsys.readouterr()
        assert code == 0, out.err
        s = json.loads(out.out.strip().splitlines()[-1])
        assert s["instruments"] == "drivers" and s["transactions_per_step"] >= 26 and s["overhead_seconds_per_step"] > 0
    finally:
        emu.send_signal(signal.SIGTERM)
        _, err = emu.communicate(timeout=30)
    assert emu.returncode == 0, err
    stopped = json.loads(err.strip().splitlines()[-1])
    assert stopped["violations"] == [] and stopped["commands"] > 100
    assert main(["emulate", "--config", str(WIRE_YAML)]) == 2
    assert "lightloop: error: --layer-sizes: missing" in capsys.readouterr().err


def test_dmd_adapter_through_the_sdk_stand_in(clean_wire):
    from lightloop.station import BenchClock, Link, TransactionStats
    from lightloop.station.adapters.dmd import DMDWeightBlocks
    from lightloop.drivers.dmd import DMDController
    from lightloop.hal.free_space_roles import DMDWeightBlock
    from lightloop.simulators.free_space import DMDWeightTwin, FreeSpaceEmulator, FreeSpaceTruth, Imperfections
    from lightloop.simulators.wire.dmd import LoopbackALP, dmd_weight_sink

    sizes, k = (6, 4, 3), 4
    emus = [FreeSpaceEmulator(sizes, FreeSpaceTruth.draw(sizes, 1, Imperfections(), dmd_block_pixels=k)) for _ in range(2)]
    sdk = LoopbackALP(16, 48, dmd_weight_sink(DMDWeightTwin(emus[0], 0), (4, 6), k))
    stats = TransactionStats()
    link = Link("dmd1", "DMD", lambda: DMDController(f"dmd1_{os.getpid()}", "/opt/alp/alpV42.dll", loader=sdk.loader),
                stats).open()
    try:
        wire = DMDWeightBlock(DMDWeightBlocks(link, BenchClock(), (4, 6), k, fixed_gain=2.0), (4, 6))
        ref = DMDWeightBlock(DMDWeightTwin(emus[1], 0), (4, 6))
        emus[0].set_amplifier_gain(0, 2.0)              # the hand-set amplifier of `fixed_gain`
        w = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)
        wire.write(w)
        ref.write(w)
        wire.write(w)                                    # unchanged frame: no second upload
        np.testing.assert_allclose(emus[0].weights[0], emus[1].weights[0], rtol=1e-6)
        assert sdk.frames == 1 and stats.transactions == 1
        sdk.fail_next["AlpSeqPut"] = 1003
        with pytest.raises(InstrumentError, match=r"DMD 'dmd1_\d+' .*AlpSeqPut returned 1003; expected ALP_OK"):
            wire.write(-w)
    finally:
        link.close()
    assert not sdk.allocated


def test_phase_shifters_through_the_qontrol_driver_on_the_wire(clean_wire):
    """Chip heaters: PhaseShifterBank -> SafeVoltageBank view -> Qontrol driver -> socket:// -> twin -> chip emulator."""
    from lightloop.station import Link, TransactionStats
    from lightloop.station.adapters.qontrol_heater import QontrolHeaterDevice
    from lightloop.drivers.qontrol_heater import QontrolHeater
    from lightloop.errors import SafetyLimitError
    from lightloop.hal.phase_shifters import PhaseShifterBank
    from lightloop.hal.safety import RampPolicy, Range, SafeVoltageBank
    from lightloop.simulators.wire.qontrol_heater import QontrolTwin
    from lightloop.simulators.wire.server import WireTwinServer

    chip = build_processor(load_config(REPO / "lab_configs" / "integrated_chip.yaml"), 2, 2, BuildOverrides())
    emu, layers = chip.emulator, chip.layers
    sizes = [lay.bank.n_channels for lay in layers]
    offsets = np.cumsum([0, *sizes])

    def to_chip(volts):
        for i in range(len(sizes)):
            emu.set_heater_volts(i, volts[offsets[i]:offsets[i + 1]])

    twin = QontrolTwin("heaters", int(offsets[-1]), resistance_ohm=1000.0, vmax=12.0, on_change=to_chip,
                       envelope=(0.0, 9.0), max_step_envelope=20.0 * 0.02)
    stats = TransactionStats()
    with WireTwinServer([twin]) as server:
        link = Link("heaters", "Qontrol heater", lambda: QontrolHeater(
            f"heaters_{os.getpid()}", f"socket://127.0.0.1:{server.port('heaters')}"), stats).open()
        try:
            dev = QontrolHeaterDevice(link, Range(0, 9.0, "V"))
            bank = SafeVoltageBank(dev, Range(0, 9.0, "V"), RampPolicy(20.0, 0.02), sleep=lambda s: None)
            phase_banks = [PhaseShifterBank(bank.view(int(offsets[i]), n), lay.bank.cal, 9.0)
                           for i, (n, lay) in enumerate(zip(sizes, layers))]
            phases = np.random.default_rng(0).uniform(0, 2 * np.pi, sizes[0])
            volts = phase_banks[0].set_phases(phases)
            np.testing.assert_allclose(emu.volts[0], volts, atol=1e-4)         # 4-decimal wire format
            np.testing.assert_allclose(phase_banks[0].read_voltages(), volts, atol=1e-4)
            with pytest.raises(SafetyLimitError):
                phase_banks[1].set_voltages(np.full(sizes[1], 9.5))
            phase_banks[0].safe_state()
            assert np.all(emu.volts[0] == 0.0) and server.log.violations == []
        finally:
            link.close()
            chip.close()
