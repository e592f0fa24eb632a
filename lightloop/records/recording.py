"""RunRecording: the provenance files every train, calibrate and sweep run writes next to its results.

    <folder>/record.json    kind, status, times, command line, versions, git revision, config file and
                            digest, calibration records loaded, file list, earlier sessions (resumes)
    <folder>/config.yaml    the resolved config (the file as loaded, command-line settings applied)
    <folder>/station.json   QCoDeS snapshot of every connected instrument (the twin's public settings)
    <folder>/summary.json   the run's JSON summary (what --json prints)
    <folder>/run.log        the "lightloop" logger's records during the run (appended on resume)
    <folder>/run.db         training runs: the QCoDeS DataSet (lightloop.records.dataset)
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lightloop.atomic_io import atomic_write_bytes, atomic_write_text
from lightloop.errors import RunFolderError
import lightloop.records.provenance as pv

__all__ = ["RunRecording", "RECORD_NAME", "RECORD_FORMAT", "CONFIG_NAME", "STATION_NAME", "SUMMARY_NAME",
           "LOG_NAME", "LOG_FORMAT"]

RECORD_NAME = "record.json"
RECORD_FORMAT = "lightloop-record"
CONFIG_NAME = "config.yaml"
STATION_NAME = "station.json"
SUMMARY_NAME = "summary.json"
LOG_NAME = "run.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOG = logging.getLogger("lightloop.records")


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class RunRecording:
    """Context manager around one run: writes the provenance at the start, a log file for its duration,
    and (finish) the summary and, for training, the QCoDeS DataSet."""

    def __init__(self, folder: Path | str, kind: str, *, cfg: Any = None, config_path: Path | str | None = None,
                 args: Any = None, settings: dict[str, Any] | None = None):
        self.folder, self.kind = Path(folder), kind
        self.cfg, self.args, self.settings = cfg, args, settings
        self.config_path = Path(config_path) if config_path is not None else None
        self.record: dict[str, Any] = {}
        self.snapshot: dict[str, Any] | None = None
        self.calibration: list[dict[str, Any]] = []
        self._proc: Any = None
        self._steps: dict[str, list[float]] = {"global_step": [], "loss": [], "epoch": []}
        self._handler: logging.Handler | None = None
        self._level_set = False
        self._previous: dict[str, bytes] = {}

    # --- start -----------------------------------------------------------------------------
    def __enter__(self) -> RunRecording:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f"{self.folder}: run records: cannot create the folder ({exc.strerror}); "
                                 "expected a writable run folder") from None
        self._start_log()
        try:
            self._begin()
        except BaseException:
            self._stop_log()
            raise
        return self

    def _begin(self) -> None:
        """Write record.json (status running) and config.yaml; keep what a refused resume must restore."""
        earlier = self._earlier_sessions()
        # a run refused before it touches anything (e.g. a --resume whose settings differ) restores these
        self._previous = {n: (self.folder / n).read_bytes() for n in (RECORD_NAME, CONFIG_NAME)
                          if (self.folder / n).is_file()} if earlier else {}
        cfg_file = self.config_path.absolute() if self.config_path is not None else None
        self.record = {
            "format": RECORD_FORMAT, "kind": self.kind, "status": "running", "started_utc": pv.now_utc(),
            "bench": getattr(self.cfg, "bench", None), "command": pv.command_line(self.args),
            "versions": pv.versions(), "git": pv.git_revision(),
            "config": {"file": str(cfg_file) if cfg_file else None,
                       "file_sha256": _digest(cfg_file) if cfg_file else None, "resolved": CONFIG_NAME},
            "settings": pv.jsonable(self.settings or {}), "calibration_records": [], "sessions": earlier,
        }
        if self.cfg is not None:
            text = yaml.safe_dump(pv.resolved_config(self.cfg, self.settings), sort_keys=False)
            header = (f"# resolved config of a lightloop {self.kind} run ({self.record['started_utc']}): "
                      f"{cfg_file or 'config in memory'} with the run's command-line settings applied\n")
            self._write(CONFIG_NAME, header + text)
        self._write_record()
        _LOG.debug("run records in %s", self.folder)

    def _earlier_sessions(self) -> list[dict[str, Any]]:
        """Sessions of an earlier record in this folder (a resumed run keeps its history of starts)."""
        try:
            old = json.loads((self.folder / RECORD_NAME).read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(old, dict) or old.get("format") != RECORD_FORMAT:
            return []
        keep = {k: old.get(k) for k in ("started_utc", "finished_utc", "status", "git", "versions")}
        keep["argv"] = (old.get("command") or {}).get("argv")
        return [*old.get("sessions", []), keep]

    def _start_log(self) -> None:
        logger = logging.getLogger("lightloop")
        try:
            handler = logging.FileHandler(self.folder / LOG_NAME, mode="a", encoding="utf-8")
        except OSError as exc:
            raise RunFolderError(f"{self.folder / LOG_NAME}: cannot open the run's log file ({exc.strerror}); "
                                 "expected a writable run folder") from None
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:   # nobody chose a level (--log-level): the file gets INFO and up
            logger.setLevel(logging.INFO)
            self._level_set = True
        self._handler = handler

    def _log_to_file(self, level: int, message: str) -> None:
        """A line in run.log only (the command prints the error itself, in one stderr line)."""
        if self._handler is not None:
            self._handler.handle(_LOG.makeRecord(_LOG.name, level, __file__, 0, message, (), None))

    def _stop_log(self) -> None:
        if self._handler is None:
            return
        logger = logging.getLogger("lightloop")
        logger.removeHandler(self._handler)
        self._handler.close()
        self._handler = None
        if self._level_set:
            logger.setLevel(logging.NOTSET)
            self._level_set = False

    # --- during ----------------------------------------------------------------------------
    def attach(self, proc: Any) -> None:
        """Record the processor's station snapshot and calibration records; collect per-step losses."""
        self._proc = proc
        self.take_snapshot()
        self.calibration = pv.calibration_ids(proc)
        self.record["calibration_records"] = self.calibration
        self._write_record()
        hooks = getattr(proc, "step_hooks", None)
        if isinstance(hooks, list):
            proc.step_hooks = [*hooks, self._on_step]

    def take_snapshot(self) -> None:
        """(Re)take the station snapshot (instruments connected so far) and write station.json."""
        if self._proc is None:
            return
        self.snapshot = pv.station_snapshot(self._proc, self.cfg)
        twin = self.snapshot["lightloop"]["twin"].get("processor.twin")
        if isinstance(twin, dict) and "ideal" in twin and (self.settings or {}).get("ideal") is not None:
            twin["ideal"] = bool(self.settings["ideal"])   # --ideal / --realistic as the run used them
        self._write(STATION_NAME, json.dumps(self.snapshot, indent=1, sort_keys=True) + "\n")

    def _on_step(self, info: dict[str, Any]) -> None:
        if not self._steps["loss"]:   # after the first step every instrument the run uses is connected
            self.take_snapshot()
        self._steps["global_step"].append(float(info.get("global_step", len(self._steps["loss"]) + 1)))
        self._steps["loss"].append(float(info.get("loss", np.nan)))
        self._steps["epoch"].append(float(info.get("epoch", 0)))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is not None and self.kind == "train" and self._proc is None and self._previous:
                for name, data in self._previous.items():   # refused before it started: the folder stays as it was
                    atomic_write_bytes(self.folder / name, data)
                why = " ".join(f"{exc_type.__name__}: {exc}".split())[:500]
                self._log_to_file(logging.ERROR, f"run refused: {why}")
            elif exc_type is not None:
                self.record["status"] = "interrupted" if not issubclass(exc_type, Exception) else "failed"
                self.record["error"] = " ".join(f"{exc_type.__name__}: {exc}".split())[:500]
                self.record["finished_utc"] = pv.now_utc()
                self._write_record()
                self._log_to_file(logging.ERROR, f"run {self.record['status']}: {self.record['error']}")
        finally:
            self._stop_log()

    # --- end -------------------------------------------------------------------------------
    def finish(self, summary: dict[str, Any], history: list[dict[str, Any]] | None = None,
               calibration: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Write summary.json, the QCoDeS DataSet (training: history given) and the final record.json."""
        if calibration is not None:
            self.calibration = pv.jsonable(calibration)
            self.record["calibration_records"] = self.calibration
        summary = pv.jsonable(summary)
        self._write(SUMMARY_NAME, json.dumps(summary, indent=1) + "\n")
        if self.snapshot is None and self.cfg is not None:   # no processor here (a sweep): the config's side only
            self._write(STATION_NAME, json.dumps(pv.station_snapshot(None, self.cfg), indent=1, sort_keys=True) + "\n")
        files = [CONFIG_NAME, STATION_NAME, SUMMARY_NAME, LOG_NAME]
        if history is not None:
            try:
                self.record["dataset"] = self._write_dataset(summary, history)
                files.append(self.record["dataset"]["file"])
            except Exception as exc:  # noqa: BLE001 - a finished training is not lost to a database problem
                why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                self.record["dataset"] = {"error": why}
                _LOG.warning("%s: the QCoDeS dataset was not written (%s); metrics.jsonl holds the metrics",
                             self.folder, why)
        self.record.update({"status": "finished", "finished_utc": pv.now_utc(), "summary": summary,
                            "files": [f for f in files if (self.folder / f).exists()]})
        self._write_record()
        return self.record

    def _write_dataset(self, summary: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
        import lightloop.records.dataset as dset

        first = int(min(self._steps["epoch"])) if self._steps["epoch"] else len(history) + 1
        old = dset.previous_steps(self.folder, first)
        steps = {k: np.concatenate([np.asarray(old[k], float), np.asarray(self._steps[k], float)]) for k in old}
        snapshot = self.snapshot or {}
        meta = {"lightloop_provenance": {k: v for k, v in self.record.items() if k != "summary"},
                "lightloop_summary": summary, "lightloop_run_folder": str(self.folder.resolve())}
        bench = str(self.record.get("bench") or "bench")
        guid = dset.write_training_dataset(self.folder, self.folder.name, bench, history, steps,
                                           snapshot, meta)
        return {"file": dset.DB_NAME, "guid": guid, "experiment": dset.EXPERIMENT, "sample": bench,
                "captured_run_id": 1, "epochs": len(history), "steps": int(steps["loss"].size)}

    def _write(self, name: str, text: str) -> None:
        try:
            atomic_write_text(self.folder / name, text)
        except OSError as exc:
            raise RunFolderError(f"{self.folder / name}: cannot write the run record ({exc.strerror}); "
                                 "expected a writable run folder") from None

    def _write_record(self) -> None:
        self._write(RECORD_NAME, json.dumps(pv.jsonable(self.record), indent=1) + "\n")
