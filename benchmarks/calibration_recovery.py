"""Recovery of the twin's hidden truth by `calibrate all` over many seeded twins; prints one JSON object.

For every truth seed a fresh realistic twin (noise, ADC, imperfections) is calibrated from
nominal maps; each routine's error against the truth is graded with report.TOLERANCES.
Example: python benchmarks/calibration_recovery.py --seeds 20 --device slm --hidden 64
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from lightloop.bench import BuildOverrides, build_processor
from lightloop.calibration.base import RunContext
from lightloop.calibration.report import TOLERANCES, twin_truth_report
from lightloop.calibration.runner import calibrate
from lightloop.cli import default_config_path
from lightloop.config import load_config


def run_seed(cfg, seed: int, sizes: tuple[int, ...], a0: float) -> dict:
    """Calibrate one twin; returns the graded figures, fidelity before/after and counts."""
    c = cfg.model_copy(deep=True)
    c.processor.twin.truth_seed = seed
    c.processor.twin.noise_seed = seed + 1000
    proc = build_processor(c, sizes[0], sizes[-1], BuildOverrides(hidden=list(sizes[1:-1]), optical_depth=a0))
    before = twin_truth_report(proc, [])["weight_fidelity"]["weight_rel_rms_max"]
    t0 = time.perf_counter()
    outcomes = calibrate(proc, ["all"], RunContext(seed=seed))
    seconds = time.perf_counter() - t0
    rep = twin_truth_report(proc, outcomes)
    figures = {}
    for key in TOLERANCES:
        routine, fig = key.split(".", 1)
        if routine in rep:
            figures[key] = float(rep[routine][fig])
    return {"seed": seed, "figures": figures, "failed": [o.routine for o in outcomes if o.status != "ok"],
            "weight_rel_rms_before": before, "weight_rel_rms_after": rep["weight_fidelity"]["weight_rel_rms_max"],
            "acquisitions": {o.routine: o.result.counts.acquisitions for o in outcomes if o.result},
            "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--device", choices=["slm", "dmd", "analog"], default="slm")
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64])
    ap.add_argument("--outputs", type=int, default=10)
    ap.add_argument("--optical-depth", type=float, default=10.0)
    a = ap.parse_args()
    cfg = load_config(default_config_path())
    cfg.processor.weights.device = a.device
    sizes = (a.inputs, *a.hidden, a.outputs)
    runs = [run_seed(cfg, s, sizes, a.optical_depth) for s in range(a.first_seed, a.first_seed + a.seeds)]
    stats = {}
    for key, tol in TOLERANCES.items():
        vals = np.array([r["figures"][key] for r in runs if key in r["figures"]])
        if vals.size:
            stats[key] = {"tolerance": tol, "median": float(np.median(vals)), "p95": float(np.percentile(vals, 95)),
                          "max": float(vals.max()), "pass_fraction": float(np.mean(vals <= tol))}
    print(json.dumps({
        "benchmark": "calibration_recovery", "device": a.device, "layer_sizes": list(sizes),
        "optical_depth": a.optical_depth, "seeds": a.seeds, "errors_vs_truth": stats,
        "failed_fits": sum(len(r["failed"]) for r in runs),
        "weight_rel_rms_before_median": float(np.median([r["weight_rel_rms_before"] for r in runs])),
        "weight_rel_rms_after_median": float(np.median([r["weight_rel_rms_after"] for r in runs])),
        "weight_rel_rms_after_max": float(np.max([r["weight_rel_rms_after"] for r in runs])),
        "acquisitions_per_routine": runs[0]["acquisitions"],
        "seconds_per_bench_median": float(np.median([r["seconds"] for r in runs])),
        "worst_seeds": {k: int(runs[int(np.argmax([r["figures"].get(k, 0) for r in runs]))]["seed"])
                        for k in stats},
    }))


if __name__ == "__main__":
    main()
