"""Choose a lab config's selected setting on validation data carved from the training set, never on the test set;
prints one JSON object: each candidate's validation accuracy, the chosen value, its test accuracy and the
spread of test accuracy over the alternatives (each retrained on the whole training set).

* ``flow``: `processor.lattice.layout_seed` of lab_configs/flow_network.yaml (Iris; 3-fold cross-validation of
  the 75 training samples, the config's training settings: chemical signalling, 60 epochs);
* ``free_space_mnist``: the input field scale of the deep free-space MNIST network (README: 784-128-128-10,
  a0 = 30, MSE, pump-probe, Adam lr 5e-4, batch 64, ideal twin, 60 epochs; as benchmarks/free_space_mnist.py
  runs it); validation = 1/6 of the training set (10,000 images, stratified);
* ``free_space``: `processor.input_field_scale` of lab_configs/free_space_sa.yaml (the default `lightloop train`:
  digits, realistic twin, 15 epochs; validation = 25 % of the training set, stratified).

The criterion is the mean validation accuracy at the last epoch (no epoch picking), ties broken by the lower mean
validation loss. Test accuracies are computed after the choice and never enter it. --select-epochs shortens
the validation runs only (the test runs use the bench's epochs).

    python benchmarks/select_settings.py flow --candidates 0 1 2 3 4 5 6 7 8 9
    python benchmarks/select_settings.py free_space_mnist --select-epochs 20
    python benchmarks/select_settings.py free_space --candidates 0.5 0.7 1.0 1.4 2.0 --seeds 0 1
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # small factorisations: BLAS threads only contend

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lightloop.bench import BuildOverrides, build_processor  # noqa: E402
from lightloop.config import load_config  # noqa: E402
from lightloop.training.datasets import Dataset, cv_folds, load_dataset, validation_split  # noqa: E402
from lightloop.training.gradients import make_gradient  # noqa: E402
from lightloop.training.optimizers import make_optimizer  # noqa: E402
from lightloop.training.trainer import Trainer, TrainResult, TrainSettings  # noqa: E402

BENCHES: dict[str, dict[str, Any]] = {
    "flow": {"config": ROOT / "lab_configs" / "flow_network.yaml", "field": "lattice.layout_seed", "type": int,
             "candidates": list(range(10)), "folds": "cv3"},
    "free_space": {"config": ROOT / "lab_configs" / "free_space_sa.yaml", "field": "input_field_scale",
                   "type": float, "candidates": [0.5, 0.7, 1.0, 1.4, 2.0], "folds": "split25"},
    "free_space_mnist": {"config": ROOT / "lab_configs" / "free_space_sa.yaml", "field": "input_field_scale",
                         "type": float, "candidates": [0.5, 0.7, 1.0, 2.0], "folds": "split1/6", "dataset": "mnist",
                         "build": {"hidden": [128, 128], "ideal": True, "optical_depth": 30.0},
                         "processor": {"error_readout": "single"},
                         "training": {"epochs": 60, "batch_size": 64, "lr": 5e-4, "loss": "mse", "init_scale": 0.1,
                                      "gradient": "pump_probe", "optimizer": "adam", "gradient_options": {}}},
}


def set_field(cfg: Any, dotted: str, value: Any) -> None:
    """Set cfg.processor.<dotted> (attribute path) to value."""
    target = cfg.processor
    parts = dotted.split(".")
    for p in parts[:-1]:
        target = getattr(target, p)
    setattr(target, parts[-1], value)


def training_of(b: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """The bench's training settings: the config's `training` section, with the bench's own values on top."""
    t = cfg.training
    own = {k: getattr(t, k) for k in ("epochs", "batch_size", "lr", "loss", "init_scale", "gradient", "optimizer",
                                      "gradient_options")}
    return {**own, **b.get("training", {})}


def train_like_cli(b: dict[str, Any], config: Path, value: Any, data: Dataset, seed: int,
                   epochs: int | None = None) -> TrainResult:
    """One run as `lightloop train --config CONFIG --seed SEED` (plus the bench's overrides) would do it,
    with processor.<field> = value."""
    cfg = load_config(config)
    set_field(cfg, b["field"], value)
    for k, v in b.get("processor", {}).items():
        set_field(cfg, k, v)
    t = training_of(b, cfg)
    proc = build_processor(cfg, data.n_features, data.n_classes, BuildOverrides(**b.get("build", {})))
    with proc:
        settings = TrainSettings(epochs=epochs or t["epochs"], batch_size=t["batch_size"], loss=t["loss"], seed=seed,
                                 init_scale=t["init_scale"], progress=False)
        trainer = Trainer(proc, make_gradient(t["gradient"], **t["gradient_options"]),
                          make_optimizer(t["optimizer"], t["lr"]), settings)
        return trainer.fit(data)


def spread(values: list[float]) -> dict[str, float]:
    """mean / std / min / max of a list."""
    a = np.asarray(values, float)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", choices=sorted(BENCHES))
    ap.add_argument("--candidates", nargs="+", default=None, help="values to try (default: the bench's list)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (mean over them)")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--select-epochs", type=int, default=None, help="epochs of the validation runs only")
    args = ap.parse_args(argv)
    b = BENCHES[args.bench]
    config = args.config or b["config"]
    cands = [b["type"](v) for v in args.candidates] if args.candidates else b["candidates"]
    cfg = load_config(config)
    data = load_dataset(b.get("dataset", cfg.training.dataset))
    folds = cv_folds(data, 3, seed=0) if b["folds"] == "cv3" else \
        [validation_split(data, 1 / 6 if b["folds"] == "split1/6" else 0.25, seed=0)]
    t0 = time.perf_counter()
    run: Callable[..., TrainResult] = lambda v, d, s, e=None: train_like_cli(b, config, v, d, s, e)  # noqa: E731
    table = []
    for v in cands:
        res = [run(v, f, s, args.select_epochs) for f in folds for s in args.seeds]  # a fold's "test" part: validation
        table.append({"value": v, "validation_accuracy": float(np.mean([r.test_accuracy for r in res])),
                      "validation_loss": float(np.mean([r.history[-1]["test_loss"] for r in res]))})
        print(json.dumps({"progress": v, **table[-1], "seconds": round(time.perf_counter() - t0, 1)}),
              file=sys.stderr, flush=True)
    pick = max(range(len(table)), key=lambda i: (table[i]["validation_accuracy"], -table[i]["validation_loss"]))
    chosen = table[pick]["value"]
    for row in table:   # after the choice: test accuracy of every candidate, trained on the whole training set
        row["test_accuracy_per_seed"] = [run(row["value"], data, s).test_accuracy for s in args.seeds]
        row["test_accuracy"] = float(np.mean(row["test_accuracy_per_seed"]))
    others = [r["test_accuracy"] for r in table if r["value"] != chosen]
    out = {"benchmark": "select_settings", "bench": args.bench, "config": str(config),
           "field": f"processor.{b['field']}", "dataset": data.name, "seeds": args.seeds,
           "validation": f"{len(folds)}-fold cross-validation of the training set" if len(folds) > 1 else
           f"{folds[0].x_test.shape[0]} samples of the training set",
           "training": training_of(b, cfg), "build": b.get("build", {}), "select_epochs": args.select_epochs,
           "candidates": table, "chosen": chosen,
           "chosen_validation_accuracy": table[pick]["validation_accuracy"],
           "chosen_test_accuracy": table[pick]["test_accuracy"],
           "test_accuracy_all_candidates": spread([r["test_accuracy"] for r in table]),
           "test_accuracy_alternatives": spread(others) if others else None,
           "best_test_candidate_not_used": max(table, key=lambda r: r["test_accuracy"])["value"],
           "total_seconds": time.perf_counter() - t0}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
