"""Photon-limited feedback (Zarkeshian et al., Sci. Rep. 12, 20720 (2022)): reproduction on MNIST; prints JSON.

The paper's protocol: 784-H-10 sigmoid MLP with biases, MSE, online learning (one sample per trial,
plain SGD), training error rate = moving average of misclassification over the last 100 trials,
validation every 500 trials, test error averaged over 10 repetitions. Experiments (--experiments):

  q        stochastic (analog) feedback, every neuron photon-limited, q = 1 ... 1e-4
  qhidden  the same with only the hidden neurons photon-limited (output neurons use their local error)
  qlong    q = 1e-4, every neuron photon-limited, run long enough to learn (--long-trials)
  onebit   one-bit feedback (sign only, value epsilon), q = 0.1, epsilon = 0.1, H = 500, 1000, 5000
           (+ readout-only controls at every width: q = 0, no hidden learning)
  noise    one-bit feedback, q = 0.1, with noise photons n_p from 0 to 10 q, and noise-only controls (q = 0)
  bench    the free-space SA twin (lab_configs/photon_limited.yaml) through `lightloop train`'s code path

Engine: `lightloop.simulators.photon_online` (exactly the DigitalProcessor + stochastic_photonic +
SGD computation with an ideal photon channel, checked against it in tests/test_photon_feedback.py,
5-20x faster); `--engine hal` runs the same protocol trial by trial through the HAL channel.

Network conventions (--init, --lr-scaling; see lightloop.simulators.photon_online): by default
weights N(0, 1/fan_in) (LeCun), biases 0, and plain SGD with one learning rate in the paper's range
(0.001-0.1), one for every width. The output layer's per-trial step grows as lr * |h|^2 ~ 0.25 lr H,
so a wider network learns its readout faster at one small rate (lr = 0.003 is stable up to H = 5000;
lr = 0.03 thrashes there): that is part of why more hidden units give lower error, and the q = 0
readout-only controls at every width separate it from what the photons teach the hidden layer.
`--lr-scaling fan_in` (lr / fan_in per layer) removes the growth altogether.

Outputs in --out: report.json, tables.md, <experiment>_runs.csv (one row per run),
<experiment>.csv (mean +- std), <experiment>.png. Trial counts and repetitions per experiment
are flags; the JSON records what was run.
Example: python benchmarks/photon_limited.py --experiments onebit --repeats 10 --out runs/photon_limited
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lightloop.simulators.photon_online import OnlineSettings, augment, run_online
from lightloop.training.datasets import Dataset, load_dataset, one_hot

ROOT = Path(__file__).resolve().parents[1]


# --- one run --------------------------------------------------------------------------------------
def online_run_hal(data: Dataset, s: OnlineSettings, trials: int, seed: int, *, val_every: int = 500,
                   val_size: int = 1000) -> dict[str, Any]:
    """The same protocol trial by trial through DigitalProcessor + HAL PhotonCountingArray + stochastic_photonic."""
    from lightloop.benches.digital import FeedbackSettings, attach_photon_feedback
    from lightloop.simulators.digital_network import DigitalProcessor
    from lightloop.simulators.photon_online import init_weights, layer_learning_rates
    from lightloop.training.gradients import make_gradient

    n_train = data.x_train.shape[0] - 10000
    sizes = (data.n_features, s.hidden, data.n_classes)
    proc = DigitalProcessor(sizes)
    attach_photon_feedback(proc, FeedbackSettings(), seed=seed)
    rng = np.random.default_rng(seed)
    params = init_weights(rng, sizes, s.init, s.init_scale)
    lrs = layer_learning_rates(s.lr, sizes, s.lr_scaling)
    grad = make_gradient("stochastic_photonic", q=s.q, one_bit=s.one_bit, epsilon=s.epsilon,
                         noise_rate=s.noise_rate, output_feedback=s.output_feedback)
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
        for p, g, lr in zip(params, res.grads, lrs):
            p -= np.float32(lr) * g
        if (k + 1) % val_every == 0 or k + 1 == trials:
            out = proc.forward(data.x_train[val_idx]).output
            curve_t.append(k + 1)
            curve_train.append(float(wrong[max(0, k - 99): k + 1].mean()))
            curve_val.append(float((out.argmax(1) != data.y_train[val_idx]).mean()))
    seconds = time.perf_counter() - t0
    test_err = float((proc.forward(data.x_test).output.argmax(1) != data.y_test).mean())
    return {"test_error": test_err, "final_train_error_rate": curve_train[-1], "final_validation_error": curve_val[-1],
            "trials": trials, "seed": seed, "photons_delivered": grad.delivered,
            "photons_per_trial": grad.delivered / trials, "seconds": round(seconds, 2),
            "ms_per_trial": round(1000 * seconds / trials, 4), "settings": s.as_dict(), "layer_lr": lrs,
            "curve": {"trial": curve_t, "train_error_rate": curve_train, "validation_error": curve_val}}


class Runner:
    """Runs configurations with repetitions (seeds seed, seed+1, ...), keeps per-run rows and curves."""

    def __init__(self, data: Dataset, a: argparse.Namespace):
        self.data, self.a = data, a
        self.xa = augment(data.x_train) if a.engine == "fast" else None

    def settings(self, **kw: Any) -> OnlineSettings:
        return OnlineSettings(init=self.a.init, lr_scaling=self.a.lr_scaling, init_scale=self.a.init_scale, **kw)

    def run(self, s: OnlineSettings, trials: int, repeats: int, val_every: int | None = None,
            record_all: bool = True) -> list[dict[str, Any]]:
        a, d = self.a, self.data
        ve = val_every or a.val_every
        runs = []
        for r in range(repeats):
            if a.engine == "fast":
                out = run_online(d.x_train, d.y_train, d.x_test, d.y_test, s, trials, a.seed + r,
                                 val_every=ve, val_size=a.val_size, xa_train=self.xa, record_all=record_all)
                out.pop("weights")
            else:
                out = online_run_hal(d, s, trials, a.seed + r, val_every=ve, val_size=a.val_size)
            runs.append(out)
        return runs


# --- summaries, tables, plots ----------------------------------------------------------------------
def _stat(runs: list[dict[str, Any]], key: str) -> tuple[float, float]:
    v = np.array([r[key] for r in runs], float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _summary_row(label: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    te, te_sd = _stat(runs, "test_error")
    tr, tr_sd = _stat(runs, "final_train_error_rate")
    late = [float(np.mean(r["curve"]["validation_error"][-max(1, len(r["curve"]["validation_error"]) // 5):]))
            for r in runs]                                  # validation error averaged over the last 20% of trials
    lv = (float(np.mean(late)), float(np.std(late, ddof=1)) if len(late) > 1 else 0.0)
    return {**label, "trials": runs[0]["trials"], "repeats": len(runs), "test_error_mean": te, "test_error_std": te_sd,
            "late_validation_error_mean": lv[0], "late_validation_error_std": lv[1],
            "train_error_rate_mean": tr, "train_error_rate_std": tr_sd,
            "photons_per_trial": _stat(runs, "photons_per_trial")[0],
            "seconds_per_run": _stat(runs, "seconds")[0], "ms_per_trial": _stat(runs, "ms_per_trial")[0]}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _run_rows(label: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**label, "seed": r["seed"], "trials": r["trials"], "test_error": r["test_error"],
             "final_train_error_rate": r["final_train_error_rate"],
             "final_validation_error": r["final_validation_error"], "photons_per_trial": r["photons_per_trial"],
             "seconds": r["seconds"]} for r in runs]


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def f(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def validation_at(curves: dict[str, list[dict[str, Any]]], fractions=(0.1, 0.2, 0.4, 1.0)) -> list[dict[str, Any]]:
    """Validation error (mean +- std over repetitions) of each group at fixed fractions of its trials."""
    rows = []
    for g, cs in curves.items():
        t = cs[0]["trial"]
        row: dict[str, Any] = {"group": g, "repeats": len(cs)}
        for f in fractions:
            i = min(range(len(t)), key=lambda j: abs(t[j] - f * t[-1]))
            v = np.array([c["validation_error"][i] for c in cs])
            row[f"val_err_at_{t[i]}"] = float(v.mean())
            row[f"val_err_std_at_{t[i]}"] = float(v.std(ddof=1)) if v.size > 1 else 0.0
        rows.append(row)
    return rows


def _pct(m: float, s: float) -> str:
    return f"{100 * m:.1f} +- {100 * s:.1f}"


def _plot(groups: dict[str, list[dict[str, Any]]], path: Path, title: str, logx: bool = False,
          smooth: int = 1) -> None:
    """Training error rate and validation error per group: mean over repetitions, band = +-1 std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, runs in groups.items():
        t = np.array(runs[0]["curve"]["trial"])
        for ax, key in ((a1, "train_error_rate"), (a2, "validation_error")):
            v = np.array([r["curve"][key] for r in runs]) * 100
            if key == "train_error_rate" and smooth > 1 and v.shape[1] >= smooth:
                k = np.ones(smooth) / smooth
                norm = np.convolve(np.ones(v.shape[1]), k, mode="same")     # edge-corrected running mean
                v = np.array([np.convolve(row, k, mode="same") / norm for row in v])
            m = v.mean(0)
            line, = ax.plot(t, m, lw=1.0, label=f"{label} (n={len(runs)})")
            if len(runs) > 1:
                sd = v.std(0, ddof=1)
                ax.fill_between(t, m - sd, m + sd, color=line.get_color(), alpha=0.15, lw=0)
    a1_name = "train error rate (%, last 100 trials)" + ("*" if smooth > 1 else "")
    for ax, name in ((a1, a1_name), (a2, "validation error (%, 1000 images)")):
        ax.set_xlabel("trial")
        ax.set_ylabel(name)
        ax.axhline(90, color="grey", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 100)
        if logx:
            ax.set_xscale("log")
    a2.legend(fontsize=7)
    note = f"; *running mean over {smooth} checkpoints" if smooth > 1 else ""
    fig.suptitle(f"{title}\nmean over repetitions, band = +-1 std{note}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _finish(name: str, out: Path, groups: dict[str, list[dict[str, Any]]], labels: dict[str, dict[str, Any]],
            title: str, extra: dict[str, Any], logx: bool = False, smooth: int = 1) -> dict[str, Any]:
    rows = [_summary_row(labels[g], runs) for g, runs in groups.items()]
    per_run = [row for g, runs in groups.items() for row in _run_rows(labels[g], runs)]
    _write_csv(out / f"{name}.csv", rows)
    _write_csv(out / f"{name}_runs.csv", per_run)
    _plot(groups, out / f"{name}.png", title, logx=logx, smooth=smooth)
    cols = [*next(iter(labels.values())).keys(), "trials", "repeats", "test_error_mean", "test_error_std",
            "late_validation_error_mean", "late_validation_error_std", "train_error_rate_mean", "photons_per_trial",
            "seconds_per_run"]
    return {"rows": rows, "table": _table(rows, cols), "png": str(out / f"{name}.png"), "title": title,
            "csv": str(out / f"{name}.csv"), "runs_csv": str(out / f"{name}_runs.csv"),
            "curves": {g: [r["curve"] for r in runs] for g, runs in groups.items()}, **extra}


# --- experiments -------------------------------------------------------------------------------------
QS = (1.0, 0.1, 1e-2, 1e-3, 1e-4)


def exp_q(R: Runner, out: Path, output_feedback: bool = True) -> dict[str, Any]:
    a = R.a
    groups, labels = {}, {}
    for q in QS:
        g = f"q={q:g}"
        groups[g] = R.run(R.settings(hidden=500, q=q, lr=a.lr_q, output_feedback=output_feedback), a.trials, a.repeats)
        labels[g] = {"q": q}
        print(f"[q{'': <1}{'all' if output_feedback else 'hidden'}] {g}: test error "
              f"{_pct(*_stat(groups[g], 'test_error'))}%", file=sys.stderr, flush=True)
    name = "q_sweep" if output_feedback else "q_sweep_hidden_only"
    who = "every neuron" if output_feedback else "hidden neurons only"
    return _finish(name, out, groups, labels, f"analog stochastic feedback, 784-500-10, {who} photon-limited, "
                   f"lr={a.lr_q:g}", {"lr": a.lr_q, "one_bit": False, "output_feedback": output_feedback}, logx=True)


def exp_qlong(R: Runner, out: Path) -> dict[str, Any]:
    a = R.a
    q = 1e-4
    t0 = time.perf_counter()
    runs = R.run(R.settings(hidden=500, q=q, lr=a.lr_q, output_feedback=True), a.long_trials, a.long_repeats,
                 val_every=max(a.long_trials // 200, 500), record_all=False)
    groups, labels = {f"q={q:g}": runs}, {f"q={q:g}": {"q": q}}
    c = runs[0]["curve"]
    marks = sorted({t for t in c["trial"] if t in {int(a.long_trials * f) for f in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)}})
    at = {str(t): [float(r["curve"]["validation_error"][r["curve"]["trial"].index(t)]) for r in runs] for t in marks}
    print(f"[qlong] q={q:g}, {a.long_trials} trials: test error {_pct(*_stat(runs, 'test_error'))}%",
          file=sys.stderr, flush=True)
    return _finish("q_long", out, groups, labels, f"q = 1e-4, every neuron photon-limited, analog, lr={a.lr_q:g}",
                   {"lr": a.lr_q, "output_feedback": True, "validation_error_at": at,
                    "wall_seconds": round(time.perf_counter() - t0, 1)}, logx=True, smooth=21)


def exp_onebit(R: Runner, out: Path) -> dict[str, Any]:
    a = R.a
    widths = [int(h) for h in a.hidden_sizes.split(",")]
    reps = [int(r) for r in a.onebit_repeats.split(",")] if a.onebit_repeats else [a.repeats] * len(widths)
    if len(reps) != len(widths):
        raise SystemExit("--onebit-repeats: one count per hidden size")
    groups, labels = {}, {}
    for h, n in zip(widths, reps):
        g = f"H={h}"
        groups[g] = R.run(R.settings(hidden=h, q=0.1, one_bit=True, epsilon=0.1, lr=a.lr_bit), a.onebit_trials, n)
        labels[g] = {"hidden": h, "q": 0.1}
        print(f"[onebit] {g}: test error {_pct(*_stat(groups[g], 'test_error'))}%", file=sys.stderr, flush=True)
    if a.onebit_control:                 # the same widths with no photons: readout-only learning
        for h, n in zip(widths, reps):
            g = f"H={h}, readout only (q=0)"
            groups[g] = R.run(R.settings(hidden=h, q=0.0, one_bit=True, epsilon=0.1, lr=a.lr_bit), a.onebit_trials, n)
            labels[g] = {"hidden": h, "q": 0.0}
            print(f"[onebit] {g}: test error {_pct(*_stat(groups[g], 'test_error'))}%", file=sys.stderr, flush=True)
    means = [_stat(groups[f"H={h}"], "test_error")[0] for h in widths]
    gain = {f"H={h}": _stat(groups[f"H={h}, readout only (q=0)"], "test_error")[0] - m
            for h, m in zip(widths, means)} if a.onebit_control else {}
    at = validation_at({g: [r["curve"] for r in runs] for g, runs in groups.items()})
    _write_csv(out / "one_bit_hidden_validation_at.csv", at)
    return _finish("one_bit_hidden", out, groups, labels,
                   f"one-bit feedback, q = 0.1, epsilon = 0.1, lr={a.lr_bit:g}, hidden neurons photon-limited",
                   {"q": 0.1, "epsilon": 0.1, "lr": a.lr_bit,
                    "more_hidden_lower_error": bool(all(x > y for x, y in zip(means, means[1:]))),
                    "error_reduction_by_photons": gain, "validation_error_at": at,
                    "note": "hidden neurons photon-limited; output neurons use their local error (one-bit "
                            "updates of sigmoid+MSE output units cannot converge: a non-target output's error "
                            "never changes sign)"}, smooth=11)


def exp_noise(R: Runner, out: Path) -> dict[str, Any]:
    a = R.a
    q = 0.1
    groups, labels = {}, {}
    plan = ([(q, n_p) for n_p in (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)]
            + [(0.0, n_p) for n_p in (0.0, 0.1, 0.5, 1.0)])       # controls: the same noise with no signal
    for qq, n_p in plan:
        g = f"n_p={n_p:g}" if qq else f"q=0 (no signal), n_p={n_p:g}"
        groups[g] = R.run(R.settings(hidden=500, q=qq, one_bit=True, epsilon=0.1, noise_rate=n_p, lr=a.lr_bit),
                          a.noise_trials, a.repeats)
        labels[g] = {"q": qq, "n_p": n_p, "n_p_over_q": n_p / qq if qq else float("inf")}
        print(f"[noise] {g}: test error {_pct(*_stat(groups[g], 'test_error'))}%", file=sys.stderr, flush=True)
    return _finish("noise_photons", out, groups, labels, f"one-bit feedback with noise photons, q = 0.1, lr={a.lr_bit:g}",
                   {"q": q, "epsilon": 0.1, "lr": a.lr_bit,
                    "signal_gain_at_n_p": {str(n_p): _stat(groups[f"q=0 (no signal), n_p={n_p:g}"], "test_error")[0]
                                           - _stat(groups[f"n_p={n_p:g}"], "test_error")[0]
                                           for n_p in (0.0, 0.1, 0.5, 1.0)},
                    "note": "hidden neurons photon-limited (one bit), output neurons learn from their local error; "
                            "the q=0 rows are the controls: the same noise photons with no signal photons; "
                            "signal_gain_at_n_p = control error - signal error at equal noise"},
                   smooth=11)


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
    _write_csv(out / "bench.csv", rows)
    return {"rows": rows, "table": _table(rows, ["q", "one_bit", "epochs", "test_accuracy", "clicks_per_gate"]),
            "config": "lab_configs/photon_limited.yaml", "dataset": "digits",
            "note": "free-space SA twin (realistic imperfections), pump-probe backward errors at the vapor cell sent "
                    "through the photon-counting twin (eta 0.9, dark 1e-4, polarisation error 0.01), Adam"}


_PLOTS = {"q": ("q_sweep", True, 1), "qhidden": ("q_sweep_hidden_only", True, 1), "qlong": ("q_long", True, 21),
          "onebit": ("one_bit_hidden", False, 11), "noise": ("noise_photons", False, 11)}


def replot(out: Path) -> None:
    """Redraw every experiment's PNG from the curves saved in out/report.json (same titles as the run)."""
    report = json.loads((out / "report.json").read_text())
    for e, (name, logx, smooth) in _PLOTS.items():
        if e in report and "curves" in report[e]:
            groups = {g: [{"curve": c} for c in cs] for g, cs in report[e]["curves"].items()}
            title = report[e].get("title") or name
            _plot(groups, out / f"{name}.png", title, logx=logx, smooth=smooth)
            rows = []
            for g, cs in report[e]["curves"].items():
                late = [float(np.mean(c["validation_error"][-max(1, len(c["validation_error"]) // 5):])) for c in cs]
                rows.append({"group": g, "repeats": len(cs), "late_validation_error_mean": float(np.mean(late)),
                             "late_validation_error_std": float(np.std(late, ddof=1)) if len(late) > 1 else 0.0})
            _write_csv(out / f"{name}_late_validation.csv", rows)
            _write_csv(out / f"{name}_validation_at.csv", validation_at(report[e]["curves"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", default="q,qhidden,qlong,onebit,noise,bench")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/photon_limited"))
    ap.add_argument("--engine", choices=("fast", "hal"), default="fast")
    ap.add_argument("--repeats", type=int, default=10, help="repetitions averaged (the paper: 10)")
    ap.add_argument("--trials", type=int, default=20000, help="trials per q in the q sweeps")
    ap.add_argument("--long-trials", type=int, default=100_000_000, help="trials of the q=1e-4 run (~8 min)")
    ap.add_argument("--long-repeats", type=int, default=1)
    ap.add_argument("--onebit-trials", type=int, default=50000)
    ap.add_argument("--onebit-repeats", default="10,10,5", help="repetitions per hidden size ('' = --repeats each)")
    ap.add_argument("--onebit-control", type=int, default=1, help="also run the readout-only controls (q=0)")
    ap.add_argument("--hidden-sizes", default="500,1000,5000")
    ap.add_argument("--noise-trials", type=int, default=50000)
    ap.add_argument("--bench-epochs", type=int, default=10)
    ap.add_argument("--init", choices=("fixed", "fan_in"), default="fan_in")
    ap.add_argument("--init-scale", type=float, default=0.05, help="std of every weight for --init fixed")
    ap.add_argument("--lr-scaling", choices=("none", "fan_in"), default="none")
    ap.add_argument("--lr-q", type=float, default=0.1)
    ap.add_argument("--lr-bit", type=float, default=0.003,
                    help="SGD rate of the one-bit runs (chosen on validation error from 0.001, 0.003, 0.03)")
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replot", action="store_true", help="only redraw the PNGs from --out/report.json")
    a = ap.parse_args()
    if a.replot:
        replot(a.out)
        return
    a.out.mkdir(parents=True, exist_ok=True)
    exps = [e.strip() for e in a.experiments.split(",") if e.strip()]
    t0 = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "photon_limited", "paper": "Zarkeshian et al., Sci. Rep. 12, 20720 (2022)",
                              "network": "784-H-10 sigmoid, biases, MSE, online SGD (batch 1)",
                              "command": " ".join(sys.argv), "engine": a.engine, "init": a.init,
                              "lr_scaling": a.lr_scaling, "repeats": a.repeats, "paper_repeats": 10}
    needs_data = set(exps) & {"q", "qhidden", "qlong", "onebit", "noise"}
    R = Runner(load_dataset("mnist", a.data_dir), a) if needs_data else None
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "q": lambda: exp_q(R, a.out), "qhidden": lambda: exp_q(R, a.out, output_feedback=False),
        "qlong": lambda: exp_qlong(R, a.out), "onebit": lambda: exp_onebit(R, a.out),
        "noise": lambda: exp_noise(R, a.out), "bench": lambda: exp_bench(a, a.out)}
    unknown = [e for e in exps if e not in runners]
    if unknown:
        raise SystemExit(f"unknown experiments {unknown}; choose from {', '.join(runners)}")
    for e in exps:
        t1 = time.perf_counter()
        report[e] = runners[e]()
        report[e]["experiment_wall_seconds"] = round(time.perf_counter() - t1, 1)
        (a.out / "report.json").write_text(json.dumps(report, indent=1))
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    (a.out / "report.json").write_text(json.dumps(report, indent=1))
    (a.out / "tables.md").write_text("\n\n".join(f"## {e}\n\n{report[e]['table']}" for e in exps) + "\n")
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk not in ("table", "curves", "rows")}
                          if isinstance(v, dict) else v) for k, v in report.items()}))


if __name__ == "__main__":
    main()
