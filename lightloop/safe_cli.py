"""`lightloop safe --config FILE`: drive every instrument of a lab config to its safe state from any shell.

For the endings no process can catch - ``kill -9``, an out-of-memory kill, a crashed or powered-off PC -
the instruments keep their last set-points (docs/safety.md). This command connects to each instrument
of the config directly (no bench is built, nothing is programmed, no wire twin is started) and applies
its driver family's safe sequence in hazard order: lasers off, sources and heaters to 0 V with outputs
off, temperature controllers' heater outputs off, DMD mirrors off. Every instrument is tried even when
another fails. Prints one JSON line; exit 0 when every instrument is safe (or passive), 1 when any could
not be reached or did not verify, 2 for a bad config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run_safe", "secure_config"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `safe` subcommand."""
    p = sub.add_parser("safe", help="drive a config's instruments to their safe state (after kill -9 or a crash)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="lab config whose instruments to make safe")
    from lightloop.cli import _bounded

    p.add_argument("--timeout", type=_bounded("a timeout in seconds", 0.0, 600.0, lo_open=True), default=5.0,
                   metavar="S",
                   help="per-instrument I/O timeout in seconds (default: %(default)s)")
    p.set_defaults(handler=run_safe)


def _served_by_dead_twin(cfg: Any, spec: Any) -> bool:
    """True for an instrument whose address is 'any free port' of an autostarted in-process wire twin."""
    from lightloop.addresses import address_port

    if cfg.emulator is None or not cfg.emulator.autostart or not spec.address:
        return False
    try:
        return address_port(spec.driver, spec.address)[1] == 0
    except ValueError:
        return False


def _make_safe(name: str, spec: Any, timeout: float) -> dict[str, Any]:
    from lightloop.errors import LightloopError
    from lightloop.station._link import Link, ReconnectPolicy, TransactionStats
    from lightloop.station._safe import safe_driver
    from lightloop.station._station import _free_name, make_driver

    action = safe_driver(spec.driver)
    if action is None:
        return {"state": "unknown", "detail": f"no safe sequence known for driver {spec.driver!r}; check it by hand"}
    bounded = spec.model_copy(update={"timeout": min(float(spec.timeout or timeout), timeout)})
    link = Link(name, spec.driver, lambda: make_driver(spec.driver, _free_name(f"safe_{name}"), spec.address or "", bounded),
                TransactionStats(), ReconnectPolicy(attempts=1, backoff_s=0.2, budget=2))
    try:
        link.open()
        return {"state": "safe", "detail": link.run("safe state", action)}
    except (LightloopError, OSError, ValueError) as exc:
        return {"state": "failed", "detail": " ".join(str(exc).split())}
    finally:
        link.close()


def secure_config(cfg: Any, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    """Apply the safe sequence to every driver-served instrument of a validated config, in hazard order."""
    from lightloop.station._safe import SAFE_ORDER

    real = {n: s for n, s in (cfg.instruments or {}).items() if s.driver != "twin"}
    rank = {d: k for k, d in enumerate(SAFE_ORDER)}
    report: dict[str, dict[str, Any]] = {}
    for name, spec in sorted(real.items(), key=lambda kv: (rank.get(kv[1].driver, len(rank)), kv[0])):
        if _served_by_dead_twin(cfg, spec):
            report[name] = {"state": "skipped", "detail": "served by the in-process wire twin (emulator.autostart, "
                                                          "port 0), which stops with the process that started it"}
        else:
            report[name] = {"driver": spec.driver, **_make_safe(name, spec, float(timeout))}
    return report


def run_safe(args: argparse.Namespace) -> int:
    """Connect to each instrument of the config in hazard order and apply its safe sequence; exit 0/1."""
    from lightloop.config import load_config
    from lightloop.errors import ConfigError

    if not args.timeout > 0:
        raise ConfigError(f"--timeout: expected a positive number of seconds, got {args.timeout}")
    cfg = load_config(args.config)
    if not any(s.driver != "twin" for s in (cfg.instruments or {}).values()):
        raise ConfigError(f"{args.config}: instruments: no instrument with a driver; expected a config naming the "
                          "bench's instruments (an in-process twin has nothing to make safe)")
    report = secure_config(cfg, float(args.timeout))
    for name, r in report.items():
        if r["state"] in ("failed", "unknown"):
            print(f"lightloop: safe: {args.config}: instruments.{name}: {r['state']}: {r['detail']}", file=sys.stderr)
    bad = [n for n, r in report.items() if r["state"] in ("failed", "unknown")]
    print(json.dumps({"safe": cfg.bench, "instruments": report, "all_safe": not bad}))
    return 1 if bad else 0
