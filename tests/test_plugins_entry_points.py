"""Drivers, benches, gradient methods and datasets from outside the package: entry points of an installed
distribution (a real *.dist-info on sys.path, found by importlib.metadata), class paths in `driver:`, the role
contract of a foreign driver (one-line errors naming the config field), and a QCoDeS station YAML supplying the
instruments."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import yaml

import lightloop
from lightloop.config import load_config, parse_config
from lightloop.errors import ConfigError
from lightloop.plugins import entry_points_of, load_entry_point

from test_wire_kit import clean_wire, raw  # noqa: F401  (clean_wire: fixture)

PKG = "e14_labpkg"

MODULE = f'''
"""A lab's own package: a driver, a gradient method, a dataset and a bench kind for lightloop."""
import numpy as np
from typing import Literal

from qcodes.instrument import Instrument
from lightloop.drivers.laser_controller import LaserDiodeController
from lightloop.training.datasets import Dataset
from lightloop.training.gradients import PumpProbeGradient


class LabLaser(LaserDiodeController):
    """The lab's laser controller class (its family: the built-in class it extends)."""


class HalfLaser(LaserDiodeController):
    """A laser driver that lacks a parameter of the laser_controller role contract."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.parameters["current_limit"]


class BareLaser(Instrument):
    """Declares a family but has none of its methods."""

    lightloop_family = "laser_controller"


class NotADriver:
    """Not a QCoDeS instrument."""


class LabGradient(PumpProbeGradient):
    """The pump-probe gradient under the lab's own name."""

    name = "lab_exact"


def load_blobs(data_dir=None):
    """Two Gaussian blobs in 3 features."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = np.clip(0.5 + (2 * y[:, None] - 1) * 0.2 + rng.normal(0, 0.05, (200, 3)), 0, 1).astype(np.float32)
    return Dataset("lab_blobs", x[:150], y[:150].astype(np.int64), x[150:], y[150:].astype(np.int64), 2)
'''

BENCH = '''
"""A bench kind of the lab: the digital bench under another name."""
from typing import Literal

from lightloop.benches import digital


class Schema(digital.Schema):
    kind: Literal["lab_digital"]


build = digital.build
'''

ENTRY_POINTS = f"""
[lightloop.drivers]
lab_laser = {PKG}:LabLaser
half_laser = {PKG}:HalfLaser
broken = {PKG}_missing:Nothing

[lightloop.gradients]
lab_exact = {PKG}:LabGradient

[lightloop.datasets]
lab_blobs = {PKG}:load_blobs

[lightloop.benches]
lab_digital = {PKG}.bench
"""


@pytest.fixture(scope="module")
def lab_package(tmp_path_factory):
    """An installed distribution `e14-labpkg` (dist-info with entry_points.txt) on sys.path."""
    import sys

    root = tmp_path_factory.mktemp("site")
    (root / PKG).mkdir()
    (root / PKG / "__init__.py").write_text(MODULE)
    (root / PKG / "bench.py").write_text(BENCH)
    info = root / "e14_labpkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: e14-labpkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    from lightloop.training.datasets import DATASET_LOADERS
    from lightloop.training.gradients import GRADIENT_METHODS

    GRADIENT_METHODS.pop("lab_exact", None)
    DATASET_LOADERS.pop("lab_blobs", None)
    for name in [m for m in sys.modules if m.startswith(PKG)]:
        del sys.modules[name]


def _wire(tmp_path, mutate):
    data = raw()
    for spec in data["instruments"].values():
        spec["timeout"] = "0.5 s"
    mutate(data)
    return data


def test_entry_points_are_discovered_and_loaded(lab_package):
    assert {"lab_laser", "half_laser", "broken"} <= set(entry_points_of("lightloop.drivers"))
    assert load_entry_point("lightloop.drivers", "lab_laser").__name__ == "LabLaser"
    with pytest.raises(ConfigError) as exc:
        load_entry_point("lightloop.drivers", "broken")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("entry point lightloop.drivers:broken (e14_labpkg_missing:Nothing): "
                                              "cannot be loaded (ModuleNotFoundError")
    with pytest.raises(ConfigError, match="lightloop.gradients:nope: not registered by any installed package"):
        load_entry_point("lightloop.gradients", "nope")


def test_bench_gradient_and_dataset_from_entry_points_train(lab_package):
    from lightloop.benches import available_kinds
    from lightloop.training.datasets import dataset_names

    assert "lab_digital" in available_kinds() and "lab_blobs" in dataset_names()
    cfg = {"bench": "lab-bench", "processor": {"kind": "lab_digital", "hidden": [4], "output_activation": "linear"},
           "training": {"dataset": "lab_blobs", "gradient": "lab_exact", "lr": 0.1, "epochs": 3, "batch_size": 8}}
    with lightloop.open_bench(cfg) as bench:
        assert bench.kind == "lab_digital" and bench.sizes == (3, 4, 2)
        result = bench.train()
    assert result.epochs == 3 and result.test_accuracy > 0.9      # two well-separated blobs
    with pytest.raises(ConfigError, match="training.gradient: unknown gradient method 'lab_nope'; expected one of:"
                                          " .*lab_exact"):
        parse_config({**cfg, "training": {**cfg["training"], "gradient": "lab_nope"}})


@pytest.mark.parametrize("driver", ["lab_laser", f"{PKG}:LabLaser", f"{PKG}.LabLaser"])
def test_foreign_driver_by_entry_point_or_class_path_runs_the_wire_bench(lab_package, tmp_path, driver, clean_wire):
    data = _wire(tmp_path, lambda d: d["instruments"]["laser"].update(driver=driver))
    cfg = parse_config(data, "lab.yaml")
    spec = cfg.instruments["laser"]
    assert spec.driver == "laser_controller" and spec.driver_target.endswith("LabLaser")
    with lightloop.open_bench(cfg, sizes=[6, 4, 3], ideal=True) as bench:
        assert type(bench.instruments["laser"].driver).__name__ == "LabLaser"
        bench.program(bench.init_parameters())
        assert bench.forward(np.full((2, 6), 0.5, np.float32)).output.shape == (2, 3)
        assert any(c.startswith("SOUR:CURR ") for c in bench.command_log.commands("laser"))


@pytest.mark.parametrize("driver, field, match", [
    ("no_such_driver", "instruments.laser.driver", "unknown driver 'no_such_driver'; expected one of"),
    (f"{PKG}:Nope", "instruments.laser.driver", f"module '{PKG}' has no 'Nope'; expected a QCoDeS Instrument"),
    (f"{PKG}:NotADriver", "instruments.laser.driver", "is not a QCoDeS Instrument class"),
    (f"{PKG}:BareLaser", "instruments.laser.driver", "BareLaser lacks method(s) set_current_verified that a "
                                                      "laser_controller must have"),
])
def test_bad_foreign_drivers_are_one_line_errors_at_load(lab_package, tmp_path, driver, field, match):
    data = _wire(tmp_path, lambda d: d["instruments"]["laser"].update(driver=driver))
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "lab.yaml")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"lab.yaml: {field}: ") and match in msg, msg


def test_a_driver_missing_a_contract_parameter_fails_at_connect_naming_the_field(lab_package, tmp_path, clean_wire):
    data = _wire(tmp_path, lambda d: d["instruments"]["laser"].update(driver="half_laser"))
    with pytest.raises(ConfigError) as exc:
        lightloop.open_bench(parse_config(data, "lab.yaml"), sizes=[6, 4, 3], ideal=True)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"lab.yaml: instruments.laser.driver: {PKG}:HalfLaser lacks parameter current_limit of the "
                          "laser_controller role contract; expected"), msg


def test_builtin_drivers_satisfy_their_own_role_contract(clean_wire):
    from lightloop.drivers import missing_contract

    with lightloop.open_bench(raw(), sizes=[6, 4, 3], ideal=True) as bench:
        for name, spec in bench.config.instruments.items():
            assert missing_contract(spec.driver, bench.instruments[name].driver) == [], name


def test_qcodes_station_yaml_supplies_the_instruments(tmp_path, clean_wire):
    import qcodes

    from lightloop.drivers import DRIVER_CLASSES

    data = raw()
    station = {"instruments": {}}
    for name, spec in data["instruments"].items():
        entry = {"type": DRIVER_CLASSES[spec["driver"]].replace(":", "."), "address": spec["address"],
                 "init": {k: v for k, v in {**spec.get("init", {}), "visalib": spec.get("visalib")}.items()
                          if v is not None}}
        if "parameters" in spec:
            entry["parameters"] = {p: {"initial_value": v} for p, v in spec["parameters"].items()}
        station["instruments"][name] = entry
        # the lab config keeps only what is lightloop's: limits, timeouts
        data["instruments"][name] = {k: v for k, v in spec.items() if k in ("limits", "timeout")}
    station_yaml = tmp_path / "station.yaml"
    station_yaml.write_text(yaml.safe_dump(station))
    bench_yaml = tmp_path / "bench.yaml"
    bench_yaml.write_text(yaml.safe_dump(data))
    qcodes.Station(config_file=str(station_yaml))          # QCoDeS itself accepts the file as a station config
    with pytest.raises(ConfigError, match=r"instruments\.\w+\.driver: missing; expected a value"):
        load_config(bench_yaml)                             # without the station the entries are incomplete
    with lightloop.open_bench(bench_yaml, station=station_yaml, sizes=[6, 4, 3], ideal=True) as bench:
        laser = bench.config.instruments["laser"]
        assert laser.driver == "laser_controller" and laser.limit("current").high == pytest.approx(0.2)
        assert bench.instruments["scope"].driver.trigger_source() == "EXT"   # the station's initial_value
        assert bench.forward(np.full((2, 6), 0.5, np.float32)).output.shape == (2, 3)
    station["instruments"]["laser"]["parameters"] = {"current": {"limits": [0, 0.1]}}
    station_yaml.write_text(yaml.safe_dump(station))
    with pytest.raises(ConfigError) as exc:
        lightloop.open_bench(bench_yaml, station=station_yaml, sizes=[6, 4, 3], ideal=True)
    assert str(exc.value).startswith(f"{station_yaml}: instruments.laser.parameters.current.limits: not taken over "
                                     "by lightloop; expected only initial_value")


def test_the_command_line_takes_entry_point_benches_datasets_and_gradients(lab_package, tmp_path, capsys):
    import json

    from lightloop.cli import main

    cfg = {"bench": "lab-bench", "processor": {"kind": "lab_digital", "hidden": [4], "output_activation": "linear"},
           "training": {"dataset": "digits", "gradient": "pump_probe", "lr": 0.1, "epochs": 1, "batch_size": 8}}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["train", "--config", str(path), "--dataset", "lab_blobs", "--gradient", "lab_exact", "--epochs", "2",
                 "--out", str(tmp_path / "run"), "--json", "--no-progress"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["dataset"] == "lab_blobs" and summary["gradient"] == "lab_exact"
    assert summary["epochs"] == 2 and summary["layer_sizes"] == [3, 4, 2]
