"""Fault-injection mode of the wire twin and the station's answer to it: every fault kind is injected (seeded, counted)
and handled - bad replies retried on the same link, dropped or silent links reconnected, state lost in a reboot re-sent
before it is relied on, a fault that does not go away ends the run in the safe state with the checkpoint intact -
and a short soak with a few % faults trains to exactly the fault-free result (ideal twin)."""

from __future__ import annotations

import itertools
import json
import os
import socket

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.config import load_config
from lightloop.errors import ConfigError, InstrumentError
from lightloop.simulators.wire.free_space import twin_report
from lightloop.simulators.wire.power_meter import PowerMeterTwin
from lightloop.simulators.wire.server import FAULT_KINDS, FaultPlan, WireTwinServer
from lightloop.station import Link, ReconnectPolicy, TransactionStats
from lightloop.training.checkpoint import load_checkpoint
from lightloop.training.datasets import load_dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings

from test_wire_kit import WIRE_YAML, clean_wire, raw, write  # noqa: F401  (clean_wire: fixture)

_n = itertools.count()


def fast(d, faults=None, timeout="0.3 s"):
    """Wire config with short timeouts, quick reconnects (large budget) and optional emulator.faults."""
    for spec in d["instruments"].values():
        spec["timeout"] = timeout
        spec["reconnect"] = {"attempts": 3, "backoff": "5 ms", "budget": 1000}
    if faults is not None:
        d["emulator"]["faults"] = faults
    return d


def fit(proc, data, epochs=1, out=None, resume=False):
    trainer = Trainer(proc, make_gradient("pump_probe"), make_optimizer("adam", 0.005),
                      TrainSettings(epochs=epochs, batch_size=32, seed=0, progress=False), out_dir=out)
    return trainer.fit(data, resume=resume)


# --- the injector -------------------------------------------------------------------------------------------
def _ask(port, line, timeout=0.3):
    """One raw query: the reply line, None on silence, 'RESET' when the twin closed the link."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(line.encode() + b"\n")
        try:
            data = s.recv(4096)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return "RESET"
        return data.decode("latin-1").strip() if data else "RESET"


def test_every_fault_kind_is_injected_counted_and_seeded(clean_wire):
    pm = PowerMeterTwin("pm", power=lambda: 0.0125)
    with WireTwinServer([pm]) as srv:
        port = srv.port("pm")
        assert _ask(port, "MEAS:POW?") == "0.0125"
        for kind in FAULT_KINDS:
            pm.wavelength = 850.0
            srv.set_faults(FaultPlan(**{kind: 1.0}))
            reply = _ask(port, "MEAS:POW?")
            srv.set_faults(None)
            expected = {"drop": "RESET", "timeout": None, "reboot": "RESET"}
            if kind in expected:
                assert reply == expected[kind], kind
            elif kind == "garbage":
                with pytest.raises(ValueError):
                    float(reply)
            else:
                assert reply.lower() in ("nan", "9.9e37", "-9.9e37")
            assert pm.injected[kind] == 1, kind
            assert (pm.wavelength == 780.0) == (kind == "reboot")      # power-on defaults after a reboot only
        assert srv.fault_counts()["total"] == {k: 1 for k in FAULT_KINDS}
        assert _ask(port, "MEAS:POW?") == "0.0125"                     # faults off again

        def replies(seed):
            srv.set_faults(FaultPlan.uniform(0.5, seed=seed))
            return [_ask(port, "SENS:POW:RANG?", timeout=0.05) for _ in range(12)]

        assert replies(3) == replies(3) != replies(4)                   # one seeded stream per instrument
        srv.set_faults(FaultPlan(bad_reading=1.0))
        assert _ask(port, "*IDN?").startswith("lightloop")             # no number: a bad reading waits ...
        assert _ask(port, "SENS:POW:RANG?").lower() in ("nan", "9.9e37", "-9.9e37")   # ... for a numeric reply
    with pytest.raises(ValueError, match="sum <= 1"):
        FaultPlan(drop=0.7, reboot=0.7)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        FaultPlan(garbage=float("nan"))


# --- station handling ---------------------------------------------------------------------------------------
def _pm_link(srv, stats):
    from lightloop.drivers.power_meter import OpticalPowerMeter

    name = f"pm_{os.getpid()}_{next(_n)}"
    return Link("pm", "power meter", lambda: OpticalPowerMeter(f"{name}_{next(_n)}", f"TCPIP::127.0.0.1::{srv.port('pm')}::SOCKET",
                                                               visalib="@py", timeout=0.2),
                stats, ReconnectPolicy(attempts=3, backoff_s=0.001, budget=1000), sleep=lambda s: None).open()


def test_bad_replies_are_retried_and_lost_links_reconnected(clean_wire):
    from lightloop.station.adapters.power_meter import PowerMeterDevice

    pm = PowerMeterTwin("pm", power=lambda: 0.0125)
    with WireTwinServer([pm]) as srv:
        stats = TransactionStats()
        link = _pm_link(srv, stats)
        dev = PowerMeterDevice(link)
        try:
            srv.set_faults(FaultPlan(garbage=0.15, bad_reading=0.15, seed=1))
            assert all(dev.read_power() == 0.0125 for _ in range(40))
            assert stats.retries >= 5 and stats.reconnects == 0            # same link: no reconnect for garbage
            srv.set_faults(FaultPlan(drop=0.1, timeout=0.05, reboot=0.05, seed=2))
            assert all(dev.read_power() == 0.0125 for _ in range(30))
            assert stats.reconnects >= 3 and link.reconnects == stats.reconnects
            assert pm.injected["drop"] and pm.injected["timeout"] and pm.injected["reboot"]
            srv.set_faults(FaultPlan(bad_reading=1.0))                    # a reading that stays impossible
            with pytest.raises(InstrumentError) as info:
                dev.read_power()
            text = str(info.value)
            assert "power meter 'pm': MEAS:POW?: still bad after 3 retries; run stopped" in text and "\n" not in text
        finally:
            link.close()


def test_reboot_behind_the_back_is_noticed_and_lost_state_resent(tmp_path, clean_wire):
    cfg = load_config(write(tmp_path, fast(raw())))
    proc = build_processor(cfg, 4, 3, BuildOverrides(hidden=[8], ideal=True))
    srv, emu = proc.station.server, proc.emulator
    rng = np.random.default_rng(0)
    params = [rng.normal(0, 0.3, s).astype(np.float32) for s in proc.parameter_shapes()]
    x = rng.random((20, 4)).astype(np.float32)
    with proc:
        proc.program(params)
        ref = proc.forward(x)
        weights, gains = [w.copy() for w in emu.weights], list(emu.gain)
        for name in ("w1_slm", "amplifiers", "scope"):
            srv.reboot(name)                       # power glitch: no command of ours was in flight
        assert not np.array_equal(emu.weights[0], weights[0]) and emu.gain[0] != gains[0]
        proc.program(params)                       # same parameters: nothing new to upload, yet the state is back
        out = proc.forward(x)
        assert np.array_equal(emu.weights[0], weights[0]) and list(emu.gain) == gains
        for a, b in zip(ref.pre + ref.post, out.pre + out.post):
            np.testing.assert_array_equal(a, b)
        assert {n: proc.station.links[n].reconnects for n in ("w1_slm", "amplifiers", "scope")} == \
               {"w1_slm": 1, "amplifiers": 1, "scope": 1}
    assert srv.log.violations == []


def test_dmd_reboot_is_a_reconnect_and_the_frame_is_uploaded_again(clean_wire):
    from lightloop.drivers.dmd import DMDController
    from lightloop.hal.free_space_roles import DMDWeightBlock
    from lightloop.simulators.free_space import DMDWeightTwin, FreeSpaceEmulator, FreeSpaceTruth, Imperfections
    from lightloop.simulators.wire.dmd import LoopbackALP, dmd_weight_sink
    from lightloop.station import BenchClock
    from lightloop.station.adapters.dmd import DMDWeightBlocks

    sizes, k = (6, 4, 3), 4
    emus = [FreeSpaceEmulator(sizes, FreeSpaceTruth.draw(sizes, 1, Imperfections(), dmd_block_pixels=k)) for _ in range(2)]
    sdk = LoopbackALP(16, 48, dmd_weight_sink(DMDWeightTwin(emus[0], 0), (4, 6), k))
    stats = TransactionStats()
    link = Link("dmd1", "DMD", lambda: DMDController(f"dmd1_{os.getpid()}_{next(_n)}", "/opt/alp/alpV42.dll",
                                                     loader=sdk.loader), stats).open()
    try:
        wire = DMDWeightBlock(DMDWeightBlocks(link, BenchClock(), (4, 6), k, fixed_gain=2.0), (4, 6))
        ref = DMDWeightBlock(DMDWeightTwin(emus[1], 0), (4, 6))
        emus[0].set_amplifier_gain(0, 2.0)
        w = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)
        wire.write(w)
        ref.write(w)
        sdk.reboot()                                    # mirrors off, device offline
        assert not np.allclose(emus[0].weights[0], emus[1].weights[0])
        wire.write(-w)                                  # ALP_NOT_ONLINE -> reconnect -> old frame, then the new one
        ref.write(-w)
        np.testing.assert_allclose(emus[0].weights[0], emus[1].weights[0], rtol=1e-6)
        assert link.reconnects == 1 and sdk.allocated
    finally:
        link.close()


def test_fault_that_persists_ends_safe_with_checkpoint_intact(tmp_path, clean_wire):
    data = load_dataset("iris")
    cfg = load_config(write(tmp_path, fast(raw())))
    out = tmp_path / "run"
    proc = build_processor(cfg, data.n_features, data.n_classes, BuildOverrides(hidden=[8], ideal=True))
    srv = proc.station.server

    def scope_goes_bad(info):
        if info["epoch"] == 2 and info["step"] == 1:
            srv.set_faults(FaultPlan(garbage=1.0, instruments=("scope",)))

    proc.step_hooks.append(scope_goes_bad)
    try:
        with pytest.raises(InstrumentError) as info:
            fit(proc, data, epochs=3, out=out)
        text = str(info.value)
        assert "digitizer 'scope'" in text and "still bad after 3 retries; run stopped" in text and "\n" not in text
        assert proc.station.safe_state_failures == []
    finally:
        proc.close()
    rep = twin_report(srv)
    assert rep["safe"] and rep["violations"] == [] and rep["faults"]["scope"]["garbage"] == 4
    assert rep["client"]["retries"] == 3
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt["epoch"] == 1 and [h["epoch"] for h in ckpt["history"]] == [1]


def test_short_soak_with_faults_equals_the_fault_free_run(tmp_path, clean_wire, monkeypatch):
    data = load_dataset("iris")
    report = tmp_path / "twin.jsonl"
    monkeypatch.setenv("LIGHTLOOP_WIRE_REPORT", str(report))
    monkeypatch.delenv("LIGHTLOOP_FAULT_SEED", raising=False)
    results = {}
    for name, faults in (("clean", None), ("faults", {"rate": 0.04, "seed": 11})):
        proc = build_processor(load_config(write(tmp_path, fast(raw(), faults), f"{name}.yaml")),
                               data.n_features, data.n_classes, BuildOverrides(hidden=[8], ideal=True))
        with proc:
            results[name] = fit(proc, data, epochs=2)
    clean, faulted = (json.loads(line) for line in report.read_text().splitlines())
    assert sum(clean["faults"]["total"].values()) == 0
    injected = faulted["faults"]["total"]
    assert sum(injected.values()) >= 10 and sum(v > 0 for v in injected.values()) >= 4, injected
    assert faulted["client"]["retries"] > 0 and faulted["client"]["reconnects"] > 0
    assert faulted["violations"] == [] and faulted["safe"] and clean["safe"]
    for a, b in zip(results["clean"].params, results["faults"].params):
        np.testing.assert_array_equal(a, b)
    assert [h["test_accuracy"] for h in results["clean"].history] == [h["test_accuracy"] for h in results["faults"].history]


# --- configuration and flags --------------------------------------------------------------------------------
@pytest.mark.parametrize("faults, field", [
    ({"rate": 1.5}, "emulator.faults.rate"),
    ({"drop": -0.1}, "emulator.faults.drop"),
    ({"timeout": 0.6, "reboot": 0.6}, "emulator.faults"),
    ({"seed": -3}, "emulator.faults.seed"),
    ({"garbage": "often"}, "emulator.faults.garbage"),
    ({"flood": 0.1}, "emulator.faults.flood"),
])
def test_bad_faults_section_is_one_line_naming_the_field(tmp_path, faults, field):
    d = raw()
    d["emulator"]["faults"] = faults
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, d))
    text = str(info.value)
    assert field in text and "bench.yaml" in text and "\n" not in text


def test_faults_naming_an_unserved_instrument_is_refused(tmp_path, clean_wire):
    cfg = load_config(write(tmp_path, fast(raw(), {"rate": 0.01, "instruments": ["scope", "oscilloscope"]})))
    with pytest.raises(ConfigError, match=r"emulator.faults.instruments: \['oscilloscope'\] are not served"):
        build_processor(cfg, 4, 3, BuildOverrides(hidden=[8]))


@pytest.mark.parametrize("flags, message", [
    (["--fault-rate", "1.5"], "--fault-rate: 1.5; expected a probability in [0, 1]"),
    (["--fault-rate", "nan"], "--fault-rate: nan; expected a probability in [0, 1]"),
    (["--faults", "flood=0.1"], "--faults: unknown kind 'flood'"),
    (["--faults", "drop=lots"], "--faults: 'drop=lots'; expected drop=P"),
    (["--faults", "drop=0.6,reboot=0.6"], "probabilities sum to 1.2"),
    (["--fault-seed", "-1"], "--fault-seed: -1; expected an integer >= 0"),
])
def test_emulate_fault_flags_are_checked(flags, message, capsys, clean_wire):
    from lightloop.cli import main

    assert main(["emulate", "--config", str(WIRE_YAML), "--layer-sizes", "4", "8", "3", "--duration", "0", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightloop: error: ") and message in err[0]


def test_emulate_serves_with_faults(capsys, clean_wire):
    from lightloop.cli import main

    assert main(["emulate", "--config", str(WIRE_YAML), "--layer-sizes", "4", "8", "3", "--duration", "0.1",
                 "--fault-rate", "0.05", "--faults", "reboot=0", "--fault-seed", "9"]) == 0
    cap = capsys.readouterr()
    first = json.loads(cap.out.strip().splitlines()[0])
    assert first["faults"] == {"drop": 0.01, "timeout": 0.01, "garbage": 0.01, "bad_reading": 0.01, "reboot": 0.0,
                               "seed": 9}
    stopped = json.loads(cap.err.strip().splitlines()[-1])
    assert stopped["faults"] == {k: 0 for k in FAULT_KINDS} and stopped["violations"] == []
