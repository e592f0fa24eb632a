"""Chip tasks that need the hidden layer (two spirals, noisy XOR, Iris; circles and moons on request) on the
simulated integrated chip. Per task: on-chip training with in-situ `adjoint` gradients on the imperfect chip
twin (lab_configs/integrated_chip.yaml, chip seed 1), the ideal digital model of the same size (the ideal chip:
no variation, no noise - where `adjoint` is the exact gradient), logistic regression and 15-nearest-neighbours.

No setting is chosen on the test set: every candidate (hidden layers, outputs, learning rate, bias ports) is
trained on the training set minus a validation part (25 %, stratified; Iris: 3-fold cross-validation of its 75
training samples), the candidate and its epoch count with the best (mean) validation accuracy is chosen, the
chosen setting is retrained on the whole training set for that many epochs, and its final-epoch test accuracy
is reported. On-chip and ideal model select separately. The Ashtiani et al. chip shape (two inputs, one hidden
layer of 8 EO neurons, ONE output trained with MSE to the class 0/1, threshold 0.5) is reported on its own for
the binary tasks (selection over learning rate and bias ports only). Prints one JSON object.

    python benchmarks/chip_tasks.py                       # spirals xor iris, the default grid
    python benchmarks/chip_tasks.py --tasks circles moons --max-epochs 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any

import numpy as np

import _chip_common as cc
from lightloop.training.datasets import Dataset, cv_folds, load_dataset, validation_split

ASHTIANI = {"hidden": [8], "n_out": 1}


def candidates(data: Dataset, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The grid: hidden layers x outputs (binary: 1 or 2; else one per class) x learning rate x bias ports."""
    outs = [1, 2] if data.n_classes == 2 else [data.n_classes]
    return [{"hidden": list(h), "n_out": o, "lr": lr, "bias_ports": b}
            for h, o, lr, b in itertools.product(args.hidden, outs, args.lrs, args.bias_ports)]


def run(data: Dataset, cand: dict[str, Any], *, ideal: bool, epochs: int, args: argparse.Namespace) -> Any:
    """Train one candidate (its test split is whatever `data` holds); the Trainer's result."""
    proc = cc.chip(data, ideal=ideal, chip_seed=args.chip_seed, hidden=cand["hidden"], n_out=cand["n_out"],
                   edits={"encoder.bias_ports": cand["bias_ports"]})
    return cc.train(proc, data, epochs=epochs, batch_size=args.batch_size, lr=cand["lr"], seed=args.seed)


def folds_of(data: Dataset, seed: int) -> list[Dataset]:
    """Validation data carved from data's training set: 3-fold CV below 200 samples, else one 25 % split."""
    return cv_folds(data, 3, seed=seed) if data.x_train.shape[0] < 200 else [validation_split(data, 0.25, seed)]


def score(data: Dataset, cands: list[dict[str, Any]], *, ideal: bool, max_epochs: int,
          args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each candidate's best mean validation accuracy over the epochs, and that epoch count (test set unused)."""
    folds = folds_of(data, args.seed)
    table = []
    for cand in cands:
        curves = [[h["test_accuracy"] for h in run(f, cand, ideal=ideal, epochs=max_epochs, args=args).history]
                  for f in folds]                          # a fold's "test" part is its validation part
        mean = np.mean(curves, axis=0)
        best = int(np.argmax(mean))                        # earliest epoch of the best mean validation accuracy
        table.append({**cand, "epochs": best + 1, "validation_accuracy": float(mean[best])})
    return table


def finish(data: Dataset, table: list[dict[str, Any]], *, ideal: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Pick the best validation row (ties: first in grid order), retrain it on the whole training set, test it."""
    pick = max(range(len(table)), key=lambda i: (table[i]["validation_accuracy"], -i))
    chosen = table[pick]
    cand = {k: chosen[k] for k in ("hidden", "n_out", "lr", "bias_ports")}
    res = run(data, cand, ideal=ideal, epochs=chosen["epochs"], args=args)
    folds = folds_of(data, args.seed)
    return {"chosen": chosen, "test_accuracy": res.test_accuracy,
            "validation": f"{len(folds)}-fold cross-validation" if len(folds) > 1 else
            f"25% of the training set ({folds[0].x_test.shape[0]} samples)",
            "seconds_per_epoch": res.mean_epoch_seconds, "measurements_per_step": res.measurements_per_step}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["spirals", "xor", "iris"])
    ap.add_argument("--max-epochs", type=int, default=30, help="epochs of each selection run (2D tasks)")
    ap.add_argument("--max-epochs-iris", type=int, default=60, help="epochs of each selection run (Iris)")
    ap.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")], nargs="+", default=[[8], [8, 8]],
                    help="hidden-layer candidates, e.g. 8 8,8")
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    ap.add_argument("--bias-ports", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--chip-seed", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="training seed (init, shuffling) and validation split")
    args = ap.parse_args(argv)
    clock = cc.Timer()
    out: dict = {"benchmark": "chip_tasks", "chip_seed": args.chip_seed, "seed": args.seed,
                 "batch_size": args.batch_size, "grid": {"hidden": args.hidden, "lr": args.lrs,
                                                         "bias_ports": args.bias_ports}, "tasks": {}}
    for task in args.tasks:
        data = load_dataset(task)
        max_epochs = args.max_epochs_iris if task == "iris" else args.max_epochs
        cands = candidates(data, args)
        rec: dict = {"train_size": int(data.x_train.shape[0]), "test_size": int(data.x_test.shape[0]),
                     "max_epochs": max_epochs,
                     "logistic_regression_test_accuracy": cc.logistic_regression(data),
                     "knn15_test_accuracy": cc.knn(data, 15)}
        for label, ideal in (("on_chip", False), ("ideal_digital", True)):
            table = score(data, cands, ideal=ideal, max_epochs=max_epochs, args=args)
            rec[label] = finish(data, table, ideal=ideal, args=args)
            sub = [r for r in table if r["hidden"] == ASHTIANI["hidden"] and r["n_out"] == ASHTIANI["n_out"]]
            if sub and data.n_features == 2:
                rec[f"{label}_ashtiani_2_8_1"] = finish(data, sub, ideal=ideal, args=args)
            rec[label]["candidates"] = table
            print(json.dumps({"progress": task, label: rec[label]["test_accuracy"],
                              "seconds": round(clock(), 1)}), file=sys.stderr, flush=True)
        rec["gap_points"] = 100 * (rec["ideal_digital"]["test_accuracy"] - rec["on_chip"]["test_accuracy"])
        out["tasks"][task] = rec
    out["total_seconds"] = clock()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
