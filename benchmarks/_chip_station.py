"""The wire chip station (lab_configs/wire_integrated_chip.yaml) rescaled to two n x n meshes, for benchmarks and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHIP_WIRE = ROOT / "lab_configs" / "wire_integrated_chip.yaml"


def chip_wire_config(folder: Path, n: int, store: Path | str | None = None, **processor: Any) -> Path:
    """Write a copy of the wire chip config serving circles (2 inputs + 2 bias ports) on two n-port meshes (n >= 4):
    n(n-1) heaters per mesh, 5 n IQ channels, n ring biases; `store` (None: no calibration store)."""
    d = yaml.safe_load(CHIP_WIRE.read_text())
    d["processor"].update(processor)
    d["processor"]["hidden"] = [n]
    d["processor"]["calibration"] = {"store": str(store)} if store else {}
    d["emulator"]["layer_sizes"] = [2, n, 2]
    k = n * (n - 1)                                   # phase shifters of an n-port rectangular mesh (theta, phi)
    inst, roles = d["instruments"], d["roles"]
    inst["iq_awg"]["init"]["n_channels"] = 5 * n
    inst["heaters"]["init"]["n_channels"] = 2 * k
    inst["ring_bias"]["init"]["n_channels"] = n
    roles["encoder"].update(first_channel=1, count=n)
    for layer in range(2):
        roles["injectors"][layer].update(first_channel=1 + (1 + layer) * n, count=n)
        roles["adjoint_sources"][layer].update(first_channel=1 + (3 + layer) * n, count=n)
        roles["phase_shifters"][layer].update(first_channel=layer * k, count=k)
    roles["activation_bias"][0].update(first_channel=1, count=n)
    path = Path(folder) / f"wire_chip_{n}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path
