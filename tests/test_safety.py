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
    assert len(RampPolicy(math.inf).points(0.0, 100.0)) == 1
    with pytest.raises(SafetyLimitError, match="steps"):
        ramp_points(0.0, 1e6, 1.0, max_steps=100)


class FakeController:
    """TemperatureDevice recording calls; the reading follows the set-point after `lag` polls."""

    name = "fake_tc"

    def __init__(self, reading=293.15, output=False, rate=(5.0, True), lag=2):
        self.reading, self.output, self.rate, self.lag = reading, output, rate, lag
        self.calls: list[tuple] = []
        self.setpoint = None
        self._polls = 0

    def read_temperature(self):
        self.calls.append(("read",))
        if self.setpoint is not None and self.output:
            self._polls += 1
            if self._polls > self.lag:
                self.reading = self.setpoint
        return self.reading

    def write_setpoint(self, k):
        self.calls.append(("setpoint", k))
        self.setpoint, self._polls = k, 0

    def read_output(self):
        self.calls.append(("output?",))
        return self.output

    def write_output(self, on):
        self.calls.append(("output", on))
        self.output = on

    def configure_ramp(self, rate):
        self.calls.append(("ramp", rate))
        return self.rate


def test_temperature_refuses_before_any_call_and_ramps_from_the_reading():
    dev = FakeController(reading=300.0)
    tc = SafeTemperatureControl(dev, Range(273.15, 400.0, "K"), 5.0, poll_s=0.0, sleep=lambda s: None)
    with pytest.raises(SafetyLimitError, match="400.5 K outside the limit"):
        tc.set_temperature(400.5)
    assert dev.calls == []
    tc.set_temperature(350.0)
    writes = [c for c in dev.calls if c[0] in ("setpoint", "output", "ramp")]
    # ramp programmed, then the set-point is put at the READ-BACK before the heater turns on, then the target
    assert writes == [("ramp", 5.0), ("setpoint", 300.0), ("output", True), ("setpoint", 350.0)]
    assert dev.calls.index(("read",)) < dev.calls.index(("setpoint", 300.0))
    tc.safe_state()
    assert dev.output is False


def test_temperature_ramp_faster_than_the_limit_switches_the_heater_off():
    dev = FakeController(output=True, rate=(15.0, True))
    tc = SafeTemperatureControl(dev, Range(273.15, 400.0, "K"), 5.0, sleep=lambda s: None)
    with pytest.raises(SafetyLimitError, match="ramp on at 15 K/min"):
        tc.set_temperature(310.0)
    assert dev.output is False and not any(c[0] == "setpoint" for c in dev.calls)


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

    def __init__(self, setpoint=0.05, output=True):
        self.current, self.output = setpoint, output
        self.calls: list[tuple] = []

    def read_current_setpoint(self):
        self.calls.append(("read",))
        return self.current

    def write_current(self, a):
        self.calls.append(("current", round(a, 9)))
        self.current = a

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


class FakeBank:
    name = "fake_source"

    def __init__(self, n=3, volts=None):
        self.n_channels = n
        self.volts = np.zeros(n) if volts is None else np.asarray(volts, float)
        self.epoch = 1
        self.calls: list[tuple] = []

    def read_voltages(self):
        self.calls.append(("read",))
        return self.volts.copy()

    def write_voltages(self, volts):
        self.calls.append(("write", dict(volts)))
        for c, v in volts.items():
            self.volts[c] = v


def test_voltage_bank_limits_and_ramps_from_read_back():
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
    bank.set_channels({0: 3.0})               # cached (same connection epoch): no read, one write
    assert dev.calls == [("write", {0: 3.0})]
    dev.epoch += 1                            # a reconnect: read back again
    dev.calls.clear()
    bank.set_channels({0: 2.5})
    assert dev.calls[0] == ("read",)
    view = bank.view(1, 2)
    view.set_voltages([0.5, 0.7])
    assert dev.volts.tolist() == [2.5, 0.5, 0.7] and view.get_voltages().tolist() == [0.5, 0.7]
    with pytest.raises(ConfigError):
        bank.view(2, 5)
    bank.safe_state()
    assert dev.volts.tolist() == [0, 0, 0]
