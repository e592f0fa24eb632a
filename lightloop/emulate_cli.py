"""`lightloop emulate`: serve a lab config's instruments from the wire-level twin on 127.0.0.1.

    lightloop emulate --config lab_configs/wire_free_space.yaml --layer-sizes 64 64 10 \\
        --write-config /tmp/wire_resolved.yaml

prints one JSON line ``{"emulate": <bench>, "layer_sizes": [...], "addresses": {instrument: address}}``
once every port listens, then serves until Ctrl-C / SIGTERM (or ``--duration`` seconds). With
``--write-config`` it also writes a copy of the config whose addresses name the ports actually
served and whose ``emulator.autostart`` is false, so that ``lightloop train --config <copy>`` in
another process talks to this server.

Fault rehearsal: ``--fault-rate P`` injects a fault into a fraction P of all transactions (split equally
over drop, timeout, garbage, bad_reading and reboot), ``--faults drop=0.01,reboot=0.002`` sets kinds
one by one (overriding their share of --fault-rate), ``--fault-seed N`` seeds them; without these flags
the config's ``emulator.faults`` applies. The stop line on stderr counts the faults injected.

Benches served: ``free_space`` and ``integrated_chip``. A twin-only config (no ``instruments``, ``roles`` or
``emulator`` section, e.g. ``lab_configs/integrated_chip.yaml``) is served on the default station of its kind:
those three sections of the bundled ``lab_configs/wire_<kind>.yaml`` join its processor (one stderr line says so;
``--write-config`` writes the merged config).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "run_emulate"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `emulate` subcommand."""
    from lightloop.cli import _bounded, _layer_size, writable_file

    p = sub.add_parser("emulate", help="serve a config's instruments from the wire-level twin (127.0.0.1 only)",
                       description="Loopback instrument server answering each driver's own protocol from the emulator.")
    p.add_argument("--config", type=Path, required=True,
                   help="lab config with instruments, roles and an emulator section (a twin-only free_space or "
                        "integrated_chip config gets the bundled wire station of its kind)")
    p.add_argument("--layer-sizes", type=_layer_size, nargs="+", default=None, metavar="N",
                   help="network served, input first (default: emulator.layer_sizes of the config)")
    p.add_argument("--ideal", action="store_true", help="switch every twin imperfection off")
    p.add_argument("--duration", type=_bounded("a duration in seconds", 0.0, 1e7), default=None,
                   metavar="S", help="stop after S seconds (default: run until Ctrl-C)")
    p.add_argument("--write-config", type=writable_file, default=None, metavar="FILE",
                   help="write a copy of the config naming the served ports (emulator.autostart: false)")
    p.add_argument("--log", type=writable_file, default=None, metavar="FILE", help="write the received commands (JSON lines) on exit")
    p.add_argument("--fault-rate", type=float, default=None, metavar="P",
                   help="fault probability per transaction, split equally over the five kinds (0..1)")
    p.add_argument("--faults", default=None, metavar="KIND=P,...",
                   help="probability per transaction of each kind: drop, timeout, garbage, bad_reading, reboot")
    p.add_argument("--fault-seed", type=int, default=None, metavar="N", help="seed of the random faults (>= 0)")
    p.set_defaults(handler=run_emulate)


def _fault_plan(args: argparse.Namespace, cfg: Any) -> Any:
    """The FaultPlan from the flags (over the config's emulator.faults); one-line ConfigError naming the flag."""
    from lightloop.errors import ConfigError
    from lightloop.simulators.wire._report import fault_plan
    from lightloop.simulators.wire.server import FAULT_KINDS, FaultPlan

    base = fault_plan(cfg, args.fault_seed)
    if args.fault_rate is None and args.faults is None:
        return base
    rate = args.fault_rate
    if rate is not None and not 0.0 <= rate <= 1.0:   # also refuses nan
        raise ConfigError(f"--fault-rate: {rate}; expected a probability in [0, 1]")
    kinds: dict[str, float] = {}
    for item in (args.faults or "").split(","):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        try:
            value = float(raw) if sep else float("nan")
        except ValueError:
            value = float("nan")
        if key not in FAULT_KINDS:
            raise ConfigError(f"--faults: unknown kind {key!r}; expected KIND=P with KIND one of {', '.join(FAULT_KINDS)}")
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"--faults: {item.strip()!r}; expected {key}=P with P a probability in [0, 1]")
        kinds[key] = value
    seed = args.fault_seed if args.fault_seed is not None else (base.seed if base is not None else 0)
    if seed < 0:
        raise ConfigError(f"--fault-seed: {seed}; expected an integer >= 0")
    probs = base.probabilities if base is not None and rate is None else {k: (rate or 0.0) / len(FAULT_KINDS)
                                                                          for k in FAULT_KINDS}
    probs.update(kinds)
    if sum(probs.values()) > 1.0 + 1e-12:
        raise ConfigError(f"--faults/--fault-rate: probabilities sum to {sum(probs.values()):g}; expected at most 1 "
                          "per transaction")
    return FaultPlan(**probs, seed=seed, instruments=base.instruments if base is not None else None)


def _sizes(args: argparse.Namespace, cfg: Any) -> tuple[int, ...]:
    from lightloop.errors import ConfigError

    sizes = args.layer_sizes or (cfg.emulator.layer_sizes if cfg.emulator is not None else None)
    if not sizes:
        raise ConfigError(f"--layer-sizes: missing; expected the served network's sizes, input first (e.g. "
                          f"--layer-sizes 64 {' '.join(str(h) for h in cfg.processor.hidden)} 10), or emulator.layer_sizes "
                          f"in {cfg.source}")
    if len(sizes) != len(cfg.processor.hidden) + 2 or any(n < 1 for n in sizes):
        raise ConfigError(f"--layer-sizes: {list(sizes)} does not fit the config's hidden layers "
                          f"{list(cfg.processor.hidden)}; expected {len(cfg.processor.hidden) + 2} positive sizes")
    return tuple(int(n) for n in sizes)


def _write_resolved(src: Path, dst: Path, addresses: dict[str, str], sizes: tuple[int, ...],
                    data: dict[str, Any] | None = None) -> None:
    import copy

    import yaml

    data = copy.deepcopy(data) if data is not None else yaml.safe_load(src.read_text())
    for name, address in addresses.items():
        data["instruments"][name]["address"] = address
    em = dict(data.get("emulator") or {})
    em["autostart"] = False
    em["layer_sizes"] = list(sizes)
    data["emulator"] = em
    header = (f"# {dst.name}: {src} with the ports served by `lightloop emulate` (pid-bound; regenerate after a "
              "restart)\n")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(header + yaml.safe_dump(data, sort_keys=False))


#: processor kind -> the bundled wire config whose station serves a twin-only config of that kind
WIRE_STATIONS = {"free_space": "wire_free_space.yaml", "integrated_chip": "wire_integrated_chip.yaml"}
_STATION_KEYS = ("instruments", "roles", "emulator")


def bundled_config(name: str) -> Path:
    """A lab config shipped in the package (``lightloop/lab_configs/<name>``)."""
    from importlib import resources

    here = Path(__file__).resolve().parent / "lab_configs" / name
    return here if here.is_file() else Path(str(resources.files("lightloop").joinpath(f"lab_configs/{name}")))


def _with_default_station(data: Any) -> tuple[Any, Path | None]:
    """`data` plus the instruments/roles/emulator of the bundled wire config of its kind when it has none of them."""
    from lightloop.config import load_yaml

    if not isinstance(data, dict) or any(k in data for k in _STATION_KEYS):
        return data, None
    proc = data.get("processor")
    kind = proc.get("kind") if isinstance(proc, dict) else None
    if kind not in WIRE_STATIONS:
        return data, None
    station = bundled_config(WIRE_STATIONS[kind])
    wire = load_yaml(station)
    return {**data, **{k: wire[k] for k in _STATION_KEYS if k in wire}}, station


def _start(cfg: Any, sizes: tuple[int, ...], ideal: bool, plan: Any) -> Any:
    """Build the emulator of the config's kind and start its wire twin."""
    p = cfg.processor
    if p.kind == "integrated_chip":
        from lightloop.benches.integrated_chip import check_station_sizes
        from lightloop.simulators.chip_build import ChipDraw, make_chip_emulator
        from lightloop.simulators.wire.integrated_chip import start_chip_twin

        check_station_sizes(cfg, sizes, emulator_sizes=False)
        draw = ChipDraw(chip_seed=p.chip.seed, noise_seed=p.chip.noise_seed, ideal=bool(ideal or p.chip.ideal),
                        precision=p.chip.precision)
        return start_chip_twin(cfg, sizes, make_chip_emulator(p, sizes, draw), faults=plan)
    from lightloop.simulators.wire.free_space import make_free_space_emulator, start_free_space_twin

    emu = make_free_space_emulator(p, sizes, bool(ideal or p.twin.ideal))
    return start_free_space_twin(cfg, sizes, emu, faults=plan)


def run_emulate(args: argparse.Namespace) -> int:
    """Start the server for the config; block until interrupted or --duration elapsed; exit code 0."""
    from lightloop.config import load_yaml, parse_config
    from lightloop.errors import ConfigError

    data, station = _with_default_station(load_yaml(Path(args.config)))
    cfg = parse_config(data, str(args.config))
    if getattr(cfg.processor, "kind", None) not in WIRE_STATIONS:
        kinds = " and ".join(map(repr, WIRE_STATIONS))
        raise ConfigError(f"{args.config}: processor.kind: the wire twin serves {kinds} benches; "
                          f"got {cfg.processor.kind!r}")
    if cfg.instruments is None or cfg.emulator is None:
        raise ConfigError(f"{args.config}: emulator: missing; expected instruments, roles and an emulator section")
    if station is not None:
        print(f"lightloop emulate: {args.config} has no station; serving the default {cfg.processor.kind} station "
              f"(instruments, roles, emulator) of {station}", file=sys.stderr, flush=True)
    if all(s.driver == "twin" for s in cfg.instruments.values()):
        raise ConfigError(f"{args.config}: instruments: every instrument is a twin; expected drivers to serve")
    sizes = _sizes(args, cfg)
    for flag, path in (("--write-config", args.write_config), ("--log", args.log)):
        if path is not None and path.resolve() == Path(args.config).resolve():
            raise ConfigError(f"{flag}: {path} is the --config file itself; expected another file (it is not overwritten)")
    if args.fault_seed is not None and not 0 <= args.fault_seed <= 2**32 - 1:
        raise ConfigError(f"--fault-seed: {args.fault_seed}; expected an integer >= 0 and <= 4294967295")
    plan = _fault_plan(args, cfg)
    try:
        server = _start(cfg, sizes, args.ideal, plan)
    except OSError as exc:
        raise ConfigError(f"{args.config}: instruments: {exc}; expected free ports (use port 0 for any)") from None
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal) if threading.current_thread() is threading.main_thread() else None
    try:
        if args.write_config is not None:
            _write_resolved(args.config, args.write_config, server.addresses, sizes, data if station else None)
        print(json.dumps({"emulate": cfg.bench, "layer_sizes": list(sizes), "addresses": server.addresses,
                          "config": str(args.write_config) if args.write_config else None,
                          "faults": None if plan is None else {**plan.probabilities, "seed": plan.seed}}), flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                stop.wait(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
        except KeyboardInterrupt:
            pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if args.log is not None:
            with open(args.log, "w") as f:
                for r in server.log.records:
                    f.write(json.dumps({"t": r.t, "instrument": r.instrument, "command": r.command}) + "\n")
    print(json.dumps({"stopped": cfg.bench, "commands": server.log.count(), "violations": server.log.violations,
                      "faults": server.fault_counts()["total"]}), file=sys.stderr, flush=True)
    return 0
