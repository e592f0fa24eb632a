"""Bad chip-station configs (issue 12): one stderr line naming the file, the field and what was expected, exit 2,
and nothing connected.

Every case mutates lab_configs/real_integrated_chip.yaml, whose instruments are unreachable on this machine (a
GPIB laser, LAN addresses): a run that got as far as connecting would fail with an instrument error naming an
address (exit 1), so exit 2 with the config message proves the refusal came first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from lightloop.cli import main

REPO = Path(__file__).resolve().parent.parent
REAL = REPO / "lab_configs" / "real_integrated_chip.yaml"


def _mutate(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(cfg: dict[str, Any]) -> None:
        node: Any = cfg
        parts = path.split(".")
        for p in parts[:-1]:
            if p.endswith("]"):
                name, idx = p[:-1].split("[")
                node = node[name][int(idx)]
            else:
                node = node[p]
        last = parts[-1]
        if last.endswith("]"):
            name, idx = last[:-1].split("[")
            node[name][int(idx)] = value
        else:
            node[last] = value
    return apply


#: (case id, mutation, field named in the message, what the message must say was expected)
CASES = [
    ("encoder-on-a-digitizer", _mutate("roles.encoder.instrument", "scope"), "roles.encoder.instrument", "expected a awg"),
    ("heaters-on-an-awg", _mutate("roles.phase_shifters[0].instrument", "iq_awg"), "roles.phase_shifters[0].instrument",
     "expected a qontrol_heater or scpi_source"),
    ("receiver-on-the-heaters", _mutate("roles.detectors.output_receivers[1]", {"instrument": "heaters", "channel": 3}),
     "roles.detectors.output_receivers[1].instrument", "expected a digitizer"),
    ("overlapping-iq-blocks", _mutate("roles.injectors[0].first_channel", 5), "roles.injectors[0]",
     "expected disjoint channel blocks"),
    ("overlapping-heater-blocks", _mutate("roles.phase_shifters[1].first_channel", 50), "roles.phase_shifters[1]",
     "expected disjoint channel blocks"),
    ("iq-block-past-the-awg", _mutate("roles.adjoint_sources[1].first_channel", 36), "roles.adjoint_sources[1].count",
     "expected 1..40"),
    ("heater-block-past-the-driver", _mutate("instruments.heaters.init.n_channels", 100),
     "roles.phase_shifters[1].count", "expected 0..99"),
    ("shared-digitizer-channel", _mutate("roles.detectors.activation_slope[0].channel", 8),
     "roles.detectors.activation_slope[0].channel", "expected one detector array per channel"),
    ("missing-injector", _mutate("roles.injectors", [{"instrument": "iq_awg", "first_channel": 9, "count": 8,
                                                      "full_scale_field": 10.0, "amplitude": "0.5 V"}]),
     "roles.injectors", "expected 2 (one IQ block per mesh layer)"),
    ("heater-bank-size", _mutate("roles.phase_shifters[0].count", 48), "roles.phase_shifters[0].count",
     "expected 56 (heater channels for the 56 phase shifters"),
    ("iq-block-size", _mutate("roles.adjoint_sources[0].count", 6), "roles.adjoint_sources[0].count", "expected 8"),
    ("bias-block-size", _mutate("roles.activation_bias[0].count", 6), "roles.activation_bias[0].count", "expected 8"),
    ("heater-vmax-widens", _mutate("processor.phase_shifters.v_max", 10.0), "roles.phase_shifters[0]",
     "widens the voltage limit"),
    ("bias-widens", _mutate("processor.activation.v_bias_max", 6.0), "roles.activation_bias[0]",
     "widens the voltage limit"),
    ("awg-amplitude-widens", _mutate("roles.encoder.amplitude", "0.8 V"), "roles.encoder.amplitude",
     "expected amplitude <= 0.5 V"),
    ("awg-limit-widens-driver", _mutate("instruments.iq_awg.limits.amplitude", "2 V"),
     "instruments.iq_awg.limits.amplitude", "widens the driver's own range"),
    ("heater-limit-widens-driver", _mutate("instruments.heaters.limits.voltage", ["0 V", "15 V"]),
     "instruments.heaters.limits.voltage", "widens the driver's own range"),
    ("full-scale-below-injection", _mutate("roles.injectors[1].full_scale_field", 5.0),
     "roles.injectors[1].full_scale_field", "expected full_scale_field >= 10"),
    ("full-scale-below-encoder", _mutate("roles.encoder.full_scale_field", 2.0), "roles.encoder.full_scale_field",
     "expected full_scale_field >= 3"),
    ("zero-amplitude", _mutate("roles.encoder.amplitude", "0 V"), "roles.encoder.amplitude",
     "expected a full-scale amplitude > 0 V"),
    ("negative-volts-per-unit", _mutate("roles.detectors.monitors[0].volts_per_unit", -1.0),
     "roles.detectors.monitors.0.volts_per_unit", "expected greater than 0"),
]


@pytest.mark.parametrize("case,mutate,field,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_chip_station_is_one_line_exit_2_before_connecting(tmp_path, capsys, case, mutate, field, expected):
    cfg = yaml.safe_load(REAL.read_text())
    mutate(cfg)
    path = tmp_path / "chip.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code = main(["train", "--config", str(path), "--dataset", "circles", "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert str(path) in err[0] and field in err[0] and expected in err[0], err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.jsonl"))


def test_shipped_chip_station_configs_load_and_pass_safe_validation():
    from lightloop.config import load_config

    for name in ("real_integrated_chip.yaml", "wire_integrated_chip.yaml"):
        cfg = load_config(REPO / "lab_configs" / name)
        roles = cfg.roles
        assert roles.encoder.count == 8 and len(roles.phase_shifters) == 2
        assert json.loads(roles.model_dump_json())["detectors"]["monitors"][0]["volts_per_unit"] == 0.02
