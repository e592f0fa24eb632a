"""AWGFieldBlock (the chip's IQ field source / injector) on the AWG driver against its wire twin; config keys; safe."""

from __future__ import annotations

import itertools
import os
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from qcodes.instrument import Instrument

from lightloop.drivers.awg import IQArbitraryWaveformGenerator
from lightloop.errors import ConfigError, SafetyLimitError
from lightloop.hal.frames import IQ_CODE_MAX, decode_iq, encode_iq
from lightloop.hal.ports import FieldInjectionPort, ForwardLightPort
from lightloop.hal.safety import Range
from lightloop.simulators.wire.awg import AWGTwin
from lightloop.simulators.wire.server import WireTwinServer
from lightloop.station._instruments import Checker, InstrumentSpec, validate_instrument
from lightloop.station._link import Link, ReconnectPolicy, TransactionStats
from lightloop.station._safe import SAFE_ORDER
from lightloop.station.adapters.awg import AWGFieldBlock

_n = itertools.count()
FS, MAX_FIELD, AMP = 2.0, 2.0, 0.4          # full-scale field, max |field|, full-scale amplitude (V)


@pytest.fixture
def bench():
    seen: list = []
    twin = AWGTwin("awg", 8, on_sequence=lambda c, v: seen.append((c, v)), envelope=0.5,
                   code_envelope=MAX_FIELD / FS * IQ_CODE_MAX)
    links: list[Link] = []
    with WireTwinServer([twin]) as server:
        def link() -> Link:
            lk = Link("awg", "AWG", lambda: IQArbitraryWaveformGenerator(
                f"awg_{os.getpid()}_{next(_n)}", server.address("awg"), visalib="@py", timeout=0.5, n_channels=8,
                device_clear=False), TransactionStats(), ReconnectPolicy(attempts=3, backoff_s=0.001, budget=100),
                connect_transactions=1, sleep=lambda s: None).open()
            links.append(lk)
            return lk

        try:
            yield SimpleNamespace(twin=twin, server=server, link=link, seen=seen)
        finally:
            for lk in links:
                lk.close()
    assert not Instrument._all_instruments


def _fields(batch: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(batch, n)) + 1j * rng.normal(size=(batch, n))
    return (f / np.abs(f).max() * MAX_FIELD * 0.999).astype(np.complex64)


def _block(b, channels=(2, 3, 5, 7), **kw) -> AWGFieldBlock:
    args = dict(full_scale_field=FS, max_field=MAX_FIELD, amplitude=AMP, amplitude_limit=Range(0, 0.5, "V", "amplitude"))
    return AWGFieldBlock(b.link(), list(channels), **{**args, **kw})


def test_the_block_is_both_chip_ports_and_sets_up_the_awg(bench):
    blk = _block(bench)
    assert isinstance(blk, FieldInjectionPort) and isinstance(blk, ForwardLightPort) and blk.n_channels == 4
    tw = bench.twin
    assert tw.trigger == "EXT" and list(tw.amplitude[[1, 2, 4, 6]]) == [AMP] * 4 and not tw.outputs.any()
    assert bench.server.log.commands("awg") == [
        "*IDN?", "SOUR2:VOLT:AMPL 0.4;SOUR3:VOLT:AMPL 0.4;SOUR5:VOLT:AMPL 0.4;SOUR7:VOLT:AMPL 0.4;SOUR2:VOLT:AMPL?;"
        "SOUR3:VOLT:AMPL?;SOUR5:VOLT:AMPL?;SOUR7:VOLT:AMPL?", "TRIG:SOUR EXT", "OUTP OFF,(@2,3,5,7);OUTP? (@2,3,5,7)"]


def test_a_batch_of_complex_patterns_round_trips_bit_exactly_through_codes(bench):
    blk = _block(bench)
    fields = _fields(64, 4)
    blk.write_fields(fields)
    blk.set_enabled(True)
    codes = encode_iq(fields, FS)
    stored = bench.twin.sequence([2, 3, 5, 7])
    np.testing.assert_array_equal(stored, codes)                               # bit-exact on the instrument
    back = decode_iq(stored, FS)
    np.testing.assert_array_equal(encode_iq(back, FS), codes)                   # codes -> fields -> same codes
    err = np.abs(np.stack([back.real - fields.real, back.imag - fields.imag]))
    assert err.max() <= FS / IQ_CODE_MAX / 2 * (1 + 1e-5) + 1e-7                # half a code of quantisation
    chans, volts = bench.seen[-1]
    assert chans == [2, 3, 5, 7]
    np.testing.assert_allclose(volts, back * (AMP / FS), rtol=0, atol=1e-12)   # what the modulators are driven with
    assert bench.server.log.violations == []


@pytest.mark.parametrize("channels", [(4,), (1, 2, 3, 4, 5, 6, 7, 8)])
def test_one_transaction_per_write_whatever_the_batch_and_channel_count(bench, channels):
    blk = _block(bench, channels)
    log, stats = bench.server.log, blk.link.stats
    for batch in (1, 17, 4096):
        before, ticks = log.count("awg"), stats.transactions
        blk.write_fields(_fields(batch, len(channels), seed=batch))
        assert (log.count("awg") - before, stats.transactions - ticks) == (1, 1)
        assert len(bench.twin.memory[channels[0] - 1]) == batch
    before = log.count("awg")
    blk.write_fields(_fields(4096, len(channels), seed=4096))                  # unchanged: nothing to send
    assert log.count("awg") == before
    with pytest.raises(ConfigError, match="4097 patterns exceeds the 4096-point sequence memory"):
        blk.write_fields(_fields(4097, len(channels)))


def test_out_of_limit_fields_and_amplitudes_are_refused_with_nothing_on_the_wire(bench):
    blk = _block(bench, max_field=1.5)
    log = bench.server.log
    before = log.count("awg")
    bad = _fields(8, 4) * 0
    bad[3, 1] = 1.6                                                           # > max_field
    with pytest.raises(SafetyLimitError, match="peak field 1.6 exceeds max_field 1.5; nothing written"):
        blk.write_fields(bad)
    bad[3, 1] = np.nan
    with pytest.raises(SafetyLimitError, match="NaN or inf"):
        blk.write_fields(bad)
    wide = _block(bench, max_field=2.5)                                       # |E| allowed up to 2.5 ...
    before = log.count("awg")
    bad[3, 1] = 1.2 + 2.1j                                                    # ... but Q = 2.1 > the 2.0 full scale
    with pytest.raises(SafetyLimitError, match=r"pattern 3 channel 1 Q = 2.1 exceeds the full scale 2 \(1 value\(s\) beyond it\); nothing"):
        wide.write_fields(bad)
    with pytest.raises(SafetyLimitError, match=r"amplitude: 0.6 V outside the limit \[0, 0.5\] V; nothing written"):
        _block(bench, amplitude=0.6)
    assert log.count("awg") == before + 1                                     # only the refused block's *IDN?
    assert log.violations == [] and not any(len(m) for m in bench.twin.memory)


def test_reboot_means_re_upload_and_outputs_back_before_use(bench):
    blk = _block(bench)
    fields = _fields(32, 4)
    blk.write_fields(fields)
    blk.set_enabled(True)
    tw, log = bench.twin, bench.server.log
    bench.server.reboot("awg")                                                # power glitch behind the HAL's back
    assert not tw.outputs.any() and not any(len(m) for m in tw.memory) and tw.trigger == "IMM"
    log.clear()
    blk.write_fields(fields)                                                  # same batch: restored, not re-sent
    assert log.commands("awg")[0] == "*IDN?" and [c.split(" ")[0].split(":")[0] for c in log.commands("awg")[1:]] \
        == ["SOUR2", "TRIG", "SOUR2", "OUTP"]                                # the upload line sets amplitudes first
    np.testing.assert_array_equal(tw.sequence([2, 3, 5, 7]), encode_iq(fields, FS))
    assert tw.outputs[[1, 2, 4, 6]].all() and list(tw.amplitude[[1, 2, 4, 6]]) == [AMP] * 4 and tw.trigger == "EXT"
    assert blk.link.reconnects == 1 and log.violations == []


def test_dark_and_none_leave_outputs_off_and_memory_zero(bench):
    blk = _block(bench)
    blk.write_fields(_fields(16, 4))
    blk.set_enabled(True)
    blk.write_fields(None)                                                    # FieldInjectionPort: dark patterns
    assert not bench.twin.sequence([2, 3, 5, 7]).any() and bench.twin.outputs[1]
    blk.write_fields(_fields(16, 4, seed=3))
    blk.dark()
    tw = bench.twin
    assert not tw.outputs.any() and not tw.sequence([2, 3, 5, 7]).any() and len(tw.memory[1]) == 16
    assert not bench.seen[-1][1].any()


def _spec(tmp_path, address: str, **extra) -> tuple[str, InstrumentSpec]:
    raw = {"driver": "awg", "address": address, "visalib": "@py", "timeout": "1 s", "init": {"n_channels": 8},
           "limits": {"amplitude": "500 mV"}, **extra}
    path = tmp_path / "awg_only.yaml"
    path.write_text(yaml.safe_dump({"instruments": {"iq": raw}}))
    spec = InstrumentSpec.model_validate(yaml.safe_load(path.read_text())["instruments"]["iq"])
    validate_instrument(Checker(str(path)), "iq", spec)
    return str(path), spec


def test_config_keys_narrow_the_awg(tmp_path):
    _, spec = _spec(tmp_path, "TCPIP::127.0.0.1::1::SOCKET")
    assert spec.limit("amplitude") == Range(0.0, 0.5, "V", "amplitude") and spec.hardware("max_points") == 4096
    for extra, match in [({"limits": {"amplitude": "2 V"}}, r"instruments.iq.limits.amplitude: .*widens the driver"),
                         ({"init": {"v_max": 5.0}}, r"instruments.iq.init.v_max: .*widens"),
                         ({"init": {"max_points": 10**6}}, r"instruments.iq.init.max_points: .*widens"),
                         ({"parameters": {"ch1.amplitude": 0.9}}, r"parameters.ch1.amplitude: the HAL owns"),
                         ({"limits": {"voltage": "1 V"}}, r"limits.voltage: unknown limit for a awg; expected one of "
                                                          "amplitude")]:
        with pytest.raises(ConfigError, match=match) as info:
            _spec(tmp_path, "TCPIP::127.0.0.1::1::SOCKET", **extra)
        assert "\n" not in str(info.value) and "awg_only.yaml" in str(info.value)


def test_lightloop_safe_on_an_awg_only_config_turns_outputs_off_and_zeroes_memory(bench, tmp_path):
    from lightloop.safe_cli import secure_config

    assert SAFE_ORDER[:2] == ("laser_controller", "awg")                      # right after the light
    tw = bench.twin
    _, spec = _spec(tmp_path, bench.server.address("awg"))
    blk = _block(bench)                                                       # a run left the modulators driven ...
    blk.write_fields(_fields(40, 4))
    blk.set_enabled(True)
    blk.link.close()                                                          # ... and was killed with -9
    assert tw.outputs.any() and tw.sequence([2]).any()
    report = secure_config(SimpleNamespace(instruments={"iq": spec}, emulator=None, bench="awg-only"), timeout=1.0)
    assert report["iq"]["state"] == "safe", report
    assert report["iq"]["detail"] == "8 IQ channel(s) output off, sequence memory zero"
    assert not tw.outputs.any() and not tw.sequence(range(1, 9)).any() and len(tw.memory[1]) == 40
    cmds = bench.server.log.commands("awg")[-5:]
    assert cmds[1].startswith("OUTP OFF,(@1,2,3,4,5,6,7,8)") and cmds[3].startswith("SEQ:DATA (@1,2,3,4,5,6,7,8),")
