"""The chip emulator of an integrated_chip processor section, drawn the same way for both twin levels.

The in-process twin (``lightloop.benches.integrated_chip``) and the wire-level twin
(``lightloop.simulators.wire.integrated_chip``) both call :func:`make_chip_emulator`, so a run through the real
drivers meets the same hidden chip and the same noise stream as a run on the in-process ports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lightloop.simulators.chip import ChipEmulator
from lightloop.simulators.chip_truth import ChipDesign, ChipTruth, ChipVariation
from lightloop.simulators.thermo_optic import ThermoOpticVariation

__all__ = ["ChipDraw", "make_chip_emulator"]


@dataclass(frozen=True)
class ChipDraw:
    """Which chip and noise stream a run meets: seeds, ideal switch, precision, phi0 spread override (rad)."""

    chip_seed: int
    noise_seed: int
    ideal: bool = False
    precision: str = "single"
    phi0_sd_rad: float | None = None


def make_chip_emulator(p: Any, sizes: tuple[int, ...], draw: ChipDraw) -> ChipEmulator:
    """ChipEmulator of processor section `p` for layer sizes (n_in, *hidden, n_out)."""
    ps, v = p.phase_shifters, p.chip.variation
    if draw.ideal:
        var = ChipVariation.none()
        var.acquisition_s, var.settle_s = p.chip.acquisition_s, p.chip.settle_s
        loss_db, xt = 0.0, 0.0
    else:
        phi0 = v.phi0_sd_rad if draw.phi0_sd_rad is None else float(draw.phi0_sd_rad)
        thermo = ThermoOpticVariation(phi0, v.p_pi_rel_sd, v.resistance_rel_sd, v.crosstalk_scale_sd,
                                      v.crosstalk_pair_sd, v.drift_rad_per_sqrt_s,
                                      getattr(v, "phi0_distribution", "normal"))
        n = p.chip.noise
        g, ph = v.gain_rel_sd, v.phase_error_sd_rad
        var = ChipVariation(
            coupler_sd_rad=v.coupler_sd_rad, loss_sd_db=v.loss_sd_db, thermo=thermo,
            ring_detuning_sd=v.ring_detuning_sd, ring_k_rel_sd=v.ring_k_rel_sd, supply_rel_sd=v.supply_rel_sd,
            pd_gain_rel_sd=g, slope_gain_rel_sd=g, monitor_gain_rel_sd=g, receiver_gain_rel_sd=g,
            receiver_phase_sd=ph, source_gain_rel_sd=g, source_phase_sd=ph, monitor_noise=n.monitor,
            monitor_floor=n.monitor_floor, receiver_noise=n.receiver, pd_noise=n.photodiode, slope_noise=n.slope,
            acquisition_s=p.chip.acquisition_s, settle_s=p.chip.settle_s)
        loss_db, xt = p.loss_db_per_column, ps.crosstalk_nearest
    a = p.activation
    design = ChipDesign(n_in=sizes[0], hidden=tuple(sizes[1:-1]), n_out=sizes[-1], layer_kind=p.layer, mesh=p.mesh,
                        bias_ports=p.encoder.bias_ports, svd_gain=p.svd_gain, screen=False,
                        loss_db_per_column=loss_db, p_pi_w=ps.p_pi_w_per_rad, resistance_ohm=ps.resistance_ohm,
                        crosstalk_nearest=xt, crosstalk_decay=ps.crosstalk_decay, ring_k=a.k,
                        ring_t_min=a.t_min, ring_supply=a.supply, ring_detuning_per_volt=a.detuning_per_volt,
                        dtype=np.complex64 if draw.precision == "single" else np.complex128)
    truth = ChipTruth.draw(design, var, draw.chip_seed)
    return ChipEmulator(design, truth, var, seed=draw.noise_seed)
