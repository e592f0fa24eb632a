"""Pump-probe vs exact gradient similarity against optical depth (Guo et al. 2021, Fig. 3); prints JSON.

For each a0 a network is trained with the pump-probe gradient on the ideal free-space twin, and every
--every steps `lightloop.training.diagnostics` measures, on a fixed probe batch of test images,
S_all (cosine of the pump-probe and exact gradients over every weight), S_layer and S_slope (cosine
of T(z) and g'(z) over the hidden fields). The JSON reports 1 - S averaged over training.

Example: python benchmarks/gradient_similarity.py --dataset mnist --hidden 128 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from lightloop.bench import BuildOverrides, build_processor
from lightloop.cli import default_config_path
from lightloop.config import load_config
from lightloop.training.datasets import load_dataset, one_hot
from lightloop.training.diagnostics import GradientSimilarityMonitor
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128])
    ap.add_argument("--a0", type=float, nargs="+", default=[0.3, 1, 3, 10, 30, 100])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--loss", default="mse", choices=["mse", "cross_entropy"])
    ap.add_argument("--probe-size", type=int, default=1000, help="test images in the probe batch")
    ap.add_argument("--every", type=int, default=200, help="steps between measurements")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    data = load_dataset(a.dataset, a.data_dir)
    xp, tp = data.x_test[: a.probe_size], one_hot(data.y_test[: a.probe_size], data.n_classes)
    rows = []
    t0 = time.perf_counter()
    for a0 in a.a0:
        cfg = load_config(default_config_path())
        cfg.processor.error_readout = "single"
        proc = build_processor(cfg, data.n_features, data.n_classes,
                               BuildOverrides(hidden=a.hidden, ideal=True, optical_depth=a0))
        mon = GradientSimilarityMonitor(proc, xp, tp, loss=a.loss, every=a.every)
        res = Trainer(proc, make_gradient("pump_probe"), make_optimizer("adam", a.lr),
                      TrainSettings(epochs=a.epochs, batch_size=a.batch_size, loss=a.loss, seed=a.seed,
                                    progress=False), hooks=[mon]).fit(data)
        per_layer = np.array([r["S_layer"] for r in mon.records]).mean(0)
        rows.append({"a0": a0, "one_minus_S_all": 1 - mon.mean("S_all"), "one_minus_S_slope": 1 - mon.mean("S_slope"),
                     "one_minus_S_layer": [float(1 - v) for v in per_layer], "measurements": len(mon.records),
                     "test_accuracy": res.test_accuracy})
    print(json.dumps({"benchmark": "gradient_similarity", "dataset": a.dataset,
                      "layer_sizes": [data.n_features, *a.hidden, data.n_classes], "epochs": a.epochs,
                      "loss": a.loss, "twin": "ideal", "rows": rows, "wall_seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
