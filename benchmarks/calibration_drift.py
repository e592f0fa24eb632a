"""Long training run on a drifting twin, with and without re-calibration; prints one JSON object.

The twin's LO phases (a walk common to each detector array's LO path plus a small per-channel
one) and the vapor cells' temperatures drift as seeded random walks in simulated time (1 ms per
displayed frame). Every arm starts from the same fresh `calibrate all`; then it trains with
pump-probe backprop:

  no_drift              reference: the same bench without drift
  drift                 drift, no re-calibration
  drift_recal_schedule  re-calibrate (lo_phase + saturable_absorber) every N steps
  drift_recal_on_check  measure the readout error every M steps; re-calibrate when it exceeds a threshold

Example: python benchmarks/calibration_drift.py --epochs 40 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from lightloop.bench import BuildOverrides, build_processor
from lightloop.calibration.base import RunContext
from lightloop.calibration.drift import ReadoutMonitor, RecalibrationHook
from lightloop.calibration.runner import calibrate
from lightloop.cli import default_config_path
from lightloop.config import load_config
from lightloop.simulators.free_space import Drift
from lightloop.training.datasets import load_dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings

ARMS = ("no_drift", "drift", "drift_recal_schedule", "drift_recal_on_check")


def run_arm(arm: str, a: argparse.Namespace, seed: int, data) -> dict:
    cfg = load_config(default_config_path())
    cfg.processor.twin.truth_seed = seed
    cfg.processor.twin.noise_seed = 1000 + seed
    d = cfg.processor.twin.drift
    if arm != "no_drift":
        d.lo_phase_common_rad_per_sqrt_s = a.lo_common
        d.lo_phase_rad_per_sqrt_s = a.lo
        d.cell_temperature_k_per_sqrt_s = a.temp
        d.seed = seed
    proc = build_processor(cfg, data.n_features, data.n_classes, BuildOverrides(hidden=a.hidden))
    emu = proc.emulator  # twin truth: for this report only
    drift, emu.drift = emu.drift, Drift()
    calibrate(proc, ["all"], RunContext(seed=seed))  # the same fresh calibration in every arm
    emu.drift = drift
    steps_per_epoch = int(np.ceil(data.x_train.shape[0] / a.batch_size))
    hooks = []
    recal = None
    if arm == "drift_recal_schedule":
        recal = RecalibrationHook(proc, a.routines, every_steps=a.recal_every or steps_per_epoch)
    elif arm == "drift_recal_on_check":
        recal = RecalibrationHook(proc, a.routines, check_every_steps=a.check_every, max_check_error=a.threshold)
    if recal is not None:
        hooks.append(recal)
    observed = []
    monitor = ReadoutMonitor(proc, seed=999)

    def observe(info):  # end of every epoch: readout error and how far the truth has moved (report only)
        if info["global_step"] % steps_per_epoch == 0:
            lo = max(float(np.abs(np.angle(np.exp(1j * det.lo_phase_rad))).max())
                     for det in (*emu.truth.pre, *emu.truth.post, *emu.truth.error))
            a0 = max(abs(sa.optical_depth / emu.true_optical_depth(i) - 1) for i, sa in enumerate(proc.absorbers))
            observed.append({"epoch": info["epoch"], "readout_error": monitor.measure()["max"],
                             "true_lo_phase_max_abs_rad": lo, "a0_rel_error": a0, "clock_s": emu.clock_s})

    hooks.append(observe)
    trainer = Trainer(proc, make_gradient(a.gradient), make_optimizer("adam", a.lr),
                      TrainSettings(epochs=a.epochs, batch_size=a.batch_size, seed=seed, progress=False), hooks=hooks)
    t0 = time.perf_counter()
    res = trainer.fit(data)
    acc = [h["test_accuracy"] for h in res.history]
    out = {
        "final_test_accuracy": acc[-1], "best_test_accuracy": max(acc),
        "mean_test_accuracy_last5": float(np.mean(acc[-5:])), "min_test_accuracy_after_epoch5": float(min(acc[5:])),
        "test_accuracy_by_epoch": [round(x, 4) for x in acc],
        "readout_error_by_epoch": [round(o["readout_error"], 4) for o in observed],
        "true_lo_phase_max_abs_rad_by_epoch": [round(o["true_lo_phase_max_abs_rad"], 3) for o in observed],
        "a0_rel_error_by_epoch": [round(o["a0_rel_error"], 4) for o in observed],
        "simulated_seconds": emu.clock_s, "wall_seconds": time.perf_counter() - t0,
    }
    if recal is not None:
        out["recalibrations"] = len(recal.events)
        out["recalibration_acquisitions"] = int(sum(e["acquisitions"] for e in recal.events))
        out["readout_checks"] = len(recal.checks)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--hidden", type=int, nargs="+", default=[32])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--gradient", default="pump_probe")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lo-common", type=float, default=0.15, help="LO phase walk common to an array, rad/sqrt(s)")
    ap.add_argument("--lo", type=float, default=0.01, help="per-channel LO phase walk, rad/sqrt(s)")
    ap.add_argument("--temp", type=float, default=0.1, help="vapor temperature walk, K/sqrt(s)")
    ap.add_argument("--routines", nargs="+", default=["lo_phase", "saturable_absorber"])
    ap.add_argument("--recal-every", type=int, default=None, help="steps (default: one epoch)")
    ap.add_argument("--check-every", type=int, default=10)
    ap.add_argument("--threshold", type=float, default=0.08)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    a = ap.parse_args()
    data = load_dataset(a.dataset)
    seeds = list(range(1, a.seeds + 1))
    runs = {arm: [run_arm(arm, a, s, data) for s in seeds] for arm in a.arms}
    summary = {arm: {k: float(np.mean([r[k] for r in rs])) for k in
                     ("final_test_accuracy", "best_test_accuracy", "mean_test_accuracy_last5",
                      "min_test_accuracy_after_epoch5")} for arm, rs in runs.items()}
    for arm, rs in runs.items():
        if "recalibrations" in rs[0]:
            summary[arm]["recalibrations"] = float(np.mean([r["recalibrations"] for r in rs]))
            summary[arm]["recalibration_acquisitions"] = float(np.mean([r["recalibration_acquisitions"] for r in rs]))
    print(json.dumps({
        "benchmark": "calibration_drift", "dataset": a.dataset, "hidden": a.hidden, "epochs": a.epochs,
        "gradient": a.gradient, "lr": a.lr, "seeds": seeds,
        "drift": {"lo_phase_common_rad_per_sqrt_s": a.lo_common, "lo_phase_rad_per_sqrt_s": a.lo,
                  "cell_temperature_k_per_sqrt_s": a.temp, "frame_period_s": 1e-3},
        "recalibration": {"routines": a.routines, "every_steps": a.recal_every or "one epoch",
                          "check_every_steps": a.check_every, "max_check_error": a.threshold},
        "mean_over_seeds": summary, "runs": runs,
    }))


if __name__ == "__main__":
    main()
