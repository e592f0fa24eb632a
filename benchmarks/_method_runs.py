"""Budgeted runs of the method comparison (benchmarks/method_comparison.py): a bench prepared once per seed
(built, calibrated through the HAL, its twin state snapshotted) and rebuilt identically for every method, and
the training loop that stops when the next step would spend more optical acquisitions than the budget left.

An optical acquisition is one detector acquisition of the bench (`processor.measurements`: one per detector
array per batch). The budget counts training only; every method's final test evaluation costs the same and is
not counted. The nominal model (the ideal twin: nominal parameters, no fabrication error, no noise) is a
digital model: training on it spends no optical acquisitions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from lightloop.calibration.base import RunContext
from lightloop.calibration.runner import calibrate, select_routines
from lightloop.errors import LightloopError
from lightloop.hal.processor import OpticalProcessor
from lightloop.training.datasets import Dataset
from lightloop.training.gradients import GradientMethod, make_gradient
from lightloop.training.losses import make_loss
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import clip_in_place, evaluate, targets_for

__all__ = ["BenchSpec", "MethodSpec", "PreparedBench", "budget_run", "step_cost", "run_method", "one_line"]


@dataclass
class BenchSpec:
    """One bench of the comparison: how to build it (ideal or realistic, per seed) and its training settings."""

    name: str
    data: Dataset
    build: Callable[[bool, int], OpticalProcessor]   # (ideal, seed) -> processor; seed: the twin's noise seed
    backprop: str                                    # on-hardware backprop gradient (pump_probe | adjoint)
    offline_gradient: str                            # gradient on the nominal twin (its exact backprop)
    budget: int                                      # optical acquisitions per training run
    lr: float
    batch_size: int
    init_scale: float
    loss: str
    refine_every: int                                # steps between twin refinements of the refined row
    calibrate: bool = True
    settings: dict[str, Any] = field(default_factory=dict)   # what the JSON reports about the bench


@dataclass
class MethodSpec:
    """A row of the table: a gradient method and its options, trained on the bench or offline on the nominal model."""

    key: str
    gradient: str
    options: dict[str, Any] = field(default_factory=dict)
    offline: bool = False


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and first message line."""
    msg = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {msg}"


class PreparedBench:
    """A realistic bench calibrated once through the HAL; `fresh()` rebuilds it in exactly that state."""

    def __init__(self, spec: BenchSpec, seed: int):
        self.spec, self.seed = spec, seed
        t0 = time.perf_counter()
        proc = spec.build(False, seed)
        self.outcomes = calibrate(proc, ["all"], RunContext(seed=seed)) if spec.calibrate else []
        self.calibration = {o.routine: o.status for o in self.outcomes}
        self.calibration_acquisitions = int(sum(o.result.counts.acquisitions for o in self.outcomes
                                                if o.result is not None))
        self.calibration_seconds = time.perf_counter() - t0
        self.state = proc.snapshot()        # the twin's noise, clock and drift after calibration
        proc.close()

    def fresh(self) -> OpticalProcessor:
        """The bench rebuilt (same seeds), the calibration results applied, the twin state restored."""
        proc = self.spec.build(False, self.seed)
        done = [o for o in self.outcomes if o.status == "ok" and o.result is not None]
        routines = {r.name: r for r in select_routines(proc, [o.routine for o in done])} if done else {}
        for o in done:
            routines[o.routine].apply(proc, o.result.arrays, o.result.meta)
        proc.restore(self.state)
        return proc


def _batches(rng: np.random.Generator, n: int, batch: int):
    """Index batches of shuffled epochs without end (the Trainer's order: a fresh permutation per epoch)."""
    while True:
        perm = rng.permutation(n)
        for k in range(0, n, batch):
            yield perm[k: k + batch]


def budget_run(proc: OpticalProcessor, method: GradientMethod, spec: BenchSpec, seed: int, *,
               budget: int | None, expected_cost: int, max_steps: int | None = None) -> dict[str, Any]:
    """Train with Adam (the Trainer's step: program, gradient, update, clip, step hooks) until the next step's
    expected acquisitions would exceed the budget left (or max_steps); returns params, steps and costs."""
    data = spec.data
    method.check(proc)
    method.loss = make_loss(spec.loss)
    opt = make_optimizer("adam", spec.lr)
    rng = np.random.default_rng(seed)
    params = proc.init_parameters(rng, spec.init_scale)
    bounds = proc.parameter_bounds()
    targets = targets_for(data.y_train, data.n_classes, proc.layer_sizes[-1])
    hooks = list(getattr(proc, "step_hooks", ()))
    batches = _batches(rng, data.x_train.shape[0], spec.batch_size)
    used = steps = 0
    costs: list[int] = []
    wall = cpu = 0.0
    expect, overshoot = int(expected_cost), False
    while (max_steps is None or steps < max_steps) and (budget is None or used + expect <= budget):
        idx = next(batches)
        t0, c0, m0 = time.perf_counter(), time.process_time(), proc.measurements
        proc.program(params)
        res = method(proc, params, data.x_train[idx], targets[idx])
        if not math.isfinite(res.loss):
            raise LightloopError(f"{spec.name}: {method.name}: loss is {res.loss} at step {steps}; expected a finite "
                                 f"loss (lower the learning rate)")
        opt.step(params, res.grads)
        for p, (lo, hi) in zip(params, bounds):
            clip_in_place(p, lo, hi)
        for hook in hooks:
            hook({"epoch": 1, "step": steps, "global_step": steps + 1, "loss": res.loss, "params": params})
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        cost = proc.measurements - m0
        used += cost
        steps += 1
        costs.append(cost)
        overshoot = overshoot or (budget is not None and used > budget)
        expect = max(expect, cost)
    return {"params": params, "steps": steps, "acquisitions_used": used,
            "acquisitions_per_step": float(np.mean(costs)) if costs else float(expected_cost),
            "acquisitions_per_step_max": max(costs) if costs else int(expected_cost),
            "wall_seconds_per_step": wall / steps if steps else None,
            "cpu_seconds_per_step": cpu / steps if steps else None, "budget_overshoot": overshoot}


def step_cost(spec: BenchSpec, m: MethodSpec, seed: int) -> int:
    """Acquisitions of one training step of method m, measured on the nominal twin (no optical acquisition of
    the bench): finite differences from the parameter count (2 forward passes per parameter + 1), any other
    method from its first steps (1 + refine_every with refinement, so a refit's own acquisitions show)."""
    proc = spec.build(True, seed)
    try:
        rng = np.random.default_rng(seed)
        params = proc.init_parameters(rng, spec.init_scale)
        x = spec.data.x_train[: spec.batch_size]
        t = targets_for(spec.data.y_train[: spec.batch_size], spec.data.n_classes, proc.layer_sizes[-1])
        proc.program(params)
        if m.gradient == "finite_difference":
            m0 = proc.measurements
            proc.forward(x)
            return (2 * sum(p.size for p in params) + 1) * (proc.measurements - m0)
        method = make_gradient(m.gradient, **m.options)
        method.check(proc)
        method.loss = make_loss(spec.loss)
        worst = 0
        for _ in range(1 + int(m.options.get("refine_every", 0) or 0)):
            proc.program(params)
            m0 = proc.measurements
            method(proc, params, x, t)
            worst = max(worst, proc.measurements - m0)
        return worst
    finally:
        proc.close()


def _test_accuracy(proc: OpticalProcessor, params: list, data: Dataset) -> float:
    """Program params (clipped to the bench's bounds) and measure the test accuracy."""
    params = [np.clip(p, lo, hi).astype(np.float32) for p, (lo, hi) in zip(params, proc.parameter_bounds())]
    proc.program(params)
    return evaluate(proc, data.x_test, data.y_test, data.n_classes)[0]


def untrained_accuracy(bench: PreparedBench) -> float:
    """Test accuracy of the initial parameters (the Trainer's draw for this seed) on the calibrated bench."""
    spec = bench.spec
    proc = bench.fresh()
    try:
        params = proc.init_parameters(np.random.default_rng(bench.seed), spec.init_scale)
        return _test_accuracy(proc, params, spec.data)
    finally:
        proc.close()


def run_method(bench: PreparedBench, m: MethodSpec, untrained: float, offline_steps: int) -> dict[str, Any]:
    """One seed of one row: trained under the budget (or offline for offline_steps), then its test accuracy on
    the calibrated bench; a method that cannot run records its one-line error."""
    spec, seed = bench.spec, bench.seed
    t0 = time.perf_counter()
    try:
        if m.offline:
            nominal = spec.build(True, seed)
            try:
                run = budget_run(nominal, make_gradient(m.gradient, **m.options), spec, seed, budget=None,
                                 expected_cost=0, max_steps=offline_steps)
            finally:
                nominal.close()
            run.update(acquisitions_used=0, acquisitions_per_step=0.0, acquisitions_per_step_max=0,
                       nominal_acquisitions_per_step=run["acquisitions_per_step"])
        else:
            cost = step_cost(spec, m, seed)
            if cost > spec.budget:
                return {"seed": seed, "status": "over_budget", "steps": 0, "acquisitions_used": 0,
                        "acquisitions_per_step": float(cost), "acquisitions_per_step_max": cost,
                        "test_accuracy": untrained, "wall_seconds_per_step": None, "cpu_seconds_per_step": None,
                        "budget_overshoot": False, "seconds": time.perf_counter() - t0,
                        "note": f"one step needs {cost} acquisitions > budget {spec.budget}: 0 steps, "
                                f"the untrained accuracy"}
            proc = bench.fresh()
            try:
                method = make_gradient(m.gradient, **m.options)
                run = budget_run(proc, method, spec, seed, budget=spec.budget, expected_cost=cost)
                run["expected_acquisitions_per_step"] = cost
                metrics = getattr(method, "epoch_metrics", None)   # physics_aware: the model's prediction error
                if callable(metrics):
                    run["model"] = {k: v for k, v in metrics().items() if k != "prediction_error_layers"}
            finally:
                proc.close()
        proc = bench.fresh()
        try:
            acc = _test_accuracy(proc, run.pop("params"), spec.data)
        finally:
            proc.close()
    except Exception as exc:  # noqa: BLE001 - a method that cannot run on a bench is a row of the table
        return {"seed": seed, "status": "error", "error": one_line(exc), "seconds": time.perf_counter() - t0}
    return {"seed": seed, "status": "ok", "test_accuracy": acc, **run, "seconds": time.perf_counter() - t0}


def _stat(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample sd) of values (sd 0 for one value; None for none)."""
    if not values:
        return None, None
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def summarise(m: MethodSpec, spec: BenchSpec, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A table row over seeds: accuracy mean and sd, steps, acquisitions and times per step."""
    good = [r for r in runs if r["status"] in ("ok", "over_budget")]
    errors = sorted({r["error"] for r in runs if r["status"] == "error"})
    acc, acc_sd = _stat([r["test_accuracy"] for r in good])
    timed = [r for r in good if r.get("wall_seconds_per_step") is not None]
    row = {"bench": spec.name, "method": m.key, "gradient": m.gradient, "options": m.options,
           "trained_on": "nominal model (ideal twin), then programmed" if m.offline else "bench",
           "status": "error" if errors and not good else ("over_budget" if good and all(
               r["status"] == "over_budget" for r in good) else ("ok" if good else "error")),
           "error": errors[0] if errors else None,
           "test_accuracy_mean": acc, "test_accuracy_sd": acc_sd,
           "test_accuracy_by_seed": [r.get("test_accuracy") for r in runs],
           "steps_by_seed": [r.get("steps") for r in runs],
           "steps_mean": _stat([r["steps"] for r in good])[0],
           "acquisitions_per_step": _stat([r["acquisitions_per_step"] for r in good])[0],
           "acquisitions_used_max": max((r["acquisitions_used"] for r in good), default=None),
           "budget": 0 if m.offline else spec.budget,
           "wall_seconds_per_step": _stat([r["wall_seconds_per_step"] for r in timed])[0],
           "cpu_seconds_per_step": _stat([r["cpu_seconds_per_step"] for r in timed])[0],
           "budget_overshoot": any(r.get("budget_overshoot") for r in good),
           "seeds": [r["seed"] for r in runs]}
    models = [r["model"] for r in good if r.get("model")]
    if models:   # physics_aware: relative rms error of the model predicting the measured pre-activations
        row["model_prediction_error_mean"] = _stat([m["prediction_error"] for m in models])[0]
        row["model_prediction_error_first_step"] = _stat([m["prediction_error_first_step"] for m in models])[0]
        row["model_prediction_error_last_step"] = _stat([m["prediction_error_last_step"] for m in models])[0]
        if any("model_refits" in m for m in models):
            row["model_refits"] = _stat([m.get("model_refits", 0) for m in models])[0]
    notes = sorted({r["note"] for r in good if r.get("note")})
    if notes:
        row["note"] = notes[0]
    if m.offline:
        row["note"] = (f"trained for {row['steps_mean']:.0f} steps on the nominal model with {m.gradient} (digital: 0 "
                       f"optical acquisitions; times per step are the nominal model's), programmed onto the "
                       f"calibrated bench" if row["steps_mean"] is not None else None)
    return row
