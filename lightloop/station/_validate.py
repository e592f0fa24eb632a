"""validate_station: the instruments / roles / emulator sections of a lab config, checked together (one-line errors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightloop.station._checks import parse_section
from lightloop.station._instruments import Checker, InstrumentSpec, validate_instrument
from lightloop.station._roles import ROLE_SCHEMAS, EmulatorSettings
from lightloop.station._validate_chip import check_chip
from lightloop.station._validate_free_space import check_free_space

__all__ = ["validate_station", "ROLE_CHECKS"]


#: processor kind -> the checks of its roles against its processor section
ROLE_CHECKS: dict[str, Callable[[Checker, Any], None]] = {"free_space": check_free_space, "integrated_chip": check_chip}


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
    cfg.instruments = insts
    if cfg.roles is None:
        chk.fail("roles", "missing; expected which instrument channel serves each HAL role")
    schema = ROLE_SCHEMAS.get(kind)
    if schema is None:
        chk.fail("roles", f"instrument roles are defined for processor kinds {', '.join(sorted(ROLE_SCHEMAS))}; got {kind!r}")
    cfg.roles = parse_section(chk, schema, cfg.roles, "roles")
    cfg.emulator = None if cfg.emulator is None else parse_section(chk, EmulatorSettings, cfg.emulator, "emulator")
    ROLE_CHECKS[kind](chk, cfg)
