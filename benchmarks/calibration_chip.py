"""Integrated-chip calibration: recovery of the twin's hidden heater truth over seeded chips; prints JSON.

Each chip is a fresh realistic twin (process variation, detector noise, phi0 drift) built from
lab_configs/integrated_chip.yaml; the chip routines run through the HAL only and are graded against the
hidden truth with report.TOLERANCES. Example: python benchmarks/calibration_chip.py --seeds 10 --n-in 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightloop.bench import BuildOverrides, build_processor  # noqa: E402
from lightloop.calibration.base import RunContext, routines_for  # noqa: E402
from lightloop.calibration.report import TOLERANCES, twin_truth_report  # noqa: E402
from lightloop.calibration.runner import calibrate  # noqa: E402
from lightloop.config import load_config  # noqa: E402

CONFIG = ROOT / "lightloop" / "lab_configs" / "integrated_chip.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n-in", type=int, default=6, help="features (mesh ports = features + 2 bias ports)")
    ap.add_argument("--n-out", type=int, default=4)
    ap.add_argument("--mesh", default="rectangular", choices=["rectangular", "triangular"])
    args = ap.parse_args()
    cfg = load_config(CONFIG)
    cfg.processor.mesh = args.mesh
    runs = []
    for seed in range(1, args.seeds + 1):
        proc = build_processor(cfg, args.n_in, args.n_out,
                               BuildOverrides(extra={"chip_seed": seed, "noise_seed": seed + 1000}))
        names = [r.name for r in routines_for(proc)]
        t0 = time.perf_counter()
        outcomes = calibrate(proc, names, RunContext(seed=seed))
        rep = twin_truth_report(proc, outcomes)
        run = {"seed": seed, "seconds": time.perf_counter() - t0, "routines": {}}
        for o in outcomes:
            r = rep.get(o.routine, {})
            res = o.result
            run["routines"][o.routine] = {
                "status": o.status, "counts": res.counts.as_dict() if res is not None else None,
                "calibrated_channels": {k: v.get("calibrated") for k, v in (res.meta.get("layers", {}) if res else {}).items()},
                **{k: v for k, v in r.items() if k != "layers"}}
        runs.append(run)
    summary = {}
    for name in runs[0]["routines"]:
        keys = [k[len(name) + 1:] for k in TOLERANCES if k.startswith(name + ".")]
        summary[name] = {k: {"max": float(np.max([r["routines"][name].get(k, np.nan) for r in runs])),
                             "tolerance": TOLERANCES[f"{name}.{k}"]} for k in keys}
        summary[name]["all_within_tolerance"] = all(all(r["routines"][name].get("within_tolerance", {}).values())
                                                    for r in runs)
        summary[name]["acquisitions_per_chip"] = runs[0]["routines"][name]["counts"]["acquisitions"]
    print(json.dumps({"config": str(CONFIG.relative_to(ROOT)), "mesh": args.mesh,
                      "mesh_ports": proc.info.get("mesh_ports"), "seeds": args.seeds, "summary": summary,
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
