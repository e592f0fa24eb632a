"""hal.safety: limits only narrow, out-of-limit values never reach a device, ramps start from a read-back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightloop.errors import ConfigError, InstrumentError, SafetyLimitError
from lightloop.hal.safety import (
    LinearLaserModel,
    RampPolicy,
    Range,
    SafeLaser,
    SafeTemperatureControl,
    SafeVoltageBank,
    TemperatureState,
    ramp_points,
)


def test_range_checks_and_narrowing():
    hw = Range(0.0, 10.0, "V", "voltage")
    assert hw.check(5) == 5.0
    for bad in (-0.1, 10.01, math.nan, math.inf):
        with pytest.raises(SafetyLimitError, match="outside the limit \\[0, 10\\] V; nothing written"):
            hw.check(bad)
    assert hw.narrowed_by(Range(1, 9, "V")) == Range(1, 9, "V", "value")
    with pytest.raises(ConfigError, match="widens the hardware range \\[0, 10\\] V"):
        hw.narrowed_by(Range(-1, 9, "V"))
    assert hw.intersect(Range(5, 20, "V")) == Range(5, 10, "V", "voltage")
    with pytest.raises(SafetyLimitError, match="element 2"):
        hw.check_array([1, 2, 11])
    with pytest.raises(ConfigError, match="empty"):
        Range(2, 1)


def test_ramp_points_are_bounded_steps_ending_on_target():
    pts = ramp_points(0.0, 1.0, 0.3)
    assert len(pts) == 4 and pts[-1] == 1.0 and max(np.diff([0.0, *map(float, pts)])) <= 0.3 + 1e-12
    assert ramp_points([0, 5], [1, 5], 10.0)[-1].tolist() == [1, 5]
    assert ramp_points(2.0, 2.0, 0.1)[0] == 2.0
    with pytest.raises(SafetyLimitError, match="steps"):
        ramp_points(0.0, 1e6, 1.0, max_steps=100)


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
def test_a_ramp_cannot_be_switched_off(rate):
    """Issue 11 defect 2: a zero (or infinite) rate is an error, never 'unramped'."""
    with pytest.raises(ConfigError, match="expected a finite max_rate > 0"):
        RampPolicy(rate)
    with pytest.raises(ConfigError, match="expected a finite step > 0"):
        ramp_points(0.0, 1.0, rate if rate != 0.0 else 0.0)


class FakeController:
    """TemperatureDevice recording calls; the reading follows the set-point after `lag` polls."""

    name = "fake_tc"

    def __init__(self, reading=293.15, output=False, rate=(5.0, True), lag=2, lose=0):
        self.reading, self.output, self.rate, self.lag, self.lose = reading, output, rate, lag, lose
        self.calls: list[tuple] = []
        self.setpoint = reading
        self._polls = 0

    def read_temperature(self):
        self.calls.append(("read",))
        if self.output:
            self._polls += 1
            if self._polls > self.lag:
                self.reading = self.setpoint
        return self.reading

    def read_state(self):
        self.calls.append(("state",))
        return TemperatureState(self.reading, self.output, self.rate[1], self.rate[0], self.setpoint)

    def read_output(self):
        self.calls.append(("output?",))
        return self.output

    def write_setpoint(self, k):
        self.calls.append(("setpoint", k))
        if self.lose > 0:
            self.lose -= 1
        else:
            self.setpoint, self._polls = k, 0
        return self.setpoint

    def write_output(self, on):
        self.calls.append(("output", on))
        self.output = on

    def configure_ramp(self, rate):
        self.calls.append(("ramp", rate))
        return self.rate


def test_temperature_refuses_before_any_call_and_ramps_from_the_reading():
    dev = FakeController(reading=300.0)
    tc = SafeTemperatureControl(dev, Range(273.15, 400.0, "K"), 5.0, poll_s=0.0, sleep=lambda s: None)
    for bad in (400.5, math.nan, math.inf):
        with pytest.raises(SafetyLimitError, match="outside the limit"):
            tc.set_temperature(bad)
    assert dev.calls == []
    tc.set_temperature(350.0)
    writes = [c for c in dev.calls if c[0] in ("setpoint", "output", "ramp")]
    # ramp programmed, then the set-point is put at the READ-BACK before the heater turns on, then the target
    assert writes == [("ramp", 5.0), ("setpoint", 300.0), ("output", True), ("setpoint", 350.0)]
    assert dev.calls[0] == ("state",)
    tc.safe_state()
    assert dev.output is False


def test_temperature_ramp_switched_off_behind_the_hal_is_reprogrammed_before_the_set_point():
    dev = FakeController(reading=300.0)
    tc = SafeTemperatureControl(dev, Range(273.15, 400.0, "K"), 5.0, poll_s=0.0, sleep=lambda s: None)
    tc.set_temperature(310.0)
    dev.rate = (0.0, False)          # front panel: ramp off
    dev.calls.clear()

    def configure(rate):
        dev.calls.append(("ramp", rate))
        dev.rate = (rate, True)
        return dev.rate

    dev.configure_ramp = configure
    tc.set_temperature(320.0)
    writes = [c for c in dev.calls if c[0] in ("setpoint", "output", "ramp")]
    assert writes == [("ramp", 5.0), ("setpoint", 320.0)]


def test_temperature_ramp_faster_than_the_limit_switches_the_heater_off():
    dev = FakeController(output=True, rate=(15.0, True))
    tc = SafeTemperatureControl(dev, Range(273.15, 400.0, "K"), 5.0, sleep=lambda s: None)
    with pytest.raises(SafetyLimitError, match="ramp on at 15 K/min"):
        tc.set_temperature(310.0)
    assert dev.output is False and not any(c[0] == "setpoint" for c in dev.calls)


def test_lost_temperature_set_points_are_retried_then_a_clear_error_and_heater_off():
    """Issue 11 defect 6 (unit level): the set-point write is verified by its read-back."""
    dev = FakeController(reading=300.0, output=True, lose=2)
    tc = SafeTemperatureControl(dev, Range(273.15, 400.0, "K"), 5.0, poll_s=0.0, sleep=lambda s: None)
    tc.set_temperature(305.0)                                     # two writes lost, the third holds
    assert [c for c in dev.calls if c[0] == "setpoint"] == [("setpoint", 305.0)] * 3
    dev.lose, dev.calls = 10, []
    with pytest.raises(InstrumentError, match=r"set-point written as 310 K read back as 305 K after 4 writes.*heater switched off"):
        tc.set_temperature(310.0)
    assert [c for c in dev.calls if c[0] == "setpoint"] == [("setpoint", 310.0)] * 4
    assert dev.output is False and not any(c == ("read",) for c in dev.calls)   # no silent polling


def test_temperature_that_does_not_settle_is_a_bounded_instrument_error():
    clock = iter(np.arange(0.0, 1e6, 1.0))
    dev = FakeController(lag=10**9, rate=(600.0, True))
    tc = SafeTemperatureControl(dev, Range(273.15, 400.0, "K"), 600.0, settle_timeout_s=5.0, poll_s=1.0,
                                sleep=lambda s: None, clock=lambda: float(next(clock)))
    with pytest.raises(InstrumentError, match="did not reach the set-point 320.000 K within"):
        tc.set_temperature(320.0)
    assert sum(1 for c in dev.calls if c == ("read",)) < 20


class FakeLaser:
    name = "fake_laser"

    def __init__(self, setpoint=0.05, output=True, lose=0):
        self.current, self.output, self.lose = setpoint, output, lose
        self.calls: list[tuple] = []
        self.hooks = []

    def on_reconnect(self, fn):
        self.hooks.append(fn)

    def read_current_setpoint(self):
        self.calls.append(("read",))
        return self.current

    def write_current(self, a):
        self.calls.append(("current", round(a, 9)))
        if self.lose > 0:
            self.lose -= 1
        else:
            self.current = a
        return self.current

    def read_output(self):
        return self.output

    def write_output(self, on):
        self.calls.append(("output", on))
        self.output = on


def test_laser_ramps_from_the_read_back_and_respects_the_power_limit():
    dev = FakeLaser(setpoint=0.05, output=True)
    laser = SafeLaser(dev, Range(0, 0.3, "A"), LinearLaserModel(0.03, 0.4), max_power_w=0.04,
                      ramp=RampPolicy(1.0, 0.02), sleep=lambda s: None)
    assert laser.current_limit.high == pytest.approx(0.13)     # 0.03 A + 40 mW / 0.4 W/A
    with pytest.raises(SafetyLimitError, match="power limit 0.04 W"):
        laser.set_current(0.2)
    assert dev.calls == []
    laser.set_current(0.1)
    assert dev.calls[0] == ("read",)
    steps = [c[1] for c in dev.calls if c[0] == "current"]
    assert steps[-1] == pytest.approx(0.1) and np.all(np.abs(np.diff([0.05, *steps])) <= 0.02 + 1e-12)
    dev.current = 0.02                      # moved behind the HAL's back: the next ramp starts there
    dev.calls.clear()
    laser.set_current(0.06)
    steps = [c[1] for c in dev.calls if c[0] == "current"]
    assert dev.calls[0] == ("read",) and steps == pytest.approx([0.04, 0.06])
    dev.calls.clear()
    laser.off()
    assert dev.calls == [("output", False), ("current", 0.0)]


def test_laser_turn_on_from_dark_and_power_meter_verification():
    dev = FakeLaser(setpoint=0.12, output=False)
    laser = SafeLaser(dev, Range(0, 0.3, "A"), LinearLaserModel(0.0, 0.4), max_power_w=0.05,
                      ramp=RampPolicy(2.0, 0.02), read_power=lambda: 0.2, sleep=lambda s: None)
    with pytest.raises(SafetyLimitError, match="power meter reads 0.2 W"):
        laser.on(0.1)
    assert dev.calls[:2] == [("current", 0.0), ("output", True)]   # stale 120 mA set-point zeroed while dark
    assert dev.output is False and dev.current == 0.0               # switched off after the failed check


def test_laser_read_back_outside_the_limit_or_lost_writes_end_dark():
    dev = FakeLaser(setpoint=0.25, output=True)                      # someone turned it up by hand
    laser = SafeLaser(dev, Range(0, 0.2, "A"), LinearLaserModel(0.0, 0.4), math.inf, RampPolicy(1.0, 0.02),
                      sleep=lambda s: None)
    with pytest.raises(InstrumentError, match="read back as 0.25 A, outside the limit"):
        laser.set_current(0.1)
    assert dev.output is False and [c for c in dev.calls if c[0] == "current"] == [("current", 0.0)]
    dev.output, dev.current, dev.lose = True, 0.0, 10
    with pytest.raises(InstrumentError, match=r"written as 0.02 read back as 0.0 \(4 mismatching"):
        laser.set_current(0.1)
    assert dev.output is False


def test_laser_reconnect_restores_the_output_by_the_safe_turn_on():
    """Issue 11 defect 5 (unit level): a laser found dark after a reconnect is turned on at 0 A and ramped."""
    dev = FakeLaser(setpoint=0.0, output=False)
    laser = SafeLaser(dev, Range(0, 0.2, "A"), LinearLaserModel(0.0, 0.4), math.inf, RampPolicy(1.0, 0.02),
                      sleep=lambda s: None)
    laser.on(0.1)
    dev.current, dev.output = 0.0, False                            # power cycle
    dev.calls.clear()
    for hook in dev.hooks:
        hook()
    steps = [c[1] for c in dev.calls if c[0] == "current"]
    assert dev.calls[:2] == [("current", 0.0), ("output", True)] and dev.current == pytest.approx(0.1)
    assert np.all(np.abs(np.diff(steps)) <= 0.02 + 1e-12)
    laser.off()
    dev.output = True                                               # expected dark, found lit: switched off
    for hook in dev.hooks:
        hook()
    assert dev.output is False


class FakeBank:
    name = "fake_source"

    def __init__(self, n=3, volts=None):
        self.n_channels = n
        self.volts = np.zeros(n) if volts is None else np.asarray(volts, float)
        self.calls: list[tuple] = []
        self.hooks = []

    def on_reconnect(self, fn):
        self.hooks.append(fn)

    def read_voltages(self):
        self.calls.append(("read",))
        return self.volts.copy()

    def write_voltages(self, volts):
        self.calls.append(("write", dict(volts)))
        for c, v in volts.items():
            self.volts[c] = v
        return self.volts[sorted(volts)].copy()


def test_voltage_bank_limits_and_ramps_from_a_fresh_read_back_every_time():
    dev = FakeBank(volts=[1.0, 0, 0])
    bank = SafeVoltageBank(dev, Range(0, 5, "V"), RampPolicy(10.0, 0.1), sleep=lambda s: None)
    with pytest.raises(SafetyLimitError, match="channel 1 voltage 6 V outside"):
        bank.set_channels({0: 1.0, 1: 6.0})
    with pytest.raises(SafetyLimitError, match="channel 2 voltage nan"):
        bank.set_voltages([0, 0, np.nan])
    assert dev.calls == []
    bank.set_channels({0: 3.5})
    assert dev.calls[0] == ("read",)
    writes = [c[1][0] for c in dev.calls if c[0] == "write"]
    assert writes[-1] == 3.5 and np.all(np.abs(np.diff([1.0, *writes])) <= 1.0 + 1e-12) and len(writes) == 3
    dev.calls.clear()
    bank.set_channels({0: 3.0})               # every write reads back first (one query), then one write
    assert dev.calls == [("read",), ("write", {0: 3.0})]
    dev.volts[0] = 0.0                        # issue 11 defect 4: moved behind the HAL's back (0 -> 4.5 V was seen)
    dev.calls.clear()
    bank.set_channels({0: 2.5})
    writes = [c[1][0] for c in dev.calls if c[0] == "write"]
    assert dev.calls[0] == ("read",) and writes == pytest.approx([1.0 * 2.5 / 3, 2.5 * 2 / 3, 2.5])
    view = bank.view(1, 2)
    view.set_voltages([0.5, 0.7])
    assert dev.volts.tolist() == [2.5, 0.5, 0.7] and view.get_voltages().tolist() == [0.5, 0.7]
    with pytest.raises(ConfigError):
        bank.view(2, 5)
    dev.volts[:] = [0.0, 0.0, 0.0]             # a reboot: restore ramps back to the last verified values
    dev.calls.clear()
    for hook in dev.hooks:
        hook()
    assert dev.volts.tolist() == pytest.approx([2.5, 0.5, 0.7]) and dev.calls[0] == ("read",)
    bank.safe_state()
    assert dev.volts.tolist() == [0, 0, 0]


def test_voltage_bank_read_back_outside_the_limit_goes_safe():
    dev = FakeBank(volts=[0.0, 7.0, 0.0])     # a channel left at 7 V by another program
    bank = SafeVoltageBank(dev, Range(0, 5, "V"), RampPolicy(10.0, 0.1), sleep=lambda s: None)
    with pytest.raises(InstrumentError, match="not 3 numbers inside the limits"):
        bank.set_channels({1: 4.0})
    assert dev.volts.tolist() == [0, 0, 0] and dev.calls == [("read",), ("write", {0: 0.0, 1: 0.0, 2: 0.0})]


def test_safe_states_are_verified_by_read_back():
    dev = FakeController(reading=300.0, output=True)
    tc = SafeTemperatureControl(dev, Range(273.15, 400.0, "K"), 5.0, sleep=lambda s: None)
    tc.safe_state()
    assert dev.calls == [("output", False), ("output?",)]
    dev.write_output = lambda on: None                              # an 'off' that never lands
    with pytest.raises(InstrumentError, match="heater output still reads on after 4 'off' writes"):
        dev.output = True
        tc.safe_state()
    bank_dev = FakeBank(volts=[1.0, 2.0, 3.0])
    bank = SafeVoltageBank(bank_dev, Range(0, 5, "V"), RampPolicy(10.0, 0.1), sleep=lambda s: None)
    bank.safe_state()
    assert bank_dev.volts.tolist() == [0, 0, 0] and len(bank_dev.calls) == 1
