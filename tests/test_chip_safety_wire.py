"""The chip station's safety guarantees on the wire-level twin (issue 12, item 5): every ending leaves laser, IQ
sources, heaters and ring biases safe; `lightloop safe` secures every chip instrument; a rebooted AWG is set up again
before the next acquisition; random HAL commands put nothing out of limits on the wire (small chip: hidden layer 4,
from benchmarks/_safety_sequences.py, shared with benchmarks/safety_property.py)."""

from __future__ import annotations

import io
import json
import logging
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from lightloop.bench import BuildOverrides, build_processor
from lightloop.cli import main
from lightloop.config import load_config
from lightloop.hal.chip_roles import FieldInjector
from lightloop.hal.frames import encode_iq

from conftest import REPO
from test_wire_kit import clean_wire  # noqa: F401  (fixture)

sys.path.insert(0, str(REPO / "benchmarks"))
import _safety_sequences as seq  # noqa: E402

SIZES = (2, seq.CHIP_HIDDEN, 2)


def live_outputs(server) -> list[str]:
    """Every chip output not in its safe state (all 40 AWG channels, every heater and bias channel)."""
    ep = server.endpoints
    laser, awg, heaters, bias = ep["laser"], ep["iq_awg"], ep["heaters"], ep["ring_bias"]
    out = []
    if laser.output or laser.current != 0.0:
        out.append(f"laser output={laser.output} current={laser.current}")
    if awg.outputs.any() or any(np.any(m) for m in awg.memory):
        out.append(f"AWG outputs {np.flatnonzero(awg.outputs) + 1}, non-zero sequences "
                   f"{[c + 1 for c, m in enumerate(awg.memory) if np.any(m)]}")
    if np.any(heaters.volts):
        out.append(f"heaters {heaters.volts.tolist()}")
    if np.any(bias.volts) or bias.outputs.any():
        out.append(f"ring biases {bias.volts.tolist()} relays {bias.outputs.tolist()}")
    return out


def assert_chip_safe(server) -> None:
    """Safe state reached, nothing unsafe seen on the wire, and the laser went dark before the IQ sources."""
    assert live_outputs(server) == [], live_outputs(server)
    assert server.log.violations == [], server.log.violations
    rec = server.log.records
    laser_off = max(i for i, r in enumerate(rec) if r.instrument == "laser" and r.command.upper().startswith("OUTP OFF"))
    awg_off = max(i for i, r in enumerate(rec) if r.instrument == "iq_awg" and r.command.upper().startswith("OUTP OFF"))
    assert laser_off < awg_off, "the safe sequence must switch the light off first"


# --- (1) every ending of a run --------------------------------------------------------------------------------
@pytest.fixture
def chip_run(tmp_path, monkeypatch, clean_wire):
    """`lightloop train` on the small chip config; yields (argv, servers) - the auto-started twins, kept for a look."""
    import lightloop.simulators.wire.integrated_chip as wire_chip

    servers = []
    start = wire_chip.start_chip_twin

    def capture(*a, **kw):
        servers.append(start(*a, **kw))
        return servers[-1]

    monkeypatch.setattr(wire_chip, "start_chip_twin", capture)
    def few_steps(data):                                     # big batches (few steps): taps integrate 16 x more
        for mon in data["roles"]["detectors"]["monitors"]:
            mon["volts_per_unit"] = 0.001

    cfg = seq.write_chip_config(tmp_path / "cfg", mutate=few_steps)
    argv = ["train", "--config", str(cfg), "--dataset", "circles", "--epochs", "1", "--batch-size", "512",
            "--out", str(tmp_path / "run"), "--no-progress"]
    return argv, servers


def test_a_normal_end_leaves_the_chip_safe(chip_run, capsys):
    argv, servers = chip_run
    assert main(argv + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["instruments"] == "wire-twin" and summary["steps_measured"] >= 2
    server = servers[0]
    assert any("SEQ:DATA" in c for c in server.log.commands("iq_awg"))               # it did drive the chip
    assert not server.running
    assert_chip_safe(server)


def test_an_exception_mid_step_leaves_the_chip_safe(chip_run, monkeypatch):
    from lightloop.hal.chip import ChipProcessor

    argv, servers = chip_run
    original, calls = ChipProcessor.program, []

    def program(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:                                 # the second training step (the first program: init)
            assert live_outputs(servers[0]), "the bench should be live mid-run"
            raise RuntimeError("injected fault mid-step")
        return original(self, *a, **kw)

    monkeypatch.setattr(ChipProcessor, "program", program)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert main(argv) == 1
    assert "internal error: RuntimeError: injected fault mid-step" in sys.stderr.getvalue()
    assert_chip_safe(servers[0])


def test_a_refused_over_range_injection_ends_the_run_safe(chip_run, monkeypatch):
    argv, servers = chip_run
    original = FieldInjector.inject

    def overdrive(self, fields):
        return original(self, fields * 100.0 + 11.0)       # beyond max_injection_field (10): SafetyLimitError

    monkeypatch.setattr(FieldInjector, "inject", overdrive)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert main(argv) == 2
    err = [ln for ln in sys.stderr.getvalue().splitlines() if ln.strip()]
    assert any(ln.startswith("lightloop: error:") and "exceeds max_field 10; nothing written" in ln for ln in err), err
    server = servers[0]
    assert not any(c.startswith("OUTP ON") for c in server.log.commands("iq_awg")[-8:])
    assert_chip_safe(server)


# --- (2) `lightloop safe` against a served chip twin ------------------------------------------------------------
def test_lightloop_safe_secures_every_chip_instrument(tmp_path, capsys, clean_wire):
    from lightloop.emulate_cli import _write_resolved
    from lightloop.simulators.chip_build import ChipDraw, make_chip_emulator
    from lightloop.simulators.wire.integrated_chip import start_chip_twin

    src = seq.write_chip_config(tmp_path / "cfg")
    cfg = load_config(src)
    p = cfg.processor
    server = start_chip_twin(cfg, SIZES, make_chip_emulator(p, SIZES, ChipDraw(chip_seed=p.chip.seed, noise_seed=0,
                                                                                ideal=True, precision="single")))
    proc = None
    try:
        resolved = tmp_path / "resolved.yaml"                # what `lightloop emulate --write-config` writes
        _write_resolved(src, resolved, server.addresses, SIZES, data=seq.chip_config_data())
        proc = build_processor(load_config(resolved), 2, 2)  # a run on the served twin: light every output ...
        rng = np.random.default_rng(3)
        proc.program(proc.init_parameters(rng, 1.0))
        proc.forward(rng.random((16, 2)).astype(np.float32))
        proc.activations[0].set_detuning(0.8)
        proc.layers[1].adjoint_source.inject(np.full((16, SIZES[1]), 0.5 + 0.5j, np.complex64))
        ep = server.endpoints
        assert ep["laser"].output and ep["iq_awg"].outputs.any() and np.any(ep["heaters"].volts)
        assert ep["ring_bias"].outputs.any() and np.any(ep["ring_bias"].volts)
        server.log.clear()                                   # ... then the process dies (kill -9: no safe state)
        capsys.readouterr()
        assert main(["safe", "--config", str(resolved)]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        states = {name: r["state"] for name, r in report["instruments"].items()}
        assert report["all_safe"] and list(states)[0] == "laser", states
        assert all(states[n] == "safe" for n in ("laser", "iq_awg", "heaters", "ring_bias")), states
        assert_chip_safe(server)
    finally:
        if proc is not None:
            proc.close()
        server.stop()


# --- (3) a rebooted AWG is set up again before the next acquisition -------------------------------------------
@pytest.fixture(scope="module")
def bench():
    logging.getLogger("lightloop.instruments").setLevel(logging.ERROR)
    b = seq.make_chip_bench("t")
    yield b
    b.close()


@pytest.fixture
def fresh(bench):
    """The bench in its safe state (pending scripted faults cancelled first), the laser on again."""
    for endpoint in bench.server.endpoints.values():
        endpoint.faults = type(endpoint.faults)()
    bench.proc.safe_state()
    bench.hal["laser"].on(0.12)
    bench.server.log.clear()
    return bench


def test_a_rebooted_awg_is_set_up_again_before_the_next_acquisition(fresh):
    proc, server, awg = fresh.proc, fresh.server, fresh.twins["iq_awg"]
    rng = np.random.default_rng(11)
    proc.program(proc.init_parameters(rng, 1.0))
    x = rng.random((24, 2)).astype(np.float32)
    before = proc.forward(x).post[-1]
    blocks = server.glue.blocks
    enc = next(b for b in blocks if b.kind == "encoder")
    want = encode_iq(proc.source.encode(x).astype(np.complex64), enc.full_scale_field, "encoder")
    outputs = awg.outputs.copy()
    awg.default_amplitude = 0.3                               # a power cycle brings other amplitudes back
    server.reboot("iq_awg")                                   # memory cleared, outputs off, IMM trigger, link closed
    server.log.clear()
    after = proc.forward(x).post[-1]
    rec = server.log.records
    first_dig = min(i for i, r in enumerate(rec) if r.instrument == "scope" and r.command.startswith("DIG"))
    setup = " ".join(r.command for r in rec[:first_dig] if r.instrument == "iq_awg")
    used = sorted({c for b in blocks for c in b.channels})
    for c in used:
        assert f"SOUR{c}:VOLT:AMPL 0.5" in setup, c           # amplitudes ...
    assert "TRIG:SOUR EXT" in setup                           # ... external trigger ...
    assert setup.count("SEQ:DATA (@") >= len(blocks)          # ... every block's sequence ...
    assert "OUTP ON" in setup                                 # ... and the outputs - all before the first DIG
    np.testing.assert_array_equal(awg.amplitude[[c - 1 for c in used]], 0.5)
    assert awg.trigger == "EXT" and awg.outputs[[c - 1 for c in enc.channels]].all()
    np.testing.assert_array_equal(awg.outputs, outputs)      # every output as the HAL left it
    np.testing.assert_array_equal(awg.sequence(enc.channels), want)
    np.testing.assert_allclose(after, before, rtol=0, atol=5e-3 * max(1.0, float(np.max(np.abs(before)))))
    assert server.log.violations == []


# --- (4) random HAL commands: nothing out of limits on the wire -------------------------------------------------
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seq.chip_sequences(awg_front_panel_max=0.5))          # amplitudes dialled in within the limit; see below
def test_no_unsafe_chip_command_reaches_the_wire(bench, commands):
    bench.server.log.clear()
    for cmd, arg in commands:
        seq.run_chip(bench, cmd, arg)
    report = seq.audit_chip(bench)
    assert report["out_of_limit"] == [] and report["unramped"] == [], report


# --- regressions of the gaps benchmarks/safety_property.py found ------------------------------------------------
def test_an_amplitude_dialled_above_the_limit_is_not_used_for_light(fresh):
    """Every upload sets the block's amplitudes in its own line, before the sequence plays (AWGFieldBlock)."""
    inj = fresh.hal["injectors"][0]
    fresh.twins["iq_awg"].front_panel(inj.port.channels[0], amplitude=0.9)
    seq.run_chip(fresh, "inject", (0, (8, 9.0, 5)))
    assert seq.audit_chip(fresh)["out_of_limit"] == []


def test_the_safe_state_opens_the_bias_relays_after_a_reboot(fresh):
    """A reconnect while the station secures the bench does not ramp outputs back to their run values (the restore
    hook of a voltage bank is skipped then), so ':OUTP OFF' is always sent."""
    seq.run_chip(fresh, "reboot", "ring_bias")                # power cycle: the link resets at the next command
    seq.run_chip(fresh, "front_bias", (1, 5.9, True))         # a bias channel outside the +-5 V limit, relay closed
    seq.run_chip(fresh, "safe", None)
    assert fresh.last_live == []


# --- found by the chip fault soak: a fault while the heater driver's VMAX is first narrowed -----------------------
def test_a_fault_while_narrowing_the_heater_limits_is_retried():
    from lightloop.drivers.qontrol_heater import QontrolHeater
    from lightloop.hal.safety import Range
    from lightloop.simulators.wire.qontrol_heater import QontrolTwin
    from lightloop.simulators.wire.server import WireTwinServer
    from lightloop.station import Link, ReconnectPolicy, TransactionStats
    from lightloop.station.adapters.qontrol_heater import QontrolHeaterDevice

    twin = QontrolTwin("heaters", 8, vmax=12.0)
    server = WireTwinServer([twin]).start()
    link = Link("heaters", "Qontrol heater", lambda: QontrolHeater(f"q_narrow_{id(twin)}",
                                                                    f"socket://127.0.0.1:{server.port('heaters')}",
                                                                    timeout=1.0),
                TransactionStats(), ReconnectPolicy(attempts=3, backoff_s=0.0)).open()
    try:
        server.drop("heaters", after=3)                      # the link resets on the third VMAX write
        QontrolHeaterDevice(link, Range(0.0, 9.0, "V"))
        assert link.reconnects == 1 and twin.vmax.max() <= 9.0, (link.reconnects, twin.vmax)
    finally:
        link.close()
        server.stop()


@pytest.mark.parametrize("vmax", [float("nan"), -9.9e37, 0.0])
def test_an_impossible_vmax_reading_at_connect_is_a_bad_reply_not_a_crash(vmax):
    from lightloop.drivers.qontrol_heater import QontrolHeater
    from lightloop.errors import InstrumentError
    from lightloop.simulators.wire.qontrol_heater import QontrolTwin
    from lightloop.simulators.wire.server import WireTwinServer
    from lightloop.station._link import is_bad_reply

    twin = QontrolTwin("heaters", 4, vmax=12.0)
    twin.vmax[2] = vmax                                       # what the twin's 'bad_reading' fault sends
    server = WireTwinServer([twin]).start()
    try:
        with pytest.raises(InstrumentError) as info:          # a bad reply Link.open retries (was a TypeError)
            QontrolHeater(f"q_vmax_{id(twin)}", f"socket://127.0.0.1:{server.port('heaters')}", timeout=1.0)
        assert is_bad_reply(info.value) and "VMAX2?" in str(info.value), str(info.value)
    finally:
        server.stop()
