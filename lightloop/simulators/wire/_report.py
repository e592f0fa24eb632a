"""Bench-independent glue of the wire twin: the fault plan of a config, the twin's end-of-run report, limit look-ups.

`twin_report` judges every output the twin serves, whatever the bench: a laser (output off), a temperature
controller (output off), a SCPI source (every relay open), an SLM sequence panel (dark: the zero-field code), an
IQ AWG (every output off) and a Qontrol heater driver (every channel at 0 V).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from lightloop.errors import ConfigError
from lightloop.hal.frames import FIELD_BITS
from lightloop.simulators.wire.awg import AWGTwin
from lightloop.simulators.wire.laser_controller import LaserControllerTwin
from lightloop.simulators.wire.qontrol_heater import QontrolTwin
from lightloop.simulators.wire.scpi_source import ScpiSourceTwin
from lightloop.simulators.wire.server import FaultPlan, WireTwinServer
from lightloop.simulators.wire.slm import SLMTwin
from lightloop.simulators.wire.temperature_controller import TemperatureControllerTwin

__all__ = ["arm_and_start", "fault_plan", "laser_field_factor", "limit_range", "twin_report"]


def limit_range(spec: Any, key: str) -> tuple[float, float] | None:
    """(low, high) of an instrument spec's effective limit `key` (its unit's SI value), or None."""
    r = spec.limit(key) if hasattr(spec, "limit") else None
    return None if r is None else (r.low, r.high)


_limit = limit_range


def fault_plan(cfg: Any, seed: int | None = None) -> FaultPlan | None:
    """The FaultPlan of ``emulator.faults`` (None without one); `seed` (else $LIGHTLOOP_FAULT_SEED) overrides it."""
    f = getattr(getattr(cfg, "emulator", None), "faults", None)
    if f is None:
        return None
    env = os.environ.get("LIGHTLOOP_FAULT_SEED")
    if seed is None and env is not None:
        if not env.isdigit():
            raise ConfigError(f"LIGHTLOOP_FAULT_SEED: {env!r}; expected an integer >= 0")
        seed = int(env)
    names = tuple(f.instruments) if f.instruments else None
    return FaultPlan(**f.probabilities(), seed=f.seed if seed is None else int(seed), instruments=names)


def _output_state(ep: Any, glue: Any) -> dict[str, Any] | None:
    """The final state of one endpoint's outputs (None for an endpoint without outputs)."""
    if isinstance(ep, LaserControllerTwin):
        return {"output": bool(ep.output), "current_a": float(ep.current)}
    if isinstance(ep, TemperatureControllerTwin):
        return {"output": bool(ep.output)}
    if isinstance(ep, (ScpiSourceTwin, AWGTwin)):
        return {"outputs_on": int(np.count_nonzero(ep.outputs))}
    if isinstance(ep, QontrolTwin):
        return {"max_volts": float(np.max(np.abs(ep.volts), initial=0.0))}
    if isinstance(ep, SLMTwin) and glue is not None and ep.bits == FIELD_BITS:   # sequence panels
        return {"dark": bool(ep.last is not None and np.all(ep.last == 2 ** (FIELD_BITS - 1)))}
    return None


def _safe(o: dict[str, Any]) -> bool:
    return (not o.get("output", False) and not o.get("outputs_on", 0) and o.get("dark", True)
            and o.get("max_volts", 0.0) == 0.0)


def twin_report(server: WireTwinServer) -> dict[str, Any]:
    """What the twin saw: commands, violations, faults injected, and whether every output ended safe."""
    glue = getattr(server, "glue", None)
    outputs: dict[str, Any] = {}
    for name, ep in server.endpoints.items():
        state = _output_state(ep, glue)
        if state is not None:
            outputs[name] = state
    safe = all(_safe(o) for o in outputs.values())
    stats = getattr(server, "client_stats", None)   # the in-process station's TransactionStats, when there is one
    client = None if stats is None else {k: getattr(stats, k, None) for k in ("transactions", "retries", "reconnects")}
    return {"pid": os.getpid(), "commands": server.log.count(), "violations": list(server.log.violations),
            "faults": server.fault_counts(), "errors": list(server.errors), "outputs": outputs, "safe": safe,
            "client": client}


def _append_report(path: str) -> Callable[[WireTwinServer], None]:
    def write(server: WireTwinServer) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(twin_report(server)) + "\n")

    return write


def laser_field_factor(laser: LaserControllerTwin | None, i_op: float, i_th: float, slope: float) -> float:
    """Field scale of the light a laser twin feeds: sqrt(P / P_operating) (P-I model (i_op - i_th) x slope, A and
    W/A); exactly 1 at the operating point, 1 without a laser twin, 0 when dark."""
    if laser is None:
        return 1.0
    p_op = slope * max(0.0, i_op - i_th)
    if p_op <= 0:
        return 0.0
    ratio = laser.power() / p_op
    return 1.0 if abs(ratio - 1.0) < 1e-9 else math.sqrt(max(0.0, ratio))


def arm_and_start(built: tuple[list[Any], dict[str, int], Any], cfg: Any, faults: FaultPlan | None) -> WireTwinServer:
    """Serve (endpoints, ports, glue) of a bench: arm `faults` (else ``emulator.faults``), hook
    $LIGHTLOOP_WIRE_REPORT, start the server; one-line ConfigError when the plan names an instrument not served."""
    endpoints, ports, glue = built
    server = WireTwinServer(endpoints, ports)
    server.glue = glue  # type: ignore[attr-defined]
    plan = faults if faults is not None else fault_plan(cfg)
    missing = sorted(set(plan.instruments or ()) - set(server.endpoints)) if plan is not None else []
    if missing:
        raise ConfigError(f"{getattr(cfg, 'source', '<config>')}: emulator.faults.instruments: {missing} are not "
                          f"served by the wire twin; expected some of {sorted(server.endpoints)}")
    server.set_faults(plan)
    report = os.environ.get("LIGHTLOOP_WIRE_REPORT")
    if report:
        server.on_stop.append(_append_report(report))
    return server.start()
