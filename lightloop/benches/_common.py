"""What the bench builders share: the station's ports (and the auto-started wire twin), locked twin ports, the store path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightloop.errors import ConfigError
from lightloop.schema import LabConfig

__all__ = ["LockedPort", "check_role_counts", "default_store", "resolve_store", "station_ports", "store_for"]


class LockedPort:
    """A twin port called under the wire twin's lock (the in-process ports share the emulator with the server)."""

    def __init__(self, port: Any, lock: Any) -> None:
        self._port, self._lock = port, lock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._port, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **k: Any) -> Any:
            with self._lock:
                return attr(*a, **k)

        return call


def station_ports(cfg: LabConfig, station: Any, start_twin: Callable[[], Any] | None,
                  make_ports: Callable[..., Any]) -> tuple[Any, Any]:
    """(the bench's station ports or None, the wire twin's lock or None): starts the wire twin first when the config
    auto-starts it (`start_twin` given only when the run is simulated), then points the ports at its addresses."""
    if station is None:
        return None, None
    lock = None
    if start_twin is not None and cfg.emulator is not None and cfg.emulator.autostart:
        station.server = start_twin()
        station.server.client_stats = station.stats   # the twin's stop report counts the client's retries
        lock = station.server.lock
    addresses = {}
    if station.server is not None:
        addresses = {name: station.server.address(name) for name, s in cfg.instruments.items() if s.driver != "twin"}
    return make_ports(station, cfg.instruments, cfg.roles, addresses), lock


def resolve_store(cfg: LabConfig) -> str | None:
    """The calibration store directory of a config (relative paths resolve against the config file)."""
    store = cfg.processor.calibration.store
    if not store:
        return None
    path = Path(store).expanduser()
    if not path.is_absolute() and cfg.source not in ("<memory>", ""):
        # lexically normalised: a config reached through a symlinked folder keeps '..' relative to that folder
        path = Path(os.path.normpath(Path(cfg.source).absolute().parent / path))
    return str(path)


def check_role_counts(cfg: LabConfig, sizes: tuple[int, ...], counts: list[tuple[str, int, int]],
                      emulator_sizes: bool = True) -> None:
    """Each (roles.<what>, entries, entries this network needs) matches, and (emulator_sizes) emulator.layer_sizes,
    when given, equals the run's layer sizes; one-line ConfigError naming the field otherwise."""
    for what, have, want in counts:
        if have != want:
            raise ConfigError(f"{cfg.source}: roles.{what}: {have} entries for a network with layer sizes {list(sizes)}; "
                              f"expected {want} (the config wires hidden layers {list(cfg.processor.hidden)})")
    em = cfg.emulator if emulator_sizes else None
    if em is not None and em.layer_sizes is not None and tuple(em.layer_sizes) != tuple(sizes):
        raise ConfigError(f"{cfg.source}: emulator.layer_sizes: {em.layer_sizes} but this run needs {list(sizes)}; "
                          "expected equal sizes (or drop layer_sizes)")


def default_store() -> Path:
    """The calibration store used when a config names none: $LIGHTLOOP_CALIBRATION_STORE, else <runs>/calibration
    (<runs> = $LIGHTLOOP_RUNS_DIR or ./runs)."""
    runs = Path(os.environ.get("LIGHTLOOP_RUNS_DIR") or "runs")
    return Path(os.environ.get("LIGHTLOOP_CALIBRATION_STORE") or runs / "calibration").expanduser().absolute()


def store_for(cfg: LabConfig) -> tuple[str | None, bool]:
    """(the calibration store of a run, whether it is the default one): the config's `processor.calibration.store`,
    else the default store for any bench that has calibrations; (None, False) for a bench without."""
    if getattr(getattr(cfg, "processor", None), "calibration", None) is None:
        return None, False
    configured = resolve_store(cfg)
    return (configured, False) if configured else (str(default_store()), True)
