"""`lightloop sweep`: a grid of independent trainings on Dask, resumable, with a results table and a heatmap.

    lightloop sweep --config FILE --grid PARAM=v1,v2,... [--grid ...] [--repeat N]
                    [--set KEY=VALUE ...] [--scheduler ADDRESS] [--out DIR]
                    [--run-plots {auto,on,off}] [--checkpoint-seconds S]

Each (grid point, repeat) is one `lightloop train` run (the same code path: `cli.run_training`) in
its own directory OUT/runs/<point>_r<repeat>, executed as a Dask task: on a LocalCluster of worker
processes by default, on an existing scheduler when --scheduler tcp://HOST:PORT is given (workers
then need lightloop installed and the same file system for the config, data and OUT), or serially
in this process with --scheduler synchronous. Repeat r uses training seed (seed + r).

Parameters (grid or --set): the `lightloop train` settings dataset, gradient, optimizer, lr,
epochs, batch_size, init_scale, seed, loss, hidden (e.g. 500 or 64:32), optical_depth (alias a0),
ideal; a dotted path sets any field of the config (processor.probe_field=0.05,0.1,
processor.vapor_cell.t_max_k=140degC,150degC), validated through the config's schema before any run;
every other name is an option of the gradient method (e.g. q, one_bit, epsilon, noise_rate for
stochastic_photonic).

Results: OUT/results.csv (or .parquet) with one row per (point, repeat), rewritten atomically after
every finished run; re-running the same command skips rows whose status is ok (failed or missing
ones run again; a run interrupted mid-training continues from its checkpoint). OUT/summary.csv
holds mean/std over repeats per point, OUT/heatmap.png the metric over the first two grid
parameters (a 1-D sweep also gets OUT/curve.png).

Short points stay cheap: each point's learning-curve PNG (~0.8 s, more than a short training) is drawn only with
--run-plots on, or auto (the default) when the sweep holds at most 20 runs - its metrics.jsonl keeps the curve's
numbers either way; a point checkpoints every --checkpoint-seconds (default 30) and after its last epoch, so a
killed point redoes at most that much training (and one epoch) when the sweep is re-run.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from lightloop.errors import ConfigError, LightloopError
from lightloop.sweep_lock import bench_resource, run_point_on_bench
from lightloop.sweep_plots import fmt_value as _fmt, plot_curve, plot_heatmap

__all__ = ["register", "run_sweep", "parse_grid", "run_point", "run_point_on_bench", "bench_resource", "SweepSpec",
           "TRAIN_KEYS"]


def _hidden(raw: str) -> list[int]:
    parts = [p for p in re.split(r"[:x+ ]", raw.strip()) if p]
    vals = [int(p) for p in parts]
    if not vals or any(not 1 <= v <= 10_000 for v in vals):
        raise ValueError(raw)
    return vals


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("true", "yes", "on", "1"):
        return True
    if low in ("false", "no", "off", "0"):
        return False
    raise ValueError(raw)


def _float(raw: str) -> float:
    v = float(raw)
    if not math.isfinite(v):
        raise ValueError(raw)
    return v


def _ok(conv: Callable[[str], Any], pred: Callable[[Any], bool]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        v = conv(raw)
        if not pred(v):
            raise ValueError(raw)
        return v
    return parse


def _names(kind: str) -> Any:
    from lightloop.plugins import import_plugins
    from lightloop.training import datasets, gradients

    import_plugins(gradients.GRADIENT_PLUGINS)
    return datasets.dataset_names() if kind == "dataset" else gradients.GRADIENT_METHODS


#: training settings a sweep can set: name -> (parser, description of the expected value)
TRAIN_KEYS: dict[str, tuple[Callable[[str], Any], str]] = {
    "dataset": (_ok(str, lambda v: v in _names("dataset")), "a dataset name (see lightloop train --help)"),
    "gradient": (_ok(str, lambda v: v in _names("gradient")), "a gradient method name"),
    "optimizer": (_ok(str, lambda v: v in ("adam", "sgd")), "adam or sgd"),
    "loss": (_ok(str, lambda v: v in ("mse", "cross_entropy")), "mse or cross_entropy"),
    "lr": (_ok(_float, lambda v: 0 < v <= 1e3), "a learning rate in (0, 1000]"),
    "epochs": (_ok(int, lambda v: 1 <= v <= 1_000_000), "a positive integer in 1..1000000"),
    "batch_size": (_ok(int, lambda v: 1 <= v <= 10_000_000), "a positive integer in 1..10000000"),
    "init_scale": (_ok(_float, lambda v: 0 < v <= 1e3), "a std of the initial weights in (0, 1000]"),
    "seed": (_ok(int, lambda v: 0 <= v <= 2**32 - 1), "a seed: an integer in 0..4294967295"),
    "hidden": (_hidden, "layer sizes such as 500 or 64:32 (each 1..10000)"),
    "optical_depth": (_ok(_float, lambda v: 0 <= v <= 1e6), "an optical depth a0 >= 0"),
    "ideal": (_bool, "true or false"),
}
ALIASES = {"a0": "optical_depth", "learning_rate": "lr", "batch": "batch_size"}
RESULT_STATUS_OK = "ok"
#: columns of a result row that --metric may name (numbers a run reports)
METRICS = ("test_accuracy", "test_error", "best_test_accuracy", "best_epoch", "epochs", "mean_epoch_seconds",
           "samples_per_second", "measurements_per_step", "optical_depth", "feedback_clicks_per_gate", "wall_seconds")
#: largest number of trainings one sweep may hold (points x repeats)
MAX_RUNS = 100_000
#: --run-plots auto draws each point's learning curve when the sweep holds at most this many runs
AUTO_PLOT_RUNS = 20


def _canon(name: str) -> str:
    key = name.strip().replace("-", "_")
    return ALIASES.get(key, key)


def _is_path(name: str) -> bool:
    """A dotted config path (section.field...) rather than a training setting or gradient option."""
    parts = name.split(".")
    return len(parts) > 1 and all(p.isidentifier() for p in parts)


def _value(name: str, raw: str, flag: str) -> Any:
    """Typed value of one parameter (training settings typed by TRAIN_KEYS, gradient options by scalar rules)."""
    from lightloop.cli import parse_scalar

    if raw.strip() == "":
        raise ConfigError(f"{flag} {name}: empty value; expected a value after '='")
    if name in TRAIN_KEYS:
        parse, what = TRAIN_KEYS[name]
        try:
            return parse(raw.strip())
        except ValueError:
            raise ConfigError(f"{flag} {name}: expected {what}, got {raw.strip()!r}") from None
    return parse_scalar(raw)


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """['q=0.1,0.01', 'lr=1e-3,1e-2'] -> {'q': [0.1, 0.01], 'lr': [0.001, 0.01]} (order kept, duplicates refused)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = _canon(name)
        if not sep or not (name.isidentifier() or _is_path(name)):
            raise ConfigError(f"--grid: expected PARAM=v1,v2,... (PARAM a setting or a dotted config path such as "
                              f"processor.probe_field), got {item!r}")
        if name in grid:
            raise ConfigError(f"--grid {name}: given twice; expected each parameter once")
        values = [_value(name, v, "--grid") for v in raw.split(",")]
        if len(set(map(_fmt, values))) != len(values):
            raise ConfigError(f"--grid {name}: repeated value in {raw!r}; expected distinct values")
        grid[name] = values
    if not grid:
        raise ConfigError("--grid: give at least one PARAM=v1,v2,...")
    return grid


def parse_set(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE items -> typed fixed settings."""
    fixed: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = _canon(name)
        if not sep or not (name.isidentifier() or _is_path(name)):
            raise ConfigError(f"--set: expected KEY=VALUE (KEY a setting or a dotted config path), got {item!r}")
        if name in fixed:
            raise ConfigError(f"--set {name}: given twice; expected each setting once")
        fixed[name] = _value(name, raw, "--set")
    return fixed


def point_key(point: dict[str, Any]) -> str:
    """Canonical text key of a grid point, e.g. 'q=0.1|epsilon=0.01'."""
    return "|".join(f"{k}={_fmt(v)}" for k, v in point.items())


def _slug(key: str, repeat: int) -> str:
    s = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", key.replace("|", "__"))
    if len(s) > 120:
        s = s[:100] + "-" + hashlib.sha1(key.encode()).hexdigest()[:10]
    return f"{s}_r{repeat}"


class SweepSpec:
    """A resolved sweep: config, fixed settings, grid, repeats and output directory."""

    def __init__(self, config: Path, grid: dict[str, list[Any]], fixed: dict[str, Any], repeat: int,
                 out: Path, data_dir: Path | None, run_plots: str = "auto", checkpoint_seconds: float = 30.0):
        from lightloop.config import load_config

        if run_plots not in ("auto", "on", "off"):
            raise ConfigError(f"--run-plots: expected auto, on or off, got {run_plots!r}")
        if not (math.isfinite(checkpoint_seconds) and checkpoint_seconds >= 0):
            raise ConfigError(f"--checkpoint-seconds: expected seconds >= 0 (0: every epoch), got {checkpoint_seconds}")
        self.run_plots, self.checkpoint_seconds = run_plots, float(checkpoint_seconds)

        self.config = config.resolve()
        self.cfg = load_config(self.config)
        overlap = sorted(set(grid) & set(fixed))
        if overlap:
            raise ConfigError(f"--grid and --set both give {', '.join(overlap)}; expected each parameter in one of them")
        if repeat < 1:
            raise ConfigError(f"--repeat: expected a positive integer, got {repeat}")
        if math.prod(len(v) for v in grid.values()) * repeat > MAX_RUNS:
            raise ConfigError(f"--grid/--repeat: {math.prod(len(v) for v in grid.values())} points x {repeat} repeats; "
                              f"expected at most {MAX_RUNS} runs in one sweep")
        self.grid, self.fixed, self.repeat = grid, fixed, repeat
        self.out = out.resolve()
        self.data_dir = data_dir.resolve() if data_dir else None
        self.base_seed = int(fixed.get("seed", self.cfg.training.seed))
        self.points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
        for p in self.points:
            self.check_point(p)
            if int(self.settings(p)[0].get("seed", self.base_seed)) + repeat - 1 > 2**32 - 1:
                raise ConfigError(f"--grid/--set seed with --repeat {repeat}: seed + repeat - 1 exceeds 4294967295; "
                                  "expected seeds that leave room for the repeats")

    def settings(self, point: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(training settings, gradient options) of a point: fixed values overridden by the point's."""
        merged = {**self.fixed, **point}
        train = {k: v for k, v in merged.items() if k in TRAIN_KEYS}
        opts = {k: v for k, v in merged.items() if k not in TRAIN_KEYS and not _is_path(k)}
        return train, opts

    def overrides(self, point: dict[str, Any]) -> dict[str, Any]:
        """The dotted-path config settings of a point (fixed ones overridden by the point's)."""
        return {k: v for k, v in {**self.fixed, **point}.items() if _is_path(k)}

    def check_point(self, point: dict[str, Any]) -> None:
        """Fail fast (before any run) on a config path the schema refuses, a gradient option the method does not
        take or a bad value."""
        from lightloop.training.gradients import make_gradient

        paths = self.overrides(point)
        if paths:
            from lightloop.config import load_config

            try:
                load_config(self.config, paths)
            except ConfigError as exc:
                raise ConfigError(f"--grid/--set {', '.join(paths)}: {exc}") from None
        train, opts = self.settings(point)
        gradient = train.get("gradient", self.cfg.training.gradient)
        base = self.cfg.training.gradient_options if gradient == self.cfg.training.gradient else {}
        try:
            make_gradient(gradient, **{**base, **opts})
        except ConfigError as exc:  # a value the method refuses (its own message names the option)
            raise ConfigError(f"--grid/--set {', '.join(sorted(opts)) or 'gradient'}: {exc}"
                              + ("" if "expected" in str(exc) else "; expected a value the method accepts")) from None
        except TypeError:
            import inspect

            from lightloop.training.gradients import GRADIENT_METHODS

            params = [n for n in inspect.signature(GRADIENT_METHODS[gradient]).parameters if n != "self"]
            bad = sorted(k for k in opts if k not in params)
            raise ConfigError(f"--grid/--set {', '.join(bad) or sorted(opts)}: neither a training setting "
                              f"({', '.join(TRAIN_KEYS)}) nor an option of gradient '{gradient}'; expected one of "
                              f"those (options: {', '.join(params) or 'none'})") from None

    def manifest(self) -> dict[str, Any]:
        """What must match for a resume: config content (parsed, so comments may change) and fixed settings."""
        import yaml

        content = json.dumps(yaml.safe_load(self.config.read_text()), sort_keys=True, default=str)
        return {"config": str(self.config), "config_sha256": hashlib.sha256(content.encode()).hexdigest(),
                "fixed": {k: _fmt(v) for k, v in sorted(self.fixed.items())},
                "data_dir": str(self.data_dir) if self.data_dir else None}

    def tasks(self) -> list[dict[str, Any]]:
        """One task per (point, repeat)."""
        out = []
        plots = {"on": True, "off": False}.get(self.run_plots, len(self.points) * self.repeat <= AUTO_PLOT_RUNS)
        for p in self.points:
            key = point_key(p)
            train, opts = self.settings(p)
            for r in range(self.repeat):
                seed = int(train.get("seed", self.base_seed)) + r
                out.append({"key": key, "repeat": r, "point": p, "train": {**train, "seed": seed},
                            "gradient_options": opts, "overrides": self.overrides(p), "config": str(self.config),
                            "data_dir": str(self.data_dir) if self.data_dir else None,
                            "out": str(self.out / "runs" / _slug(key, r)), "run_plots": plots,
                            "checkpoint_seconds": self.checkpoint_seconds})
        return out


# --- worker side -------------------------------------------------------------------------------
def _namespace(task: dict[str, Any]) -> argparse.Namespace:
    """The exact Namespace `lightloop train` would build for this task."""
    from lightloop.cli import _train_parser

    parser = argparse.ArgumentParser(prog="lightloop")
    sub = parser.add_subparsers(dest="command")
    _train_parser(sub)
    resume = ["--resume"] if Path(task["out"], "checkpoint.npz").exists() else []   # a new point starts fresh
    argv = ["train", "--config", task["config"], "--out", task["out"], "--no-progress", *resume]
    if task["data_dir"]:
        argv += ["--data-dir", task["data_dir"]]
    args = parser.parse_args(argv)
    for k, v in task["train"].items():
        setattr(args, k, v)
    if "ideal" in task["train"]:              # ideal=false forces the realistic twin, ideal=true the ideal one
        args.realistic = not task["train"]["ideal"]
    args.gradient_option = [f"{k}={_fmt(v)}" for k, v in task["gradient_options"].items()]
    args.config_overrides = dict(task.get("overrides") or {})
    args.run_plots, args.checkpoint_seconds = task.get("run_plots", True), task.get("checkpoint_seconds", 0.0)
    return args


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Run one training (in a Dask worker or in-process); never raises: failures become status='error' rows."""
    from lightloop.cli import run_training

    t0 = time.perf_counter()
    row: dict[str, Any] = {"point": task["key"], "repeat": task["repeat"], "started_unix": time.time(),
                           **{k: _fmt(v) if isinstance(v, list) else v for k, v in task["point"].items()},
                           "seed": task["train"]["seed"], "out": task["out"]}
    try:
        summary = run_training(_namespace(task))
    except LightloopError as exc:
        return {**row, "status": "error", "error": str(exc), "wall_seconds": time.perf_counter() - t0}
    except Exception as exc:  # a bug: keep the traceback next to the run, go on with the sweep
        Path(task["out"]).mkdir(parents=True, exist_ok=True)
        Path(task["out"], "error.txt").write_text(traceback.format_exc())
        return {**row, "status": "error", "error": f"{type(exc).__name__}: {exc}",
                "wall_seconds": time.perf_counter() - t0}
    row.update({k: summary[k] for k in METRICS if k in summary and k not in row})
    if "test_accuracy" in row:
        row["test_error"] = 1.0 - float(row["test_accuracy"])
    row.update({"status": RESULT_STATUS_OK, "error": "", "wall_seconds": time.perf_counter() - t0,
                "finished_unix": time.time()})
    return row


# --- results table -------------------------------------------------------------------------------
def _results_path(out: Path, fmt: str) -> Path:
    return out / f"results.{fmt}"


def load_results(path: Path) -> list[dict[str, Any]]:
    """Rows of an existing results table (empty if none)."""
    import pandas as pd

    if not path.exists():
        return []
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)
    except Exception as exc:
        raise LightloopError(f"{path}: unreadable results table ({exc}); move it away to start afresh") from None
    if not {"point", "repeat", "status"} <= set(df.columns):
        raise LightloopError(f"{path}: not a lightloop sweep table (needs columns point, repeat, status)")
    return df.to_dict("records")


def save_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomic write of the table, sorted by point and repeat."""
    import pandas as pd

    from lightloop.atomic_io import atomic_write_bytes

    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["point", "repeat"], kind="stable").reset_index(drop=True)
    if path.suffix == ".parquet":
        import io

        buf = io.BytesIO()
        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(buf, index=False)
        atomic_write_bytes(path, buf.getvalue())
    else:
        atomic_write_bytes(path, df.to_csv(index=False).encode())


def summarise(rows: list[dict[str, Any]], grid: dict[str, list[Any]], metric: str) -> Any:
    """Mean, std and count of `metric` over repeats per grid point (ok rows of this grid only)."""
    import pandas as pd

    order = [point_key(dict(zip(grid, c))) for c in itertools.product(*grid.values())]
    keys = set(order)
    ok = [r for r in rows if r.get("status") == RESULT_STATUS_OK and r.get("point") in keys]
    if not ok:
        return pd.DataFrame()
    df = pd.DataFrame(ok)
    if metric not in df.columns:
        raise ConfigError(f"--metric {metric}: not a column of the results (have: {', '.join(df.columns)})")
    df[metric] = pd.to_numeric(df[metric], errors="coerce")
    g = df.groupby("point", sort=False)[metric].agg(["mean", "std", "count"]).reset_index()
    params = pd.DataFrame([dict(p.split("=", 1) for p in k.split("|")) | {"point": k} for k in g["point"]])
    out = params.merge(g, on="point")
    return out.assign(_o=out["point"].map(order.index)).sort_values("_o").drop(columns="_o").reset_index(drop=True)


# --- driver ------------------------------------------------------------------------------------
def _check_manifest(spec: SweepSpec) -> None:
    from lightloop.atomic_io import atomic_write_text

    path = spec.out / "sweep.json"
    now = spec.manifest()
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise LightloopError(f"{path}: unreadable sweep manifest; move it away to start afresh") from None
        for field in ("config_sha256", "fixed", "data_dir"):
            if old.get(field) != now[field]:
                what = {"config_sha256": "the config file changed", "fixed": "the --set values differ",
                        "data_dir": "--data-dir differs"}[field]
                raise ConfigError(f"{spec.out}: holds a sweep whose settings differ ({what}); "
                                  f"resume with the same settings or choose another --out")
    try:
        spec.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(now, indent=2))
    except OSError as exc:
        raise ConfigError(f"{spec.out}: --out: {exc.strerror or exc}; expected a writable sweep folder") from None


def _executor(scheduler: str | None, workers: int) -> tuple[Any, Any]:
    """(client, cluster) for Dask; (None, None) for the synchronous in-process mode."""
    if scheduler == "synchronous":
        return None, None
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("lightloop sweep needs dask[distributed] (pip install 'lightloop[sweep]'), "
                          "or --scheduler synchronous") from None
    import logging

    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise ConfigError(f"--scheduler {scheduler}: cannot connect ({exc}); expected the address of a running "
                              "Dask scheduler, e.g. tcp://host:8786, or 'synchronous'") from None
    import warnings

    with warnings.catch_warnings():  # "Port 8787 is already in use" when another cluster runs: harmless
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
    return Client(cluster), cluster


def _secure_after_abort(spec: SweepSpec, log: Callable[[str], None]) -> None:
    """After an aborted Dask sweep: workers killed mid-task never ran their safe state, so secure the bench here."""
    from lightloop.safe_cli import secure_config
    from lightloop.shutdown import shielded

    if not any(s.driver != "twin" for s in (spec.cfg.instruments or {}).values()):
        return
    with shielded():
        report = secure_config(spec.cfg)
    bad = {n: r for n, r in report.items() if r["state"] in ("failed", "unknown")}
    for name, r in bad.items():
        log(f"lightloop sweep: instruments.{name}: NOT made safe after the abort ({r['detail']}); "
            f"run `lightloop safe --config {spec.config}`")


def run_sweep(spec: SweepSpec, *, scheduler: str | None = None, workers: int | None = None,
              fmt: str = "csv", metric: str = "test_accuracy", progress: bool = True,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
              exclusive: bool | None = None) -> dict[str, Any]:
    """Run the missing (point, repeat) trainings, update the table, write summary and plots; return a report.

    Runs that drive real instruments (or any, with exclusive=True) hold the Dask lock of their bench while they run;
    when a worker of the cluster advertises the worker resource of that name (``dask worker --resources
    bench:NAME=1``) the tasks also go to that worker - the one wired to the bench."""
    from tqdm.auto import tqdm

    _check_manifest(spec)
    path = _results_path(spec.out, fmt)
    rows = load_results(path)
    done = {(r["point"], int(r["repeat"])) for r in rows if r.get("status") == RESULT_STATUS_OK}
    rows = [r for r in rows if (r["point"], int(r["repeat"])) in done]   # failed rows run again
    tasks = [t for t in spec.tasks() if (t["key"], t["repeat"]) not in done]
    client, cluster = _executor(scheduler, workers or min(len(tasks), os.cpu_count() or 1)) if tasks else (None, None)
    log(f"lightloop sweep: {len(spec.points)} points x {spec.repeat} repeats; {len(tasks)} to run, "
        f"{len(spec.points) * spec.repeat - len(tasks)} already finished; results in {path}")
    failed = 0
    if tasks:
        bar = tqdm(total=len(tasks), desc="sweep", unit="run", disable=not progress, file=sys.stderr)
        try:
            if client is None:
                results = (run_point(t) for t in tasks)
            else:
                from dask.distributed import as_completed

                resource = bench_resource(spec.cfg, exclusive)
                workers_info = client.scheduler_info().get("workers", {}).values()
                pinned = resource is not None and any(resource in (w.get("resources") or {}) for w in workers_info)
                fn, lead, extra = (run_point_on_bench, (run_point,), (resource,)) if resource else (run_point, (), ())
                futures = [client.submit(fn, *lead, t, *extra, pure=False, resources={resource: 1} if pinned else None,
                                         key=f"lightloop-{_slug(t['key'], t['repeat'])}-{time.time_ns()}")
                           for t in tasks]
                results = (f.result() for f in as_completed(futures))
            for row in results:
                rows.append(row)
                save_results(path, rows)
                if row["status"] != RESULT_STATUS_OK:
                    failed += 1
                    bar.write(f"lightloop sweep: {row['point']} repeat {row['repeat']} failed: {row['error']}")
                elif metric in row:
                    bar.set_postfix_str(f"{row['point']}: {metric}={row[metric]:.4f}")
                bar.update(1)
        finally:
            bar.close()
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
            if client is not None and sys.exc_info()[1] is not None:
                _secure_after_abort(spec, log)
    summary = summarise(rows, spec.grid, metric)
    report: dict[str, Any] = {"results": str(path), "runs": len(rows), "failed": failed, "metric": metric}
    if not summary.empty:
        summary.to_csv(spec.out / "summary.csv", index=False)
        title = f"{spec.cfg.bench}: {metric}, {spec.repeat} repeat(s)"
        report["summary"] = str(spec.out / "summary.csv")
        report["heatmap"] = str(plot_heatmap(summary, spec.grid, metric, spec.out / "heatmap.png", title))
        if len(spec.grid) == 1:
            report["curve"] = str(plot_curve(summary, spec.grid, metric, spec.out / "curve.png", title))
        report["points"] = {r["point"]: {"mean": float(r["mean"]),
                                         "std": float(r["std"]) if r["count"] > 1 else 0.0,
                                         "n": int(r["count"])} for _, r in summary.iterrows()}
    return report


def _handler(args: argparse.Namespace) -> int:
    from lightloop.training.run_folder import runs_root
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow (pip install pyarrow), or use --format csv") from None
    if args.config is None:
        from lightloop.cli import default_config_path

        args.config = default_config_path()
    spec = SweepSpec(args.config, parse_grid(args.grid), parse_set(args.set or []), args.repeat,
                     args.out or runs_root() / f"sweep-{Path(args.config).stem}", args.data_dir, args.run_plots,
                     args.checkpoint_seconds)
    from lightloop.records import RunRecording
    from lightloop.records.runs import calibration_of_runs

    with RunRecording(spec.out, "sweep", cfg=spec.cfg, config_path=spec.config, args=args,   # provenance, run.log
                      settings={"grid": spec.grid, "fixed": spec.fixed, "repeat": spec.repeat}) as record:
        report = run_sweep(spec, scheduler=args.scheduler, workers=args.workers, fmt=args.format, metric=args.metric,
                           exclusive={"auto": None, "on": True, "off": False}[getattr(args, "bench_lock", "auto")],
                           progress=not args.no_progress)
    record.finish(report, calibration=calibration_of_runs(spec.out / "runs"))   # each point has its own records
    print(json.dumps(report))
    return 1 if report["failed"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `sweep` subcommand."""
    p = sub.add_parser("sweep", help="run a grid of trainings on Dask (resumable), write a table and a heatmap",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from lightloop.cli import _bounded, existing_dir, int_in, writable_dir

    p.add_argument("--config", type=Path, default=None, help="lab config YAML (default: simulated free-space SA bench)")
    p.add_argument("--grid", action="append", required=True, metavar="PARAM=v1,v2,...",
                   help="a swept parameter (repeatable; the grid is the product)")
    p.add_argument("--repeat", type=int_in("a positive integer (repeats)", 1, MAX_RUNS), default=1, metavar="N",
                   help="independent repeats per point (seed + r)")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="a fixed setting for every run, e.g. epochs=2 or one_bit=true (repeatable)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (default: a LocalCluster of processes; 'synchronous': in-process)")
    p.add_argument("--workers", type=int_in("a number of worker processes", 1, 256), default=None,
                   help="LocalCluster worker processes (default: CPU count)")
    p.add_argument("--data-dir", type=existing_dir, default=None, help="directory holding dataset files (MNIST IDX)")
    p.add_argument("--out", type=writable_dir, default=None, help="sweep directory (default runs/sweep-<config>)")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv", help="results table format")
    p.add_argument("--metric", default="test_accuracy", choices=METRICS, help="column summarised and plotted")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--run-plots", choices=["auto", "on", "off"], default="auto",
                   help=f"each point's learning-curve PNG (~0.8 s a point); auto: on for sweeps of at most "
                        f"{AUTO_PLOT_RUNS} runs (default: auto; summary, heatmap and metrics.jsonl are always written)")
    p.add_argument("--checkpoint-seconds", type=_bounded("seconds", 0.0, 1e9), default=30.0, metavar="S",
                   help="checkpoint a point at most every S s of training and after its last epoch (0: every "
                        "epoch); a killed point redoes at most S s and one epoch (default: 30)")
    p.add_argument("--bench-lock", choices=["auto", "on", "off"], default="auto",
                   help="one run at a time per bench (a Dask lock named bench:<bench>; auto: on for real instruments)")
    p.set_defaults(handler=_handler)
