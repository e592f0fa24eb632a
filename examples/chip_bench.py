"""Integrated chip from Python: set phases, forward a batch, read the coherent receivers and tap monitors.

    python examples/chip_bench.py                # ideal in-process twin of lab_configs/integrated_chip.yaml (~1 s)
"""

from __future__ import annotations

import numpy as np

import lightloop


def main(config: str = "integrated_chip") -> dict[str, float]:
    """Set a mesh's phases, read back what the receivers see; return a few numbers."""
    with lightloop.open_bench(config, ideal=True) as chip:     # geometry: the config's dataset (circles: 2 -> 2)
        print(chip)
        phases = chip.mesh1.random_phases(np.random.default_rng(0))   # a Haar-random unitary layer (rad)
        chip.phases1.set_phases(phases)                # one batched, ramped heater write
        print("phases read back (rad):", np.round(chip.phases1.read_phases()[:4], 3))

        x = chip.dataset.x_test[:8]
        taps = chip.forward(x)                         # encode, propagate, detect
        fields = chip.receiver1.acquire()              # complex fields at mesh 1's outputs (batch, ports)
        taps_power = chip.monitor1.acquire()           # tap monitors, integrated over the batch (one per shifter)
        print("receiver1", fields.shape, "monitor1", taps_power.shape, "output", taps.output.shape)
    return {"mean_power": float(np.mean(np.abs(fields) ** 2)), "n_taps": float(taps_power.size)}


if __name__ == "__main__":
    main()
