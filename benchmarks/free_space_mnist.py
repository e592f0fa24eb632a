"""MNIST on the simulated free-space SA bench (Guo et al. 2021 settings); prints one JSON object.

Defaults follow the issue: Adam lr 5e-4, batch 64, N(0, 0.1) init, pump_probe gradient.
Example: python benchmarks/free_space_mnist.py --hidden 128 --optical-depth 10 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from lightloop.bench import BuildOverrides, build_processor
from lightloop.cli import default_config_path
from lightloop.config import load_config
from lightloop.training.datasets import load_dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", type=Path, default=default_config_path())
    ap.add_argument("--hidden", type=int, nargs="+", default=[128])
    ap.add_argument("--optical-depth", type=float, default=10.0)
    ap.add_argument("--gradient", default="pump_probe")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--init-scale", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loss", default="mse", choices=["mse", "cross_entropy"])
    ap.add_argument("--input-field-scale", type=float, default=None)
    ap.add_argument("--max-weight", type=float, default=None, help="largest |W| (amplifier gain x efficiency)")
    ap.add_argument("--realistic", action="store_true", help="imperfections and noise on (default: ideal)")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    cfg = load_config(a.config)
    if a.input_field_scale is not None:
        cfg.processor.input_field_scale = a.input_field_scale
    if a.max_weight is not None:
        cfg.processor.weights.max_weight = a.max_weight
    data = load_dataset("mnist", a.data_dir)
    proc = build_processor(cfg, data.n_features, data.n_classes,
                           BuildOverrides(hidden=a.hidden, ideal=not a.realistic, optical_depth=a.optical_depth))
    trainer = Trainer(proc, make_gradient(a.gradient), make_optimizer("adam", a.lr),
                      TrainSettings(epochs=a.epochs, loss=a.loss, batch_size=a.batch_size, seed=a.seed, init_scale=a.init_scale,
                                    progress=sys.stderr.isatty()), out_dir=a.out)
    t0 = time.perf_counter()
    res = trainer.fit(data)
    print(json.dumps({
        "benchmark": "free_space_mnist", "layer_sizes": list(proc.layer_sizes), "optical_depth": a.optical_depth,
        "gradient": a.gradient, "loss": a.loss, "input_field_scale": cfg.processor.input_field_scale,
        "max_weight": cfg.processor.weights.max_weight, "mode": "realistic" if a.realistic else "ideal", "lr": a.lr,
        "batch_size": a.batch_size, "init_scale": a.init_scale, "seed": a.seed,
        **res.summary(), "test_accuracy_by_epoch": [round(h["test_accuracy"], 4) for h in res.history],
        "train_accuracy_by_epoch": [round(h["train_accuracy"], 4) for h in res.history],
        "wall_seconds": time.perf_counter() - t0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
