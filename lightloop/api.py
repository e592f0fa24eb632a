"""The Python bench API: ``open_bench(config)`` -> a :class:`Bench` (processor, named roles, calibrate, train, close).

A bench is opened from a lab-config path, a packaged config name (``"free_space_sa"``, ``"integrated_chip"``,
``"wire_free_space"``, ... - the files in ``lightloop/lab_configs``), a config mapping or a loaded ``LabConfig``.
Its geometry comes from the config where the config fixes it (``emulator.layer_sizes``), else from the
dataset of the config's ``training`` section (its feature and class counts), unless ``sizes=`` is given.

Role names (``bench.roles[name]`` or ``bench.<name>``), numbered from 1 along the light path:

* free space: ``input`` (InputEncoder), ``probe`` (ProbeSource), ``w1``..``wL`` (weight blocks), ``cell1``..
  (SaturableAbsorber vapor cells), ``pre1``..``preL``, ``post1``.., ``err1``.. (HomodyneDetector taps)
* integrated chip: ``encoder`` (ForwardSource), ``mesh1``..``meshL`` (ChipLayer), ``phases1``.. (its
  PhaseShifterBank), ``monitor1``.. (MeshMonitor), ``receiver1``.. / ``in_receiver1``.. (CoherentReceiver at
  the layer's outputs / inputs), ``adjoint1``.. / ``injector1``.. (FieldInjector), ``act1``.. (EOActivation),
  ``output`` (PowerDetector)
* any kind: ``processor``; instruments of a station are ``bench.instruments[name]`` (Links: ``.driver`` is the
  QCoDeS instrument)

A lab's QCoDeS station YAML supplies instruments through ``open_bench(config, station="station.yaml")``
(or a ``qcodes.Station``): see :func:`station_instruments`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.bench import build_processor
from lightloop.config import LabConfig, load_config, load_yaml, parse_config
from lightloop.errors import ConfigError
from lightloop.schema import BuildOverrides

if TYPE_CHECKING:
    from lightloop.calibration.runner import Outcome
    from lightloop.hal.processor import ForwardTaps, OpticalProcessor
    from lightloop.training.datasets import Dataset
    from lightloop.training.trainer import TrainResult

__all__ = ["Bench", "open_bench", "config_path", "packaged_configs", "station_instruments", "load_config",
           "build_processor", "BuildOverrides", "LabConfig"]

#: the lab configs shipped inside the package
PACKAGED_DIR = Path(__file__).resolve().parent / "lab_configs"

#: keys of a QCoDeS station instrument entry that only concern display (ignored)
_STATION_DISPLAY_KEYS = {"label", "unit", "monitor", "alias"}


def packaged_configs() -> list[str]:
    """Names of the lab configs shipped with lightloop (``open_bench(name)``)."""
    return sorted(p.stem for p in PACKAGED_DIR.glob("*.yaml"))


def config_path(config: str | Path) -> Path:
    """An existing config file, or the packaged config of that name (with or without ``.yaml``)."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    name = str(config).removesuffix(".yaml")
    packaged = PACKAGED_DIR / f"{name}.yaml"
    if "/" not in name and packaged.is_file():
        return packaged
    raise ConfigError(f"{config}: config: no such file and no packaged config of that name; expected a lab config "
                      f"path or one of {', '.join(packaged_configs())}")


def _station_entry(source: str, name: str, entry: Any) -> dict[str, Any]:
    """One QCoDeS station instrument entry -> an ``instruments:`` entry (driver, address, visalib, timeout, init,
    parameters)."""
    where = f"{source}: instruments.{name}"
    if not isinstance(entry, Mapping) or "type" not in entry:
        raise ConfigError(f"{where}: expected a QCoDeS station instrument with a 'type' (the driver class path)")
    out: dict[str, Any] = {"driver": str(entry["type"])}
    init = dict(entry.get("init") or {})
    for key in ("visalib", "timeout"):
        if key in init:
            out[key] = init.pop(key)
    if entry.get("address") is not None:
        address = str(entry["address"])
        out["address"] = f"{address}:{entry['port']}" if entry.get("port") is not None else address
    if init:
        out["init"] = init
    params: dict[str, Any] = {}
    for pname, pspec in (entry.get("parameters") or {}).items():
        pspec = pspec if isinstance(pspec, Mapping) else {}
        refused = sorted(set(pspec) - _STATION_DISPLAY_KEYS - {"initial_value"})
        if refused:
            raise ConfigError(f"{where}.parameters.{pname}.{refused[0]}: not taken over by lightloop; expected only "
                              "initial_value (safety limits go under the lab config's instruments."
                              f"{name}.limits, where they can only narrow the driver's range)")
        if "initial_value" in pspec:
            params[str(pname)] = pspec["initial_value"]
    if params:
        out["parameters"] = params
    extra = sorted(set(entry) - {"type", "driver", "address", "port", "init", "parameters",
                                 "enable_forced_reconnect"})
    if extra:
        raise ConfigError(f"{where}.{extra[0]}: not taken over by lightloop; expected type, address, port, init "
                          "and parameters (initial_value)")
    return out


def station_instruments(station: str | Path | Any) -> dict[str, dict[str, Any]]:
    """Instruments of a QCoDeS station YAML file (or a loaded ``qcodes.Station``) as ``instruments:`` entries."""
    if isinstance(station, (str, Path)):
        source, data = str(station), load_yaml(Path(station))
    else:
        source, data = "<qcodes.Station>", getattr(station, "config", None)
    insts = data.get("instruments") if isinstance(data, Mapping) else None
    if not isinstance(insts, Mapping):
        raise ConfigError(f"{source}: instruments: missing; expected a QCoDeS station config with an 'instruments' "
                          "mapping")
    return {str(n): _station_entry(source, str(n), e) for n, e in insts.items()}


def _merge_station(data: dict[str, Any], station: Any, source: str) -> dict[str, Any]:
    """The config's instruments without a ``driver`` take driver/address/init/parameters from the station."""
    lab = station_instruments(station)
    insts = data.get("instruments")
    if not isinstance(insts, Mapping) or not insts:
        raise ConfigError(f"{source}: instruments: missing; expected the instruments this bench uses, named as in "
                          "the station YAML (an entry without 'driver' is taken from the station)")
    merged = {}
    for name, entry in insts.items():
        entry = dict(entry or {})
        if "driver" not in entry:
            if name not in lab:
                raise ConfigError(f"{source}: instruments.{name}: no driver and the station has no {name!r}; expected "
                                  f"one of {', '.join(sorted(lab))} or a driver")
            base = copy.deepcopy(lab[name])
            for key, value in entry.items():
                base[key] = {**base.get(key, {}), **value} if isinstance(value, Mapping) else value
            entry = base
        merged[name] = entry
    return {**data, "instruments": merged}


def _load(config: str | Path | Mapping[str, Any] | LabConfig, station: Any) -> LabConfig:
    if isinstance(config, LabConfig):
        if station is not None:
            raise ConfigError("station: given with a loaded LabConfig; expected a config path, name or mapping")
        return config
    if isinstance(config, Mapping):
        data, source = copy.deepcopy(dict(config)), "<memory>"
    else:
        path = config_path(config)
        if station is None:
            return load_config(path)
        data, source = load_yaml(path), str(path)
        if not isinstance(data, dict):
            return parse_config(data, source)
    if station is not None:
        data = _merge_station(data, station, source)
    return parse_config(data, source)


def _roles(proc: Any) -> dict[str, Any]:
    """Named roles of a processor (see the module docstring for the names per bench kind)."""
    roles: dict[str, Any] = {"processor": proc}

    def numbered(prefix: str, items: Sequence[Any]) -> None:
        roles.update({f"{prefix}{i + 1}": item for i, item in enumerate(items)})

    if hasattr(proc, "weights") and hasattr(proc, "absorbers"):        # free space
        roles.update(input=proc.encoder, probe=proc.probe)
        numbered("w", proc.weights)
        numbered("cell", proc.absorbers)
        numbered("pre", proc.pre_taps)
        numbered("post", proc.post_taps)
        numbered("err", proc.error_taps)
    elif hasattr(proc, "layers") and hasattr(proc, "activations"):     # integrated chip
        roles.update(encoder=proc.source, output=proc.output)
        layers = list(proc.layers)
        numbered("mesh", layers)
        for prefix, attr in (("phases", "bank"), ("monitor", "monitor"), ("receiver", "out_receiver"),
                             ("in_receiver", "in_receiver"), ("adjoint", "adjoint_source"), ("injector", "injector")):
            numbered(prefix, [getattr(layer, attr) for layer in layers])
        numbered("act", proc.activations)
    return roles


class Bench:
    """An opened bench: its processor, named roles, calibration, training; a context manager ending in the safe state."""

    def __init__(self, config: LabConfig, processor: "OpticalProcessor", dataset: "Dataset | None" = None) -> None:
        self.config, self.processor, self.dataset = config, processor, dataset
        self.roles: dict[str, Any] = _roles(processor)
        self.closed = False

    # --- what the bench is -----------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """Processor kind (free_space, integrated_chip, ...)."""
        return str(self.config.processor.kind)

    @property
    def name(self) -> str:
        """The config's bench name."""
        return str(self.config.bench)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer sizes, input first (features per layer)."""
        return tuple(int(n) for n in self.processor.layer_sizes)

    @property
    def station(self) -> Any:
        """The instrument station (None for an in-process twin)."""
        return self.processor.station

    @property
    def instruments(self) -> dict[str, Any]:
        """Instrument name -> Link (``.driver`` is the connected QCoDeS instrument); empty without a station."""
        return dict(self.station.links) if self.station is not None else {}

    @property
    def wire_server(self) -> Any:
        """The wire-level twin serving the instruments (None unless the config autostarts it)."""
        return getattr(self.station, "server", None)

    @property
    def command_log(self) -> Any:
        """The wire twin's log of every command received (``.commands(name)``, ``.count()``, ``.violations``)."""
        server = self.wire_server
        if server is None:
            raise ConfigError(f"{self.config.source}: emulator.autostart: this bench runs no wire-level twin; "
                              "expected a config with emulator.autostart: true for a command log")
        return server.log

    def __getattr__(self, name: str) -> Any:
        roles = self.__dict__.get("roles", {})
        if name in roles:
            return roles[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or role {name!r}; roles: {', '.join(roles)}")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("roles", {})))

    def __repr__(self) -> str:
        return f"<Bench {self.name!r} {self.kind} sizes={list(self.sizes)} roles={list(self.roles)}>"

    # --- the network ------------------------------------------------------------------------------------
    def init_parameters(self, seed: int = 0, scale: float | None = None) -> list[NDArray[np.float32]]:
        """Initial parameters as training draws them (scale: the config's training.init_scale)."""
        s = self.config.training.init_scale if scale is None else scale
        return self.processor.init_parameters(np.random.default_rng(seed), float(s))

    def program(self, params: Sequence[NDArray[Any]]) -> None:
        """Write every layer's parameters (weights or phases) to the devices."""
        self.processor.program(params)

    def forward(self, x: NDArray[Any]) -> "ForwardTaps":
        """Forward a batch (batch, features) in [0, 1]; the tapped activations, ``.output`` the network output."""
        return self.processor.forward(np.asarray(x, np.float32))

    # --- calibration and training -----------------------------------------------------------------------
    def calibrate(self, *routines: str, store: str | Path | None = None, plot_dir: str | Path | None = None,
                  seed: int = 0, progress: bool = False, **options: Any) -> list["Outcome"]:
        """Run calibration routines (e.g. "slm_lut"; none: every routine of the bench), applied to the HAL; records
        saved in ``store`` when given. Returns one Outcome per routine."""
        from lightloop.calibration.base import RunContext
        from lightloop.calibration.runner import calibrate
        from lightloop.calibration.store import CalibrationStore

        ctx = RunContext(progress=progress, plot_dir=Path(plot_dir) if plot_dir else None, seed=seed,
                         options=dict(options))
        st = CalibrationStore(Path(store)) if store is not None else None
        return calibrate(self.processor, list(routines) or ["all"], ctx, st, self.name)

    def train(self, dataset: "str | Dataset | None" = None, epochs: int | None = None, *,
              batch_size: int | None = None, lr: float | None = None, gradient: str | None = None,
              optimizer: str | None = None, loss: str | None = None, seed: int | None = None,
              init_scale: float | None = None, out: str | Path | None = None, progress: bool = False,
              data_dir: str | Path | None = None, **gradient_options: Any) -> "TrainResult":
        """Train on the bench (defaults: the config's training section); ``out`` keeps checkpoints and metrics."""
        from lightloop.training.datasets import load_dataset
        from lightloop.training.gradients import make_gradient
        from lightloop.training.optimizers import make_optimizer
        from lightloop.training.trainer import Trainer, TrainSettings

        t = self.config.training
        if dataset is None:
            data = self.dataset if self.dataset is not None else load_dataset(t.dataset, data_dir)
        elif isinstance(dataset, str):
            data = load_dataset(dataset, data_dir)
        else:
            data = dataset
        if (data.n_features, data.n_classes) != (self.sizes[0], self.sizes[-1]):
            raise ConfigError(f"{self.config.source}: dataset {data.name!r}: {data.n_features} features and "
                              f"{data.n_classes} classes; expected {self.sizes[0]} and {self.sizes[-1]} (this bench's "
                              "sizes: open it with this dataset or sizes=)")
        name = gradient or t.gradient
        options = {**(t.gradient_options if name == t.gradient else {}), **gradient_options}
        settings = TrainSettings(epochs=epochs or t.epochs, batch_size=batch_size or t.batch_size,
                                 loss=loss or t.loss, seed=t.seed if seed is None else seed,
                                 init_scale=t.init_scale if init_scale is None else init_scale, progress=progress)
        feedback = getattr(self.config, "feedback", None)
        if feedback is not None and getattr(self.processor, "feedback_channel", None) is None:
            from lightloop.benches.digital import attach_photon_feedback

            attach_photon_feedback(self.processor, feedback, seed=settings.seed)
        trainer = Trainer(self.processor, make_gradient(name, **options),
                          make_optimizer(optimizer or t.optimizer, t.lr if lr is None else lr), settings,
                          out_dir=out, tag=f"{self.name} / {data.name} / {name}")
        return trainer.fit(data)

    # --- ending -----------------------------------------------------------------------------------------
    def safe_state(self) -> None:
        """Drive every device to its safe state (laser off first, sources dark, outputs to zero)."""
        self.processor.safe_state()

    def close(self) -> None:
        """Safe state, then release the instruments (idempotent)."""
        if not self.closed:
            self.closed = True
            self.processor.close()

    def __enter__(self) -> "Bench":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bench(config: str | Path | Mapping[str, Any] | LabConfig = "free_space_sa", *,
               sizes: Sequence[int] | None = None, hidden: Sequence[int] | None = None, ideal: bool | None = None,
               optical_depth: float | None = None, dataset: str | None = None, data_dir: str | Path | None = None,
               station: str | Path | Any = None) -> Bench:
    """Open a bench: config (path, packaged name, mapping or LabConfig) -> Bench with its processor built.

    Geometry: ``sizes`` (input, *hidden, output) when given; else the config's ``emulator.layer_sizes``; else
    the features and classes of ``dataset`` (default: the config's ``training.dataset``) around the config's
    hidden sizes (or ``hidden``). ``ideal`` switches twin imperfections off (True) or on (False).
    ``station``: a QCoDeS station YAML (or ``qcodes.Station``) supplying the instruments the config names.
    """
    cfg = _load(config, station)
    data = None
    if sizes is not None:
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2 or hidden is not None:
            raise ConfigError(f"{cfg.source}: sizes: {sizes}; expected [inputs, *hidden, outputs] (and no hidden=)")
        n_in, n_out, hidden = sizes[0], sizes[-1], sizes[1:-1]
    elif cfg.emulator is not None and cfg.emulator.layer_sizes is not None and dataset is None:
        fixed = [int(n) for n in cfg.emulator.layer_sizes]
        n_in, n_out = fixed[0], fixed[-1]
        hidden = fixed[1:-1] if hidden is None else hidden
    else:
        from lightloop.training.datasets import load_dataset

        data = load_dataset(dataset or cfg.training.dataset, data_dir)
        n_in, n_out = data.n_features, data.n_classes
    ov = BuildOverrides(hidden=list(hidden) if hidden is not None else None, ideal=ideal, optical_depth=optical_depth)
    proc = build_processor(cfg, n_in, n_out, ov)
    return Bench(cfg, proc, data)
