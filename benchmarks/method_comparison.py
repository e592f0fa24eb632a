"""Method comparison (issue 16): on the same bench, the same seeds and the SAME NUMBER OF OPTICAL ACQUISITIONS,
test accuracy, steps, acquisitions per step and wall / CPU time per step of every training method. Prints JSON.

Rows per bench:
  backprop               on-hardware backprop: `pump_probe` (free space) / in-situ `adjoint` (chip)
  physics_aware          forward on the bench, backward through its calibrated model
  physics_aware_refined  the same with twin refinement (gradient option refine_every)
  offline_nominal        trained on the nominal model (the ideal twin: nominal parameters, no fabrication error,
                         no noise) for as many steps as the most-stepped budgeted row of that seed, then programmed
                         onto the calibrated bench (0 training acquisitions)
  finite_difference      central differences (2 forward passes per parameter and step)
Each budgeted method trains (Adam) until its next step would exceed the budget (`--budget`, optical acquisitions =
detector acquisitions, `processor.measurements`); a method whose single step exceeds the budget reports 0 steps
and the untrained accuracy (status over_budget). The test accuracy is the FINAL parameters' (no selection on the
test set); the evaluation's acquisitions are not counted. A method that cannot run records its one-line error.

Benches (each seed: the twin's noise seed, the calibration's and the training's seed; the fabrication draw is fixed):
  free_space  lab_configs/free_space_sa.yaml, realistic twin (imperfections and noise), every free-space
              calibration routine first; MNIST (LIGHTLOOP_DATA_DIR), 784-128-10, optical depth 10, cross-entropy,
              Adam 5e-4, batch 64 (the README's MNIST setting); default budget 50,000 acquisitions
  chip        lab_configs/integrated_chip.yaml at 3x every fabrication spread, heater drift on (the config's
              0.001 rad/sqrt(s)), chip seed 1, calibrated through the HAL (every chip routine: phase_shifters,
              crosstalk, readout, activation, mesh); Iris, hidden [8], 3 outputs, 1 bias port, Adam 0.1, batch 32 (chip_robustness.py's on-chip
              setting); default budget 2,000 acquisitions (about 51 epochs of adjoint steps)

    python benchmarks/method_comparison.py --out method_comparison.json           # both benches, seeds 0 1 2
    python benchmarks/method_comparison.py --benches chip --budget chip=4000 --seeds 0 1
    python benchmarks/method_comparison.py --from-json method_comparison.json --markdown
    python benchmarks/method_comparison.py --from-json fs.json chip.json --out both.json   # benches run apart
    python benchmarks/method_comparison.py --quick                                  # smoke test, seconds
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import _chip_common as cc  # noqa: E402
from _method_runs import (BenchSpec, MethodSpec, PreparedBench, run_method, summarise,  # noqa: E402
                          untrained_accuracy)
from lightloop.bench import BuildOverrides, build_processor  # noqa: E402
from lightloop.cli import default_config_path  # noqa: E402
from lightloop.config import load_config  # noqa: E402
from lightloop.training.datasets import load_dataset  # noqa: E402

BENCHES = ("free_space", "chip")
DEFAULT_BUDGET = {"free_space": 50_000, "chip": 2_000}
QUICK_BUDGET = {"free_space": 300, "chip": 200}


def free_space_spec(args: argparse.Namespace) -> BenchSpec:
    """The realistic free-space SA bench (quick: digits, 64-8-10)."""
    quick = args.quick
    data = load_dataset("digits" if quick else "mnist", args.data_dir)
    hidden = [8] if quick else args.fs_hidden
    od, lr = 10.0, (5e-3 if quick else 5e-4)

    def build(ideal: bool, seed: int):
        cfg = load_config(default_config_path())
        cfg.processor.twin.noise_seed = seed
        return build_processor(cfg, data.n_features, data.n_classes,
                               BuildOverrides(hidden=hidden, ideal=ideal, optical_depth=od))

    readout = load_config(default_config_path()).processor.error_readout
    return BenchSpec("free_space", data, build, backprop="pump_probe", offline_gradient="exact",
                     budget=_budget(args, "free_space"), lr=lr, batch_size=64, init_scale=0.1, loss="cross_entropy",
                     refine_every=args.refine_every or (20 if quick else 100), calibrate=True,
                     settings={"config": "lab_configs/free_space_sa.yaml", "twin": "realistic", "dataset": data.name,
                               "layer_sizes": [data.n_features, *hidden, data.n_classes], "optical_depth": od,
                               "error_readout": readout, "loss": "cross_entropy", "optimizer": "adam", "lr": lr,
                               "batch_size": 64, "init_scale": 0.1})


def chip_spec(args: argparse.Namespace) -> BenchSpec:
    """The chip at `--spread-scale` x every fabrication spread with drift on (quick: 4-port meshes)."""
    quick = args.quick
    data = load_dataset("iris", args.data_dir)
    hidden, bias = ([4], 0) if quick else ([8], 1)
    edits = {**cc.spread_edits(args.spread_scale), "encoder.bias_ports": bias}
    if args.chip_drift is not None:
        edits["chip.variation.drift_rad_per_sqrt_s"] = args.chip_drift
    drift = edits.get("chip.variation.drift_rad_per_sqrt_s",
                      cc.RAW["processor"]["chip"]["variation"]["drift_rad_per_sqrt_s"])

    def build(ideal: bool, seed: int):
        return cc.chip(data, ideal=ideal, chip_seed=args.chip_seed, noise_seed=seed, hidden=hidden,
                       n_out=data.n_classes, edits=edits)

    return BenchSpec("chip", data, build, backprop="adjoint", offline_gradient="adjoint",
                     budget=_budget(args, "chip"), lr=0.1, batch_size=32, init_scale=0.1, loss="mse",
                     refine_every=args.refine_every or (25 if quick else 20), calibrate=True,
                     settings={"config": "lab_configs/integrated_chip.yaml", "dataset": data.name,
                               "hidden": hidden, "n_out": data.n_classes, "bias_ports": bias,
                               "spread_scale": args.spread_scale, "drift_rad_per_sqrt_s": drift,
                               "chip_seed": args.chip_seed, "loss": "mse", "optimizer": "adam", "lr": 0.1,
                               "batch_size": 32, "init_scale": 0.1})


def _budget(args: argparse.Namespace, bench: str) -> int:
    """The bench's budget: `--budget N` (every bench) or `--budget bench=N`, else the (quick) default."""
    budget = dict(QUICK_BUDGET if args.quick else DEFAULT_BUDGET)
    for item in args.budget or []:
        name, _, value = item.rpartition("=")
        try:
            n = int(value)
        except ValueError:
            raise SystemExit(f"method_comparison.py: --budget {item!r}: expected N or BENCH=N with an integer N") from None
        if name and name not in BENCHES:
            raise SystemExit(f"method_comparison.py: --budget {item!r}: bench {name!r}; expected one of {BENCHES}")
        if n < 0:
            raise SystemExit(f"method_comparison.py: --budget {item!r}: expected N >= 0 acquisitions")
        for b in ([name] if name else BENCHES):
            budget[b] = n
    return budget[bench]


def methods(spec: BenchSpec) -> list[MethodSpec]:
    """The table's rows for a bench, in the order they train (offline last: it takes the most steps of the others)."""
    return [MethodSpec("backprop", spec.backprop), MethodSpec("physics_aware", "physics_aware"),
            MethodSpec("physics_aware_refined", "physics_aware", {"refine_every": spec.refine_every}),
            MethodSpec("finite_difference", "finite_difference", {"max_parameters": 10 ** 9}),
            MethodSpec("offline_nominal", spec.offline_gradient, offline=True)]


ROW_ORDER = ("backprop", "physics_aware", "physics_aware_refined", "offline_nominal", "finite_difference")


def run_bench(spec: BenchSpec, seeds: list[int], log) -> dict[str, Any]:
    """Every method on every seed of one bench: the bench's section of the JSON."""
    t0, c0 = time.perf_counter(), time.process_time()
    rows = methods(spec)
    runs: dict[str, list[dict[str, Any]]] = {m.key: [] for m in rows}
    prepared = []
    for seed in seeds:
        bench = PreparedBench(spec, seed)
        untrained = untrained_accuracy(bench)
        prepared.append({"seed": seed, "calibration": bench.calibration,
                         "calibration_acquisitions": bench.calibration_acquisitions,
                         "calibration_seconds": round(bench.calibration_seconds, 2), "untrained_accuracy": untrained})
        log({"bench": spec.name, "seed": seed, "calibrated": bench.calibration, "untrained_accuracy": untrained})
        for m in rows:
            done = [runs[k][-1] for k in runs if k != m.key and runs[k] and runs[k][-1]["seed"] == seed]
            offline_steps = max([r.get("steps") or 0 for r in done], default=0)
            r = run_method(bench, m, untrained, offline_steps)
            runs[m.key].append(r)
            log({"bench": spec.name, "seed": seed, "method": m.key, "status": r["status"],
                 "test_accuracy": r.get("test_accuracy"), "steps": r.get("steps"), "error": r.get("error"),
                 "seconds": round(r["seconds"], 1)})
    by_key = {m.key: m for m in rows}
    table = [summarise(by_key[k], spec, runs[k]) for k in ROW_ORDER]
    ref = table[0]     # same-process ratios to on-hardware backprop (wall clocks are noisy on a shared machine)
    for r in table:
        for k in ("wall_seconds_per_step", "cpu_seconds_per_step"):
            ok = r[k] is not None and ref[k]
            r[k.replace("_seconds_per_step", "_per_step_vs_backprop")] = r[k] / ref[k] if ok else None
    return {"bench": spec.name, "budget_acquisitions": spec.budget, "settings": spec.settings,
            "refine_every": spec.refine_every, "seeds": prepared, "rows": table,
            "runs": runs,
            "wall_seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}


def _fmt(v: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table (one line per bench and method)."""
    lines = ["| bench | method | test accuracy % (mean ± sd) | steps | acquisitions / step | wall ms / step | "
             "CPU ms / step | budget (acquisitions) |", "|---|---|---|---|---|---|---|---|"]
    for b in result["benches"]:
        for r in b["rows"]:
            name = f"{r['method']} (`{r['gradient']}`)"
            if r["status"] == "error":
                acc = f"error: {r['error']}"[:120].replace("|", "/")
            else:
                acc = f"{_fmt(r['test_accuracy_mean'], 100)} ± {_fmt(r['test_accuracy_sd'], 100)}"
                if r["status"] == "over_budget":
                    acc += " (untrained: one step exceeds the budget)"
            steps = "-" if r["steps_mean"] is None else f"{r['steps_mean']:.0f}"
            lines.append(f"| {b['bench']} | {name} | {acc} | {steps} | {_fmt(r['acquisitions_per_step'], 1, 1)} | "
                         f"{_fmt(r['wall_seconds_per_step'], 1e3, 2)} | {_fmt(r['cpu_seconds_per_step'], 1e3, 2)} | "
                         f"{r['budget']} |")
    lines.append("")
    for b in result["benches"]:
        s = b["settings"]
        net = s.get("layer_sizes") or f"hidden {s.get('hidden')}, {s.get('n_out')} outputs"
        extra = (f", {s['spread_scale']:g}x fabrication spread, drift {s['drift_rad_per_sqrt_s']:g} rad/sqrt(s)"
                 if "spread_scale" in s else ", realistic twin")
        lines.append(f"{b['bench']}: {s['dataset']}, {net}{extra}, calibrated first; Adam lr {s['lr']:g}, batch "
                     f"{s['batch_size']}, loss {s['loss']}; seeds {', '.join(str(x['seed']) for x in b['seeds'])}; "
                     f"refined row: refine_every {b['refine_every']}; offline row trained on the nominal model "
                     f"(ideal twin) as many steps as the most-stepped budgeted row, then programmed.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benches", default="free_space,chip", help="comma-separated: free_space, chip")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (quick: 0)")
    ap.add_argument("--budget", nargs="+", default=None,
                    help="optical acquisitions per training run: N (every bench) or BENCH=N "
                         f"(default {DEFAULT_BUDGET}; quick {QUICK_BUDGET})")
    ap.add_argument("--quick", action="store_true", help="tiny smoke configuration (digits, 4-port chip)")
    ap.add_argument("--refine-every", type=int, default=None,
                    help="steps between refinements of physics_aware_refined (default: 100 free space, 20 chip)")
    ap.add_argument("--fs-hidden", type=int, nargs="+", default=[128], help="free-space hidden layer widths")
    ap.add_argument("--spread-scale", type=float, default=3.0, help="chip: factor on every fabrication spread")
    ap.add_argument("--chip-drift", type=float, default=None, help="chip heater drift rad/sqrt(s) (default: config's)")
    ap.add_argument("--chip-seed", type=int, default=1, help="chip: the fabrication draw")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--markdown", action="store_true", help="print the Markdown table instead of the JSON")
    ap.add_argument("--from-json", type=Path, nargs="+", default=None,
                    help="read results instead of running (several: their benches merged; with --markdown)")
    a = ap.parse_args(argv)
    a.bench_list = [b.strip() for b in a.benches.split(",") if b.strip()]
    bad = [b for b in a.bench_list if b not in BENCHES]
    if bad or not a.bench_list:
        ap.error(f"--benches {a.benches!r}: expected a comma-separated subset of {','.join(BENCHES)}")
    if a.seeds is None:
        a.seeds = [0] if a.quick else [0, 1, 2]
    return a


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; JSON (or the Markdown table) on stdout, progress on stderr."""
    a = parse_args(argv)
    if a.from_json is not None:
        parts = [json.loads(p.read_text()) for p in a.from_json]
        result = {**parts[0], "benches": [b for p in parts for b in p["benches"]]}
        if len(parts) > 1:
            result["merged_from"] = [str(p) for p in a.from_json]
            result["markdown"] = markdown(result)
        if a.out is not None:
            a.out.write_text(json.dumps(result, indent=1) + "\n")
    else:
        t0, c0 = time.perf_counter(), time.process_time()

        def log(rec: dict[str, Any]) -> None:
            print(json.dumps({**rec, "t": round(time.perf_counter() - t0, 1)}, default=str), file=sys.stderr,
                  flush=True)

        specs = {"free_space": free_space_spec, "chip": chip_spec}
        benches = [run_bench(specs[b](a), a.seeds, log) for b in a.bench_list]
        result = {"benchmark": "method_comparison", "quick": a.quick, "seeds": a.seeds, "benches": benches,
                  "acquisition": "one detector acquisition of the bench (processor.measurements); the budget counts "
                                 "training only, not the final test evaluation",
                  "load_average_1min": os.getloadavg()[0], "wall_seconds": round(time.perf_counter() - t0, 1),
                  "cpu_seconds": round(time.process_time() - c0, 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        result["markdown"] = markdown(result)
        if a.out is not None:
            a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result) if a.markdown else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
