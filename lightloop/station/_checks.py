"""Checks shared by every bench's station validation: instrument references, channels, the laser, the wire twin."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from lightloop.addresses import address_port
from lightloop.errors import ConfigError
from lightloop.schema import StrictModel, validation_message
from lightloop.station._instruments import VISA_DRIVERS, Checker, InstrumentSpec
from lightloop.station._roles import ROLE_DRIVERS, LaserRole

__all__ = ["parse_section", "check_ref", "check_channel", "check_source", "check_common"]


def parse_section(chk: Checker, model: type[StrictModel], data: Any, prefix: str) -> Any:
    """Validate one config section against its model; a ConfigError naming the field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(chk.source, exc, prefix)) from None


def check_ref(chk: Checker, insts: dict[str, InstrumentSpec], loc: str, name: str, allowed: set[str]) -> str:
    if name not in insts:
        chk.fail(loc, f"unknown instrument {name!r}; expected one of {', '.join(sorted(insts))}")
    d = insts[name].driver
    if d != "twin" and d not in allowed:
        chk.fail(loc, f"{name!r} is a {d}; expected a {' or '.join(sorted(allowed))} (or a twin)")
    return d


def check_channel(chk: Checker, insts: dict[str, InstrumentSpec], loc: str, name: str, channel: int, first: int = 1) -> None:
    spec = insts[name]
    if spec.driver == "twin":
        return
    n = spec.hardware("n_channels")
    if not isinstance(n, int):
        return  # e.g. a Qontrol that reports its channel count when it connects
    if not first <= channel < first + n:
        chk.fail(loc, f"channel {channel} does not exist on {name!r} ({spec.driver} with {n} channels); "
                 f"expected {first}..{first + n - 1}")


def check_source(chk: Checker, insts: dict[str, InstrumentSpec], src: LaserRole, used: dict[str, str]) -> None:
    check_ref(chk, insts, "roles.source.laser", src.laser, ROLE_DRIVERS["laser"])
    used[src.laser] = "roles.source.laser"
    spec = insts[src.laser]
    if spec.driver != "twin":
        cur, power = spec.limit("current"), spec.limit("power")
        i_max = cur.high if cur else math.inf
        if power is not None:
            i_max = min(i_max, src.threshold_current + power.high / src.slope_efficiency)
        if src.operating_current > i_max + 1e-12:
            chk.fail("roles.source.operating_current", f"{src.operating_current:g} A exceeds what the limits of "
                     f"{src.laser!r} allow ({i_max:g} A from the current and power limits); expected <= {i_max:g} A")
    if src.power_meter is not None:
        check_ref(chk, insts, "roles.source.power_meter", src.power_meter, ROLE_DRIVERS["power_meter"])
        used[src.power_meter] = "roles.source.power_meter"


def check_common(chk: Checker, cfg: Any, used: dict[str, str], light_path: list[str]) -> None:
    insts: dict[str, InstrumentSpec] = cfg.instruments
    for name in insts:
        if name not in used:
            chk.fail(f"instruments.{name}", "not used by any role; expected every instrument to serve a role "
                     "(remove it or add its role)")
    twins = {n for n, s in insts.items() if s.driver == "twin"}
    drivers = set(insts) - twins
    em = cfg.emulator
    autostart = em is not None and em.autostart
    if twins and drivers and not autostart:
        chk.fail("emulator.autostart", f"instruments {sorted(twins)} are twins but {sorted(drivers)} are real drivers; "
                 "expected emulator.autostart: true so that both share one emulator")
    kinds = {insts[n].driver == "twin" for n in light_path}
    if len(kinds) > 1:
        chk.fail("instruments", "the light path (input, probe, laser and detectors) must be all twins or all "
                 f"drivers; got a mix in {sorted(set(light_path))}")
    if em is not None:
        for name in sorted(drivers):
            spec = insts[name]
            if spec.driver == "dmd":
                chk.fail(f"instruments.{name}.driver", "the wire twin cannot serve a DMD (a ctypes SDK has no wire); "
                         "expected 'twin' or an SLM in an emulated config")
            try:
                host, _ = address_port(spec.driver, spec.address or "")
            except ValueError:
                form = {"slm": "127.0.0.1:<port>", "qontrol_heater": "socket://127.0.0.1:<port>"}.get(
                    spec.driver, "TCPIP::127.0.0.1::<port>::SOCKET")
                chk.fail(f"instruments.{name}.address", f"{spec.address!r} is not served by the wire twin; expected {form}")
            if host not in ("127.0.0.1", "localhost"):
                chk.fail(f"instruments.{name}.address", f"host {host!r}: the wire twin serves 127.0.0.1 only; "
                         "expected a loopback address")
            if spec.driver in VISA_DRIVERS and spec.visalib not in ("@py",):
                chk.fail(f"instruments.{name}.visalib", "TCPIP SOCKET resources of the wire twin need pyvisa-py; "
                         "expected '@py'")
