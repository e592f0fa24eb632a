"""`lightloop check --config FILE`: the bench error budget - each optical path measured against the calibrated model.

Builds the bench of the config (loading its calibration store like `lightloop train`), sends random inputs
through the HAL along every path (each layer's forward product, the backward / adjoint path, the nonlinearity,
every detector's dark reading) and compares the measurements with the bench's calibrated model: systematic error
(fitted gain, phase and offset) and random error (residual rms, noise from repeated measurements) in physical
units, pass/fail against the config's `check:` bounds. Paths per bench kind: free space (forward product per layer,
vapor-cell nonlinearity, backward probe, homodyne darks), integrated chip ('unitary' and 'svd' layers: mesh fields
with forward, injected and adjoint light, tap monitors under each light, photodiodes, activation slopes, every
receiver / tap / photodiode dark), flow network (node potentials, output drops, feedback channel, nudged output
clamp, both probes' darks) and digital (exact by construction: forward products, sigmoids, backward products).
Writes a run folder like train / calibrate (--out, default runs/check-<time>-<id>): record.json (provenance:
versions, git revision, command line, calibration records loaded), config.yaml, station.json, summary.json, run.log,
check.json and check.png. Prints one line per path, the verdict and the JSON summary last. Exit 0 when every path
passes, 1 when one fails, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run_check", "check_built", "print_table"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `check` subcommand."""
    from lightloop.cli import _registered, _seed, existing_dir, int_in, writable_dir

    p = sub.add_parser("check", help="bench error budget: every optical path measured vs its calibrated model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None, help="lab config YAML (default: simulated free-space SA bench)")
    p.add_argument("--calibration-store", type=writable_dir, default=None, metavar="DIR",
                   help="calibration store whose newest matching records the bench loads (default: as `train`)")
    p.add_argument("--samples", type=int_in("an integer of at least 4 (samples)", 4, 100_000), default=None,
                   metavar="N", help="random inputs per path (default: the config's check.samples, 64)")
    p.add_argument("--seed", type=_seed, default=None, help="seed of the random inputs (default: check.seed, 0)")
    p.add_argument("--out", type=writable_dir, default=None, help="run folder for the records, check.json and "
                   "check.png (default: a new runs/check-<time>-<id> folder)")
    p.add_argument("--dataset", type=_registered("dataset"), default=None,
                   help="dataset whose shape sizes the bench (default: the config's training.dataset)")
    p.add_argument("--data-dir", type=existing_dir, default=None)
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.set_defaults(handler=_handler)
    train = sub.choices.get("train")
    if train is not None:   # the gate: `lightloop train --check` refuses to train when a path fails
        train.add_argument("--check", action="store_true",
                           help="run the bench error budget (`lightloop check`) first; refuse to train (exit 2) "
                                "when an optical path is outside the config's check bounds")


def _handler(args: argparse.Namespace) -> int:
    summary = run_check(args)
    print_table(summary)
    print(json.dumps(summary))
    return 0 if summary["passed"] else 1


def print_table(summary: dict[str, Any]) -> None:
    """One line per path (verdict, name, unit, figures, failures), then the notes and the verdict."""
    for row in summary["paths"]:
        sys.stdout.write(_line(row) + "\n")
    for note in summary["notes"]:
        sys.stdout.write(f"note: {note}\n")
    n_fail = len(summary["failed"])
    sys.stdout.write(f"error budget: {'PASS' if summary['passed'] else 'FAIL'} ({len(summary['paths']) - n_fail} of "
                     f"{len(summary['paths'])} paths within bounds); record in {summary.get('out')}\n")


def _line(row: dict[str, Any]) -> str:
    keys = ("gain_error", "phase_error_rad", "offset", "model_error_rms", "noise_rms")
    figs = " ".join(f"{k}={row[k]:.3g}" for k in keys if row.get(k) is not None)
    tail = "" if row["passed"] else "  (" + "; ".join(row["failures"]) + ")"
    return f"{'pass' if row['passed'] else 'FAIL'} {row['name']:<30} [{row['unit']}] {figs}{tail}"


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """Build the bench of --config, run the error budget in a run folder (record.json, config.yaml, station.json,
    summary.json, run.log, check.json, check.png); returns the summary."""
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.cli import default_config_path
    from lightloop.config import load_config
    from lightloop.errors import ConfigError
    from lightloop.training.datasets import load_dataset   # only for the dataset's shape (n_features, n_classes)

    config_path = args.config or default_config_path()
    cfg = load_config(config_path)
    store = None
    if args.calibration_store is not None:
        cal = getattr(cfg.processor, "calibration", None)
        if cal is None:
            raise ConfigError(f"--calibration-store: a {cfg.processor.kind!r} bench has no calibration routines; "
                              "expected it only with a bench that calibrates (free_space, integrated_chip)")
        store = cal.store = str(Path(args.calibration_store).expanduser().absolute())
    data = load_dataset(args.dataset or cfg.training.dataset, args.data_dir)
    proc = build_processor(cfg, data.n_features, data.n_classes, BuildOverrides())
    return check_built(proc, cfg, config_path, args, args.out, samples=args.samples, seed=args.seed,
                       plot=not args.no_plot, settings={"calibration_store": store})


def check_built(proc: Any, cfg: Any, config_path: Path, args: Any, out: Path | None, *, samples: int | None = None,
                seed: int | None = None, plot: bool = True, settings: dict[str, Any] | None = None,
                close: bool = True, calibration: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The error budget of a built bench recorded in run folder `out` (None: a new runs/check-<time>-<id>); with
    close, the bench is closed (safe state) after the measurements; calibration: the records the HAL holds (default:
    the ones it loaded). Returns the summary (its 'out': the folder)."""
    from contextlib import nullcontext

    import lightloop.records.provenance as pv
    from lightloop.atomic_io import atomic_write_text
    from lightloop.check import check_processor, plot_budget
    from lightloop.records import RunRecording
    from lightloop.training.run_folder import unique_run_dir

    folder = Path(out) if out is not None else unique_run_dir(prefix="check")
    with (proc if close else nullcontext()), RunRecording(folder, "check", cfg=cfg, config_path=config_path,
                                                          args=args, settings=settings) as record:
        record.attach(proc)   # station snapshot and calibration records while the instruments are connected
        result = check_processor(proc, cfg, samples, seed)
        summary, paths = result["summary"], result["paths"]
        summary["out"] = str(folder)
        held = calibration if calibration is not None else list(getattr(proc, "calibration_log", None) or [])
        summary["calibration_loaded"] = [r.get("routine") for r in held]
        files = ["check.json"]
        atomic_write_text(folder / "check.json", json.dumps(summary, indent=1) + "\n")
        if plot and paths:
            fig = plot_budget(paths, f"{cfg.bench}: error budget ({summary['samples']} samples)")
            fig.savefig(folder / "check.png", dpi=80)
            files.append("check.png")
        rec = record.finish(summary, calibration=held)
        rec["files"] = [*rec.get("files", []), *files]
        atomic_write_text(folder / "record.json", json.dumps(pv.jsonable(rec), indent=1) + "\n")
    return summary
