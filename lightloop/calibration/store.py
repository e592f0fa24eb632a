"""Versioned calibration store: arrays in NPZ, metadata in JSON, one record per routine run.

Layout: <store>/<bench>/<routine>/v<NNNN>_<UTC stamp>.json (+ .npz beside it). Records are never
overwritten; every run of a routine adds the next version. The JSON names the bench, the
instrument identities, the date, the routine version, the layout (layer sizes, device kind),
the fit residuals and the SHA-256 of the NPZ. Writes are atomic (temporary file + rename, arrays
first, metadata last: a record exists once its JSON exists).

Loading (`load_into_processor`) takes the newest record of each routine and applies them in
chronological order. A corrupt or unreadable record is always an error; a record of another
bench, other instruments, another layout or older than `max_age_days` is an error or, with
on_mismatch = 'warn', a warning (a merely stale record is then still applied; one that belongs
to other hardware is skipped in favour of the newest one that matches, else the nominal maps).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import CalibrationResult, Routine, routines_for
from lightloop.atomic_io import atomic_write_bytes
from lightloop.errors import CalibrationError
from lightloop.hal.processor import OpticalProcessor

__all__ = ["FORMAT", "FORMAT_VERSION", "CalibrationWarning", "Record", "CalibrationStore", "load_into_processor",
           "check_record"]

FORMAT = "lightloop-calibration"
FORMAT_VERSION = 1
_NAME = re.compile(r"^v(\d{4,})_(\d{8}T\d{6}\d*Z)\.json$")


class CalibrationWarning(UserWarning):
    """A calibration record is stale or belongs to other hardware (on_mismatch: warn)."""


@dataclass
class Record:
    """One stored calibration: its JSON metadata and its arrays."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, NDArray]

    @property
    def routine(self) -> str:
        """Routine name."""
        return str(self.meta["routine"])

    @property
    def created(self) -> _dt.datetime:
        """UTC creation time."""
        return _parse_time(self.meta["created_utc"], self.path)


def _safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return s or "bench"


def contained(root: Path, *names: str) -> Path:
    """root / the sanitised names; one-line error unless the resolved path stays inside root."""
    path = Path(root).joinpath(*(_safe(n) for n in names))
    base = Path(root).resolve()
    if not path.resolve().is_relative_to(base):
        raise CalibrationError(f"{path}: path built from {'/'.join(map(str, names))!r}: expected a folder inside "
                               f"{base}")
    return path


def _parse_time(text: Any, path: Path) -> _dt.datetime:
    try:
        t = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        raise CalibrationError(f"{path}: created_utc: expected an ISO date, got {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if np.isfinite(f) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


class CalibrationStore:
    """A directory of versioned calibration records."""

    #: longest wait (s) for another process's "pick the next version + write" before an error
    lock_timeout: float = 60.0

    def __init__(self, root: str | Path | None):
        if root is None:
            raise CalibrationError("no calibration store: set processor.calibration.store in the config or pass --store")
        self.root = Path(root)

    def routine_dir(self, bench: str, routine: str) -> Path:
        """Folder of one routine's records for one bench (names sanitised; always inside the store)."""
        return contained(self.root, bench, routine)

    def plot_dir(self, bench: str, stamp: str) -> Path:
        """<store>/<bench>/plots/<stamp>: where a calibration run's figures go (always inside the store)."""
        return contained(self.root, bench, "plots", stamp)

    def _locked(self, folder: Path) -> Any:
        """The store's lock for one routine folder, a file beside it (filelock, bounded wait)."""
        from filelock import FileLock

        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CalibrationError(f"{folder}: cannot create the calibration folder ({exc.strerror})") from None
        return FileLock(str(folder.parent / f".{folder.name}.lock"), timeout=self.lock_timeout)

    def records(self, bench: str, routine: str) -> list[Path]:
        """JSON paths of a routine's records, newest version first."""
        d = self.routine_dir(bench, routine)
        if not d.is_dir():
            return []
        found = []
        for p in d.iterdir():
            m = _NAME.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found, reverse=True)]

    def save(self, result: CalibrationResult, bench: str, layout: dict[str, Any],
             created: _dt.datetime | None = None) -> Path:
        """Write a result as the routine's next version; returns the JSON path."""
        from filelock import Timeout

        folder = self.routine_dir(bench, result.routine)
        try:
            with self._locked(folder):   # "pick the next version + write" is one step for concurrent runs
                return self._save_locked(result, bench, layout, created)
        except Timeout:
            raise CalibrationError(f"{folder}: store lock: expected to get it within {self.lock_timeout:g} s; another "
                                   f"calibration is saving (or hung) - retry when it has finished") from None

    def _save_locked(self, result: CalibrationResult, bench: str, layout: dict[str, Any],
                     created: _dt.datetime | None) -> Path:
        created = created or _dt.datetime.now(_dt.timezone.utc)
        existing = self.records(bench, result.routine)
        version = (int(_NAME.match(existing[0].name).group(1)) + 1) if existing else 1  # type: ignore[union-attr]
        stamp = created.strftime("%Y%m%dT%H%M%S%fZ")
        stem = self.routine_dir(bench, result.routine) / f"v{version:04d}_{stamp}"
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in result.arrays.items()}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        blob = buf.getvalue()
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "routine": result.routine,
            "routine_version": result.version, "record_version": version, "bench": bench,
            "created_utc": created.isoformat(), "instruments": result.instruments, "layout": layout,
            "counts": result.counts.as_dict(), "seconds": result.seconds, "ok": result.ok,
            "problems": result.problems, "fit": result.meta,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            "npz_file": stem.name + ".npz", "npz_sha256": hashlib.sha256(blob).hexdigest(),
        }
        atomic_write_bytes(stem.with_suffix(".npz"), blob)
        atomic_write_bytes(stem.with_suffix(".json"), (json.dumps(_jsonable(meta), indent=1) + "\n").encode())
        return stem.with_suffix(".json")

    def read(self, json_path: str | Path) -> Record:
        """Read and verify one record; any corruption raises CalibrationError in one line."""
        path = Path(json_path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"{path}: cannot read calibration metadata ({getattr(exc, 'strerror', None) or exc}); "
                                   "expected a UTF-8 JSON file") from None
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"{path}: corrupted calibration metadata: invalid JSON at line {exc.lineno}; "
                                   "expected the JSON lightloop calibrate writes") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CalibrationError(f"{path}: format: expected '{FORMAT}' metadata")
        for key in ("format_version", "routine", "routine_version", "bench", "created_utc", "instruments", "layout",
                    "arrays", "npz_file", "npz_sha256"):
            if key not in meta:
                raise CalibrationError(f"{path}: {key}: missing from the calibration metadata (expected every key "
                                       f"lightloop calibrate writes)")
        if not isinstance(meta["format_version"], int) or meta["format_version"] > FORMAT_VERSION:
            raise CalibrationError(f"{path}: format_version: expected <= {FORMAT_VERSION}, got {meta['format_version']!r}"
                                   f" (written by a newer lightloop)")
        _parse_time(meta["created_utc"], path)
        npz = path.parent / str(meta["npz_file"])
        try:
            blob = npz.read_bytes()
        except OSError:
            raise CalibrationError(f"{npz}: calibration arrays missing; expected the file metadata {path.name} "
                                   f"names") from None
        if hashlib.sha256(blob).hexdigest() != meta["npz_sha256"]:
            raise CalibrationError(f"{npz}: corrupted calibration arrays: SHA-256 does not match; expected the one "
                                   f"recorded in {path.name}")
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files}
        except Exception as exc:  # noqa: BLE001 - any unreadable NPZ is one clear error
            raise CalibrationError(f"{npz}: corrupted calibration arrays: {type(exc).__name__}; expected a readable NPZ") from None
        declared = meta["arrays"]
        if set(declared) != set(arrays):
            raise CalibrationError(f"{npz}: arrays {sorted(arrays)}: expected those the metadata declares, "
                                   f"{sorted(declared)}")
        for k, spec in declared.items():
            if list(arrays[k].shape) != list(spec.get("shape", [])):
                raise CalibrationError(f"{npz}: array '{k}': shape {list(arrays[k].shape)}, "
                                       f"expected {spec.get('shape')} as the metadata declares")
            if not np.all(np.isfinite(arrays[k])):
                raise CalibrationError(f"{npz}: array '{k}': contains NaN or inf; expected finite values")
        return Record(path, meta, arrays)


def check_record(rec: Record, routine: Routine, proc: OpticalProcessor, bench: str,
                 max_age_days: float | None, now: _dt.datetime | None = None) -> tuple[list[str], bool]:
    """Reasons a record does not fit this bench (empty: it fits); second item: only staleness."""
    problems: list[str] = []
    if rec.meta["routine"] != routine.name:
        problems.append(f"routine: record is '{rec.meta['routine']}', expected '{routine.name}'")
    if str(rec.meta["routine_version"]).split(".")[0] != str(routine.version).split(".")[0]:
        problems.append(f"routine_version: record has {rec.meta['routine_version']}, this lightloop "
                        f"needs {routine.version} (expected major version {str(routine.version).split('.')[0]})")
    if rec.meta["bench"] != bench:
        problems.append(f"bench: recorded on '{rec.meta['bench']}', expected '{bench}' (this bench)")
    layout = routine.layout(proc)
    for k, v in layout.items():
        if _jsonable(rec.meta["layout"].get(k)) != _jsonable(v):
            problems.append(f"layout.{k}: calibrated for {rec.meta['layout'].get(k)!r}, expected {v!r} (this bench)")
    now_ids = routine.instruments(proc)
    for role, ident in rec.meta["instruments"].items():
        if role in now_ids and now_ids[role] != ident:
            problems.append(f"instruments.{role}: calibrated with '{ident}', connected is '{now_ids[role]}' "
                            f"(expected the same instrument)")
    hardware = bool(problems)
    if max_age_days is not None:
        now = now or _dt.datetime.now(_dt.timezone.utc)
        age = (now - rec.created).total_seconds() / 86400.0
        if age > max_age_days:
            problems.append(f"created_utc: record is {age:.1f} days old, the config allows {max_age_days:g} "
                            f"(expected a newer calibration)")
    return problems, bool(problems) and not hardware


def load_into_processor(proc: OpticalProcessor, store: CalibrationStore, bench: str,
                        max_age_days: float | None = None, on_mismatch: str = "error",
                        now: _dt.datetime | None = None) -> list[dict[str, Any]]:
    """Apply the newest fitting record of every applicable routine to the HAL maps; returns what was loaded."""
    chosen: list[tuple[Record, Routine]] = []
    for routine in routines_for(proc):
        paths = store.records(bench, routine.name)
        for i, path in enumerate(paths):
            rec = store.read(path)
            problems, stale_only = check_record(rec, routine, proc, bench, max_age_days, now)
            if not problems:
                chosen.append((rec, routine))
                break
            msg = f"{path}: " + "; ".join(problems)
            if on_mismatch == "error":
                raise CalibrationError(msg)
            if i == 0:
                warnings.warn(msg, CalibrationWarning, stacklevel=2)
            if stale_only:
                chosen.append((rec, routine))
                break
    chosen.sort(key=lambda rr: (rr[0].created, rr[1].order))
    log = []
    for rec, routine in chosen:
        try:
            routine.apply(proc, rec.arrays, rec.meta)
        except (KeyError, ValueError, IndexError) as exc:
            raise CalibrationError(f"{rec.path}: cannot apply to this bench: {type(exc).__name__}: {exc}; expected a "
                                   f"record of this bench's layout") from None
        log.append({"routine": routine.name, "path": str(rec.path), "record_version": rec.meta.get("record_version"),
                    "created_utc": rec.meta["created_utc"]})
    return log
