"""validate_station: the instruments / roles / emulator sections of a lab config, checked together (one-line errors)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lightloop.addresses import address_port
from lightloop.station._checks import parse_section
from lightloop.station._instruments import Checker, InstrumentSpec, validate_instrument
from lightloop.station._roles import ROLE_SCHEMAS, EmulatorSettings
from lightloop.station._validate_chip import check_chip
from lightloop.station._validate_free_space import check_free_space

__all__ = ["validate_station", "ROLE_CHECKS"]


#: processor kind -> the checks of its roles against its processor section
ROLE_CHECKS: dict[str, Callable[[Checker, Any], None]] = {"free_space": check_free_space, "integrated_chip": check_chip}


#: software-ramp limit key -> the output limit it ramps
SOFTWARE_RAMPS = {"current_ramp": "current", "voltage_ramp": "voltage"}
#: longest time (s) a ramp may take across an output's whole range: every wait is bounded by one day
MAX_RAMP_S = 86400.0
#: most channels one instrument may declare (init.n_channels)
MAX_CHANNELS = 1024


def check_ramps(chk: Checker, name: str, spec: InstrumentSpec) -> None:
    """A software ramp takes >= 2 steps from 0 to its output's limit (else it is no ramp); any ramp crosses in <= 1 day."""
    loc = f"instruments.{name}.limits"
    for rkey, okey in SOFTWARE_RAMPS.items():
        ramp, out = spec.limit(rkey), spec.limit(okey)
        if ramp is None or out is None:
            continue
        reach = max(abs(out.low), abs(out.high))
        step = ramp.high * spec.ramp_interval
        if math.isfinite(reach) and reach > 0 and step > reach / 2:
            chk.fail(f"{loc}.{rkey}", f"ramp rate {ramp.high:g} {ramp.unit} moves {step:g} {out.unit} per "
                     f"{spec.ramp_interval:g} s step, more than half the {okey} limit {reach:g} {out.unit} (no ramp at "
                     f"all); expected a rate <= {reach / 2 / spec.ramp_interval:g} {ramp.unit}")
    rate, temp = spec.limit("ramp_rate"), spec.limit("temperature")
    if rate is not None and temp is not None and rate.high > 0:
        crossing = (temp.high - temp.low) / (rate.high / 60.0)
        if crossing > MAX_RAMP_S:
            chk.fail(f"{loc}.ramp_rate", f"ramp rate {rate.high:g} K/min takes {crossing:.3g} s across "
                     f"[{temp.low:g}, {temp.high:g}] K; expected a rate that crosses it within one day "
                     f"(>= {(temp.high - temp.low) / MAX_RAMP_S * 60:.3g} K/min): every wait is bounded")


def check_connection(chk: Checker, name: str, spec: InstrumentSpec) -> None:
    """An I/O timeout > 0 s, a TCP port in 0..65535, a channel count inside the driver class's own."""
    loc = f"instruments.{name}"
    if spec.driver == "twin":
        return
    if spec.timeout is not None and not spec.timeout > 0:
        chk.fail(f"{loc}.timeout", f"{spec.timeout:g} s; expected an I/O timeout > 0 s (every wait is bounded)")
    try:
        port = address_port(spec.driver, spec.address or "")[1]
    except ValueError:   # not a TCP address (serial, GPIB, USB, a library path): the driver checks it
        port = None
    if port is not None and port > 65535:
        chk.fail(f"{loc}.address", f"port {port} in {spec.address!r}; expected a TCP port in 0..65535 (0: any free "
                 "port, wire twin only)")
    count = spec.init.get("n_channels")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CHANNELS):
        chk.fail(f"{loc}.init.n_channels", f"{count!r}; expected the {spec.driver}'s channel count, an integer in "
                 f"1..{MAX_CHANNELS}")


def validate_station(cfg: Any) -> None:
    """Validate cfg.instruments / cfg.roles / cfg.emulator in place (raw dicts -> models); one-line ConfigError.

    Whether the bench can be *built* on instruments is the bench module's call (``validate_sections``).
    """
    chk = Checker(cfg.source)
    kind = getattr(cfg.processor, "kind", None)
    if cfg.instruments is None:
        chk.fail("instruments", "missing; expected the instruments that serve the roles (or drop roles/emulator)")
    if not isinstance(cfg.instruments, dict) or not cfg.instruments:
        chk.fail("instruments", "expected a mapping of instrument name -> {driver, address, ...}")
    insts: dict[str, InstrumentSpec] = {}
    for name, raw in cfg.instruments.items():
        insts[str(name)] = parse_section(chk, InstrumentSpec, raw, f"instruments.{name}")
        validate_instrument(chk, str(name), insts[str(name)])
        check_ramps(chk, str(name), insts[str(name)])
        check_connection(chk, str(name), insts[str(name)])
    cfg.instruments = insts
    if cfg.roles is None:
        chk.fail("roles", "missing; expected which instrument channel serves each HAL role")
    schema = ROLE_SCHEMAS.get(kind)
    if schema is None:
        chk.fail("roles", f"instrument roles are defined for processor kinds {', '.join(sorted(ROLE_SCHEMAS))}; got {kind!r}")
    cfg.roles = parse_section(chk, schema, cfg.roles, "roles")
    cfg.emulator = None if cfg.emulator is None else parse_section(chk, EmulatorSettings, cfg.emulator, "emulator")
    ROLE_CHECKS[kind](chk, cfg)
