"""Run folders: unique names, a lock held for the whole run, and a run.json fingerprint checked on resume.

A run folder holds one training run: checkpoint.npz, best.npz, metrics.jsonl, learning_curve.png and
run.json (the manifest: what the run was started with, and every change accepted on a resume). While
a run works in a folder it holds an exclusive file lock on `.lightloop.lock` (the kernel drops it when
the process dies, even on kill -9); a second run on the same folder fails at once, naming the holder.
A folder holding results of an earlier run is only reused with resume, and resume verifies that the
settings fingerprint matches (or records the change when the caller accepts it).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lightloop.atomic_io import atomic_write_text
from lightloop.errors import RunFolderError

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "RESULT_FILES", "RunFolder", "unique_run_dir", "check_out_dir",
           "file_digest", "runs_root"]

LOCK_NAME = ".lightloop.lock"
HOLDER_NAME = ".lightloop-holder.json"
MANIFEST_NAME = "run.json"
RESULT_FILES = ("checkpoint.npz", "metrics.jsonl", "best.npz")
MANIFEST_FORMAT = "lightloop-run"
_MISSING = "(not recorded)"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def runs_root() -> Path:
    """Where new run folders go by default: $LIGHTLOOP_RUNS_DIR, else ./runs."""
    return Path(os.environ.get("LIGHTLOOP_RUNS_DIR") or "runs")


def unique_run_dir(root: Path | str | None = None, prefix: str = "train") -> Path:
    """Create and return a new folder root/<prefix>-<YYYYmmdd-HHMMSS>-<random hex> (never an existing one); root
    defaults to `runs_root()`."""
    root = Path(root) if root is not None else runs_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(64):
        path = root / f"{prefix}-{stamp}-{secrets.token_hex(3)}"
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(f"{root}: --out: cannot create a run folder here ({exc.strerror})") from None
    raise RunFolderError(f"{root}: --out: could not find an unused run folder name")  # pragma: no cover


def check_out_dir(path: Path) -> None:
    """Create the run folder if needed; one-line error if it is a file or not writable."""
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path}: --out: expected a run folder, found an existing file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"{path}: --out: expected a folder that can be created ({exc.strerror})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".lightloop-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunFolderError(f"{path}: --out: expected a writable folder ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunFolderError(f"{path}: --out: expected a writable folder (permission denied)")


def file_digest(path: Path | str) -> str:
    """SHA-256 of a YAML file's parsed content (comments and layout may change), else of its bytes."""
    raw = Path(path).read_bytes()
    try:
        import yaml

        content = json.dumps(yaml.safe_load(raw), sort_keys=True, default=str).encode()
    except Exception:  # noqa: BLE001 - an unparsable file is fingerprinted by its bytes
        content = raw
    return hashlib.sha256(content).hexdigest()


def _canonical(value: Any) -> Any:
    """The value as run.json stores it (tuples become lists, numpy scalars plain numbers)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _differences(old: Any, new: Any, key: str) -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k, _MISSING), new.get(k, _MISSING), f"{key}.{k}")
        return out
    return [] if old == new else [(key, old, new)]


class RunFolder:
    """One run's folder, locked while open; verify() checks or records the run's settings fingerprint."""

    def __init__(self, path: Path | str, resume: bool = False, accept_change: bool = False,
                 lock_timeout: float = 0.0):
        self.path = Path(path)
        self.resume, self.accept_change, self.lock_timeout = bool(resume), bool(accept_change), lock_timeout
        self.manifest: dict[str, Any] = {}
        self._lock: Any = None
        self._change: dict[str, Any] | None = None

    @property
    def manifest_path(self) -> Path:
        """run.json of this folder."""
        return self.path / MANIFEST_NAME

    @property
    def checkpoint(self) -> Path:
        """checkpoint.npz of this folder."""
        return self.path / "checkpoint.npz"

    # --- lock ------------------------------------------------------------------------------
    def __enter__(self) -> RunFolder:
        from filelock import FileLock, Timeout

        check_out_dir(self.path)
        lock = FileLock(str(self.path / LOCK_NAME), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise RunFolderError(f"{self.path}: run folder is in use by another run ({self._holder()}); "
                                 "expected a folder no other run holds: wait for it to end or choose another --out") from None
        except OSError as exc:
            raise RunFolderError(f"{self.path}: --out: cannot lock the run folder ({exc.strerror}); expected a writable "
                                 f"folder whose {LOCK_NAME} is a file") from None
        self._lock = lock
        try:
            atomic_write_text(self.path / HOLDER_NAME, json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "since_utc": _now(), "argv": sys.argv}))
            self._check_contents()
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._lock is None:
            return
        try:
            (self.path / HOLDER_NAME).unlink(missing_ok=True)
        except OSError:
            pass
        self._lock.release()
        self._lock = None

    @property
    def locked(self) -> bool:
        """Whether this object holds the folder's lock."""
        return self._lock is not None

    def _holder(self) -> str:
        try:
            h = json.loads((self.path / HOLDER_NAME).read_text())
            return f"pid {h['pid']} on {h['host']} since {h['since_utc']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    # --- contents --------------------------------------------------------------------------
    def _check_contents(self) -> None:
        if not self.resume:
            left = [n for n in RESULT_FILES if (self.path / n).exists() and (self.path / n).stat().st_size > 0]
            if left:
                raise RunFolderError(f"{self.path}: --out: holds an earlier run ({', '.join(left)}); pass --resume "
                                     f"to continue it or choose another --out")
            return
        if not self.checkpoint.is_file():
            raise RunFolderError(f"{self.checkpoint}: --resume: expected a checkpoint to resume from, found none")
        if not self.manifest_path.exists():
            if not self.accept_change:
                raise RunFolderError(f"{self.manifest_path}: --resume: missing, so the run's settings cannot be "
                                     f"verified; pass --accept-change to resume without the check")
            self.manifest = {"format": MANIFEST_FORMAT, "created_utc": _now(), "fingerprint": {},
                             "changes": [{"time_utc": _now(), "accepted": "run.json was missing"}]}
            return
        try:
            m = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{self.manifest_path}: expected a JSON run manifest "
                                 f"({type(exc).__name__})") from None
        if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT or not isinstance(m.get("fingerprint"), dict):
            raise RunFolderError(f"{self.manifest_path}: fingerprint: expected a '{MANIFEST_FORMAT}' manifest "
                                 f"with a fingerprint object")
        self.manifest = m

    def verify(self, fingerprint: dict[str, Any], info: dict[str, Any] | None = None) -> None:
        """Record the fingerprint in run.json; on resume first compare (error, or with accept_change a logged change)."""
        if self._lock is None:
            raise RunFolderError(f"{self.path}: run folder used without holding its lock")
        new = _canonical(fingerprint)
        m = self.manifest
        if not m:
            m.update({"format": MANIFEST_FORMAT, "created_utc": _now(), "fingerprint": {}, "changes": []})
        if self.resume:
            old = m["fingerprint"]
            diffs = [d for k in sorted(new) for d in _differences(old.get(k, _MISSING), new[k], k)]
            if diffs and not self.accept_change:
                what = "; ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in diffs)
                raise RunFolderError(f"{self.checkpoint}: --resume: the run was started with other settings "
                                     f"({what}); pass --accept-change to continue with the new ones")
            if diffs:   # one entry per resume, whatever number of verify() calls it takes
                if self._change is None:
                    self._change = {"time_utc": _now(), "accepted": {}}
                    m.setdefault("changes", []).append(self._change)
                self._change["accepted"].update({k: {"old": o, "new": n} for k, o, n in diffs})
        m["fingerprint"].update(new)
        if info:
            m.setdefault("info", {}).update(_canonical(info))
        if self.resume:
            m["resumed_utc"] = _now()
        self._write()

    def _write(self) -> None:
        try:
            atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=1, sort_keys=True) + "\n")
        except OSError as exc:
            raise RunFolderError(f"{self.manifest_path}: cannot write the run manifest ({exc.strerror})") from None
