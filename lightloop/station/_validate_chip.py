"""Station checks of an integrated_chip bench: heater blocks, detectors and the laser."""

from __future__ import annotations

from typing import Any

from lightloop.station._instruments import Checker, InstrumentSpec
from lightloop.station._roles import ROLE_DRIVERS, ChipRoles
from lightloop.station._checks import check_channel, check_common, check_ref, check_source

__all__ = ["check_chip"]


def check_chip(chk: Checker, cfg: Any) -> None:
    insts: dict[str, InstrumentSpec] = cfg.instruments
    roles: ChipRoles = cfg.roles
    n_layers = len(getattr(cfg.processor, "hidden", [])) + 1
    used: dict[str, str] = {}
    check_source(chk, insts, roles.source, used)
    for group, want in (("phase_shifters", n_layers), ("activation_bias", n_layers - 1)):
        banks = getattr(roles, group)
        if group == "phase_shifters" and len(banks) != want:
            chk.fail(f"roles.{group}", f"{len(banks)} entries for {want} mesh layers; expected one heater block per layer")
        if group == "activation_bias" and banks and len(banks) != want:
            chk.fail(f"roles.{group}", f"{len(banks)} entries for {want} activation layers; expected one per hidden layer")
    taken: dict[tuple[str, int], str] = {}
    for group in ("phase_shifters", "activation_bias"):
        for i, bank in enumerate(getattr(roles, group)):
            loc = f"roles.{group}[{i}]"
            d = check_ref(chk, insts, f"{loc}.instrument", bank.instrument, ROLE_DRIVERS["heater"])
            first = 1 if d == "scpi_source" else 0
            for ch in (bank.first_channel, bank.first_channel + bank.count - 1):
                check_channel(chk, insts, f"{loc}.first_channel", bank.instrument, ch, first)
            for ch in range(bank.first_channel, bank.first_channel + bank.count):
                if (bank.instrument, ch) in taken:
                    chk.fail(loc, f"channel {ch} of {bank.instrument!r} already belongs to {taken[(bank.instrument, ch)]}; "
                             "expected disjoint channel blocks")
                taken[(bank.instrument, ch)] = loc
            if bank.instrument in used and used[bank.instrument].startswith("roles.source"):
                chk.fail(f"{loc}.instrument", f"{bank.instrument!r} already serves {used[bank.instrument]}")
            used.setdefault(bank.instrument, loc)
    det = roles.detectors
    seen: dict[tuple[str, int], str] = {}
    refs = [("outputs", det.outputs)] + [(f"monitors[{i}]", r) for i, r in enumerate(det.monitors)] \
        + [(f"receivers[{i}]", r) for i, r in enumerate(det.receivers)]
    for what in ("monitors", "receivers"):
        if getattr(det, what) and len(getattr(det, what)) != n_layers:
            chk.fail(f"roles.detectors.{what}", f"{len(getattr(det, what))} entries; expected {n_layers} (one per mesh layer)")
    for name, ref in refs:
        loc = f"roles.detectors.{name}"
        check_ref(chk, insts, f"{loc}.instrument", ref.instrument, ROLE_DRIVERS["detector"])
        check_channel(chk, insts, f"{loc}.channel", ref.instrument, ref.channel)
        if (ref.instrument, ref.channel) in seen:
            chk.fail(f"{loc}.channel", f"channel {ref.channel} of {ref.instrument!r} already serves {seen[(ref.instrument, ref.channel)]}")
        seen[(ref.instrument, ref.channel)] = loc
        used.setdefault(ref.instrument, loc)
    check_common(chk, cfg, used, light_path=[])
