"""`lightloop runs`: list, show, compare, plot and export the records of train, calibrate and sweep runs.

    lightloop runs list [--root runs]              one line per run folder under the root
    lightloop runs show RUN [--json]               provenance and summary of one run
    lightloop runs compare RUN RUN [--json]        what differs (config, versions, git) and both results
    lightloop runs plot RUN... [--out FILE]        learning curves of training runs in one PNG
    lightloop runs export RUN --netcdf FILE        a training run's QCoDeS DataSet as NetCDF (xarray)

RUN is a run folder's path or its name under --root. A training run's QCoDeS database is RUN/run.db
(qcodes: ``load_by_run_spec(captured_run_id=1, conn=connect("RUN/run.db"))``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import Any

from lightloop.errors import RunFolderError

__all__ = ["register", "list_runs", "show_text"]

_FIGURES = ("test_accuracy", "best_test_accuracy", "best_epoch", "epochs")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `runs` subcommand and its actions."""
    from lightloop.cli import writable_file
    from lightloop.training.run_folder import runs_root

    p = sub.add_parser("runs", help="list, show, compare, plot and export recorded runs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=runs_root(), help="folder holding run folders ($LIGHTLOOP_RUNS_DIR or ./runs)")
    acts = p.add_subparsers(dest="runs_action", required=True, metavar="ACTION")
    a = acts.add_parser("list", help="one line per run folder under --root")
    a.add_argument("--json", action="store_true", help="print the list as JSON")
    a = acts.add_parser("show", help="provenance and summary of one run")
    a.add_argument("run", metavar="RUN")
    a.add_argument("--json", action="store_true", help="print record.json")
    a = acts.add_parser("compare", help="differences between two runs")
    a.add_argument("run", nargs=2, metavar="RUN")
    a.add_argument("--json", action="store_true", help="print the comparison as JSON")
    a = acts.add_parser("plot", help="learning curves of training runs in one PNG")
    a.add_argument("run", nargs="+", metavar="RUN")
    a.add_argument("--out", type=writable_file, default=Path("runs_plot.png"), help="PNG to write")
    a = acts.add_parser("export", help="a training run's QCoDeS DataSet as a NetCDF file")
    a.add_argument("run", metavar="RUN")
    a.add_argument("--netcdf", type=writable_file, required=True, metavar="FILE", help="NetCDF file to write")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    from lightloop.records.runs import compare, load_record, resolve_run

    action = args.runs_action
    if action == "list":
        rows = list_runs(args.root)
        if args.json:
            print(json.dumps(rows))
        else:
            print(_list_text(rows, args.root))
        return 0
    runs = [resolve_run(r, args.root) for r in (args.run if isinstance(args.run, list) else [args.run])]
    if action == "show":
        rec = load_record(runs[0])
        print(json.dumps(rec, indent=1) if args.json else show_text(runs[0], rec))
    elif action == "compare":
        cmp = compare(*runs)
        print(json.dumps(cmp, default=list) if args.json else _compare_text(cmp))
    elif action == "plot":
        from lightloop.records.plots import plot_runs

        fig = plot_runs(runs)
        _save(args.out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        print(f"learning curves of {len(runs)} run(s) in {args.out}")
    else:
        _export(runs[0], args.netcdf)
        print(f"{runs[0]}: dataset exported to {args.netcdf}")
    return 0


def _save(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename (no half-written file on failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot be written ({exc.strerror or exc}); expected a writable file "
                             "path") from None
    finally:
        tmp.unlink(missing_ok=True)


def _export(run: Path, out: Path) -> None:
    from lightloop.records.dataset import DB_NAME, netcdf_engine, to_xarray
    from lightloop.records.runs import load_record

    rec = load_record(run)
    if not (run / DB_NAME).is_file():
        raise RunFolderError(f"{run}: RUN: no {DB_NAME} (a {rec.get('kind')} run, status {rec.get('status')}); "
                             "expected a finished training run")
    xds = to_xarray(run, {"lightloop_record": rec})
    _save(out, lambda tmp: xds.to_netcdf(tmp, engine=netcdf_engine()))


def list_runs(root: Path) -> list[dict[str, Any]]:
    """One summary row per run folder under root (path, kind, status, start, bench, headline figures)."""
    from lightloop.records.runs import find_runs, load_record

    rows = []
    for folder in find_runs(root):
        try:
            rec = load_record(folder)
        except RunFolderError as exc:
            rows.append({"run": str(folder), "kind": "?", "status": f"unreadable ({exc})"})
            continue
        s = rec.get("summary") or {}
        rows.append({"run": str(folder), "kind": rec.get("kind"), "status": rec.get("status"),
                     "started_utc": rec.get("started_utc"), "bench": rec.get("bench"),
                     **{k: s[k] for k in _FIGURES if k in s}})
    return rows


def _list_text(rows: list[dict[str, Any]], root: Path) -> str:
    if not rows:
        return f"no runs under {root}"
    lines = [f"{'run':<44} {'kind':<9} {'status':<11} {'started (UTC)':<25} {'bench':<26} test acc"]
    for r in rows:
        acc = r.get("test_accuracy")
        lines.append(f"{r['run']:<44} {r.get('kind') or '':<9} {r.get('status') or '':<11} "
                     f"{r.get('started_utc') or '':<25} {r.get('bench') or '':<26} "
                     f"{'' if acc is None else format(acc, '.4f')}")
    return "\n".join(lines)


def _command(rec: dict[str, Any]) -> str:
    """The command line when the process was `lightloop`, else the in-process call's options."""
    cmd = rec.get("command") or {}
    argv = cmd.get("argv") or []
    if argv and Path(argv[0]).name in ("lightloop", "__main__.py") and len(argv) > 1 and argv[1] == rec.get("kind"):
        return "lightloop " + shlex.join(argv[1:])
    opts = {k: v for k, v in (cmd.get("options") or {}).items() if v not in (None, False, [], "")}
    flags = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {' '.join(map(str, v))}"
                                                   if isinstance(v, list) else f" {v}")
                     for k, v in opts.items() if k not in ("command", "runs_action"))
    return f"in-process {rec.get('kind')} ({flags or 'defaults'}; process {shlex.join(argv[:1]) or '?'})"


def show_text(folder: Path, rec: dict[str, Any]) -> str:
    """Human-readable provenance of one run."""
    v, git, cfg = rec.get("versions") or {}, rec.get("git"), rec.get("config") or {}
    lines = [f"run {folder} ({rec.get('kind')}, {rec.get('status')})",
             f"  started {rec.get('started_utc')}, finished {rec.get('finished_utc', '-')}",
             f"  command: {_command(rec)}  (in {(rec.get('command') or {}).get('cwd')})",
             f"  bench: {rec.get('bench')}; config {cfg.get('file')} (sha256 {str(cfg.get('file_sha256'))[:12]}), "
             f"resolved copy {cfg.get('resolved')}",
             "  versions: " + ", ".join(f"{k} {v[k]}" for k in ("lightloop", "python", "numpy", "qcodes") if k in v),
             "  git: " + (f"{git['revision']}{' (uncommitted changes)' if git.get('dirty') else ''}" if git
                          else "not run from a git checkout")]
    cal = rec.get("calibration_records") or []
    lines.append("  calibration records: " + ("none loaded" if not cal else "; ".join(
        f"{c.get('routine')} v{c.get('record_version')} ({c.get('created_utc')})" for c in cal)))
    try:
        station = json.loads((Path(folder) / "station.json").read_text())
    except (OSError, ValueError):
        station = None
    if station is not None:
        inst = station.get("station", {}).get("instruments", {})
        mode = station.get("lightloop", {}).get("instruments")
        lines.append(f"  station: {mode}; instruments: {', '.join(sorted(inst)) or 'none'} (station.json)")
    ds = rec.get("dataset")
    if ds and "error" in ds:
        lines.append(f"  QCoDeS dataset: not written ({ds['error']})")
    elif ds:
        lines.append(f"  QCoDeS dataset: {ds['file']} guid {ds['guid']} (experiment {ds['experiment']}, "
                     f"captured_run_id {ds['captured_run_id']}, {ds['epochs']} epochs, {ds['steps']} steps)")
    s = rec.get("summary") or {}
    figs = [f"{k} {s[k]:.4g}" if isinstance(s[k], float) else f"{k} {s[k]}" for k in _FIGURES if k in s]
    if figs:
        lines.append("  summary: " + ", ".join(figs) + " (summary.json)")
    if rec.get("error"):
        lines.append(f"  error: {rec['error']}")
    if rec.get("sessions"):
        lines.append(f"  earlier sessions: {len(rec['sessions'])} (resumed)")
    lines.append("  files: " + ", ".join(rec.get("files") or ["record.json"]))
    return "\n".join(lines)


def _compare_text(cmp: dict[str, Any]) -> str:
    a, b = cmp["runs"]
    lines = [f"A = {a} ({cmp['kinds'][0]}, {cmp['status'][0]})", f"B = {b} ({cmp['kinds'][1]}, {cmp['status'][1]})"]
    diffs = cmp["differences"]
    lines.append(f"differences ({len(diffs)}):" if diffs else "differences: none (same config, versions, git)")
    lines += [f"  {k}: {va!r} -> {vb!r}" for k, (va, vb) in diffs.items()]
    if cmp["summary"]:
        lines.append("results (A | B):")
        lines += [f"  {k}: {va} | {vb}" for k, (va, vb) in cmp["summary"].items()]
    ca, cb = cmp["calibration_records"]
    if ca != cb:
        lines.append(f"calibration records: {ca or 'none'} | {cb or 'none'}")
    return "\n".join(lines)
