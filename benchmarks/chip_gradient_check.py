"""In-situ adjoint gradient against central finite differences of the loss on random meshes, and the
measurements each gradient method needs per training step as the mesh grows. Prints one JSON object.

* ideal chip, complex128: relative error ||g_adj - g_fd|| / ||g_fd|| (target < 1e-6) for N-port meshes;
* imperfect chip without detector noise: cosine between the in-situ gradient and finite differences of
  the programmed parameters (fabrication errors, loss, crosstalk and calibration errors included);
* measurements per step: `adjoint` (measured) and `finite_difference` (measured where affordable,
  else 2 P L + L for P phases and L layers);
* calibrated imperfect chip (issue 13): every imperfection on, noise off, calibrated with `phase_shifters`,
  `crosstalk` and `readout` through the HAL; worst relative error of the adjoint gradient against central
  finite differences of the loss measured through the HAL (2 chip seeds, random phases; target < 1 %), the
  same without `readout`, with `readout` but without its loss-aware mesh model (readout_loss_max_ports = 0:
  the uneven waveguide loss left in the time-reversal step), and with noise on the error against the number
  of averaged acquisitions (calibration and gradients with noise; FD reference noise-free).

    python benchmarks/chip_gradient_check.py [--only-calibrated]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import _chip_common as cc
from lightloop.training.datasets import Dataset, one_hot
from lightloop.training.gradients import FiniteDifferenceGradient, make_gradient, mse_loss


def _toy(n_in: int, n_out: int = 2) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, n_in)).astype(np.float32)
    y = rng.integers(0, n_out, 8)
    return Dataset("toy", x, y, x, y, n_out)


def _fd(proc, params, x, t, h: float, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    flat = [(l, j) for l, p in enumerate(params) for j in range(p.size)]
    idx = np.arange(len(flat)) if subset is None else subset
    g = np.zeros(idx.size)
    for k, i in enumerate(idx):
        l, j = flat[i]
        vals = []
        for sgn in (1, -1):
            ps = [p.copy() for p in params]
            ps[l][j] += sgn * h
            proc.program(ps)
            vals.append(mse_loss(proc.forward(x).output, t))
        g[k] = (vals[0] - vals[1]) / (2 * h)
    proc.program(params)
    return idx, g


def check(n: int, ideal: bool, noise: bool, max_fd: int, seed: int) -> dict:
    data = _toy(2)
    edits = {"hidden": [n]}
    if not noise:
        edits.update({f"chip.noise.{k}": 0.0 for k in cc.RAW["processor"]["chip"]["noise"]})
        edits["chip.variation.drift_rad_per_sqrt_s"] = 0.0
    proc = cc.chip(data, ideal=ideal, precision="double", edits=edits)
    rng = np.random.default_rng(seed)
    params = [rng.uniform(0, 2 * np.pi, s) for s in proc.parameter_shapes()]
    proc.program(params)
    x, t = data.x_train, one_hot(data.y_train, 2)
    res = make_gradient("adjoint")(proc, params, x, t)
    ga = np.concatenate(res.grads)
    subset = None if ga.size <= max_fd else np.sort(rng.choice(ga.size, max_fd, replace=False))
    idx, gf = _fd(proc, params, x, t, 1e-5 if ideal else 1e-4, subset)
    ga = ga[idx]
    return {"mesh_ports": proc.info["mesh_ports"], "phases": int(sum(p.size for p in params)),
            "checked": int(idx.size), "relative_error": float(np.linalg.norm(ga - gf) / np.linalg.norm(gf)),
            "cosine": float(ga @ gf / np.linalg.norm(ga) / np.linalg.norm(gf)),
            "adjoint_measurements": res.measurements}


def _relerr(ga: np.ndarray, gf: np.ndarray) -> float:
    return float(np.linalg.norm(ga - gf) / np.linalg.norm(gf))


def calibrated_check(n: int, seed: int, readout: bool, averages: list[int], loss_model: bool = True) -> dict:
    """Adjoint vs finite differences on a calibrated imperfect chip (complex128); with `averages`, noise on
    (FD reference taken with the twin's noise switched off, the adjoint measured with noise)."""
    from lightloop.calibration.base import RunContext
    from lightloop.calibration.runner import calibrate

    data = _toy(2)
    edits: dict = {"hidden": [n], "chip.variation.drift_rad_per_sqrt_s": 0.0}
    noisy = bool(averages)
    if not noisy:
        edits.update({f"chip.noise.{k}": 0.0 for k in cc.RAW["processor"]["chip"]["noise"]})
    proc = cc.chip(data, ideal=False, chip_seed=seed, noise_seed=seed + 100, precision="double", edits=edits)
    clock = cc.Timer()
    names = ["phase_shifters", "crosstalk"] + (["readout"] if readout else [])
    options = {} if loss_model else {"readout_loss_max_ports": 0}
    outcomes = calibrate(proc, names, RunContext(seed=seed, options=options))
    cal_s = clock()
    rng = np.random.default_rng(seed)
    params = [rng.uniform(0, 2 * np.pi, s) for s in proc.parameter_shapes()]
    proc.program(params)
    x, t = data.x_train, one_hot(data.y_train, 2)
    emu, var = proc.emulator, proc.emulator.var
    emu.var = var.without_noise()              # benchmark-only: a noise-free reference through the same HAL
    _, gf = _fd(proc, params, x, t, 1e-4, None)
    ga0 = np.concatenate(make_gradient("adjoint")(proc, params, x, t).grads)
    out = {"mesh_ports": proc.info["mesh_ports"], "chip_seed": seed, "phases": int(gf.size),
           "calibration": {o.routine: o.status for o in outcomes}, "calibration_seconds": cal_s,
           "relative_error": _relerr(ga0, gf), "cosine": float(ga0 @ gf / np.linalg.norm(ga0) / np.linalg.norm(gf))}
    emu.var = var
    if noisy:
        rows = []
        for n_avg in averages:
            proc.averages = n_avg
            errs = [_relerr(np.concatenate(make_gradient("adjoint")(proc, params, x, t).grads), gf) for _ in range(3)]
            rows.append({"averages": n_avg, "relative_error_mean": float(np.mean(errs)),
                         "relative_error_max": float(np.max(errs))})
        proc.averages = 1
        out["noise_vs_averages"] = rows
    return out


def measurements(n: int, measure_fd: bool) -> dict:
    data = _toy(2)
    proc = cc.chip(data, ideal=False, edits={"hidden": [n]})
    params = proc.init_parameters(np.random.default_rng(0), 1.0)
    proc.program(params)
    x, t = data.x_train, one_hot(data.y_train, 2)
    adj = make_gradient("adjoint")(proc, params, x, t).measurements
    n_params = int(sum(p.size for p in params))
    n_layers = len(proc.layers)
    formula = 2 * n_params * n_layers + n_layers
    fd = FiniteDifferenceGradient(step=1e-2)(proc, params, x, t).measurements if measure_fd else None
    return {"mesh_ports": n, "phases": n_params, "adjoint": adj, "finite_difference": fd if fd is not None else formula,
            "finite_difference_measured": fd is not None, "finite_difference_formula": formula}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--max-fd", type=int, default=300, help="finite-difference checks per size (random subset)")
    ap.add_argument("--scaling-sizes", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--calibrated-sizes", type=int, nargs="+", default=[4, 6],
                    help="hidden widths of the calibrated-imperfect case (2 -> N -> 2 network)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="chip seeds of the calibrated case")
    ap.add_argument("--averages", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--only-calibrated", action="store_true", help="run only the calibrated-imperfect case")
    args = ap.parse_args(argv)
    clock = cc.Timer()
    cal = [calibrated_check(n, s, True, []) for n in args.calibrated_sizes for s in args.seeds]
    uncal = [calibrated_check(n, s, False, []) for n in args.calibrated_sizes for s in args.seeds]
    no_loss = [calibrated_check(n, s, True, [], loss_model=False) for n in args.calibrated_sizes for s in args.seeds]
    noisy = [calibrated_check(args.calibrated_sizes[0], s, True, args.averages) for s in args.seeds]
    worst_cal = max(r["relative_error"] for r in cal)
    calibrated = {"readout_calibrated": cal, "heaters_only": uncal, "readout_without_loss_model": no_loss,
                  "noise_on": noisy,
                  "max_relative_error": worst_cal, "meets_1_percent": bool(worst_cal < 0.01)}
    if args.only_calibrated:
        print(json.dumps({"benchmark": "chip_gradient_check", "calibrated_imperfect": calibrated,
                          "total_seconds": clock()}))
        return 0
    ideal = {str(n): check(n, True, False, args.max_fd, seed=n) for n in args.sizes}
    imperfect = {str(n): check(n, False, False, min(args.max_fd, 200), seed=n) for n in args.sizes[:3]}
    scaling = [measurements(n, measure_fd=n <= 8) for n in args.scaling_sizes]
    worst = max(r["relative_error"] for r in ideal.values())
    out = {"benchmark": "chip_gradient_check", "loss": "mse", "network": "2 -> N-port mesh -> N EO activations -> "
           "N-port mesh -> 2 (ideal chip, complex128)", "ideal": ideal, "imperfect_noise_free": imperfect,
           "max_relative_error_ideal": worst, "meets_1e-6": bool(worst < 1e-6),
           "measurements_per_step": scaling, "calibrated_imperfect": calibrated, "total_seconds": clock()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
