"""A training run as a QCoDeS DataSet: one SQLite database per run folder (<run>/run.db), one dataset in it.

Parameters: per epoch (setpoint ``epoch``) the epoch's metrics (train/test loss and accuracy, seconds,
throughput); per optimiser step (setpoint ``global_step``) the step's loss ``step_loss`` and its
``step_epoch``. The station snapshot, provenance and summary are metadata (``lightloop_station``,
``lightloop_provenance``, ``lightloop_summary``, JSON text); the station snapshot is also the dataset's
QCoDeS snapshot unless a default ``qcodes.Station`` of the lab gave it one. The database is opened through an
explicit connection: the user's QCoDeS configuration (``db_location``) is never changed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lightloop.errors import RunFolderError

__all__ = ["DB_NAME", "EXPERIMENT", "EPOCH_METRICS", "write_training_dataset", "load_training_dataset",
           "previous_steps", "to_xarray", "netcdf_engine"]

DB_NAME = "run.db"
EXPERIMENT = "lightloop"
#: per-epoch metrics stored as parameters (the Trainer's history keys)
EPOCH_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "epoch_seconds",
                 "samples_per_second", "measurements_per_step")
_TEMPLATE: bytes | None = None   # an empty database with qcodes' schema (built once per process)
_UNITS = {"epoch_seconds": "s", "samples_per_second": "1/s"}


def _connect(path: Path, read_only: bool = False) -> Any:
    from qcodes.dataset import connect

    return connect(str(path), read_only=read_only)


def write_training_dataset(run_dir: Path, name: str, sample: str, history: Sequence[dict[str, Any]],
                           steps: dict[str, np.ndarray], snapshot: dict[str, Any], metadata: dict[str, Any]) -> str:
    """Write <run>/run.db afresh (atomically replaced) holding one dataset of the run; returns its GUID."""
    from qcodes.dataset import Measurement, load_or_create_experiment

    run_dir = Path(run_dir)
    tmp = run_dir / f".{DB_NAME}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    global _TEMPLATE
    if _TEMPLATE is None:   # qcodes creates and upgrades the schema once per process; later runs copy it
        _connect(tmp).close()
        _TEMPLATE = tmp.read_bytes()
    else:
        tmp.write_bytes(_TEMPLATE)
    conn = _connect(tmp)
    conn.execute("PRAGMA synchronous=OFF")   # one fsync of the finished file below instead of one per commit
    try:
        exp = load_or_create_experiment(EXPERIMENT, sample_name=sample, conn=conn)
        meas = Measurement(exp=exp, name=name)
        meas.register_custom_parameter("epoch", label="epoch", unit="")
        for key in EPOCH_METRICS:
            meas.register_custom_parameter(key, label=key.replace("_", " "), unit=_UNITS.get(key, ""),
                                           setpoints=("epoch",))
        meas.register_custom_parameter("global_step", label="optimiser step", unit="")
        meas.register_custom_parameter("step_loss", label="step loss", unit="", setpoints=("global_step",))
        meas.register_custom_parameter("step_epoch", label="epoch of the step", unit="", setpoints=("global_step",))
        with contextlib.redirect_stdout(io.StringIO()):   # qcodes prints the run id: stdout keeps the --json line
            with meas.run() as saver:
                if history:
                    saver.add_result(("epoch", np.array([int(r["epoch"]) for r in history], dtype=np.int64)),
                                     *((key, np.array([float(r.get(key, np.nan)) for r in history]))
                                       for key in EPOCH_METRICS))
                gs, loss, ep = (np.asarray(steps.get(k, ()), dtype=np.float64)
                                for k in ("global_step", "loss", "epoch"))
                if gs.size:   # numeric arrays are unrolled into rows in one insert
                    saver.add_result(("global_step", gs.astype(np.int64)), ("step_loss", loss),
                                     ("step_epoch", ep.astype(np.int64)))
                ds = saver.dataset
        metadata = {**metadata, "lightloop_station": snapshot}
        if "station" not in (ds.snapshot or {}):   # a lab's default qcodes Station snapshot is kept; else ours
            ds.add_snapshot(json.dumps(snapshot), overwrite=True)   # replaces that of the bare custom parameters
        for tag, value in metadata.items():
            ds.add_metadata(tag, value if isinstance(value, (str, int, float)) else json.dumps(value))
        guid = ds.guid
    finally:
        conn.close()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / DB_NAME)
    return guid


def load_training_dataset(run_dir: Path) -> Any:
    """The run's QCoDeS DataSet (qcodes' own loader on <run>/run.db); one-line error when there is none."""
    from qcodes.dataset import load_by_run_spec

    path = Path(run_dir) / DB_NAME
    if not path.is_file():
        raise RunFolderError(f"{path}: missing; expected the QCoDeS database of a training run "
                             "(written when `lightloop train` finishes)")
    try:
        return load_by_run_spec(captured_run_id=1, conn=_connect(path, read_only=True))
    except Exception as exc:  # noqa: BLE001 - sqlite/qcodes raise many kinds; the message names the file
        raise RunFolderError(f"{path}: cannot be read as a QCoDeS database ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}); expected the database lightloop wrote") from None


def previous_steps(run_dir: Path, before_epoch: int) -> dict[str, np.ndarray]:
    """Step losses of epochs < before_epoch from an earlier session's run.db (a resumed run keeps them)."""
    empty = {k: np.zeros(0) for k in ("global_step", "loss", "epoch")}
    if before_epoch <= 1 or not (Path(run_dir) / DB_NAME).is_file():
        return empty
    try:
        data = load_training_dataset(run_dir).get_parameter_data("step_loss", "step_epoch")
    except Exception:  # noqa: BLE001 - an unreadable earlier database only loses the earlier steps
        return empty
    loss = data.get("step_loss", {})
    ep = data.get("step_epoch", {}).get("step_epoch", np.zeros(0))
    gs, lv = loss.get("global_step", np.zeros(0)), loss.get("step_loss", np.zeros(0))
    keep = np.asarray(ep) < before_epoch
    return {"global_step": np.asarray(gs)[keep], "loss": np.asarray(lv)[keep], "epoch": np.asarray(ep)[keep]}


def netcdf_engine() -> str:
    """The xarray backend for NetCDF files: h5netcdf (netCDF4; installed with qcodes) else scipy (netCDF3)."""
    try:
        import h5netcdf  # noqa: F401
        return "h5netcdf"
    except ImportError:
        return "scipy"


def _attr(value: Any) -> Any:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    return json.dumps(value, default=str)


def to_xarray(run_dir: Path, extra_attrs: dict[str, Any] | None = None) -> Any:
    """The run's dataset as an xarray.Dataset (dims epoch and global_step), attributes NetCDF-safe."""
    ds = load_training_dataset(run_dir)
    xds = ds.to_xarray_dataset()
    attrs = {**xds.attrs, **(extra_attrs or {})}
    xds.attrs = {k: _attr(v) for k, v in attrs.items() if v is not None}
    for var in list(xds.variables):
        xds[var].attrs = {k: _attr(v) for k, v in xds[var].attrs.items() if v is not None}
    return xds
