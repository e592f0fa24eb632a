"""What a run was: versions, git revision, command line, resolved config, station snapshot, calibration ids."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["now_utc", "versions", "git_revision", "command_line", "resolved_config", "station_snapshot",
           "calibration_ids", "jsonable", "GIT_TIMEOUT_S"]

#: longest wait for one `git` call (seconds); a slow or hanging git is recorded as unknown
GIT_TIMEOUT_S = 5.0
#: distributions whose versions every record carries
_DISTS = ("numpy", "scipy", "qcodes", "pyvisa", "pydantic", "xarray")


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def jsonable(value: Any) -> Any:
    """value as plain JSON types (numpy scalars and arrays, paths, sets and other objects become numbers/lists/text)."""
    return json.loads(json.dumps(value, default=_default))


def _default(o: Any) -> Any:
    tolist = getattr(o, "tolist", None)
    if tolist is not None:
        return tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def versions() -> dict[str, str]:
    """Versions of lightloop, python and the stack (numpy, qcodes, ...); 'not installed' where absent."""
    from importlib import metadata

    from lightloop import __version__

    out = {"lightloop": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in _DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                             check=False)
    except (OSError, subprocess.SubprocessError):   # no git, or it hung past the timeout
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_revision(package_dir: Path | None = None) -> dict[str, Any] | None:
    """{'revision', 'dirty', 'root'} of the checkout lightloop runs from; None when not run from a git checkout."""
    pkg = (package_dir or Path(__file__).resolve().parent.parent).resolve()
    root = _git(["rev-parse", "--show-toplevel"], pkg)
    if not root or Path(root).resolve() != pkg.parent:   # the package must be this checkout's own lightloop/
        return None
    rev = _git(["rev-parse", "HEAD"], pkg)
    if not rev:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], pkg)
    return {"revision": rev, "dirty": None if status is None else bool(status), "root": root}


def command_line(args: Any = None) -> dict[str, Any]:
    """The process's argv and working directory, and the parsed options (a sweep point's are its own)."""
    out: dict[str, Any] = {"argv": list(sys.argv), "cwd": os.getcwd(), "pid": os.getpid()}
    if args is not None:
        out["options"] = jsonable({k: v for k, v in vars(args).items() if k != "handler" and not callable(v)})
    return out


def _resolve_store(data: dict[str, Any], source: str) -> None:
    """A relative processor.calibration.store becomes absolute (the copy lives elsewhere than the original)."""
    cal = data.get("processor", {}).get("calibration") if isinstance(data.get("processor"), dict) else None
    if isinstance(cal, dict) and cal.get("store") and not Path(cal["store"]).expanduser().is_absolute() \
            and source not in ("", "<memory>"):
        cal["store"] = os.path.normpath(Path(source).absolute().parent / Path(cal["store"]).expanduser())


def resolved_config(cfg: Any, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config as the run used it: the loaded file with the command line's training/build settings applied."""
    data = cfg.model_dump(mode="json")
    _resolve_store(data, str(getattr(cfg, "source", "")))
    s = dict(settings or {})
    train = data.setdefault("training", {})
    for key in ("dataset", "gradient", "gradient_options", "loss", "optimizer", "lr", "batch_size", "seed",
                "init_scale", "epochs"):
        if s.get(key) is not None:
            train[key] = jsonable(s[key])
    proc = data.get("processor")
    if isinstance(proc, dict):
        for key in ("hidden", "optical_depth"):
            if s.get(key) is not None and key in proc:
                proc[key] = jsonable(s[key])
        if s.get("ideal") is not None and isinstance(proc.get("twin"), dict) and "ideal" in proc["twin"]:
            proc["twin"]["ideal"] = bool(s["ideal"])
        if s.get("calibration_store") is not None and isinstance(proc.get("calibration"), dict):
            proc["calibration"]["store"] = str(s["calibration_store"])   # the store the run actually used
    return data


def _public_twin(cfg: Any) -> dict[str, Any]:
    """The config's public twin settings (seeds, ideal, noise figures): never the emulator's drawn truth."""
    out: dict[str, Any] = {}
    proc = getattr(cfg, "processor", None)
    twin = getattr(proc, "twin", None)
    if twin is not None:
        out["processor.twin"] = jsonable(twin.model_dump(mode="json") if hasattr(twin, "model_dump") else twin)
    for section in ("emulator", "feedback"):
        value = getattr(cfg, section, None)
        if value is not None:
            out[section] = jsonable(value.model_dump(mode="json") if hasattr(value, "model_dump") else value)
    return out


def station_snapshot(proc: Any | None, cfg: Any = None) -> dict[str, Any]:
    """QCoDeS snapshot (cached values, no wire traffic) of every connected instrument; the twin's public settings."""
    station = getattr(proc, "station", None)
    instruments: dict[str, Any] = {}
    if station is not None:
        for name, link in getattr(station, "links", {}).items():
            driver = getattr(link, "driver", None)
            if driver is None:
                instruments[name] = {"connected": False}
                continue
            try:
                instruments[name] = jsonable(driver.snapshot(update=False))
            except Exception as exc:  # noqa: BLE001 - a driver whose snapshot fails is recorded, not fatal
                instruments[name] = {"snapshot_error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
    mode = getattr(station, "mode", None) if station is not None else "twin"
    if proc is None:   # a command that connects nothing itself (a sweep): each run folder holds its own snapshot
        mode = "none connected by this command (each run's station.json has its instruments)"
    identities = {}
    for name, link in (getattr(station, "links", {}) if station is not None else {}).items():
        try:
            identities[name] = str(link.identity)   # as the instrument reported it when connecting
        except Exception as exc:  # noqa: BLE001 - an identity that cannot be read is recorded as such
            identities[name] = f"unknown ({type(exc).__name__})"
    return {"station": {"instruments": instruments, "parameters": {}, "components": {}, "config": None},
            "lightloop": {"bench": getattr(proc, "bench_name", "") or getattr(cfg, "bench", ""), "instruments": mode,
                          "identities": identities,
                          "twin": _public_twin(cfg) if cfg is not None and mode not in ("drivers", None) else {},
                          "taken_utc": now_utc()}}


def calibration_ids(proc: Any) -> list[dict[str, Any]]:
    """The calibration records the processor loaded (routine, version, creation time, file)."""
    return jsonable(list(getattr(proc, "calibration_log", None) or []))
