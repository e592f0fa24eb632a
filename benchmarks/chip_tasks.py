"""Two nonlinear 2D tasks (circles, moons) on the simulated integrated chip: on-chip training with in-situ
`adjoint` gradients on an imperfect chip (process variation, noise, drift) against the ideal digital model
of the same size (the ideal chip: no variation, no noise - where `adjoint` is exact). Prints one JSON object.

    python benchmarks/chip_tasks.py --epochs 20
"""

from __future__ import annotations

import argparse
import json
import sys

import _chip_common as cc
from lightloop.training.datasets import load_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--chip-seed", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    clock = cc.Timer()
    out: dict = {"benchmark": "chip_tasks", "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                 "chip_seed": args.chip_seed, "tasks": {}}
    for task in ("circles", "moons"):
        data = load_dataset(task)
        rec: dict = {"train_size": int(data.x_train.shape[0]), "test_size": int(data.x_test.shape[0])}
        for label, ideal in (("on_chip", False), ("ideal_digital", True)):
            proc = cc.chip(data, ideal=ideal, chip_seed=args.chip_seed)
            res = cc.train(proc, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
            rec[label] = {"test_accuracy": res.test_accuracy, "best_test_accuracy": res.best_test_accuracy,
                          "seconds_per_epoch": res.mean_epoch_seconds,
                          "measurements_per_step": res.measurements_per_step}
            rec["layer_sizes"] = list(proc.layer_sizes)
            rec["mesh_ports"] = proc.info["mesh_ports"]
            rec["phase_shifters"] = proc.summary_fields()["phase_shifters"]
        gap = rec["ideal_digital"]["test_accuracy"] - rec["on_chip"]["test_accuracy"]
        rec["gap_points"] = 100 * gap
        rec["meets_95"] = bool(rec["on_chip"]["test_accuracy"] >= 0.95)
        rec["within_2_points"] = bool(gap <= 0.02)
        out["tasks"][task] = rec
    out["all_targets_met"] = all(r["meets_95"] and r["within_2_points"] for r in out["tasks"].values())
    out["total_seconds"] = clock()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
