"""Station checks of a free_space bench: every role's instrument kind, channels, and limits against the processor."""

from __future__ import annotations

from typing import Any

from lightloop.station._instruments import Checker, InstrumentSpec
from lightloop.station._roles import ROLE_DRIVERS, DisplayRole, FreeSpaceRoles
from lightloop.station._checks import check_channel, check_common, check_ref, check_source

__all__ = ["check_free_space"]


def check_free_space(chk: Checker, cfg: Any) -> None:
    insts: dict[str, InstrumentSpec] = cfg.instruments
    roles: FreeSpaceRoles = cfg.roles
    p = cfg.processor
    n_layers = len(p.hidden) + 1
    used: dict[str, str] = {}

    def once(loc: str, name: str) -> None:
        if name in used:
            chk.fail(loc, f"{name!r} already serves {used[name]}; expected one role per instrument")
        used[name] = loc

    check_source(chk, insts, roles.source, used)
    for role, attr, minimum in (("input", "input_field_scale", p.input_field_scale), ("probe", "probe_field", p.probe_field)):
        r: DisplayRole = getattr(roles, role)
        check_ref(chk, insts, f"roles.{role}.instrument", r.instrument, ROLE_DRIVERS["slm"])
        once(f"roles.{role}", r.instrument)
        if r.full_scale_field < minimum * (1 - 1e-9):
            chk.fail(f"roles.{role}.full_scale_field", f"{r.full_scale_field:g} cannot show processor.{attr} = "
                     f"{minimum:g}; expected >= {minimum:g}")
    if len(roles.weights) != n_layers:
        chk.fail("roles.weights", f"{len(roles.weights)} entries for {n_layers} weight layers (processor.hidden "
                 f"{list(p.hidden)}); expected one per weight layer")
    gain_channels: set[tuple[str, int]] = set()
    for i, w in enumerate(roles.weights):
        loc = f"roles.weights[{i}]"
        d = check_ref(chk, insts, f"{loc}.instrument", w.instrument, ROLE_DRIVERS["weights"])
        once(loc, w.instrument)
        device = p.weights.device
        if d != "twin" and d != device:
            chk.fail(f"{loc}.instrument", f"{w.instrument!r} is a {d} but processor.weights.device is {device!r}; "
                     "expected matching devices")
        if d == "slm" and w.layout == "checkerboard" and w.block_pixels < 2:
            chk.fail(f"{loc}.block_pixels", "a checkerboard needs blocks of at least 2x2 pixels; expected >= 2")
        if d == "dmd" and w.block_pixels != p.weights.dmd_block_pixels:
            chk.fail(f"{loc}.block_pixels", f"{w.block_pixels} differs from processor.weights.dmd_block_pixels = "
                     f"{p.weights.dmd_block_pixels}; expected equal")
        if d != "twin" and (w.gain is None) == (w.fixed_gain is None):
            chk.fail(loc, "expected exactly one of 'gain' (a source channel driving the amplifier) or "
                     "'fixed_gain' (amplifier set by hand)")
        if d == "twin" and (w.gain is not None or w.fixed_gain is not None):
            chk.fail(loc, "a twin weight device sets its amplifier in process; expected no 'gain' or 'fixed_gain'")
        if w.gain is not None:
            check_ref(chk, insts, f"{loc}.gain.instrument", w.gain.instrument, ROLE_DRIVERS["gain"])
            check_channel(chk, insts, f"{loc}.gain.channel", w.gain.instrument, w.gain.channel)
            key = (w.gain.instrument, w.gain.channel)
            if key in gain_channels:
                chk.fail(f"{loc}.gain.channel", f"channel {w.gain.channel} of {w.gain.instrument!r} already drives "
                         "another amplifier; expected one channel per layer")
            gain_channels.add(key)
            if w.gain.instrument in used and not used[w.gain.instrument].startswith("roles.weights"):
                chk.fail(f"{loc}.gain.instrument", f"{w.gain.instrument!r} already serves {used[w.gain.instrument]}")
            used.setdefault(w.gain.instrument, f"{loc}.gain")
            vlim = insts[w.gain.instrument].limit("voltage")
            need = (p.weights.max_weight / p.weights.efficiency) * w.gain.volts_per_gain
            if vlim is not None and not vlim.contains(need):
                chk.fail(f"{loc}.gain.volts_per_gain", f"gain {p.weights.max_weight / p.weights.efficiency:g} needs "
                         f"{need:g} V, outside the voltage limit {vlim} of {w.gain.instrument!r}; expected a control "
                         "voltage inside the limit")
    if len(roles.vapor_cells) != n_layers - 1:
        chk.fail("roles.vapor_cells", f"{len(roles.vapor_cells)} entries for {n_layers - 1} vapor cells (one per "
                 f"hidden layer {list(p.hidden)}); expected one per cell")
    for i, c in enumerate(roles.vapor_cells):
        check_ref(chk, insts, f"roles.vapor_cells[{i}].instrument", c.instrument, ROLE_DRIVERS["cell"])
        once(f"roles.vapor_cells[{i}]", c.instrument)
        lim = insts[c.instrument].limit("temperature")
        if lim is not None and (lim.high < p.vapor_cell.t_min_k or lim.low > p.vapor_cell.t_max_k):
            chk.fail(f"instruments.{c.instrument}.limits.temperature", f"{lim} does not overlap processor.vapor_cell "
                     f"[{p.vapor_cell.t_min_k:g}, {p.vapor_cell.t_max_k:g}] K; expected overlapping ranges")
        if insts[c.instrument].driver != "twin" and insts[c.instrument].limit("ramp_rate") is None:
            chk.fail(f"instruments.{c.instrument}.limits.ramp_rate", "missing; expected a ramp rate limit (K/min)")
    seen: dict[tuple[str, int], str] = {}
    for tap, want in (("pre", n_layers), ("post", n_layers - 1), ("error", n_layers - 1)):
        refs = getattr(roles.detectors, tap)
        if len(refs) != want:
            chk.fail(f"roles.detectors.{tap}", f"{len(refs)} entries; expected {want} (one per "
                     f"{'weight layer' if tap == 'pre' else 'vapor cell'})")
        for i, ref in enumerate(refs):
            loc = f"roles.detectors.{tap}[{i}]"
            check_ref(chk, insts, f"{loc}.instrument", ref.instrument, ROLE_DRIVERS["detector"])
            check_channel(chk, insts, f"{loc}.channel", ref.instrument, ref.channel)
            if (ref.instrument, ref.channel) in seen:
                chk.fail(f"{loc}.channel", f"channel {ref.channel} of {ref.instrument!r} already serves "
                         f"{seen[(ref.instrument, ref.channel)]}; expected one array per channel")
            seen[(ref.instrument, ref.channel)] = loc
            if ref.instrument in used and not used[ref.instrument].startswith("roles.detectors"):
                chk.fail(f"{loc}.instrument", f"{ref.instrument!r} already serves {used[ref.instrument]}")
            used.setdefault(ref.instrument, loc)
    check_common(chk, cfg, used, light_path=[roles.input.instrument, roles.probe.instrument, roles.source.laser]
                  + [r.instrument for r in roles.detectors.pre + roles.detectors.post + roles.detectors.error])
