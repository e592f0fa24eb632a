"""Station checks of an integrated_chip bench: the laser, IQ channel blocks, heater blocks, detectors, limits.

Sizes that depend on the dataset (a block's channel count against its mesh layer's ports or phase shifters)
are checked by the bench builder before anything connects; everything else is checked here, when the config
loads.
"""

from __future__ import annotations

from typing import Any

from lightloop.station._checks import check_channel, check_common, check_ref, check_source
from lightloop.station._instruments import Checker, InstrumentSpec
from lightloop.station._roles import ROLE_DRIVERS, ChannelRef, ChipRoles, HeaterBankRole, IQBlockRole

__all__ = ["check_chip"]


def _count(chk: Checker, loc: str, have: int, want: int, what: str) -> None:
    if have != want:
        chk.fail(loc, f"{have} entries; expected {want} ({what})")


def _block(chk: Checker, insts: dict[str, InstrumentSpec], loc: str, instrument: str, first: int, count: int,
           allowed: set[str], taken: dict[tuple[str, int], str]) -> str:
    """Instrument kind, first and last channel on the instrument, no channel shared with another block."""
    d = check_ref(chk, insts, f"{loc}.instrument", instrument, allowed)
    base = 0 if d == "qontrol_heater" else 1
    for ch in (first, first + count - 1):
        check_channel(chk, insts, f"{loc}.first_channel" if ch == first else f"{loc}.count", instrument, ch, base)
    for ch in range(first, first + count):
        if (instrument, ch) in taken:
            chk.fail(loc, f"channel {ch} of {instrument!r} already belongs to {taken[(instrument, ch)]}; "
                     "expected disjoint channel blocks")
        taken[(instrument, ch)] = loc
    return d


def _iq(chk: Checker, insts: dict[str, InstrumentSpec], loc: str, role: IQBlockRole, peak: float, peak_what: str,
        taken: dict[tuple[str, int], str]) -> None:
    d = _block(chk, insts, loc, role.instrument, role.first_channel, role.count, ROLE_DRIVERS["iq"], taken)
    if d == "twin":
        return
    lim = insts[role.instrument].limit("amplitude")
    if lim is not None and role.amplitude > lim.high * (1 + 1e-12):
        chk.fail(f"{loc}.amplitude", f"{role.amplitude:g} V widens the amplitude limit {lim.high:g} V of "
                 f"{role.instrument!r}; expected amplitude <= {lim.high:g} V")
    if role.full_scale_field < peak * (1 - 1e-12):
        chk.fail(f"{loc}.full_scale_field", f"{role.full_scale_field:g} cannot carry {peak_what} = {peak:g}; expected "
                 f"full_scale_field >= {peak:g}")


def _bank_limit(chk: Checker, insts: dict[str, InstrumentSpec], loc: str, bank: HeaterBankRole, volts: float,
                what: str, bipolar: bool) -> None:
    spec = insts[bank.instrument]
    if spec.driver == "twin":
        return
    lim = spec.limit("voltage")
    if lim is None:
        return
    reach = max(lim.high, -lim.low) if bipolar else lim.high
    if volts > reach * (1 + 1e-12):
        chk.fail(loc, f"{what} {volts:g} V widens the voltage limit {lim} of {bank.instrument!r}; expected "
                 f"{what} <= {reach:g} V")


def check_chip(chk: Checker, cfg: Any) -> None:
    """Every role's instrument of the right kind, channel blocks inside their instruments and disjoint, one entry
    per mesh / hidden layer, and no processor limit wider than its instrument's."""
    insts: dict[str, InstrumentSpec] = cfg.instruments
    roles: ChipRoles = cfg.roles
    p = cfg.processor
    n_hidden = len(getattr(p, "hidden", []))
    n_layers = n_hidden + 1
    used: dict[str, str] = {}
    check_source(chk, insts, roles.source, used)

    taken: dict[tuple[str, int], str] = {}
    enc = getattr(p, "encoder", None)
    enc_peak = max(enc.field_scale, enc.bias_amplitude) if enc is not None else 0.0
    max_inj = float(getattr(p, "max_injection_field", 0.0))
    iq = [("roles.encoder", roles.encoder, enc_peak, "the encoder's peak field (processor.encoder field_scale / "
           "bias_amplitude)")]
    for group in ("injectors", "adjoint_sources"):
        blocks = getattr(roles, group)
        _count(chk, f"roles.{group}", len(blocks), n_layers, "one IQ block per mesh layer")
        iq += [(f"roles.{group}[{i}]", b, max_inj, "processor.max_injection_field") for i, b in enumerate(blocks)]
    for loc, role, peak, what in iq:
        _iq(chk, insts, loc, role, peak, what, taken)
        used.setdefault(role.instrument, loc)

    _count(chk, "roles.phase_shifters", len(roles.phase_shifters), n_layers, "one heater block per mesh layer")
    _count(chk, "roles.activation_bias", len(roles.activation_bias), n_hidden, "one bias block per hidden layer")
    ps, act = getattr(p, "phase_shifters", None), getattr(p, "activation", None)
    for group in ("phase_shifters", "activation_bias"):
        for i, bank in enumerate(getattr(roles, group)):
            loc = f"roles.{group}[{i}]"
            _block(chk, insts, loc, bank.instrument, bank.first_channel, bank.count, ROLE_DRIVERS["heater"], taken)
            if group == "phase_shifters" and ps is not None:
                _bank_limit(chk, insts, loc, bank, ps.v_max, "processor.phase_shifters.v_max", bipolar=False)
            elif act is not None:
                _bank_limit(chk, insts, loc, bank, act.v_bias_max, "processor.activation.v_bias_max", bipolar=True)
                v = abs(act.detuning / act.detuning_per_volt)
                if v > act.v_bias_max:
                    chk.fail("processor.activation.detuning", f"needs {v:g} V of ring bias; expected |detuning / "
                             f"detuning_per_volt| <= v_bias_max = {act.v_bias_max:g} V")
            if used.get(bank.instrument, "").startswith("roles.source"):
                chk.fail(f"{loc}.instrument", f"{bank.instrument!r} already serves {used[bank.instrument]}")
            used.setdefault(bank.instrument, loc)

    det = roles.detectors
    refs: list[tuple[str, ChannelRef]] = [("outputs", det.outputs)]
    for group, want, what in (("monitors", n_layers, "one per mesh layer"),
                              ("output_receivers", n_layers, "one per mesh layer"),
                              ("input_receivers", n_layers, "one per mesh layer"),
                              ("activation_power", n_hidden, "one per hidden layer"),
                              ("activation_slope", n_hidden, "one per hidden layer")):
        lst = getattr(det, group)
        _count(chk, f"roles.detectors.{group}", len(lst), want, what)
        refs += [(f"{group}[{i}]", r) for i, r in enumerate(lst)]
    seen: dict[tuple[str, int], str] = {}
    for name, ref in refs:
        loc = f"roles.detectors.{name}"
        check_ref(chk, insts, f"{loc}.instrument", ref.instrument, ROLE_DRIVERS["detector"])
        check_channel(chk, insts, f"{loc}.channel", ref.instrument, ref.channel)
        if (ref.instrument, ref.channel) in seen:
            chk.fail(f"{loc}.channel", f"channel {ref.channel} of {ref.instrument!r} already serves "
                     f"{seen[(ref.instrument, ref.channel)]}; expected one detector array per channel")
        seen[(ref.instrument, ref.channel)] = loc
        used.setdefault(ref.instrument, loc)
    light = [roles.source.laser, roles.encoder.instrument, det.outputs.instrument]
    check_common(chk, cfg, used, light_path=light)
