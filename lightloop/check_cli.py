"""`lightloop check --config FILE`: the bench error budget - each optical path measured against the calibrated model.

Builds the bench of the config (loading its calibration store like `lightloop train`), sends random inputs
through the HAL along every path (each layer's forward product, the backward / adjoint path, the nonlinearity,
every detector's dark reading) and compares the measurements with the bench's calibrated model: systematic error
(fitted gain, phase and offset) and random error (residual rms, noise from repeated measurements) in physical
units, pass/fail against the config's `check:` bounds. Writes check.json and check.png to --out; prints one line
per path and the JSON summary last. Exit 0 when every path passes, 1 when one fails, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run_check"]


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
    p.add_argument("--out", type=writable_dir, default=None, help="folder for check.json and check.png "
                   "(default: a new runs/check-<time>-<id> folder)")
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
    for row in summary["paths"]:
        sys.stdout.write(_line(row) + "\n")
    for note in summary["notes"]:
        sys.stdout.write(f"note: {note}\n")
    print(json.dumps(summary))
    return 0 if summary["passed"] else 1


def _line(row: dict[str, Any]) -> str:
    keys = ("gain_error", "phase_error_rad", "offset", "model_error_rms", "noise_rms")
    figs = " ".join(f"{k}={row[k]:.3g}" for k in keys if row.get(k) is not None)
    tail = "" if row["passed"] else "  (" + "; ".join(row["failures"]) + ")"
    return f"{'pass' if row['passed'] else 'FAIL'} {row['name']:<30} [{row['unit']}] {figs}{tail}"


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """Build the bench of --config, run the error budget, write check.json / check.png; returns the summary."""
    from lightloop.atomic_io import atomic_write_text
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.check import check_processor, plot_budget
    from lightloop.cli import default_config_path
    from lightloop.config import load_config
    from lightloop.errors import ConfigError
    from lightloop.training.datasets import load_dataset   # only for the dataset's shape (n_features, n_classes)
    from lightloop.training.run_folder import unique_run_dir

    cfg = load_config(args.config or default_config_path())
    if args.calibration_store is not None:
        cal = getattr(cfg.processor, "calibration", None)
        if cal is None:
            raise ConfigError(f"--calibration-store: a {cfg.processor.kind!r} bench has no calibration routines; "
                              "expected it only with a bench that calibrates (free_space, integrated_chip)")
        cal.store = str(Path(args.calibration_store).expanduser().absolute())
    data = load_dataset(args.dataset or cfg.training.dataset, args.data_dir)
    proc = build_processor(cfg, data.n_features, data.n_classes, BuildOverrides())
    with proc:   # every ending leaves the bench in its safe state
        result = check_processor(proc, cfg, args.samples, args.seed)
    summary, paths = result["summary"], result["paths"]
    out = Path(args.out) if args.out is not None else unique_run_dir(prefix="check")
    out.mkdir(parents=True, exist_ok=True)
    summary["out"] = str(out)
    atomic_write_text(out / "check.json", json.dumps(summary, indent=1) + "\n")
    if not args.no_plot and paths:
        fig = plot_budget(paths, f"{cfg.bench}: error budget ({summary['samples']} samples)")
        fig.savefig(out / "check.png", dpi=80)
    return summary
