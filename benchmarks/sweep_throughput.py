"""Throughput of `lightloop sweep` on Dask (1 and 2 local workers) against the same runs in a plain loop; prints JSON.

N short trainings (default: the ideal free-space twin on Iris, 150 training samples, a few epochs; one grid
point per seed) run three ways, interleaved, --repeats times each:
  * plain loop: `sweep.run_point(task)` for every task in THIS process (the function a Dask worker runs),
    after one untimed warm-up run (imports, dataset cache);
  * the sweep on a LocalCluster of 1 worker process, then of 2 (`sweep.run_sweep`, a fresh output folder each):
    cluster start, worker imports, dispatch, the results table rewritten after every run, summary and plots.
Reported per way: wall seconds and runs/s (best repeat); for Dask also the start-up (t0 -> first run starts:
cluster + worker imports), the tail (last run ends -> the sweep returns: table, summary, plots, cluster close),
the steady dispatch gap between two runs on one worker (1 worker: next start - previous end, median) and the
fixed overhead per task = (sweep seconds - plain-loop seconds) / N. Speed-up 1 -> 2 workers = T(1) / T(2).
The machine's load average is recorded before and after: 2 workers need 2 idle cores to reach 2x.
The split of run_point time (plain loop, in this process, timers wrapped around the functions): epochs (training and
test evaluation), learning-curve plot, checkpoint saves (checkpoint.npz and best.npz), metrics-log appends, run
records (provenance, log, QCoDeS DataSet) and the rest (config, dataset, bench build, run folder).
--run-plots and --checkpoint-seconds pass the sweep's settings of the same names (default: the sweep's defaults).

Example:
  OPENBLAS_NUM_THREADS=1 python benchmarks/sweep_throughput.py --runs 12 --epochs 20 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightloop.sweep as sweep_mod
from lightloop.sweep import SweepSpec, run_point, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def make_spec(out: Path, a: argparse.Namespace) -> SweepSpec:
    """One grid point per seed (0 .. runs-1) of the short training, results under `out`."""
    fixed: dict[str, Any] = {"dataset": a.dataset, "epochs": a.epochs, "ideal": True}
    if a.hidden:
        fixed["hidden"] = [a.hidden]
    data_dir = a.data_dir or os.environ.get("LIGHTLOOP_DATA_DIR")
    spec = SweepSpec(Path(a.config), {"seed": list(range(a.runs))}, fixed, 1, out,
                     Path(data_dir) if data_dir else None)
    for name in ("run_plots", "checkpoint_seconds"):   # the sweep's run settings, where this version has them
        if getattr(a, name) is not None and hasattr(spec, name):
            setattr(spec, name, getattr(a, name))
    return spec


class Split:
    """Cumulative seconds spent inside wrapped functions (in this process), by part."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, part: str) -> None:
        """Time every call of owner.attr under `part` (skipped if this version has no such attribute)."""
        fn = getattr(owner, attr, None)
        if fn is None:
            return

        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - t0
                self.calls[part] = self.calls.get(part, 0) + 1
        self._undo.append((owner, attr, fn))
        setattr(owner, attr, timed)

    def __enter__(self) -> "Split":
        import lightloop.training.trainer as tr
        from lightloop.records.recording import RunRecording
        from lightloop.training.reporting import MetricsLog

        self.wrap(sweep_mod, "run_point", "run_point")
        self.wrap(tr.Trainer, "_epoch", "epochs")
        self.wrap(tr, "plot_learning_curve", "plot")
        self.wrap(tr, "save_checkpoint", "checkpoint")
        for attr in ("write", "sync"):
            self.wrap(MetricsLog, attr, "metrics_log")
        for attr in ("__enter__", "attach", "finish", "__exit__"):
            self.wrap(RunRecording, attr, "records")
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, attr, fn in reversed(self._undo):
            setattr(owner, attr, fn)

    def per_run(self, runs: int) -> dict[str, Any]:
        """Mean seconds per run of each part, 'other' the rest of run_point, and the number of calls per run."""
        total = self.seconds.get("run_point", 0.0)
        parts = {k: v / runs for k, v in self.seconds.items() if k != "run_point"}
        parts["other"] = total / runs - sum(parts.values())
        return {"run_point_seconds": total / runs, "parts_seconds": parts,
                "parts_share": {k: v * runs / total for k, v in parts.items()} if total else {},
                "calls_per_run": {k: v / runs for k, v in self.calls.items() if k != "run_point"}}


def plain_loop(spec: SweepSpec) -> dict[str, Any]:
    """The sweep's tasks through run_point, one after the other, in this process."""
    tasks = spec.tasks()
    t0 = time.perf_counter()
    with Split() as split:
        rows = [sweep_mod.run_point(t) for t in tasks]
    total = time.perf_counter() - t0
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        raise RuntimeError(f"plain loop: {len(bad)} runs failed, first: {bad[0]['error']}")
    return {"seconds": total, "runs_per_second": len(rows) / total,
            "mean_run_seconds": statistics.fmean(r["wall_seconds"] for r in rows),
            "median_run_seconds": statistics.median(r["wall_seconds"] for r in rows), "split": split.per_run(len(rows))}


def dask_sweep(spec: SweepSpec, workers: int) -> dict[str, Any]:
    """The same tasks through run_sweep on a LocalCluster of `workers` processes; timeline from the result rows."""
    t0_unix, t0 = time.time(), time.perf_counter()
    report = run_sweep(spec, workers=workers, progress=False, log=lambda s: None)
    total = time.perf_counter() - t0
    rows = json_rows(Path(report["results"]))
    if report["failed"] or len(rows) != len(spec.tasks()):
        raise RuntimeError(f"dask sweep ({workers} workers): {report['failed']} of {len(rows)} runs failed")
    starts = sorted(float(r["started_unix"]) for r in rows)
    ends = sorted(float(r["finished_unix"]) for r in rows)
    out = {"workers": workers, "seconds": total, "runs_per_second": len(rows) / total,
           "startup_seconds": starts[0] - t0_unix, "tail_seconds": t0_unix + total - ends[-1],
           "steady_runs_per_second": (len(rows) - 1) / (ends[-1] - starts[0]) if len(rows) > 1 else None,
           "mean_run_seconds": statistics.fmean(float(r["wall_seconds"]) for r in rows),
           "median_run_seconds": statistics.median(float(r["wall_seconds"]) for r in rows)}   # without 1st-run imports
    if workers == 1:   # one worker runs the tasks back to back: the gap is the scheduler's dispatch per task
        order = sorted(rows, key=lambda r: float(r["started_unix"]))
        gaps = [float(b["started_unix"]) - float(a["finished_unix"]) for a, b in zip(order, order[1:])]
        out["dispatch_gap_seconds_median"] = statistics.median(gaps) if gaps else None
    return out


def json_rows(path: Path) -> list[dict[str, Any]]:
    """The sweep's results table (csv) as dicts."""
    import csv

    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "lab_configs" / "free_space_sa.yaml"))
    ap.add_argument("--dataset", default="iris")
    ap.add_argument("--hidden", type=int, default=None, help="hidden width (default: the config's)")
    ap.add_argument("--epochs", type=int, default=20, help="epochs per run")
    ap.add_argument("--runs", type=int, default=12, help="trainings per sweep (N)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the three ways (best is reported)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--run-plots", choices=["auto", "on", "off"], default=None,
                    help="the sweep's --run-plots (default: the sweep's default)")
    ap.add_argument("--checkpoint-seconds", type=float, default=None,
                    help="the sweep's --checkpoint-seconds (default: the sweep's default)")
    ap.add_argument("--skip-dask", action="store_true", help="only the plain loop (and its split)")
    a = ap.parse_args()
    load_before = list(os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="lightloop-sweep-bench-"))
    try:
        run_point(make_spec(work / "warm", a).tasks()[0])   # imports and dataset cache, untimed
        ways: dict[str, list[dict[str, Any]]] = {"plain_loop": [], "dask_1_worker": [], "dask_2_workers": []}
        for r in range(a.repeats):
            ways["plain_loop"].append(plain_loop(make_spec(work / f"plain{r}", a)))
            if not a.skip_dask:
                ways["dask_1_worker"].append(dask_sweep(make_spec(work / f"d1_{r}", a), 1))
                ways["dask_2_workers"].append(dask_sweep(make_spec(work / f"d2_{r}", a), 2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: min(v, key=lambda x: x["seconds"]) for k, v in ways.items() if v}
    if a.skip_dask:
        print(json.dumps({"benchmark": "sweep_throughput", "runs": a.runs, "epochs": a.epochs, "best": best,
                          "run_point_split": best["plain_loop"]["split"], "all": ways,
                          "load_average_before": load_before, "load_average_after": list(os.getloadavg())}))
        return
    plain, d1, d2 = best["plain_loop"], best["dask_1_worker"], best["dask_2_workers"]
    out = {
        "benchmark": "sweep_throughput", "runs": a.runs, "dataset": a.dataset, "epochs": a.epochs,
        "config": Path(a.config).name, "repeats": a.repeats, "cpu_count": os.cpu_count(),
        "plain_loop_runs_per_second": plain["runs_per_second"],
        "dask_1_worker_runs_per_second": d1["runs_per_second"],
        "dask_2_workers_runs_per_second": d2["runs_per_second"],
        "speedup_1_to_2_workers": d1["seconds"] / d2["seconds"],
        "speedup_1_to_2_workers_steady": d2["steady_runs_per_second"] / d1["steady_runs_per_second"],
        "dask_1_worker_over_plain_loop": d1["seconds"] / plain["seconds"],
        "overhead_per_task_seconds": (d1["seconds"] - plain["seconds"]) / a.runs,
        "overhead_per_task_steady_seconds": (d1["seconds"] - d1["startup_seconds"] - d1["tail_seconds"]
                                             - plain["seconds"]) / a.runs,
        "fixed_overhead_seconds_1_worker": d1["startup_seconds"] + d1["tail_seconds"],
        "dispatch_gap_per_task_seconds": d1["dispatch_gap_seconds_median"],
        "startup_seconds_1_worker": d1["startup_seconds"], "startup_seconds_2_workers": d2["startup_seconds"],
        "mean_run_seconds_plain": plain["mean_run_seconds"], "mean_run_seconds_dask_1": d1["mean_run_seconds"],
        "run_point_split": plain["split"], "best": best, "all": ways,
        "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
        "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
        "note": ("overhead_per_task = (1-worker sweep - plain loop) / N: cluster start-up, worker imports, dispatch, "
                 "result table rewrites and the final summary/plots, spread over N; overhead_per_task_steady leaves out "
                 "the fixed start-up and tail (fixed_overhead); dispatch_gap is the scheduler's part alone. 2-worker figures need 2 idle cores (see the load averages)."),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
