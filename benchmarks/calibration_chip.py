"""Integrated-chip calibration: recovery of the twin's hidden truth and mesh fidelity over seeded chips,
and measurement counts against the mesh size N; prints JSON.

Each chip is a fresh realistic twin (process variation, detector noise, phi0 drift) built from
lab_configs/integrated_chip.yaml; the chip routines (phase_shifters, crosstalk, mesh) run through the HAL
only and are graded against the hidden truth with report.TOLERANCES. Before calibration, the mesh
fidelity of Haar-random targets programmed with the nominal model (ideal decomposition, phi0 = 0) is
measured the same way. --scaling N,... adds single-layer chips of N ports: the acquisitions of every
routine; chips above --fit-max-n are only measured (the global fit is not run: its Gram matrix costs
O(S N^2 P^2) with P ~ 3.5 N^2 parameters, about a minute per iteration at N = 16 on one core).
--phi0 uniform draws every heater offset uniformly on [0, 2 pi) (chip.variation.phi0_distribution);
--spread-scale k multiplies every other fabrication spread of the config (not drift, not noise);
--sizes N,... calibrates single-layer chips of N ports (every routine; acquisitions, wall time, fidelity and
truth errors against N; --method selects the phase_shifters engine, default the routine's: progressive for
rectangular meshes, lightloop.calibration.chip_progressive).
Example: python benchmarks/calibration_chip.py --seeds 10 --scaling 4,8,16
         python benchmarks/calibration_chip.py --seeds 2 --phi0 uniform --spread-scale 3 --sizes 8,16,32,64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightloop.bench import BuildOverrides, build_processor  # noqa: E402
from lightloop.calibration.base import RunContext, routines_for  # noqa: E402
from lightloop.calibration.chip import _all_sources_dark  # noqa: E402
from lightloop.calibration.chip_mesh import ideal_phases, layer_fidelity, self_configure  # noqa: E402
from lightloop.calibration.mesh_fit import heater_groups, measure_sweeps  # noqa: E402
from lightloop.calibration.report import TOLERANCES, twin_truth_report  # noqa: E402
from lightloop.calibration.runner import calibrate  # noqa: E402
from lightloop.config import load_config  # noqa: E402
from lightloop.physics.mzi import random_unitary  # noqa: E402
from _chip_common import scale_variation  # noqa: E402

CONFIG = ROOT / "lightloop" / "lab_configs" / "integrated_chip.yaml"
MODES = ["model_no_xt_compensation", "ideal_decomposition", "model", "self_configured"]


def _options(args) -> dict:
    """Routine options of a run: mesh targets and, if chosen, the phase_shifters engine."""
    return {"mesh_targets": args.targets, **({"ps_method": args.method} if args.method else {}),
            **({"ps_passes": args.passes} if args.passes else {})}


def _chip(cfg, n_in: int, n_out: int, seed: int, hidden):
    return build_processor(cfg, n_in, n_out, BuildOverrides(hidden=hidden, extra={"chip_seed": seed,
                                                                                   "noise_seed": seed + 1000}))


def nominal_fidelity(proc, targets: int, seed: int) -> list[list[float]]:
    """F_unit per layer and target with the nominal model (before any calibration)."""
    _all_sources_dark(proc)
    rng = np.random.default_rng([seed, 31])
    out = []
    for lay in proc.layers:
        fs = []
        for _ in range(targets):
            u = random_unitary(lay.n_ports, rng)
            lay.bank.set_phases(ideal_phases(lay, u))
            fs.append(layer_fidelity(lay, u)[1])
        out.append(fs)
    return out


def one_chip(cfg, args, seed: int) -> dict:
    """Calibrate one seeded chip with every applicable routine; errors vs truth, fidelities, counts."""
    proc = _chip(cfg, args.n_in, args.n_out, seed, args.hidden)
    f_nom = nominal_fidelity(proc, args.targets, seed)
    names = [r.name for r in routines_for(proc)]
    t0 = time.perf_counter()
    outcomes = calibrate(proc, names, RunContext(seed=seed, options=_options(args)))
    rep = twin_truth_report(proc, outcomes)
    run = {"seed": seed, "seconds": time.perf_counter() - t0, "ports": [l.n_ports for l in proc.layers],
           "F_unit_nominal_min": float(np.min(f_nom)), "routines": {}}
    for o in outcomes:
        r, res = rep.get(o.routine, {}), o.result
        entry = {"status": o.status, "seconds": round(res.seconds, 2) if res else None,
                 "counts": res.counts.as_dict() if res is not None else None,
                 **{k: v for k, v in r.items() if k != "layers"}}
        if o.routine == "mesh" and res is not None:
            fu = np.concatenate([res.arrays[f"fidelity_unit_{li}"] for li in range(len(proc.layers))])
            f = np.concatenate([res.arrays[f"fidelity_{li}"] for li in range(len(proc.layers))])
            entry.update({f"F_unit_{m}_min": float(fu[:, i].min()) for i, m in enumerate(MODES)})
            entry.update({f"F_{m}_mean": float(f[:, i].mean()) for i, m in enumerate(MODES)})
            entry["true_F_unit_min"] = min(v["true_fidelity_unit"] for v in r.get("layers", {}).values())
        if o.routine == "phase_shifters" and res is not None:
            entry["groups"] = [m["groups"] for m in res.meta["layers"].values()]
            entry["fit_rms_over_rms"] = [m["rms_over_rms"] for m in res.meta["layers"].values()]
        run["routines"][o.routine] = entry
    return run


def scaling(cfg, n: int, fit: bool, seed: int = 1) -> dict:
    """Acquisitions of each routine on a single-layer chip of n ports (fit and fidelity when fit)."""
    proc = _chip(cfg, n - 2, min(4, n), seed, [])
    lay = proc.layers[0]
    out: dict = {"N": n, "heaters": lay.bank.n_channels}
    t0 = time.perf_counter()
    if fit:
        outcomes = calibrate(proc, ["phase_shifters", "mesh"], RunContext(seed=seed, options={"mesh_targets": 1}))
        rep = twin_truth_report(proc, outcomes)
        ps, me = outcomes[0].result, outcomes[1].result
        out.update({"phase_shifters_acquisitions": ps.counts.acquisitions, "groups": ps.meta["layers"]["0"]["groups"],
                    "phase_shifters_seconds": round(ps.seconds, 1),
                    "phi0_max_abs_rad": rep["phase_shifters"]["phi0_max_abs_rad"],
                    "xt_significant_max_rel": rep["phase_shifters"]["xt_significant_max_rel"],
                    "mesh_acquisitions_per_target": me.counts.acquisitions,
                    "self_configure_acquisitions_per_target":
                        me.meta["layers"]["0"]["self_configure_acquisitions_per_target"],
                    "F_unit_model_min": me.meta["layers"]["0"]["F_unit_model_min"],
                    "F_unit_self_configured_min": me.meta["layers"]["0"]["F_unit_self_configured_min"]})
    else:        # measurement only (no fit): the same sweeps and one self-configuration on the nominal model
        _all_sources_dark(proc)
        groups = heater_groups(lay.bank.cal.crosstalk, lay.bank.n_channels)
        data = measure_sweeps(lay, groups, 8, RunContext(), "sweeps")
        u = random_unitary(n, np.random.default_rng(seed))
        _, acq = self_configure(lay, u, ideal_phases(lay, u), passes=2)
        out.update({"phase_shifters_acquisitions": data.acquisitions, "groups": len(groups),
                    "self_configure_acquisitions_per_target": acq, "fit": "not run (see docstring)"})
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _expected_max_normal(m: int, draws: int = 4000) -> float:
    """Expected max |z| over m independent standard normals (Monte Carlo, fixed seed)."""
    z = np.random.default_rng(0).standard_normal((draws, m))
    return float(np.abs(z).max(1).mean())


def sized(cfg, n: int, args, seed: int) -> dict:
    """Every chip routine on a single-layer chip of n ports: status, acquisitions, wall time, truth errors."""
    proc = _chip(cfg, n - 2, min(4, n), seed, [])
    names = [r.name for r in routines_for(proc)]
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        outcomes = calibrate(proc, names, RunContext(seed=seed, options=_options(args)))
    except Exception as e:  # noqa: BLE001 - a failure is a figure of this benchmark
        return {"N": n, "seed": seed, "error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rep = twin_truth_report(proc, outcomes)
    chip_s = float(proc.emulator.clock_s)            # the twin's own clock: settling and exposure of every acquisition
    rate = float(cfg.processor.chip.variation.drift_rad_per_sqrt_s)
    out = {"N": n, "seed": seed, "heaters": proc.layers[0].bank.n_channels,
           "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "chip_seconds": round(chip_s, 2),
           # scale of the phi0 random walk over the whole calibration (first acquisition to grading): sd of one
           # heater and the expected max over all heaters; heaters measured later drift less before the grading
           "drift_sd_rad": rate * np.sqrt(chip_s),
           "drift_expected_max_rad": rate * np.sqrt(chip_s) * _expected_max_normal(proc.layers[0].bank.n_channels),
           "routines": {}}
    for o in outcomes:
        r, res = rep.get(o.routine, {}), o.result
        out["routines"][o.routine] = {"status": o.status, "reason": (o.reason or "")[:200],
                                      "acquisitions": res.counts.acquisitions if res else None,
                                      "writes": res.counts.writes if res else None,
                                      "seconds": round(res.seconds, 1) if res else None,
                                      **{k: v for k, v in r.items() if k != "layers"}}
        if o.routine == "mesh" and res is not None and "fidelity_unit_0" in res.arrays:
            out["routines"]["mesh"]["F_unit_model_min"] = float(res.arrays["fidelity_unit_0"][:, 2].min())
        if o.routine == "phase_shifters" and res is not None:
            m = res.meta["layers"]["0"]
            out["routines"][o.routine].update({"method": m.get("method"), "fit_rms_over_rms": m.get("rms_over_rms")})
    out["all_within_tolerance"] = all(o.status == "ok" for o in outcomes) and all(
        all(r.get("within_tolerance", {}).values()) for r in rep.values() if isinstance(r, dict))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n-in", type=int, default=6, help="features (mesh ports = features + 2 bias ports)")
    ap.add_argument("--n-out", type=int, default=4)
    ap.add_argument("--hidden", type=int, nargs="*", default=None, help="hidden sizes (default: the config's)")
    ap.add_argument("--mesh", default="rectangular", choices=["rectangular", "triangular"])
    ap.add_argument("--targets", type=int, default=2, help="Haar-random unitaries per layer and chip")
    ap.add_argument("--scaling", default="", help="comma-separated mesh sizes N for the measurement counts")
    ap.add_argument("--fit-max-n", type=int, default=8, help="largest N of --scaling that is also fitted")
    ap.add_argument("--phi0", choices=["normal", "uniform"], default="normal", help="heater offset distribution")
    ap.add_argument("--spread-scale", type=float, default=1.0, help="multiplies every other fabrication spread")
    ap.add_argument("--passes", type=int, default=None, help="progressive phase_shifters passes (default: 3)")
    ap.add_argument("--sizes", default="", help="comma-separated N: single-layer chips through every routine")
    ap.add_argument("--method", choices=["global", "columns", "progressive"], default=None,
                    help="phase_shifters engine (default: the routine's, progressive for rectangular meshes)")
    ap.add_argument("--drift", type=float, default=None,
                    help="heater phi0 drift, rad per sqrt(s) (default: the config's, 0.001)")
    args = ap.parse_args()
    cfg = load_config(CONFIG)
    cfg.processor.mesh = args.mesh
    if args.drift is not None:
        cfg.processor.chip.variation.drift_rad_per_sqrt_s = args.drift
    scale_variation(cfg.processor.chip.variation, args.spread_scale, args.phi0)
    if args.sizes:
        rows = [sized(cfg, int(n), args, seed) for n in args.sizes.split(",") if n.strip()
                for seed in range(1, args.seeds + 1)]
        print(json.dumps({"config": str(CONFIG.relative_to(ROOT)), "mesh": args.mesh, "phi0": args.phi0,
                          "spread_scale": args.spread_scale, "method": args.method, "sizes": rows,
                          "chips_within_tolerance": sum(bool(r.get("all_within_tolerance")) for r in rows),
                          "chips": len(rows)}, indent=1, default=float))
        return
    runs = [one_chip(cfg, args, seed) for seed in range(1, args.seeds + 1)]
    summary: dict = {}
    for name in runs[0]["routines"]:
        rs = [r["routines"][name] for r in runs]
        keys = [k[len(name) + 1:] for k in TOLERANCES if k.startswith(name + ".")]
        summary[name] = {k: {"max": float(np.max([r.get(k, np.nan) for r in rs])), "tolerance": TOLERANCES[f"{name}.{k}"]}
                         for k in keys}
        summary[name]["chips_within_tolerance"] = sum(all(r.get("within_tolerance", {}).values()) for r in rs)
        acq = [r["counts"]["acquisitions"] for r in rs]
        summary[name]["acquisitions_per_chip"] = {"min": int(min(acq)), "max": int(max(acq)), "mean": float(np.mean(acq))}
        summary[name]["seconds_mean"] = float(np.mean([r["seconds"] for r in rs]))
    summary["mesh_fidelity"] = {"F_unit_nominal_min": float(np.min([r["F_unit_nominal_min"] for r in runs]))}
    for m in MODES + ["true"]:
        key = f"F_unit_{m}_min" if m != "true" else "true_F_unit_min"
        vals = [r["routines"]["mesh"][key] for r in runs if "mesh" in r["routines"]]
        summary["mesh_fidelity"][key] = float(np.min(vals))
        summary["mesh_fidelity"][key.replace("_min", "_mean")] = float(np.mean(vals))
    scal = [scaling(cfg, int(n), int(n) <= args.fit_max_n) for n in args.scaling.split(",") if n.strip()]
    print(json.dumps({"config": str(CONFIG.relative_to(ROOT)), "mesh": args.mesh, "ports": runs[0]["ports"],
                      "seeds": args.seeds, "targets_per_layer": args.targets, "summary": summary,
                      "scaling": scal, "runs": runs}, indent=1, default=float))


if __name__ == "__main__":
    main()
