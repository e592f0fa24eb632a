"""The integrated chip's wire twin: what the real QCoDeS drivers send reaches the ChipEmulator as the station contract
says (lightloop/simulators/wire/integrated_chip.py), a DIG returns what the emulator reads, and `lightloop emulate`
serves both chip configs."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lightloop.config import parse_config
from lightloop.drivers.awg import IQArbitraryWaveformGenerator
from lightloop.drivers.digitizer import Digitizer
from lightloop.drivers.laser_controller import LaserDiodeController
from lightloop.drivers.qontrol_heater import QontrolHeater
from lightloop.drivers.scpi_source import ScpiSource
from lightloop.errors import ConfigError
from lightloop.hal.frames import IQ_CODE_MAX, decode_iq
from lightloop.simulators.chip_build import ChipDraw, make_chip_emulator
from lightloop.simulators.wire.integrated_chip import start_chip_twin, twin_report
from lightloop.simulators.wire.server import FaultPlan

from test_wire_kit import clean_wire, raw, write  # noqa: F401  (clean_wire: fixture)
from conftest import REPO

CHIP_WIRE = REPO / "lab_configs" / "wire_integrated_chip.yaml"
CHIP_TWIN = REPO / "lab_configs" / "integrated_chip.yaml"
SIZES = (2, 8, 2)
ENC, INJ0, ADJ0, ADJ1 = range(1, 9), range(9, 17), range(25, 33), range(33, 41)
LSB = 40.0 / 2 ** 16                                              # digitiser step at the 40 V range used here
_n = itertools.count()


def chip_cfg(tmp_path: Path, mutate=None):
    data = raw(CHIP_WIRE)
    if mutate is not None:
        mutate(data)
    return parse_config(data, str(write(tmp_path, data, "chip.yaml")))


def emulator(cfg):
    p = cfg.processor
    return make_chip_emulator(p, SIZES, ChipDraw(chip_seed=p.chip.seed, noise_seed=p.chip.noise_seed,
                                                 ideal=p.chip.ideal, precision=p.chip.precision))


class _Bench(SimpleNamespace):
    """cfg, emu, server; the drivers (awg, heaters, bias, laser, scope) connect on first use."""

    def __getattr__(self, name):
        if name not in _DRIVERS:
            raise AttributeError(name)
        cls, instrument, kw = _DRIVERS[name]
        address = self.server.address(instrument)
        driver = cls(f"{name}_{os.getpid()}_{next(_n)}", address, timeout=2, **kw)
        self.drivers.append(driver)
        if name == "scope":
            for ch in driver.channels:
                ch.range(40.0)
        setattr(self, name, driver)
        return driver


_DRIVERS = {"awg": (IQArbitraryWaveformGenerator, "iq_awg", {"visalib": "@py", "n_channels": 40}),
            "heaters": (QontrolHeater, "heaters", {"n_channels": 112}),
            "bias": (ScpiSource, "ring_bias", {"visalib": "@py", "n_channels": 8}),
            "laser": (LaserDiodeController, "laser", {"visalib": "@py"}),
            "scope": (Digitizer, "scope", {"visalib": "@py", "n_channels": 9})}


@pytest.fixture
def chip(tmp_path, clean_wire):
    """Factory: chip(mutate=None) -> bench (cfg, emu, server, and the drivers on first use) on a served twin."""
    made = []

    def make(mutate=None):
        cfg = chip_cfg(tmp_path, mutate)
        emu = emulator(cfg)
        ns = _Bench(cfg=cfg, emu=emu, server=start_chip_twin(cfg, SIZES, emu), drivers=[])
        made.append(ns)
        return ns

    yield make
    for ns in made:
        for d in ns.drivers:
            d.close()
        ns.server.stop()


def laser_to(b, amps: float) -> None:
    """Ramp the laser in steps of at most 40 mA (the config's ramp step) with the output on."""
    b.laser.output(True)
    now = b.laser.current()
    for i in np.linspace(now, amps, int(np.ceil(abs(amps - now) / 0.04 - 1e-9)) + 1)[1:]:
        b.laser.current(float(i))
    assert b.laser.current() == pytest.approx(amps)              # a query: the writes before it are served


def laser_off(b) -> None:
    b.laser.output(False)
    assert b.laser.output() is False


def codes(batch: int, n: int, peak: float, fs: float, seed: int = 0) -> np.ndarray:
    """Random IQ codes (batch, n, 2) of complex fields |E| <= `peak` on a full scale `fs`."""
    rng = np.random.default_rng(seed)
    e = peak * np.sqrt(rng.uniform(0, 1, (batch, n))) * np.exp(2j * np.pi * rng.uniform(0, 1, (batch, n)))
    return np.rint(np.stack([e.real, e.imag], -1) / fs * IQ_CODE_MAX).astype(np.int16)


def test_the_stored_encoder_sequence_is_the_input_batch_scaled_by_the_laser_and_the_outputs_gate_it(chip):
    b = chip()
    emu, fs = b.emu, b.cfg.roles.encoder.full_scale_field
    src = emu.truth.source.astype(emu.cdtype)
    c = codes(32, 8, 3.0, fs)
    b.awg.upload(c, list(ENC))
    want = c[..., 0] / IQ_CODE_MAX * fs + 1j * c[..., 1] / IQ_CODE_MAX * fs
    assert emu.inputs.shape == (32, 8) and not np.any(emu.inputs) and not emu.forward_on    # laser off: dark
    laser_to(b, 0.12)                                             # operating current: f = 1 exactly
    np.testing.assert_allclose(emu.inputs, (want * src).astype(emu.cdtype), rtol=1e-6, atol=1e-6)
    assert not emu.forward_on                                      # stored but every encoder output off
    b.awg.output_on([3])
    assert emu.forward_on                                          # any encoder output on opens the gate
    b.awg.output_on([9])                                           # an injector channel: not the gate
    b.awg.output_off([3])
    assert not emu.forward_on
    b.awg.output_on(list(ENC))
    laser_to(b, 0.07)                                              # P = P_op / 2: fields x sqrt(1/2)
    np.testing.assert_allclose(emu.inputs, (want * np.sqrt(0.5) * src).astype(emu.cdtype), rtol=1e-5, atol=1e-6)
    assert emu.forward_on
    laser_off(b)
    assert not emu.forward_on and not np.any(emu.inputs)
    assert b.server.log.violations == []


def test_injectors_and_adjoint_sources_inject_their_outputs_and_go_dark_when_off_or_zero(chip):
    b = chip()
    emu = b.emu
    laser_to(b, 0.12)
    c = codes(16, 8, 9.99, 10.0, seed=3)
    b.awg.upload(c, list(INJ0))
    b.awg.upload(c[:, ::-1], list(ADJ1))
    assert emu.inject[0] is None and emu.adjoint[1] is None       # uploaded but outputs off: dark
    b.awg.output_on(list(INJ0) + list(ADJ1))
    f = decode_iq(c, 10.0)
    inj, adj = emu.truth.layers[0].injector, emu.truth.layers[1].adjoint_source
    np.testing.assert_allclose(emu.inject[0], f * inj, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(emu.adjoint[1], f[:, ::-1] * adj, rtol=1e-5, atol=1e-5)
    assert emu.inject[1] is None and emu.adjoint[0] is None       # their blocks hold nothing
    b.awg.output_off([9, 10, 11])                                  # part of the block off: those ports zero
    assert emu.inject[0].shape == (16, 8) and not np.any(emu.inject[0][:, :3])
    np.testing.assert_allclose(emu.inject[0][:, 3:], f[:, 3:] * inj[3:], rtol=1e-5, atol=1e-5)
    b.awg.zero(list(INJ0))                                         # all-zero output: dark (None)
    assert emu.inject[0] is None and emu.adjoint[1] is not None
    b.awg.upload(np.zeros((16, 8, 2), np.int16), list(ADJ0))
    b.awg.output_on(list(ADJ0))
    assert emu.adjoint[0] is None
    laser_off(b)                                                   # no light: every source dark
    assert emu.adjoint[1] is None
    assert b.server.log.violations == []


def test_heater_lines_reach_the_emulator_only_at_the_next_dig_one_write_per_changed_layer(chip):
    b = chip()
    emu, calls = b.emu, []
    real = emu.set_heater_volts
    emu.set_heater_volts = lambda layer, v: (calls.append((layer, np.array(v))), real(layer, v))[1]
    v0, v1 = np.round(np.linspace(0.1, 3.5, 56), 4), np.round(np.linspace(3.9, 0.2, 56), 4)
    b.heaters.set_voltages({c: v for c, v in enumerate(v1, start=56)})    # layer 1 first on the wire
    b.heaters.set_voltages({c: v for c, v in enumerate(v0)})
    assert calls == [] and not np.any(emu.volts[0]) and not np.any(emu.volts[1])   # 112 V= lines, no write yet
    b.scope.record_length(32)
    b.scope.digitize([1])
    assert [c[0] for c in calls] == [0, 1]                         # in layer order, one per layer
    np.testing.assert_array_equal(calls[0][1], v0)
    np.testing.assert_array_equal(calls[1][1], v1)
    b.scope.digitize([1, 2])
    assert len(calls) == 2                                         # nothing changed: no write
    b.heaters.set_voltages({60: 1.0})
    b.heaters.set_voltages({61: 1.0, 60: float(v1[4])})            # back to its old value
    b.scope.digitize([2])
    assert [c[0] for c in calls] == [0, 1, 1] and calls[2][1][5] == 1.0 and emu.writes == 3
    b.heaters.zero_all()
    b.scope.digitize([1])
    assert [c[0] for c in calls[3:]] == [0, 1] and not np.any(emu.volts[0]) and not np.any(emu.volts[1])
    assert b.server.log.violations == []


def _reference(cfg, v0, v1, bias, fields):
    """A second emulator of the same seeds, driven with the calls the wire glue makes."""
    ref = emulator(cfg)
    ref.set_ring_bias(0, bias)
    ref.set_inputs(fields.astype(ref.cdtype))
    ref.set_forward_light(True)
    ref.set_heater_volts(0, v0)
    ref.set_heater_volts(1, v1)
    return ref


def _iq(z):
    return np.stack([z.real, z.imag], -1).reshape(z.shape[0], -1)


def test_a_dig_returns_what_the_emulator_reads_in_the_listed_order(chip):
    b = chip()
    rng = np.random.default_rng(7)
    v0, v1 = np.round(rng.uniform(0, 3.9, 56), 4), np.round(rng.uniform(0, 3.9, 56), 4)
    bias = np.round(rng.uniform(-0.09, 0.09, 8), 4)
    fs = b.cfg.roles.encoder.full_scale_field
    c = codes(32, 8, 1.2, fs, seed=11)                             # activation photodiodes stay within +-20 V
    laser_to(b, 0.12)
    b.awg.upload(c, list(ENC))
    b.awg.output_on(list(ENC))
    b.heaters.set_voltages({**dict(enumerate(v0)), **dict(enumerate(v1, start=56))})
    b.bias.set_voltages(list(bias))
    b.bias.output_on()
    np.testing.assert_array_equal(b.bias.get_voltages(), bias)    # a query: the relays closed before it are served
    np.testing.assert_array_equal(b.emu.ring_bias_v[0], bias)     # biases apply at once
    order = [8, 2, 1, 4, 9, 3, 6, 5, 7]                            # not the numeric order: the noise follows the list
    b.scope.record_length(40)                                      # 8 rows more than the batch: zeros
    b.scope.digitize(order)
    got = {ch: b.scope.fetch(ch) for ch in order}
    ref = _reference(b.cfg, v0, v1, bias, decode_iq(c, fs))
    reads = {8: lambda: ref.read_activation_power(0), 2: lambda: 0.02 * ref.read_taps(0)[None, :],
             1: ref.read_output_power, 4: lambda: _iq(ref.read_output_fields(0)),
             9: lambda: ref.read_activation_slope(0), 3: lambda: 0.02 * ref.read_taps(1)[None, :],
             6: lambda: _iq(ref.read_input_fields(0)), 5: lambda: _iq(ref.read_output_fields(1)),
             7: lambda: _iq(ref.read_input_fields(1))}
    for ch in order:
        want = np.asarray(reads[ch](), np.float64)
        if ch not in (2, 3):                                       # monitors: one value per tap, not padded
            assert want.shape[0] == 32
            want = np.vstack([want, np.zeros((8, want.shape[1]))])
        assert got[ch].shape == (want.size,), ch
        assert np.abs(want).max() < 19.9, ch                       # inside the range: only quantisation differs
        np.testing.assert_allclose(got[ch], want.reshape(-1), rtol=0, atol=LSB / 2 * 1.001, err_msg=f"CHAN{ch}")
    assert got[2].size == 56 and np.ptp(got[2]) > 100 * LSB        # the taps see light (not a trivial zero)
    assert np.ptp(got[1][:64]) > 100 * LSB and not np.any(got[1][64:])
    assert b.emu.writes == 2 and b.server.log.violations == []


def test_volts_per_unit_scales_every_reading(chip):
    def gain(data):
        data["roles"]["detectors"]["outputs"]["volts_per_unit"] = 3.0
        data["roles"]["detectors"]["activation_slope"][0]["volts_per_unit"] = 0.5

    readings = []
    for mutate in (None, gain):
        b = chip(mutate)
        laser_to(b, 0.12)
        b.awg.upload(codes(16, 8, 1.2, 4.0, seed=2), list(ENC))
        b.awg.output_on(list(ENC))
        b.scope.record_length(16)
        b.scope.digitize([1, 9])
        readings.append((b.scope.fetch(1), b.scope.fetch(9)))
    (o1, s1), (o3, s05) = readings
    assert np.ptp(o1) > 1000 * LSB and np.abs(o1).max() * 3 < 19.9
    np.testing.assert_allclose(o3, 3.0 * o1, rtol=0, atol=3 * LSB)
    np.testing.assert_allclose(s05, 0.5 * s1, rtol=0, atol=LSB)


def test_twin_report_judges_the_chip_outputs(chip):
    b = chip()
    report = twin_report(b.server)
    assert report["safe"] and report["outputs"]["iq_awg"] == {"outputs_on": 0}
    assert report["outputs"]["heaters"] == {"max_volts": 0.0}
    b.heaters.set_voltages({7: 2.5})
    b.awg.output_on([1, 2, 30])
    report = twin_report(b.server)
    assert not report["safe"] and report["outputs"]["iq_awg"] == {"outputs_on": 3}
    assert report["outputs"]["heaters"] == {"max_volts": 2.5}
    b.awg.output_off()
    assert not twin_report(b.server)["safe"]                       # a heater still at 2.5 V
    b.heaters.zero_all()
    assert twin_report(b.server)["safe"]


def test_faults_report_file_and_bad_sizes(tmp_path, clean_wire, monkeypatch):
    cfg = chip_cfg(tmp_path)
    with pytest.raises(ConfigError, match=r"emulator.faults.instruments: \['nowhere'\] are not served"):
        start_chip_twin(cfg, SIZES, emulator(cfg), faults=FaultPlan(drop=0.1, instruments=("nowhere",)))
    report = tmp_path / "wire.jsonl"
    monkeypatch.setenv("LIGHTLOOP_WIRE_REPORT", str(report))
    server = start_chip_twin(cfg, SIZES, emulator(cfg), faults=FaultPlan(drop=0.5, seed=3, instruments=("scope",)))
    try:
        armed = {name for name, ep in server.endpoints.items() if ep._rng is not None}
    finally:
        server.stop()
    assert armed == {"scope"}
    line = json.loads(report.read_text().strip())
    assert line["safe"] and set(line["outputs"]) == {"iq_awg", "heaters", "ring_bias", "laser"}
    p = cfg.processor
    wide = make_chip_emulator(p, (2, 16, 2), ChipDraw(p.chip.seed, p.chip.noise_seed, ideal=True))
    with pytest.raises(ConfigError, match=r"chip.yaml: roles.encoder.count: 8; expected 16 channels"):
        start_chip_twin(cfg, (2, 16, 2), wide)


def test_lightloop_emulate_serves_both_chip_configs(tmp_path, clean_wire, capsys):
    from lightloop.cli import main
    from lightloop.config import load_config

    out = tmp_path / "served.yaml"
    assert main(["emulate", "--config", str(CHIP_TWIN), "--duration", "0.2", "--write-config", str(out)]) == 0
    cap = capsys.readouterr()
    first = json.loads(cap.out.strip().splitlines()[0])
    assert first["layer_sizes"] == [2, 8, 2] and set(first["addresses"]) == {"laser", "iq_awg", "heaters",
                                                                             "ring_bias", "scope"}
    assert "integrated_chip.yaml has no station; serving the default integrated_chip station" in cap.err
    assert "wire_integrated_chip.yaml" in cap.err.splitlines()[0]
    served = load_config(out)                                      # the merged config, with the served ports
    assert served.processor.chip.seed == 1 and served.emulator.autostart is False
    assert served.instruments["heaters"].address == first["addresses"]["heaters"]
    assert main(["emulate", "--config", str(CHIP_WIRE), "--duration", "0.1", "--ideal"]) == 0
    cap = capsys.readouterr()
    assert "no station" not in cap.err and json.loads(cap.err.strip().splitlines()[-1])["violations"] == []
    assert main(["emulate", "--config", str(CHIP_WIRE), "--layer-sizes", "2", "16", "2", "--duration", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightloop: error: ") and "roles.encoder.count" in err and "\n" not in err
