"""Programming Haar-random unitaries on MZI meshes with coupler errors: seconds and fidelity of the ideal
(uncorrected) Clements decomposition against lightloop.calibration.mesh_program, N = 8 ... 64; prints JSON.

Part "model": a random MeshModel (alpha1, alpha2 ~ N(0, sd^2), sd = --sds, uniform loss); fidelity F_unit
(gauge_fidelity: output phases free, unit-normalised) of the model's own matrix for the ideal decomposition,
the error-corrected decomposition alone, and program_unitary (corrected + L-BFGS polish).
Part "twin" (--twin): a single-layer chip of N ports from lab_configs/integrated_chip.yaml with every
fabrication spread x --spread-scale (couplers 0.06 rad at 3x); phases from program_from_model, fidelity
measured through the HAL (coherent receivers) and of the twin's true matrix. The HAL model comes from
--twin-model: "calibrated" runs the phase_shifters routine (the tree's heater + coupler calibration,
--ps-method) first; "truth" loads the twin's hidden heaters and couplers through
chip_report.oracle_calibration - an UPPER BOUND (a perfect calibration), labelled so in the output.
Example: python benchmarks/mesh_programming.py --sizes 8,16,32,64 --targets 5 --twin --twin-model truth
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightloop.bench import BuildOverrides, build_processor  # noqa: E402
from lightloop.calibration.chip import _all_sources_dark  # noqa: E402
from lightloop.calibration.chip_mesh import ideal_phases, layer_fidelity, program_from_model  # noqa: E402
from lightloop.calibration.mesh_model import MeshModel, gauge_fidelity  # noqa: E402
from lightloop.calibration.mesh_program import (corrected_decomposition, ideal_decomposition,  # noqa: E402
                                                program_unitary)
from lightloop.config import load_config  # noqa: E402
from lightloop.physics.mzi import mesh_layout, random_unitary  # noqa: E402
from _chip_common import scale_variation  # noqa: E402

CONFIG = ROOT / "lightloop" / "lab_configs" / "integrated_chip.yaml"


def _stats(x: list[float]) -> dict[str, float]:
    a = np.asarray(x, np.float64)
    return {"min": float(a.min()), "mean": float(a.mean()), "max": float(a.max())}


def model_part(n: int, sd: float, targets: int, seed: int, kind: str, iters: int) -> dict:
    """Ideal vs corrected vs programmed fidelity and seconds on random coupler-error models."""
    lay = mesh_layout(n, kind)
    f = {"ideal": [], "corrected": [], "programmed": []}
    sec = {"ideal": [], "corrected": [], "programmed": []}
    for t in range(targets):
        rng = np.random.default_rng([seed, n, t, int(sd * 1e4)])
        m = MeshModel(lay, sd * rng.standard_normal(lay.n_mzi), sd * rng.standard_normal(lay.n_mzi), 0.99)
        u = random_unitary(n, rng)
        for name, fn in (("ideal", ideal_decomposition), ("corrected", corrected_decomposition),
                         ("programmed", lambda mm, uu: program_unitary(mm, uu, max_iter=iters)[0])):
            t0 = time.perf_counter()
            x = fn(m, u)
            sec[name].append(time.perf_counter() - t0)
            f[name].append(gauge_fidelity(u, m.matrix(x), unit=True))
    return {"n": n, "coupler_sd_rad": sd, "targets": targets, "mesh": kind,
            **{f"F_unit_{k}": _stats(v) for k, v in f.items()},
            **{f"seconds_{k}": _stats(v) for k, v in sec.items()}}


def twin_part(cfg, n: int, targets: int, seed: int, how: str, ps_method: str, iters: int) -> dict:
    """Fidelity through the HAL and of the twin's true matrix for a single-layer chip of n ports."""
    from lightloop.calibration import chip_report
    from lightloop.calibration.base import RunContext
    from lightloop.calibration.runner import calibrate

    proc = build_processor(cfg, n - 2, 2, BuildOverrides(hidden=[], extra={"chip_seed": seed, "noise_seed": seed + 1000}))
    lay = proc.layers[0]
    out: dict = {"n": int(lay.n_ports), "chip_seed": seed, "model_source": how}
    t0 = time.perf_counter()
    if how == "truth":
        chip_report.oracle_calibration(proc, 0)
        out["label"] = "UPPER BOUND: HAL model = the twin's hidden truth (a perfect calibration)"
    else:
        oc = calibrate(proc, ["phase_shifters"], RunContext(seed=seed, options={"ps_method": ps_method}))
        out["calibration"] = {"status": oc[0].status, "reason": oc[0].reason, "ps_method": ps_method}
    out["calibration_seconds"] = time.perf_counter() - t0
    _all_sources_dark(proc)
    rng = np.random.default_rng([seed, 77])
    rows = {"ideal_hal": [], "programmed_hal": [], "programmed_true": [], "model_predicted": [], "seconds": []}
    for _ in range(targets):
        u = random_unitary(lay.n_ports, rng)
        lay.bank.set_phases(ideal_phases(lay, u))
        rows["ideal_hal"].append(layer_fidelity(lay, u)[1])
        t1 = time.perf_counter()
        _, f_model = program_from_model(lay, u, max_iter=iters)
        rows["seconds"].append(time.perf_counter() - t1)
        rows["model_predicted"].append(f_model)
        rows["programmed_hal"].append(layer_fidelity(lay, u)[1])
        u_true = np.asarray(proc.emulator.layers[0].matrix(), np.complex128)   # grading only
        rows["programmed_true"].append(gauge_fidelity(u, u_true, bool(lay.screen), unit=True))
    out.update({f"F_unit_{k}" if k != "seconds" else "program_seconds": _stats(v) for k, v in rows.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="8,16,32,64")
    ap.add_argument("--targets", type=int, default=5)
    ap.add_argument("--sds", default="0.02,0.06", help="coupler error sd (rad) of the random models")
    ap.add_argument("--mesh", choices=["rectangular", "triangular"], default="rectangular")
    ap.add_argument("--iters", type=int, default=1000, help="L-BFGS iterations of the polish")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--twin", action="store_true", help="also program single-layer twins of every size")
    ap.add_argument("--twin-model", choices=["calibrated", "truth"], default="truth")
    ap.add_argument("--ps-method", choices=["global", "columns"], default="columns")
    ap.add_argument("--spread-scale", type=float, default=3.0, help="twin: multiplies every fabrication spread")
    ap.add_argument("--phi0", choices=["normal", "uniform"], default="uniform", help="twin: heater offset distribution")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    t0 = time.perf_counter()
    res: dict = {"benchmark": "mesh_programming", "sizes": sizes, "targets": args.targets, "mesh": args.mesh,
                 "iters": args.iters, "model": [model_part(n, float(sd), args.targets, args.seed, args.mesh, args.iters)
                                                for sd in args.sds.split(",") for n in sizes]}
    if args.twin:
        cfg = load_config(CONFIG)
        cfg.processor.mesh = args.mesh
        var = cfg.processor.chip.variation
        scale_variation(var, args.spread_scale, args.phi0)
        res["twin"] = {"spread_scale": args.spread_scale, "phi0": args.phi0, "coupler_sd_rad": var.coupler_sd_rad,
                       "chips": [twin_part(cfg, n, args.targets, args.seed, args.twin_model, args.ps_method, args.iters)
                                 for n in sizes]}
    res["seconds_total"] = time.perf_counter() - t0
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
