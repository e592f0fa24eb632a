"""Lab-config station sections: instruments (driver, address, init, parameters, limits), roles, emulator.

Strict: unknown keys, limits that widen a driver's own range, missing channels, wrong units, unused or
unknown instruments are one-line errors naming the file, the field and the expectation.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from lightloop.station import ChipRoles, FreeSpaceRoles, InstrumentSpec
from lightloop.units import parse_quantity
from lightloop.config import LabConfig, load_config
from lightloop.errors import ConfigError

from conftest import REPO
from test_wire_kit import CHIP_YAML, REAL_YAML, WIRE_YAML, raw, wire_config, write


@pytest.mark.parametrize("value, dim, expected", [
    (300, "temperature", 300.0), ("150 degC", "temperature", 423.15), ("20 mK", "temperature", 0.02),
    ("5 K/min", "temperature_rate", 5.0), ("0.5 K/s", "temperature_rate", 30.0), ("120 mA", "current", 0.12),
    ("20mW", "power", 0.02), ("2 A/s", "current_rate", 2.0), ("500 ms", "time", 0.5), (" -5 V ", "voltage", -5.0),
    ("1e-3 W", "power", 1e-3), ("0.4 W/A", "slope_efficiency", 0.4),
    # any unit of the dimension (pint): degrees in a rate or a difference are differences, not absolute
    ("2 degC/min", "temperature_rate", 2.0), ("1 degC/s", "temperature_rate", 60.0), ("50 mK", "temperature_delta", 0.05),
    ("0.1 degC", "temperature_delta", 0.1), ("1 kohm", "resistance", 1e3), ("25 mW/rad", "power_per_angle", 0.025),
    ("180 deg", "angle", 3.141592653589793), ("20 mS", "conductance", 0.02), ("1.3e-17 m^3", "volume", 1.3e-17),
    ("2 h", "time", 7200.0), ("0.25 mW/mA", "slope_efficiency", 0.25),
])
def test_quantities(value, dim, expected):
    assert parse_quantity(value, dim) == pytest.approx(expected)


@pytest.mark.parametrize("value, dim", [("5 V", "temperature"), ("3 K/min", "current"), ("abc", "power"),
                                        (True, "voltage"), ([1, 2], "time"), ("nan V", "voltage"),
                                        ("5 furlongs_per_fortnight", "voltage"), ("10 degC", "temperature_rate"),
                                        ("1 kohm", "conductance"), ("-3 ohm", "resistance")])
def test_wrong_units_are_refused(value, dim):
    with pytest.raises(ValueError, match=f"expected a {dim.replace('_', ' ')}"):
        parse_quantity(value, dim)


def test_example_configs_load():
    wire = load_config(WIRE_YAML)
    assert isinstance(wire.roles, FreeSpaceRoles) and wire.emulator.autostart
    assert all(isinstance(s, InstrumentSpec) for s in wire.instruments.values())
    tc = wire.instruments["cell1_tc"]
    assert (tc.limit("temperature").low, tc.limit("temperature").high) == pytest.approx((273.15, 423.15))
    assert tc.limit("ramp_rate").high == 10.0 and tc.hardware("max_ramp_rate") == 20.0
    real = load_config(REAL_YAML)
    assert real.emulator is None and real.instruments["laser"].limit("power").high == pytest.approx(0.04)
    assert real.instruments["cell1_tc"].limit("temperature").low == pytest.approx(293.15)
    assert real.roles.weights[0].layout == "checkerboard"
    # processor and training sections are the in-process twin's: one file edit moves the run
    twin = load_config(REPO / "lab_configs" / "free_space_sa.yaml")
    for cfg in (wire, real):
        assert cfg.processor.model_dump(exclude={"twin"}) == twin.processor.model_dump(exclude={"twin"})
        assert cfg.training == twin.training


def test_chip_example_station_validates_and_builds_up_to_the_instruments(tmp_path):
    from lightloop.station import validate_station
    from lightloop.benches.integrated_chip import Schema
    from lightloop.errors import InstrumentError

    data = raw(CHIP_YAML)
    cfg = LabConfig.model_validate({**data, "source": str(CHIP_YAML)})
    cfg.processor = Schema.model_validate(data["processor"])
    validate_station(cfg)
    assert isinstance(cfg.roles, ChipRoles) and cfg.instruments["heaters"].limit("voltage").high == 9.0
    loaded = load_config(CHIP_YAML)
    from lightloop.bench import build_processor

    # a network whose meshes do not fit the station's blocks is refused before anything connects ...
    with pytest.raises(ConfigError, match=r"real_integrated_chip.yaml: roles.encoder.count: 8; expected 12"):
        build_processor(loaded, 10, 2)
    # ... the shipped one gets as far as opening the first instrument (no GPIB on this machine)
    with pytest.raises(InstrumentError, match=r"instruments.laser.address"):
        build_processor(loaded, 2, 2)


def _set(path, value):
    def mutate(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


BAD = [
    (_set(["instruments", "laser", "colour"], "red"), "instruments.laser.colour: unknown key"),
    (_set(["instruments", "cell1_tc", "limits", "temperature"], ["0 degC", "250 degC"]),
     "instruments.cell1_tc.limits.temperature: limit [273.15, 523.15] K widens the driver's own range [273.15, 473.15] K"),
    (_set(["instruments", "cell1_tc", "limits", "ramp_rate"], "30 K/min"),
     "instruments.cell1_tc.limits.ramp_rate: limit [0, 30] K/min widens the driver's own range [0, 20] K/min"),
    (_set(["instruments", "cell1_tc", "limits", "ramp_rate"], "5 V/min"),
     "instruments.cell1_tc.limits.ramp_rate: expected a temperature rate"),
    (_set(["instruments", "laser", "limits", "current"], "0.2 W"), "instruments.laser.limits.current: expected a current"),
    (_set(["instruments", "laser", "limits", "current"], "900 mA"),
     "instruments.laser.limits.current: limit [0, 0.9] A widens the driver's own range [0, 0.5] A"),
    (_set(["instruments", "laser", "limits", "voltage"], "1 V"),
     "instruments.laser.limits.voltage: unknown limit for a laser_controller; expected one of current, current_ramp, power"),
    (_set(["instruments", "amplifiers", "limits", "voltage"], ["1 V", "5 V"]),
     "instruments.amplifiers.limits.voltage: limit [1, 5] V excludes 0 V; expected a range containing the safe value 0 V"),
    (_set(["instruments", "scope", "init", "colour"], 1), "instruments.scope.init.colour: not a keyword of driver 'digitizer'"),
    (_set(["instruments", "scope", "driver"], "oscilloscope"), "instruments.scope.driver: unknown driver 'oscilloscope'"),
    (_delete(["instruments", "scope", "address"]), "instruments.scope.address: missing; expected the digitizer address"),
    (_set(["instruments", "scope", "timeout"], "3 V"), "instruments.scope.timeout: expected a time"),
    (_set(["roles", "detectors", "error", 0, "channel"], 5),
     "roles.detectors.error[0].channel: channel 5 does not exist on 'scope' (digitizer with 4 channels); expected 1..4"),
    (_set(["roles", "detectors", "error", 0, "channel"], 3),
     "roles.detectors.error[0].channel: channel 3 of 'scope' already serves roles.detectors.post[0]"),
    (_set(["roles", "detectors", "post"], []), "roles.detectors.post: 0 entries; expected 1 (one per vapor cell)"),
    (lambda d: d["roles"]["weights"].pop(), "roles.weights: 1 entries for 2 weight layers"),
    (_set(["roles", "vapor_cells", 0, "instrument"], "laser"),
     "roles.vapor_cells[0].instrument: 'laser' is a laser_controller; expected a temperature_controller"),
    (_set(["roles", "input", "instrument"], "spare"), "roles.input.instrument: unknown instrument 'spare'"),
    (_set(["roles", "probe", "instrument"], "input_slm"), "roles.probe: 'input_slm' already serves roles.input"),
    (_set(["roles", "source", "operating_current"], "300 mA"),
     "roles.source.operating_current: 0.3 A exceeds what the limits of 'laser' allow"),
    (_set(["roles", "source", "operating_current"], "120 mV"), "roles.source.operating_current: expected a current"),
    (_set(["roles", "probe", "full_scale_field"], 0.05),
     "roles.probe.full_scale_field: 0.05 cannot show processor.probe_field = 0.1; expected >= 0.1"),
    (_set(["roles", "weights", 0, "gain", "channel"], 3),
     "roles.weights[0].gain.channel: channel 3 does not exist on 'amplifiers' (scpi_source with 2 channels)"),
    (_set(["roles", "weights", 0, "fixed_gain"], 2.0), "roles.weights[0]: expected exactly one of 'gain'"),
    (_set(["instruments", "spare", ], {"driver": "power_meter", "address": "TCPIP::127.0.0.1::0::SOCKET",
                                        "visalib": "@py"}), "instruments.spare: not used by any role"),
    (_set(["emulator", "host"], "0.0.0.0"), "emulator.host: expected 127.0.0.1"),
    (_set(["emulator", "sequence_length"], 4), "emulator.sequence_length: expected greater than or equal to 16"),
    (_set(["instruments", "scope", "address"], "TCPIP::10.0.0.5::5025::SOCKET"),
     "instruments.scope.address: host '10.0.0.5': the wire twin serves 127.0.0.1 only"),
    (_set(["instruments", "scope", "address"], "GPIB::7::INSTR"),
     "instruments.scope.address: 'GPIB::7::INSTR' is not served by the wire twin; expected TCPIP::127.0.0.1::<port>::SOCKET"),
    (_set(["instruments", "scope", "visalib"], None), "instruments.scope.visalib: TCPIP SOCKET resources of the wire twin need pyvisa-py"),
    (_set(["instruments", "input_slm", "visalib"], "@py"), "instruments.input_slm.visalib: a slm is not a VISA instrument"),
    (_set(["instruments", "cell1_tc", "driver"], "twin"),
     "instruments.cell1_tc.address: a 'twin' instrument is served in process"),
    (_set(["roles", "weights", 0, "instrument"], "scope"), "roles.weights[0].instrument: 'scope' is a digitizer; expected a dmd or slm"),
    # issue 11 defect 3: driver ranges come from the driver class; init/parameters may only narrow them
    (_set(["instruments", "amplifiers", "init", "v_max"], 1000),
     "instruments.amplifiers.init.v_max: 1000 widens or breaks the driver's hardware range; expected a value in (0, 20]"),
    (_set(["instruments", "laser", "init"], {"i_max": 0.9}),
     "instruments.laser.init.i_max: 0.9 widens or breaks the driver's hardware range; expected a value in (0, 0.5]"),
    (_set(["instruments", "cell1_tc", "init"], {"temperature_range": [273.15, 600]}),
     "instruments.cell1_tc.init.temperature_range: [273.15, 600] widens or breaks the driver's hardware range; "
     "expected [low, high] inside the driver's own range [273.15, 473.15]"),
    (_set(["instruments", "cell1_tc", "init"], {"max_ramp_rate": 100}), "instruments.cell1_tc.init.max_ramp_rate: 100 widens"),
    (_set(["instruments", "amplifiers", "init", "i_max"], "lots"), "instruments.amplifiers.init.i_max: 'lots' widens or breaks"),
    (_set(["instruments", "cell1_tc", "parameters"], {"temperature_limit": 460}),
     "instruments.cell1_tc.parameters.temperature_limit: the HAL owns outputs, set-points, ramps and protection limits"),
    (_set(["instruments", "amplifiers", "parameters"], {"ch1.current_limit": 0.1}),
     "instruments.amplifiers.parameters.ch1.current_limit: the HAL owns"),
    (_set(["instruments", "laser", "parameters"], {"output": True}), "instruments.laser.parameters.output: the HAL owns"),
    # issue 11 defect 2: a ramp rate must be > 0
    (_set(["instruments", "laser", "limits", "current_ramp"], "0 mA/s"),
     "instruments.laser.limits.current_ramp: ramp rate 0 A/s; expected a rate > 0 A/s"),
    (_set(["instruments", "laser", "ramp_interval"], "0 s"), "instruments.laser.ramp_interval: 0 s; expected a software ramp"),
    (_set(["instruments", "laser", "reconnect"], {"attempts": 100}), "instruments.laser.reconnect.attempts: expected less than or equal to 20"),
]


@pytest.mark.parametrize("mutate, message", BAD, ids=[m for _, m in BAD])
def test_bad_station_is_one_line_error(tmp_path, mutate, message):
    with pytest.raises(ConfigError) as info:
        wire_config(tmp_path, mutate)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(tmp_path / "wire.yaml") + ": "), text
    assert message in text, text


def test_twin_instruments_need_a_shared_emulator(tmp_path):
    def mutate(d):
        d["instruments"]["cell1_tc"] = {"driver": "twin"}
        d["emulator"]["autostart"] = False
    with pytest.raises(ConfigError, match="emulator.autostart: instruments \\['cell1_tc'\\] are twins"):
        wire_config(tmp_path, mutate)

    def mixed_light_path(d):
        d["instruments"]["scope"] = {"driver": "twin"}
    with pytest.raises(ConfigError, match="light path .* must be all twins or all drivers"):
        wire_config(tmp_path, mixed_light_path)


def test_cli_reports_a_bad_station_in_one_line(tmp_path):
    data = raw(WIRE_YAML)
    data["instruments"]["cell1_tc"]["limits"]["temperature"] = "600 K"
    path = write(tmp_path, data)
    p = subprocess.run([sys.executable, "-m", "lightloop", "train", "--config", str(path), "--epochs", "1"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lightloop: error: ")
    assert f"{path}: instruments.cell1_tc.limits.temperature: limit [273.15, 600] K widens" in lines[0]


def test_init_narrowing_is_allowed_and_bounds_the_limits(tmp_path):
    """A narrower init range is the hardware range the limits are checked against (issue 11 defect 3)."""
    def narrow(d):
        d["instruments"]["amplifiers"]["init"]["v_max"] = 10.0
        d["instruments"]["amplifiers"]["limits"]["voltage"] = ["0 V", "5 V"]
    cfg = wire_config(tmp_path, narrow)
    assert cfg.instruments["amplifiers"].hardware("v_max") == 10.0

    def widen_by_limit(d):
        d["instruments"]["amplifiers"]["init"]["v_max"] = 4.0
    with pytest.raises(ConfigError, match=r"instruments.amplifiers.limits.voltage: limit \[0, 5\] V widens the driver's own "
                                          r"range \[-4, 4\] V"):
        wire_config(tmp_path, widen_by_limit)


def test_unconfigured_software_ramps_get_the_drivers_conservative_default(tmp_path):
    from lightloop.station._instruments import DEFAULT_RAMPS
    from lightloop.station.free_space import ramp_policy

    def drop(d):
        del d["instruments"]["laser"]["limits"]["current_ramp"]
        del d["instruments"]["amplifiers"]["limits"]["voltage_ramp"]
    cfg = wire_config(tmp_path, drop)
    for name, driver, key in (("laser", "laser_controller", "current_ramp"), ("amplifiers", "scpi_source", "voltage_ramp")):
        assert ramp_policy(cfg.instruments[name], key).max_rate == DEFAULT_RAMPS[driver][key] < float("inf")
