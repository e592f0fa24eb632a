"""How many HAL operations each calibration routine needs, against the number of detector channels.

Every routine measures all channels of a detector array in parallel (one acquisition reads the
whole array for a batch of frames) and fits them jointly (shared nonlinear parameters, per-channel
linear ones), so acquisitions and device writes stay flat as the hidden layer widens; only fit
time grows. Prints one JSON object.
Example: python benchmarks/calibration_scaling.py --hidden 8 32 128 512
"""

from __future__ import annotations

import argparse
import json
import time

from lightloop.bench import BuildOverrides, build_processor
from lightloop.calibration.base import RunContext
from lightloop.calibration.report import twin_truth_report
from lightloop.calibration.runner import calibrate
from lightloop.cli import default_config_path
from lightloop.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, nargs="+", default=[8, 32, 128, 512])
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--outputs", type=int, default=10)
    ap.add_argument("--device", choices=["slm", "dmd", "analog"], default="slm")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    cfg = load_config(default_config_path())
    cfg.processor.weights.device = a.device
    cfg.processor.twin.truth_seed = a.seed
    rows = []
    for h in a.hidden:
        proc = build_processor(cfg, a.inputs, a.outputs, BuildOverrides(hidden=[h]))
        t0 = time.perf_counter()
        outcomes = calibrate(proc, ["all"], RunContext())
        wall = time.perf_counter() - t0
        rep = twin_truth_report(proc, outcomes)
        channels = sum(d.n_channels for d in (*proc.pre_taps, *proc.post_taps, *proc.error_taps))
        rows.append({
            "hidden": h, "detector_channels": channels,
            "per_routine": {o.routine: {**o.result.counts.as_dict(), "fit_seconds": round(o.result.seconds, 3)}
                            for o in outcomes},
            "total_acquisitions": sum(o.result.counts.acquisitions for o in outcomes),
            "total_frames": sum(o.result.counts.frames for o in outcomes),
            "total_writes": sum(o.result.counts.writes for o in outcomes),
            "wall_seconds": round(wall, 2),
            "all_within_tolerance": all(all(r["within_tolerance"].values()) for k, r in rep.items()
                                        if k != "weight_fidelity"),
            "weight_rel_rms_after": rep["weight_fidelity"]["weight_rel_rms_max"],
        })
    first, last = rows[0], rows[-1]
    print(json.dumps({
        "benchmark": "calibration_scaling", "device": a.device, "inputs": a.inputs, "outputs": a.outputs,
        "rows": rows,
        "acquisitions_growth": last["total_acquisitions"] / first["total_acquisitions"],
        "channel_growth": last["detector_channels"] / first["detector_channels"],
        "acquisitions_per_channel": [round(r["total_acquisitions"] / r["detector_channels"], 3) for r in rows],
    }))


if __name__ == "__main__":
    main()
