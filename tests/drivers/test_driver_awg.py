"""IQ AWG driver: text commands against its pyvisa-sim model; the binary SEQ:DATA upload against the wire twin."""

from __future__ import annotations

import importlib.resources
import os
import zlib

import numpy as np
import pytest
import yaml

from lightloop.drivers.awg import IQArbitraryWaveformGenerator, sequence_crc
from lightloop.errors import InstrumentError
from lightloop.simulators.wire.awg import AWGTwin
from lightloop.simulators.wire.server import FaultPlan, WireTwinServer

from driver_testkit import *  # noqa: F401,F403  (fixtures: see driver_testkit.__all__)

ADDRESS = "TCPIP::192.168.0.60::INSTR"
YAML = "awg.yaml"


# --- pyvisa-sim: text commands ----------------------------------------------------------------------------
@pytest.fixture
def awg(open_sim):
    return open_sim(IQArbitraryWaveformGenerator, ADDRESS, YAML, timeout=0.15)


def test_sim_yaml_is_the_awg_model():
    data = yaml.safe_load((importlib.resources.files("lightloop.drivers.sim") / YAML).read_text())
    assert list(data["devices"]) == ["awg"] and list(data["resources"]) == [ADDRESS]


def test_connect_sequence_identity_and_channels(open_sim, sim_connect_log):
    awg = open_sim(IQArbitraryWaveformGenerator, ADDRESS, YAML)
    assert sim_connect_log.lines() == ["*IDN?"]
    assert awg.idn_info["model"] == "IQ-AWG-4CH"
    assert [ch.channel for ch in awg.channels] == [1, 2, 3, 4] and awg.ch3 is awg.channels[2]
    assert (awg.v_max, awg.max_points) == (1.0, 4096)


def test_parameter_round_trips_with_exact_commands(awg, wire_log):
    log = wire_log(awg)
    awg.ch1.amplitude(0.25)
    awg.ch3.output(True)
    awg.arm()
    assert log.lines() == ["SOUR1:VOLT:AMPL 0.25", "OUTP3 ON", "TRIG:SOUR EXT"]
    log.clear()
    assert awg.ch1.amplitude() == 0.25 and awg.ch2.amplitude() == 0.5
    assert awg.ch3.output() is True
    assert awg.trigger_source() == "EXT"
    assert awg.sequence_length() == 0
    assert log.lines() == ["SOUR1:VOLT:AMPL?", "SOUR2:VOLT:AMPL?", "OUTP3?", "TRIG:SOUR?", "SEQ:LEN?"]
    awg.check_errors()


def test_batched_text_forms_are_one_line_each(awg, wire_log):
    log = wire_log(awg)
    assert awg.set_amplitudes([0.75], [2]) == [0.75]
    awg.output_on()
    assert awg.get_outputs([2, 3]) == [False, True]
    assert awg.stored_crc() == 0
    assert log.lines() == ["SOUR2:VOLT:AMPL 0.75;SOUR2:VOLT:AMPL?", "OUTP ON,(@1,2,3,4);OUTP? (@1,2,3,4)",
                           "OUTP? (@2,3)", "SEQ:DATA:CRC? (@1,2,3,4)"]
    assert awg.ch2.amplitude.cache.get(get_if_invalid=False) == 0.75
    awg.check_errors()


def test_validators_reject_before_anything_is_written(awg, wire_log):
    log = wire_log(awg)
    for param, value in [(awg.ch1.amplitude, 1.5), (awg.ch1.amplitude, -0.1), (awg.ch1.amplitude, float("nan")),
                         (awg.ch2.output, "maybe"), (awg.trigger_source, "BUS")]:
        with pytest.raises((ValueError, TypeError)):
            param(value)
    with pytest.raises(ValueError, match="ch1"):
        awg.set_amplitudes([2.0], [1])
    ok = np.zeros((4, 2, 2), np.int16)
    for codes, channels, match in [
        (ok, [1, 5], "channel 5"),
        (ok, [1, 1], "distinct"),
        (ok, [1, 2, 3], r"shape \(points, 3, 2\)"),
        (np.zeros((4097, 1, 2), np.int16), [1], "4097 points; expected 1..4096"),
        (np.zeros((0, 1, 2), np.int16), [1], "0 points"),
        (np.full((2, 1, 2), -32768, np.int16), [1], "expected -32767..32767"),
        (np.zeros((2, 1, 2)), [1], "expected integers"),
    ]:
        with pytest.raises(ValueError, match=match):
            awg.upload(codes, channels)
    assert log.raw == b""


def test_instrument_side_errors_timeouts_and_garbage_are_one_line(awg, monkeypatch):
    awg.write("SOUR1:VOLT:AMPL 5")                        # the model rejects it like the instrument would
    with pytest.raises(InstrumentError, match=r'-100,"Command error"'):
        awg.check_errors()
    with pytest.raises(InstrumentError) as info:
        awg.ask("SEQ:NOPE?")
    assert "timeout" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setattr(awg.visa_handle, "query", lambda cmd: "banana")
    with pytest.raises(InstrumentError, match="replied 'banana' to 'OUTP\\? \\(@1,2\\)'; expected 2 comma-separated"):
        awg.get_outputs([1, 2])


@pytest.mark.filterwarnings("ignore:read string doesn't end with termination characters")
def test_wrong_address_is_instrument_error_and_frees_the_name(unique_name):
    name = unique_name("awg")
    with pytest.raises(InstrumentError, match="IDN"):
        IQArbitraryWaveformGenerator(name, "GPIB::9::INSTR", pyvisa_sim_file=f"lightloop.drivers.sim:{YAML}",
                                     timeout=0.2)
    IQArbitraryWaveformGenerator(name, ADDRESS, pyvisa_sim_file=f"lightloop.drivers.sim:{YAML}").close()


# --- wire twin: the binary upload -------------------------------------------------------------------------
@pytest.fixture
def twin_awg(unique_name):
    seen: list[tuple[list[int], np.ndarray]] = []
    twin = AWGTwin("awg", 4, on_sequence=lambda chans, volts: seen.append((chans, volts)), envelope=0.8,
                   code_envelope=42000)
    with WireTwinServer([twin]) as server:
        drv = IQArbitraryWaveformGenerator(unique_name("awg"), server.address("awg"), visalib="@py", timeout=0.5,
                                           device_clear=False)
        server.log.clear()
        try:
            yield drv, twin, server, seen
        finally:
            drv.close()


def _codes(points: int, n: int, seed: int = 0) -> np.ndarray:
    codes = np.random.default_rng(seed).integers(-29000, 29001, (points, n, 2)).astype(np.int16)
    codes.reshape(-1)[:4] = [10, 2570, 35, 0x0A23]       # '\n', '\n\n', '#', '#\n' bytes inside the block
    return codes


def test_upload_is_one_verified_transaction_and_binary_safe(twin_awg):
    drv, twin, server, seen = twin_awg
    codes = _codes(300, 2)
    assert drv.upload(codes, [2, 4]) == zlib.crc32(codes.astype("<i2").tobytes()) == sequence_crc(codes)
    assert server.log.commands("awg") == ["SEQ:DATA (@2,4),#BLOCK;SEQ:DATA:CRC? (@2,4)"]
    np.testing.assert_array_equal(twin.sequence([2, 4]), codes)
    assert drv.sequence_length() == 300 and drv.stored_crc([2, 4]) == sequence_crc(codes)
    assert seen[-1][0] == [2, 4] and not seen[-1][1].any()          # outputs off: nothing emitted yet
    drv.output_on([2, 4])
    np.testing.assert_allclose(seen[-1][1], (codes[..., 0] + 1j * codes[..., 1]) * 0.5 / 32767)
    drv.upload(codes[:5, :1], [1], verify=False)                         # unverified form, then still in sync
    assert drv.ask("*OPC?") == "1" and twin.uploads == 2
    assert server.log.violations == [] and drv.error_queue() == []


class _GarblingTwin(AWGTwin):
    """Stores a block whose first byte was corrupted on the way (a flipped bit the CRC must catch)."""

    def _upload(self, m):
        self.pending_block = b"\x01" + self.pending_block[1:]
        return super()._upload(m)


def test_a_garbled_upload_fails_its_crc_in_the_same_transaction(unique_name):
    with WireTwinServer([_GarblingTwin("awg", 4)]) as server:
        drv = IQArbitraryWaveformGenerator(unique_name("awg"), server.address("awg"), visalib="@py", timeout=0.5,
                                           device_clear=False)
        try:
            server.log.clear()
            with pytest.raises(InstrumentError) as info:
                drv.upload(np.zeros((3, 1, 2), np.int16), [3])
        finally:
            drv.close()
    text = str(info.value)
    assert "SEQ:DATA (@3),#212<12 bytes>;SEQ:DATA:CRC? (@3)" in text and "expected CRC-32" in text
    assert "\n" not in text and len(server.log.commands("awg")) == 1


def test_twin_refuses_out_of_range_codes_and_flags_out_of_limit_values(twin_awg):
    drv, twin, server, _ = twin_awg
    bad = np.array([[[-32768, 0]]], "<i2").tobytes()
    drv._send_bytes("raw", b"SEQ:DATA (@1),#14" + bad + b"\n")      # bypasses the driver's own validation
    assert drv.error_queue() == ['-222,"Data out of range"'] and len(twin.memory[0]) == 0
    drv.upload(np.array([[[30000, 30000]]], np.int16), [1])         # |I + iQ| = 42426 codes > 42000
    drv.write("SOUR2:VOLT:AMPL 0.9")                                  # above the configured 0.8 V
    drv.write("SOUR3:VOLT:AMPL 1.5")                                  # above the hardware's 1 V: refused
    assert drv.error_queue() == ['-222,"Data out of range"'] and twin.amplitude[2] == 0.5
    assert [v.split(": ", 1)[1].split(" ")[0:2] for v in server.log.violations] == \
        [["code", "-32768"], ["channel", "1"], ["channel", "2"]]


def test_reboot_and_front_panel(twin_awg):
    drv, twin, server, _ = twin_awg
    drv.set_amplitudes([0.7, 0.6], [1, 2])
    drv.upload(_codes(8, 2), [1, 2])
    drv.output_on([1, 2])
    drv.arm()
    assert drv.trigger_source() == "EXT"                             # a query: the twin has handled every write
    server.reboot("awg")                                             # power cycle: the link is closed too
    assert not twin.outputs.any() and twin.trigger == "IMM" and list(twin.amplitude) == [0.5] * 4
    assert all(len(m) == 0 for m in twin.memory) and twin.injected["reboot"] == 1
    twin.front_panel(3, amplitude=0.2, output=True)
    assert twin.outputs[2] and twin.amplitude[2] == 0.2 and server.log.commands("awg")[-1] == "TRIG:SOUR?"


def test_injected_faults_reach_the_driver_as_one_line_errors(twin_awg):
    drv, twin, server, _ = twin_awg
    server.garbage("awg")
    with pytest.raises(InstrumentError, match="replied '#!garbage!#'.*expected an unsigned CRC-32"):
        drv.upload(np.zeros((2, 1, 2), np.int16), [1])
    server.silence("awg")
    drv.timeout(0.2)
    with pytest.raises(InstrumentError, match=r"\(timeout\)") as info:
        drv.upload(np.zeros((2, 1, 2), np.int16), [1])
    assert "\n" not in str(info.value)
    server.set_faults(FaultPlan(drop=1.0))
    with pytest.raises(InstrumentError):
        drv.output_off()
    server.set_faults(None)
    assert twin.injected["drop"] == 1


HW = os.environ.get("LIGHTLOOP_HW_AWG")


@pytest.mark.hardware
@pytest.mark.skipif(not HW, reason="set LIGHTLOOP_HW_AWG to a VISA address to run on hardware")
def test_real_hardware_read_only(unique_name):
    inst = IQArbitraryWaveformGenerator(unique_name("awg_hw"), HW)
    try:
        assert inst.idn_info["model"]
        inst.sequence_length()
        inst.get_outputs()
        inst.check_errors()
    finally:
        inst.close()
