"""The `lightloop calibrate` command (orchestration: config -> bench -> routines -> store; it lives
beside cli.py, outside the calibration layer, because it also reads the dataset shape).

Each routine measures through the HAL, fits, writes a PNG of each fit, applies its result to the
HAL and stores a new versioned record. The summary lists every routine's fit quality and
measurement counts; on a twin bench it also reports each routine's error against the twin's
hidden truth (the only place the truth is revealed).
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from lightloop.cli import _layer_size, _seed, existing_dir, writable_dir
from lightloop.errors import CalibrationError, ConfigError

__all__ = ["register", "run_calibrate", "OPTIONS", "parse_options"]


def _int(lo: int, hi: int) -> tuple[Callable[[str], Any], str]:
    def parse(raw: str) -> int:
        v = int(raw)
        if not lo <= v <= hi:
            raise ValueError(raw)
        return v
    return parse, f"an integer in {lo}..{hi}"


def _num(lo: float, hi: float) -> tuple[Callable[[str], Any], str]:
    def parse(raw: str) -> float:
        v = float(raw)
        if not (math.isfinite(v) and lo < v <= hi):
            raise ValueError(raw)
        return v
    return parse, f"a number in ({lo:g}, {hi:g}]"


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ValueError(raw)
    return low in ("true", "1", "yes", "on")


def _a0_range(raw: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in raw.replace(":", ",").split(","))
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi <= 1e4):
        raise ValueError(raw)
    return lo, hi


def _ps_method(raw: str) -> str:
    """phase_shifters engine: 'progressive' (default for rectangular meshes), 'global' or 'columns' (experimental)."""
    if raw not in ("global", "columns", "progressive"):
        raise ValueError(raw)
    return raw


_FS = ("saturable_absorber", "vapor_cell", "homodyne")
#: every routine option: name -> (routines that read it, parser, what is expected)
OPTIONS: dict[str, tuple[tuple[str, ...], Callable[[str], Any], str]] = {
    "lut_levels": (("slm_lut",), *_int(2, 256)),
    "frames": (("slm_lut", "dmd_fill"), *_int(1, 100_000)),
    "fill_levels": (("dmd_fill",), *_int(2, 4097)),
    "fringing_frames": (("fringing",), *_int(1, 100_000)),
    "dark_frames": (("homodyne",), *_int(1, 1_000_000)),
    "sweep_frames": (_FS, *_int(1, 100_000)),
    "backward_frames": (("homodyne",), *_int(1, 1_000_000)),
    "lo_levels": (("lo_phase",), *_int(3, 256)),
    "lo_frames": (("lo_phase",), *_int(1, 100_000)),
    "lock_lo": (("lo_phase",), _bool, "true or false"),
    "probe_a0": (("saturable_absorber",), *_num(0.0, 1e4)),
    "temperatures": (("vapor_cell",), *_int(2, 1000)),
    "a0_range": (("vapor_cell",), _a0_range, "LOW,HIGH optical depths with 0 < LOW < HIGH <= 10000"),
    "settle_timeout_s": (_FS, *_num(0.0, 86400.0)),
    "ps_steps": (("phase_shifters",), *_int(2, 1000)),
    "ps_fit_threshold": (("phase_shifters", "crosstalk"), *_num(0.0, 1.0)),
    "ps_sigma_max_rad": (("phase_shifters",), *_num(0.0, math.pi)),
    "xt_rel_sigma_max": (("phase_shifters",), *_num(0.0, 10.0)),
    "ps_tries": (("phase_shifters",), *_int(1, 100)),
    "ps_max_iter": (("phase_shifters",), *_int(1, 10_000)),
    "ps_max_passes": (("phase_shifters",), *_int(1, 100)),
    "ps_method": (("phase_shifters",), _ps_method, "progressive, global or columns"),
    "ps_max_sweeps": (("phase_shifters",), *_int(1, 1000)),
    "ps_global_max_n": (("phase_shifters",), *_int(0, 1024)),
    "ps_passes": (("phase_shifters",), *_int(1, 20)),
    "ps_mixing_background": (("phase_shifters",), _bool, "true or false"),
    "xt_steps": (("crosstalk",), *_int(2, 1000)),
    "mesh_targets": (("mesh",), *_int(1, 1000)),
    "mesh_passes": (("mesh",), *_int(1, 100)),
    "mesh_min_fidelity": (("mesh",), *_num(0.0, 1.0)),
    "mesh_self_configure_max_n": (("mesh",), *_int(0, 1024)),
    "mesh_program_iters": (("mesh",), *_int(0, 100_000)),
    "readout_settings": (("readout",), *_int(1, 100)),
    "readout_batch": (("readout",), *_int(4, 100_000)),
    "readout_field": (("readout",), *_num(1e-3, 10.0)),
    "readout_fit_threshold": (("readout",), *_num(1e-6, 1.0)),
    "readout_loss_max_ports": (("readout",), *_int(0, 64)),
    "readout_loss_lit_ports": (("readout",), *_int(0, 64)),
    "activation_batch": (("activation",), *_int(8, 100_000)),
    "activation_settings": (("activation",), *_int(2, 1000)),
    "activation_p_max": (("activation",), *_num(1e-6, 1e6)),
    "activation_fit_threshold": (("activation",), *_num(1e-6, 1.0)),
}


def parse_options(items: list[str], routines: list[str]) -> dict[str, Any]:
    """--option KEY=VALUE items -> typed options; unknown names and bad values are one-line ConfigErrors."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--option: {item!r}; expected KEY=VALUE, e.g. lut_levels=65")
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"--option {key}: unknown option{hint}; expected one of: {', '.join(sorted(OPTIONS))}")
        if key in out:
            raise ConfigError(f"--option {key}: given twice; expected each option once")
        users, parse, what = OPTIONS[key]
        try:
            out[key] = parse(raw.strip())
        except ValueError:
            raise ConfigError(f"--option {key}: expected {what}, got {raw.strip()!r}") from None
        if "all" not in routines and not set(users) & set(routines):
            print(f"lightloop: warning: --option {key}: read only by {', '.join(users)}, none of which runs; "
                  "it has no effect", file=sys.stderr)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `calibrate` subcommand."""
    p = sub.add_parser(
        "calibrate", help="calibrate a bench through its HAL (routines or all)",
        description="Run calibration routines (or all of them, in dependency order); each result is applied, "
                    "stored as a new version in the calibration store and plotted.")
    p.add_argument("routines", nargs="+", metavar="ROUTINE",
                   help="routine names (slm_lut, lo_phase, dmd_fill, fringing, homodyne, saturable_absorber, "
                        "vapor_cell, ...) or all")
    p.add_argument("--config", type=Path, default=None, help="lab config YAML (default: simulated free-space SA bench)")
    p.add_argument("--store", type=writable_dir, default=None,
                   help="calibration store directory (default: the config's processor.calibration.store)")
    p.add_argument("--plots", type=writable_dir, default=None, help="directory for the PNG of each fit "
                                                             "(default: <store>/<bench>/plots/<time>)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG")
    p.add_argument("--no-save", action="store_true", help="do not write records to the store")
    p.add_argument("--from-nominal", action="store_true", help="start from nominal maps, not the stored records")
    p.add_argument("--dataset", default=None, help="dataset whose shape sizes the bench (default: the config's)")
    p.add_argument("--data-dir", type=existing_dir, default=None)
    p.add_argument("--hidden", type=_layer_size, nargs="+", default=None, metavar="N", help="hidden layer sizes")
    p.add_argument("--option", action="append", default=None, metavar="KEY=VALUE",
                   help="routine option, e.g. lut_levels=65 sweep_frames=128 temperatures=8 (repeatable); "
                        f"known: {', '.join(sorted(OPTIONS))}")
    p.add_argument("--seed", type=_seed, default=0, help="seed of randomised test patterns")
    p.add_argument("--json", action="store_true", help="print one JSON summary as the last stdout line")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--check", action="store_true",
                   help="after the routines (their records already stored), run the bench error budget "
                        "(`lightloop check`, the config's check: bounds) on the freshly calibrated HAL and print its "
                        "table; a path outside the bounds exits 1, the calibration records stay in the store; the "
                        "check's run folder is <record>/check (check.png unless --no-plots)")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    summary = run_calibrate(args)
    if args.json:
        print(json.dumps(summary, default=_json_default))
    else:
        _print_table(summary)
        if summary.get("check") is not None:
            from lightloop.check_cli import print_table

            print_table(summary["check"])
    check_ok = summary.get("check") is None or summary["check"]["passed"]
    return 0 if all(r["status"] != "failed" for r in summary["routines"]) and check_ok else 1


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return str(o)


def _store_path(cfg: Any, override: Path | None) -> Path | None:
    """--store, else the config's processor.calibration.store, else the default store (what `train` loads)."""
    if override is not None:
        return override
    from lightloop.benches._common import store_for

    path, _ = store_for(cfg)
    return Path(path) if path else None


def run_calibrate(args: argparse.Namespace) -> dict[str, Any]:
    """Build the bench, run the routines, return the summary (JSON-able)."""
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.calibration.base import RunContext, routines_for
    from lightloop.calibration.report import twin_truth_report
    from lightloop.calibration.runner import calibrate, now_utc, total_counts
    from lightloop.calibration.store import CalibrationStore, CalibrationWarning, load_into_processor
    from lightloop.cli import default_config_path
    from lightloop.config import load_config
    from lightloop.training.datasets import load_dataset  # only for the dataset's shape (n_features, n_classes)
    from lightloop.training.run_folder import runs_root

    if args.plots is not None and args.no_plots:
        raise ConfigError("--plots: given with --no-plots; expected one of the two")
    options = parse_options(args.option or [], args.routines)
    cfg = load_config(args.config or default_config_path())
    store_path = _store_path(cfg, args.store)
    cal = getattr(cfg.processor, "calibration", None)
    if cal is not None:
        cal.store = None  # built from nominal maps; the store is loaded below with warnings, not errors
    data = load_dataset(args.dataset or cfg.training.dataset, args.data_dir)
    if args.hidden is not None and any(h < 1 for h in args.hidden):
        raise ConfigError(f"--hidden: layer sizes must be positive integers, got {args.hidden}")
    proc = build_processor(cfg, data.n_features, data.n_classes, BuildOverrides(hidden=args.hidden))
    try:   # everything up to the routines runs with the instruments connected: any failure leaves them safe
        if not routines_for(proc):
            raise CalibrationError(f"{cfg.source}: processor.kind: no calibration routine applies to a "
                                   f"'{cfg.processor.kind}' bench; expected a bench with calibrated devices")
        store = CalibrationStore(store_path) if store_path is not None else None
        loaded: list[dict[str, Any]] = []
        if store is not None and not args.from_nominal:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", CalibrationWarning)
                loaded = load_into_processor(proc, store, cfg.bench, max_age_days=getattr(cal, "max_age_days", None),
                                             on_mismatch="warn")
            for w in caught:
                print(f"lightloop: warning: {w.message}", file=sys.stderr)
        plot_dir = None
        if not args.no_plots:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            plot_dir = args.plots or ((CalibrationStore(store_path).plot_dir(cfg.bench, stamp)) if store_path is not None
                                      else runs_root() / f"calibrate-{stamp}")
        ctx = RunContext(progress=not args.no_progress and sys.stderr.isatty(), plot_dir=plot_dir, seed=args.seed,
                         options=options)
    except BaseException:
        proc.close()
        raise
    t0 = time.perf_counter()
    from lightloop.records import RunRecording
    from lightloop.training.run_folder import unique_run_dir

    # run records (provenance, log file) next to the plots, else in a new runs/calibrate-<time>-<id> folder
    with proc, RunRecording(plot_dir or unique_run_dir(prefix="calibrate"), "calibrate", cfg=cfg,
                            config_path=args.config or default_config_path(), args=args,
                            settings={"calibration_store": store_path}) as record:
        outcomes = calibrate(proc, args.routines, ctx, None if args.no_save else store, cfg.bench)
        truth = twin_truth_report(proc, outcomes)
        record.attach(proc)   # station snapshot while the instruments are connected
        check = None
        if getattr(args, "check", False):   # the records are stored: a failing (or erring) check cannot lose them
            from lightloop.check_cli import check_built

            new = [{"routine": o.routine, "file": o.path, "applied_by": "this calibrate run"} for o in outcomes
                   if o.status == "ok"]   # what the HAL holds now: the loaded records, then the fresh ones
            check = check_built(proc, cfg, args.config or default_config_path(), args, record.folder / "check",
                                plot=not args.no_plots, close=False, calibration=[*loaded, *new])
    routines = []
    for o in outcomes:
        s = o.summary()
        if o.routine in truth:
            s["truth_error"] = truth[o.routine]
        routines.append(s)
    out: dict[str, Any] = {
        "bench": cfg.bench, "config": str(cfg.source), "layer_sizes": list(proc.layer_sizes),
        "device": getattr(proc, "device", None), "date_utc": now_utc(),
        "store": str(store_path) if store_path is not None else None, "saved": store is not None and not args.no_save,
        "loaded_from_store": loaded, "plot_dir": str(plot_dir) if plot_dir else None,
        "routines": routines, "measurements": total_counts(outcomes).as_dict(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if truth:
        out["twin_truth"] = {"weight_fidelity": truth.get("weight_fidelity", {}),
                             "all_within_tolerance": all(all(r.get("within_tolerance", {}).values())
                                                         for k, r in truth.items() if k != "weight_fidelity")}
    out["record"] = str(record.folder)
    out["check"] = check
    record.finish(out, calibration=loaded)
    return out


def _print_table(summary: dict[str, Any]) -> None:
    print(f"calibration of {summary['bench']} (layers {summary['layer_sizes']}, {summary['device']})")
    for r in summary["routines"]:
        m = r.get("measurements", {})
        line = (f"  {r['routine']:<20} {r['status']:<7} {m.get('acquisitions', 0):>5} acquisitions "
                f"{m.get('frames', 0):>6} frames {m.get('writes', 0):>4} writes  {r.get('seconds', 0):6.2f} s")
        if r.get("truth_error"):
            te = r["truth_error"]
            figs = ", ".join(f"{k} {te[k]:.3g}" for k in te.get("within_tolerance", {}))
            ok = all(te.get("within_tolerance", {}).values())
            line += f"  | vs truth: {figs} ({'within' if ok else 'OUTSIDE'} tolerance)"
        if r["status"] == "failed":
            line += f"  | {r.get('reason', '')}"
        print(line)
    m = summary["measurements"]
    print(f"  total: {m['acquisitions']} acquisitions, {m['frames']} frames, {m['writes']} writes, "
          f"{m['setpoints']} heater set-points in {summary['seconds']:.1f} s")
    if summary.get("saved"):
        print(f"  records in {summary['store']}")
    elif summary.get("store") is None:
        print("  records not saved (no store: set processor.calibration.store in the config or pass --store)")
    else:
        print("  records not saved (--no-save)")
    if summary.get("plot_dir"):
        print(f"  plots in {summary['plot_dir']}")
