"""Free-space bench from Python: program weights, forward a batch, read detectors, calibrate, train one epoch.

    python examples/free_space_bench.py          # in-process twin of lab_configs/free_space_sa.yaml (~2 s)
"""

from __future__ import annotations

import numpy as np

import lightloop


def main(config: str = "free_space_sa", hidden: tuple[int, ...] = (8,)) -> dict[str, float]:
    """Run the tour on a bench and return a few numbers (accuracy, detector volts)."""
    with lightloop.open_bench(config, hidden=list(hidden)) as bench:   # geometry: the config's dataset (digits)
        print(bench)
        x = bench.dataset.x_test[:16]                  # a batch of 16 digits, features in [0, 1]

        weights = bench.init_parameters(seed=0)        # one (out, in) matrix per layer
        bench.w1.write(weights[0])                     # program one weight block through its role ...
        bench.program(weights)                         # ... or every layer at once

        taps = bench.forward(x)                        # tapped fields of the forward pass
        volts = bench.pre1.acquire_volts()             # raw homodyne volts of layer 1's pre-activation taps
        print("output", taps.output.shape, "pre1 volts", volts.shape, "cell1", f"{bench.cell1.read_temperature():.1f} K")

        [outcome] = bench.calibrate("slm_lut")         # measure and apply the SLM gray-level LUTs
        print("slm_lut:", outcome.status)

        result = bench.train(epochs=1)                 # the config's training settings, one epoch
        print(f"test accuracy after one epoch: {result.test_accuracy:.3f}")
    # leaving the `with` block put the bench in its safe state
    return {"test_accuracy": result.test_accuracy, "pre1_volts_rms": float(np.sqrt(np.mean(volts**2)))}


if __name__ == "__main__":
    main()
