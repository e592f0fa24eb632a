"""Reading run records back: find run folders, load a record, its metrics, and compare two runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lightloop.errors import RunFolderError
from lightloop.records.recording import CONFIG_NAME, RECORD_FORMAT, RECORD_NAME

__all__ = ["DEFAULT_ROOT", "find_runs", "resolve_run", "load_record", "epoch_metrics", "compare", "flatten",
           "calibration_of_runs",
           "MAX_DEPTH"]

#: where `lightloop train` puts runs without --out (relative to the working directory)
DEFAULT_ROOT = Path("runs")
#: how deep `runs list` looks below the root (sweep points sit at <sweep>/runs/<point>)
MAX_DEPTH = 4
_HOLDER = ".lightloop-holder.json"


def find_runs(root: Path) -> list[Path]:
    """Folders under root (root itself included) holding a record.json, oldest first by start time."""
    root = Path(root)
    if not root.is_dir():
        raise RunFolderError(f"{root}: --root: no such directory; expected a folder holding run folders "
                             f"(default {DEFAULT_ROOT}/ of the working directory)")
    found: list[Path] = []
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        if (folder / RECORD_NAME).is_file():
            found.append(folder)
        if depth >= MAX_DEPTH:
            continue
        try:
            children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            continue
        stack.extend((c, depth + 1) for c in children)

    def started(p: Path) -> str:
        try:
            return str(json.loads((p / RECORD_NAME).read_text()).get("started_utc", ""))
        except (OSError, ValueError, AttributeError):
            return ""
    return sorted(found, key=lambda p: (started(p), str(p)))


def resolve_run(name: str, root: Path = DEFAULT_ROOT) -> Path:
    """A run folder from a path or a folder name under root; one-line error when it is neither a run nor found."""
    path = Path(name).expanduser()
    if not path.exists() and not path.is_absolute() and Path(root).is_dir():
        matches = [p for p in find_runs(root) if p.name == name or str(p).endswith(name)]
        if len(matches) == 1:
            path = matches[0]
        elif len(matches) > 1:
            raise RunFolderError(f"{name}: RUN: names {len(matches)} run folders under {root} "
                                 f"({', '.join(str(m) for m in matches[:3])}); expected one: give its path")
    if not path.exists():
        raise RunFolderError(f"{name}: RUN: no such run folder (neither a path nor a run under {root}/); expected "
                             "a folder listed by `lightloop runs list`")
    if not path.is_dir():
        raise RunFolderError(f"{path}: RUN: a file, not a run folder; expected a folder holding {RECORD_NAME}")
    if not (path / RECORD_NAME).is_file():
        raise RunFolderError(f"{path}: RUN: not a run folder (no {RECORD_NAME}); expected a folder written by "
                             "lightloop train, calibrate or sweep")
    return path


def load_record(folder: Path) -> dict[str, Any]:
    """record.json of a run folder; status 'interrupted' for a run that died without closing its record."""
    path = Path(folder) / RECORD_NAME
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: cannot be read as a run record ({type(exc).__name__}); expected the JSON "
                             "lightloop wrote") from None
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise RunFolderError(f"{path}: format: expected a '{RECORD_FORMAT}' record")
    if rec.get("status") == "running" and not (Path(folder) / _HOLDER).exists() and rec.get("kind") == "train":
        rec["status"] = "interrupted"   # a training run holds its folder's lock (and holder file) while it runs
    return rec


def epoch_metrics(folder: Path) -> list[dict[str, Any]]:
    """Per-epoch metrics of a training run (metrics.jsonl; the QCoDeS database when that file is missing)."""
    folder = Path(folder)
    path = folder / "metrics.jsonl"
    if path.is_file():
        rows = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue   # a torn last line of a killed run
            if isinstance(rec, dict) and "epoch" in rec:
                rows.append(rec)
        return rows
    if (folder / "run.db").is_file():
        from lightloop.records.dataset import to_xarray

        xds = to_xarray(folder)
        if "epoch" not in xds.dims:
            return []
        names = [v for v in xds.data_vars if xds[v].dims == ("epoch",)]
        return [{"epoch": int(e), **{n: float(xds[n].values[i]) for n in names}}
                for i, e in enumerate(xds["epoch"].values)]
    return []


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {'a.b.c': leaf}; lists are leaves."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _config(folder: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((Path(folder) / CONFIG_NAME).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def compare(a: Path, b: Path) -> dict[str, Any]:
    """Differences of two runs: resolved config, versions, git revision; both runs' summary figures."""
    ra, rb = load_record(a), load_record(b)
    diffs: dict[str, tuple[Any, Any]] = {}
    for section, fa, fb in (("config", flatten(_config(a)), flatten(_config(b))),
                            ("versions", flatten(ra.get("versions") or {}), flatten(rb.get("versions") or {})),
                            ("git", flatten(ra.get("git") or {}), flatten(rb.get("git") or {}))):
        for key in sorted(set(fa) | set(fb)):
            if key in ("root",) or key.endswith(".platform"):
                continue
            va, vb = fa.get(key, "(absent)"), fb.get(key, "(absent)")
            if va != vb:
                diffs[f"{section}.{key}"] = (va, vb)
    sa, sb = ra.get("summary") or {}, rb.get("summary") or {}
    figures = [k for k in ("test_accuracy", "best_test_accuracy", "best_epoch", "epochs", "mean_epoch_seconds",
                           "samples_per_second", "measurements_per_step") if k in sa or k in sb]
    return {"runs": [str(a), str(b)], "kinds": [ra.get("kind"), rb.get("kind")],
            "status": [ra.get("status"), rb.get("status")], "differences": diffs,
            "summary": {k: (sa.get(k), sb.get(k)) for k in figures},
            "calibration_records": [[c.get("path") for c in ra.get("calibration_records") or []],
                                    [c.get("path") for c in rb.get("calibration_records") or []]]}


def calibration_of_runs(root: Path) -> list[dict[str, Any]]:
    """The distinct calibration records loaded by the runs under root (a sweep's points), in first-seen order."""
    seen: dict[str, dict[str, Any]] = {}
    if not Path(root).is_dir():
        return []
    for folder in find_runs(root):
        try:
            records = load_record(folder).get("calibration_records") or []
        except RunFolderError:
            continue
        for c in records:
            seen.setdefault(json.dumps(c, sort_keys=True), c)
    return list(seen.values())
