"""Robustness to fabrication variation: over N chips drawn from the process-variation model (chip seeds
1..N), test accuracy of (a) on-chip `adjoint` training on each chip and (b) weights trained offline on the
ideal model, then programmed onto each chip through its nominal calibration. Also (b) for weaker and
stronger phase-offset spreads (evaluation only). Prints one JSON object.

    python benchmarks/chip_robustness.py --chips 20 --epochs 8
"""

from __future__ import annotations

import argparse
import json
import sys

import _chip_common as cc
from lightloop.training.datasets import load_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chips", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=8, help="on-chip training epochs per chip")
    ap.add_argument("--offline-epochs", type=int, default=20, help="epochs of the ideal (offline) model")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--phi0-sweep", type=float, nargs="*", default=[0.1, 1.0, 3.0],
                    help="extra phase-offset spreads (rad) for the offline-weights evaluation")
    ap.add_argument("--tasks", nargs="+", default=["circles", "moons"])
    args = ap.parse_args(argv)
    clock = cc.Timer()
    seeds = list(range(1, args.chips + 1))
    out: dict = {"benchmark": "chip_robustness", "chips": args.chips, "chip_seeds": [seeds[0], seeds[-1]],
                 "epochs_on_chip": args.epochs, "epochs_offline": args.offline_epochs,
                 "variation": cc.RAW["processor"]["chip"]["variation"], "tasks": {}}
    for task in args.tasks:
        data = load_dataset(task)
        ideal = cc.chip(data, ideal=True)
        off = cc.train(ideal, data, epochs=args.offline_epochs, batch_size=args.batch_size, lr=args.lr)
        offline = [p.copy() for p in off.params]
        on_chip, programmed = [], []
        for s in seeds:
            proc = cc.chip(data, ideal=False, chip_seed=s)
            programmed.append(cc.accuracy_with(proc, offline, data))
            res = cc.train(proc, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=s)
            on_chip.append(res.test_accuracy)
        sweep = {}
        for sd in args.phi0_sweep:
            accs = [cc.accuracy_with(cc.chip(data, ideal=False, chip_seed=s, edits={"chip.variation.phi0_sd_rad": sd}),
                                     offline, data) for s in seeds]
            sweep[f"{sd:g}"] = cc.stats(accs)
        a, b = cc.stats(on_chip), cc.stats(programmed)
        out["tasks"][task] = {
            "ideal_model_test_accuracy": off.test_accuracy,
            "a_on_chip_training": a,
            "b_offline_weights_nominal_calibration": b,
            "b_offline_by_phi0_sd_rad": sweep,
            "a_per_chip": on_chip, "b_per_chip": programmed,
            "on_chip_holds": bool(a["mean"] >= off.test_accuracy - 0.02),
            "offline_degrades_points": 100 * (off.test_accuracy - b["mean"]),
        }
    out["total_seconds"] = clock()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
