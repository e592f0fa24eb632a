"""Photon-limited feedback (Zarkeshian et al., Sci. Rep. 12, 20720 (2022)): reproduction on MNIST; prints JSON.

The paper's protocol: 784-H-10 sigmoid MLP with biases, MSE, online learning (one sample per trial,
plain SGD), training error rate = moving average of misclassification over the last 100 trials,
validation every 500 trials, test error averaged over repetitions. Experiments:

  q      stochastic (analog) feedback, every neuron photon-limited, q = 1 ... 1e-4 (+ a long q=1e-4 run)
  qhidden  the same with only the hidden neurons photon-limited (output neurons use their local error)
  qscale q = 0.01, every neuron photon-limited, for 10x the trials (equal photon budget to q = 0.1)
  onebit one-bit feedback (sign only, value epsilon), q = 0.1, epsilon = 0.1, H = 500, 1000, 5000
  noise  one-bit feedback with noise photons n_p around q
  bench  the free-space SA twin (lab_configs/photon_limited.yaml) through `lightloop train`'s code path

Trial counts are reduced from the paper's to fit a 2-core machine (each configuration stays under
~5 minutes); the JSON says so per experiment. Tables and PNG plots go to --out.
Example: python benchmarks/photon_limited.py --out runs/photon_limited
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lightloop.benches.digital import FeedbackSettings, attach_photon_feedback
from lightloop.simulators.digital_network import DigitalProcessor
from lightloop.training.datasets import Dataset, load_dataset, one_hot
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import SGD

ROOT = Path(__file__).resolve().parents[1]


def online_run(data: Dataset, hidden: int, trials: int, lr: float, seed: int, *, val_every: int = 500,
               val_size: int = 1000, init_scale: float = 0.05, **method: Any) -> dict[str, Any]:
    """One online-learning run with the stochastic_photonic method; the paper's error curves and final test error."""
    n_train = data.x_train.shape[0] - 10000                     # last 10k of the training set: validation
    proc = DigitalProcessor((data.n_features, hidden, data.n_classes))
    fc = attach_photon_feedback(proc, FeedbackSettings(), seed=seed)
    rng = np.random.default_rng(seed)
    params = proc.init_parameters(rng, init_scale)
    grad = make_gradient("stochastic_photonic", **method)
    opt = SGD(lr)
    targets = one_hot(data.y_train, data.n_classes)
    val_idx = n_train + rng.choice(10000, val_size, replace=False)
    order = np.concatenate([rng.permutation(n_train) for _ in range(trials // n_train + 1)])[:trials]
    wrong = np.zeros(trials, bool)
    curve_t, curve_train, curve_val = [], [], []
    proc.program(params)
    t0 = time.perf_counter()
    for k, i in enumerate(order):
        res = grad(proc, params, data.x_train[i:i + 1], targets[i:i + 1])
        wrong[k] = res.output[0].argmax() != data.y_train[i]
        opt.step(params, res.grads)
        if (k + 1) % val_every == 0:
            out = proc.forward(data.x_train[val_idx]).output
            curve_t.append(k + 1)
            curve_train.append(float(wrong[max(0, k - 99): k + 1].mean()))   # moving average, last 100 trials
            curve_val.append(float((out.argmax(1) != data.y_train[val_idx]).mean()))
    seconds = time.perf_counter() - t0
    test_err = float((proc.forward(data.x_test).output.argmax(1) != data.y_test).mean())
    return {"test_error": test_err, "final_train_error_rate": curve_train[-1] if curve_train else None,
            "final_validation_error": curve_val[-1] if curve_val else None, "trials": trials,
            "photons_delivered": grad.delivered, "photons_per_trial": grad.delivered / trials,
            "seconds": round(seconds, 1), "trials_per_second": round(trials / seconds, 1),
            "clicks_per_gate": fc.clicks / max(fc.gates, 1),
            "curve": {"trial": curve_t, "train_error_rate": curve_train, "validation_error": curve_val}}


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in runs]))


def _std(runs: list[dict[str, Any]], key: str) -> float:
    return float(np.std([r[key] for r in runs])) if len(runs) > 1 else 0.0


def _plot_curves(curves: dict[str, dict[str, list]], path: Path, title: str, logx: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, c in curves.items():
        a1.plot(c["trial"], np.array(c["train_error_rate"]) * 100, label=label, lw=0.8)
        a2.plot(c["trial"], np.array(c["validation_error"]) * 100, label=label, lw=1.0)
    for ax, name in ((a1, "training error rate (%, last 100 trials)"), (a2, "validation error (%)")):
        ax.set_xlabel("trial")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if logx:
            ax.set_xscale("log")
    a2.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def f(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _collapse(curves: dict[str, dict[str, list]], qs: dict[str, float]) -> list[dict[str, Any]]:
    """Validation error at equal photon budgets: q at trial t against q=1 at trial q*t (same photons per neuron)."""
    rows = []
    base = next((c for k, c in curves.items() if qs[k] == 1.0), None)
    if base is None:
        return rows
    at = dict(zip(base["trial"], base["validation_error"]))
    for label, c in curves.items():
        q = qs[label]
        if q == 1.0:
            continue
        for t, v in zip(c["trial"], c["validation_error"]):
            tq = round(t * q, 6)
            if float(tq).is_integer() and int(tq) in at:
                rows.append({"q": q, "trial": t, "validation_error": v, "q1_trial_same_photons": int(tq),
                             "q1_validation_error": at[int(tq)]})
    return rows


def exp_q(data: Dataset, a: argparse.Namespace, out: Path, output_feedback: bool = True) -> dict[str, Any]:
    rows, curves, qs = [], {}, {}
    plan = [(1.0, a.trials), (0.1, a.trials), (1e-2, a.trials), (1e-3, a.trials), (1e-4, a.trials)]
    if output_feedback:
        plan.append((1e-4, a.long_trials))
    for q, trials in plan:
        runs = [online_run(data, 500, trials, a.lr_q, a.seed + r, q=q, output_feedback=output_feedback)
                for r in range(a.repeats if trials == a.trials else 1)]
        label = f"q={q:g}, {trials} trials"
        curves[label] = runs[0]["curve"]
        qs[label] = q
        rows.append({"q": q, "trials": trials, "repeats": len(runs), "test_error": _mean(runs, "test_error"),
                     "test_error_std": _std(runs, "test_error"), "photons_per_trial": _mean(runs, "photons_per_trial"),
                     "photons_total": _mean(runs, "photons_delivered"), "seconds": _mean(runs, "seconds")})
        print(f"[q] {label}: test error {rows[-1]['test_error']:.4f}", file=sys.stderr, flush=True)
    name = "q_sweep" if output_feedback else "q_sweep_hidden_only"
    who = "every neuron" if output_feedback else "hidden neurons"
    _plot_curves(curves, out / f"{name}.png", f"stochastic feedback, 784-500-10, {who} photon-limited", logx=True)
    return {"rows": rows, "table": _table(rows, ["q", "trials", "repeats", "test_error", "test_error_std",
                                                 "photons_per_trial", "photons_total"]),
            "equal_photon_budget": _collapse(curves, qs), "curves": curves,
            "png": str(out / f"{name}.png"), "lr": a.lr_q, "one_bit": False, "output_feedback": output_feedback,
            "paper_trials": "not stated in the text we could read; Fig. 2c runs until convergence",
            "note": f"trials reduced to {a.trials} per q" + (f" and {a.long_trials} for the long q=1e-4 run"
                                                              if output_feedback else "")
                    + " (training split: first 50k MNIST images; validation: 1000 of the last 10k every 500 trials)"}


def exp_qscale(data: Dataset, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every neuron photon-limited at q = 0.01 for 10x the trials of the q sweep: does it learn as q=0.1 / q=1 did?"""
    q, trials = 0.01, a.scale_trials
    run = online_run(data, 500, trials, a.lr_q, a.seed, q=q, output_feedback=True)
    c = run["curve"]
    at = {t: v for t, v in zip(c["trial"], c["validation_error"])}
    marks = [t for t in (20000, 50000, 100000, 150000, 200000, trials) if t in at]
    print(f"[qscale] q={q}, {trials} trials: test error {run['test_error']:.4f}", file=sys.stderr, flush=True)
    _plot_curves({f"q={q:g}, {trials} trials": c}, out / "q_scale.png", "every neuron photon-limited, q = 0.01")
    return {"q": q, "trials": trials, "test_error": run["test_error"], "photons_total": run["photons_delivered"],
            "validation_error_at": {str(t): at[t] for t in sorted(set(marks))}, "seconds": run["seconds"],
            "png": str(out / "q_scale.png"), "lr": a.lr_q, "output_feedback": True,
            "note": "same photon budget as q=0.1 at trials/10 and q=1 at trials/100"}


def exp_onebit(data: Dataset, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    rows, curves = [], {}
    for h in (500, 1000, 5000):
        reps = a.repeats if h < 5000 else 1
        runs = [online_run(data, h, a.onebit_trials, a.lr_bit, a.seed + r, q=0.1, one_bit=True, epsilon=0.1)
                for r in range(reps)]
        curves[f"H={h}"] = runs[0]["curve"]
        rows.append({"hidden": h, "trials": a.onebit_trials, "repeats": reps, "test_error": _mean(runs, "test_error"),
                     "test_error_std": _std(runs, "test_error"),
                     "final_train_error_rate": _mean(runs, "final_train_error_rate"), "seconds": _mean(runs, "seconds")})
        print(f"[onebit] H={h}: test error {rows[-1]['test_error']:.4f}", file=sys.stderr, flush=True)
    _plot_curves(curves, out / "one_bit_hidden.png", "one-bit feedback, q = 0.1, epsilon = 0.1")
    errs = [r["test_error"] for r in rows]
    return {"rows": rows, "table": _table(rows, ["hidden", "trials", "repeats", "test_error", "test_error_std",
                                                 "final_train_error_rate", "seconds"]),
            "png": str(out / "one_bit_hidden.png"), "q": 0.1, "epsilon": 0.1, "lr": a.lr_bit,
            "more_hidden_lower_error": bool(errs[0] > errs[1] > errs[2]),
            "note": f"{a.onebit_trials} trials per run (reduced; 5000 hidden units cost ~10x per trial); hidden "
                    "neurons photon-limited, output neurons use their local error (one-bit output units cannot "
                    "converge with sigmoid+MSE)"}


def exp_noise(data: Dataset, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    q = 0.1
    rows, curves = [], {}
    for n_p in (0.0, 0.02, 0.05, 0.1, 0.2, 0.5):
        runs = [online_run(data, 500, a.noise_trials, a.lr_bit, a.seed + r, q=q, one_bit=True, epsilon=0.1,
                           noise_rate=n_p) for r in range(a.repeats)]
        curves[f"n_p={n_p:g}"] = runs[0]["curve"]
        rows.append({"n_p": n_p, "n_p_over_q": n_p / q, "trials": a.noise_trials, "repeats": len(runs),
                     "test_error": _mean(runs, "test_error"), "test_error_std": _std(runs, "test_error")})
        print(f"[noise] n_p={n_p}: test error {rows[-1]['test_error']:.4f}", file=sys.stderr, flush=True)
    _plot_curves(curves, out / "noise_photons.png", "one-bit feedback with noise photons, q = 0.1")
    return {"rows": rows, "table": _table(rows, ["n_p", "n_p_over_q", "trials", "repeats", "test_error",
                                                 "test_error_std"]),
            "png": str(out / "noise_photons.png"), "q": q, "epsilon": 0.1, "lr": a.lr_bit,
            "note": f"{a.noise_trials} trials per run (reduced)"}


def exp_bench(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    from lightloop.cli import _train_parser, run_training

    rows = []
    for q, one_bit in ((1.0, False), (1.0, True), (0.1, True), (0.01, True)):
        ap = argparse.ArgumentParser()
        _train_parser(ap.add_subparsers(dest="command"))
        args = ap.parse_args(["train", "--config", str(ROOT / "lab_configs" / "photon_limited.yaml"),
                              "--out", str(out / f"bench_q{q:g}_{'bit' if one_bit else 'analog'}"), "--no-progress",
                              "--epochs", str(a.bench_epochs), "--gradient-option", f"q={q}",
                              "--gradient-option", f"one_bit={str(one_bit).lower()}"])
        s = run_training(args)
        rows.append({"q": q, "one_bit": one_bit, "epochs": a.bench_epochs, "test_accuracy": s["test_accuracy"],
                     "clicks_per_gate": s["feedback_clicks_per_gate"]})
        print(f"[bench] q={q} one_bit={one_bit}: test accuracy {s['test_accuracy']:.4f}", file=sys.stderr, flush=True)
    return {"rows": rows, "table": _table(rows, ["q", "one_bit", "epochs", "test_accuracy", "clicks_per_gate"]),
            "config": "lab_configs/photon_limited.yaml", "dataset": "digits",
            "note": "free-space SA twin (realistic imperfections), pump-probe backward errors at the vapor cell sent "
                    "through the photon-counting twin (eta 0.9, dark 1e-4, polarisation error 0.01), Adam"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", default="q,qhidden,qscale,onebit,noise,bench")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/photon_limited"))
    ap.add_argument("--trials", type=int, default=20000, help="trials per q in the q sweep")
    ap.add_argument("--long-trials", type=int, default=100000, help="trials of the long q=1e-4 run")
    ap.add_argument("--scale-trials", type=int, default=200000, help="trials of the q=0.01 scaling run")
    ap.add_argument("--onebit-trials", type=int, default=10000)
    ap.add_argument("--noise-trials", type=int, default=10000)
    ap.add_argument("--bench-epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1, help="repetitions averaged (the paper: 10)")
    ap.add_argument("--lr-q", type=float, default=0.1)
    ap.add_argument("--lr-bit", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    exps = [e.strip() for e in a.experiments.split(",") if e.strip()]
    t0 = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "photon_limited", "paper": "Zarkeshian et al., Sci. Rep. 12, 20720 (2022)",
                              "network": "784-H-10 sigmoid, biases, MSE, online SGD (batch 1)",
                              "repeats": a.repeats, "paper_repeats": 10}
    data = load_dataset("mnist", a.data_dir) if set(exps) & {"q", "qhidden", "qscale", "onebit", "noise"} else None
    runners = {"qscale": lambda: exp_qscale(data, a, a.out), "q": lambda: exp_q(data, a, a.out), "qhidden": lambda: exp_q(data, a, a.out, output_feedback=False),
               "onebit": lambda: exp_onebit(data, a, a.out),
               "noise": lambda: exp_noise(data, a, a.out), "bench": lambda: exp_bench(a, a.out)}
    for e in exps:
        report[e] = runners[e]()
        (a.out / "report.json").write_text(json.dumps(report, indent=1))
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    (a.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk not in ("table", "curves")}
                          if isinstance(v, dict) else v) for k, v in report.items()}))


if __name__ == "__main__":
    main()
