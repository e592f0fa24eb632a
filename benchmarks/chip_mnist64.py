"""Scale benchmark: MNIST reduced to 64 DCT features through two 64-port Clements mesh layers (64 EO
activations), trained on the simulated chip with in-situ `adjoint` gradients. Prints one JSON object
(seconds_per_epoch: the trainer's wall clock; cpu_seconds_per_epoch: process CPU time of the whole fit).

    python benchmarks/chip_mnist64.py --epochs 3
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # tiny matrices: BLAS threads only contend

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightloop.bench import BuildOverrides, build_processor  # noqa: E402
from lightloop.config import parse_config  # noqa: E402
from lightloop.training.datasets import Dataset, load_dataset  # noqa: E402
from lightloop.training.gradients import make_gradient  # noqa: E402
from lightloop.training.optimizers import make_optimizer  # noqa: E402
from lightloop.training.trainer import Trainer, TrainSettings  # noqa: E402

CONFIG = ROOT / "lightloop" / "lab_configs" / "integrated_chip.yaml"


def mnist64_config(ideal: bool, chip_seed: int, output_gain: float = 1.0) -> dict:
    """The integrated-chip lab config adapted to 64 features: no bias ports, 64 activations."""
    raw = yaml.safe_load(CONFIG.read_text())
    p = raw["processor"]
    p["hidden"] = [64]
    p["output_gain"] = output_gain
    p["encoder"].update(bias_ports=0, field_scale=2.0)
    p["chip"].update(ideal=ideal, seed=chip_seed)
    return raw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--lr-min", type=float, default=0.002, help="final learning rate of the cosine schedule")
    ap.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    ap.add_argument("--loss", choices=["mse", "cross_entropy"], default="mse")
    ap.add_argument("--output-gain", type=float, default=1.0, help="output photodiode gain (logit scale)")
    ap.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    ap.add_argument("--ideal", action="store_true", help="ideal chip (no variation, no noise)")
    ap.add_argument("--chip-seed", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=os.environ.get("LIGHTLOOP_DATA_DIR", "/work/shared/datasets/mnist"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    data = load_dataset("mnist64", args.data_dir)
    if args.train_size:
        data = Dataset(data.name, data.x_train[: args.train_size], data.y_train[: args.train_size],
                       data.x_test, data.y_test, data.n_classes)
    load_s = time.perf_counter() - t0
    cfg = parse_config(mnist64_config(args.ideal, args.chip_seed, args.output_gain), str(CONFIG) + " (mnist64)")
    proc = build_processor(cfg, data.n_features, data.n_classes, BuildOverrides())
    method = make_gradient("adjoint")
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, progress=False,
                             loss=args.loss)
    opt = make_optimizer("adam", args.lr)
    total = args.epochs * -(-data.x_train.shape[0] // args.batch_size)

    def cosine(info: dict) -> None:  # learning-rate schedule through the Trainer's step hook
        frac = min(1.0, info["global_step"] / total)
        opt.lr = args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + np.cos(np.pi * frac))

    trainer = Trainer(proc, method, opt, settings, hooks=[cosine] if args.schedule == "cosine" else [])
    cpu0 = time.process_time()
    res = trainer.fit(data)
    fit_cpu = time.process_time() - cpu0
    out = {
        "benchmark": "chip_mnist64",
        "features": data.n_features, "mesh_ports": proc.info["mesh_ports"], "layer_sizes": list(proc.layer_sizes),
        "phase_shifters": proc.summary_fields()["phase_shifters"], "gradient": "adjoint",
        "ideal": args.ideal, "chip_seed": args.chip_seed, "train_size": int(data.x_train.shape[0]),
        "test_size": int(data.x_test.shape[0]), "epochs": res.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "schedule": args.schedule, "lr_min": args.lr_min, "loss": args.loss, "output_gain": args.output_gain,
        "test_accuracy": res.test_accuracy, "best_test_accuracy": res.best_test_accuracy,
        "test_accuracy_per_epoch": [h["test_accuracy"] for h in res.history],
        "seconds_per_epoch": res.mean_epoch_seconds, "measurements_per_step": res.measurements_per_step,
        "cpu_seconds_per_epoch": fit_cpu / max(res.epochs, 1),   # process CPU time of fit (steadier on a shared machine)
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "target_test_accuracy": 0.94, "meets_target": bool(res.test_accuracy >= 0.94),
        "data_load_seconds": load_s, "total_seconds": time.perf_counter() - t0,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
