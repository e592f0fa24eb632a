"""Design, process variation and hidden ground truth of an integrated photonic neural-network chip.

:class:`ChipDesign` is what the HAL knows before calibration; :class:`ChipVariation` the process-variation
and noise model; :meth:`ChipTruth.draw` draws one chip's HIDDEN truth from it with a seeded generator
(coupler errors, waveguide losses, heater phi0 / P_pi / resistance, thermal crosstalk, ring resonance
shifts, modulator and photodiode gains, tap ratios, receiver and source gain/phase errors). The light path
that reads the truth is :class:`lightloop.simulators.chip.ChipEmulator`; the HAL never reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.physics.mzi import mesh_layout
from lightloop.physics.mesh import MeshErrors, MeshLayer, layer_ports
from lightloop.simulators.thermo_optic import HeaterArrayTruth, ThermoOpticVariation

__all__ = ["ChipDesign", "ChipVariation", "ChipTruth", "LayerTruth", "ActivationTruth", "layer_ports"]


@dataclass
class ChipDesign:
    """Nominal (design) description of a chip: what the HAL knows before any calibration."""

    n_in: int
    hidden: tuple[int, ...]
    n_out: int
    layer_kind: str = "unitary"          # 'unitary' | 'svd'
    mesh: str = "rectangular"            # 'rectangular' | 'triangular'
    bias_ports: int = 2
    svd_gain: float = 1.0
    screen: bool = False                 # output phase screen on unitary layers
    loss_db_per_column: float = 0.1      # waveguide + MZI insertion loss per mesh column
    p_pi_w: float = 0.025 / np.pi        # heater power per radian (W/rad)
    resistance_ohm: float = 1000.0
    crosstalk_nearest: float = 0.04      # thermal crosstalk at one mode pitch
    crosstalk_decay: float = 1.0
    crosstalk_cutoff: float = 3.0
    ring_k: float = 3.0                  # resonance shift (linewidths) per unit optical power
    ring_t_min: float = 0.0
    ring_supply: float = 1.0
    ring_detuning_per_volt: float = 1.0
    dtype: Any = np.complex64

    @property
    def ports(self) -> tuple[int, ...]:
        """Ports of every mesh layer."""
        return layer_ports(self.n_in, self.hidden, self.n_out, self.bias_ports)

    @property
    def eta_per_column(self) -> float:
        """Nominal amplitude transmission per mesh column."""
        return float(10 ** (-self.loss_db_per_column / 20))

    def detector_gain(self, layer: MeshLayer) -> float:
        """Designed photodiode gain 1 / T of a layer (T = eta^(2 columns), its nominal power transmission)."""
        return float(self.eta_per_column ** (-2 * layer.loss_columns()))


@dataclass
class ChipVariation:
    """Process variation and noise of the chip (standard deviations); ChipVariation.none() is ideal."""

    coupler_sd_rad: float = 0.02        # beamsplitter error (rad) about the 50:50 point
    loss_sd_db: float = 0.02            # spread of the per-column loss
    thermo: ThermoOpticVariation = field(default_factory=ThermoOpticVariation)
    ring_detuning_sd: float = 0.15      # ring resonance shift (linewidths)
    ring_k_rel_sd: float = 0.05
    supply_rel_sd: float = 0.03
    pd_gain_rel_sd: float = 0.02
    slope_gain_rel_sd: float = 0.03
    monitor_gain_rel_sd: float = 0.03   # tap ratio x responsivity
    receiver_gain_rel_sd: float = 0.02
    receiver_phase_sd: float = 0.02
    source_gain_rel_sd: float = 0.01
    source_phase_sd: float = 0.01
    monitor_noise: float = 1e-3         # shot noise: variance monitor_noise^2 * I per exposure
    monitor_floor: float = 1e-5         # read noise per exposure (intensity units)
    receiver_noise: float = 1e-3        # complex field noise (field units)
    pd_noise: float = 1e-3              # relative noise of a power reading
    slope_noise: float = 1e-3           # absolute noise of the slope output
    acquisition_s: float = 1e-3
    settle_s: float = 1e-3

    @classmethod
    def none(cls) -> "ChipVariation":
        """Ideal chip: no variation, no noise, no drift (time still advances)."""
        zero = {f: 0.0 for f in ("coupler_sd_rad", "loss_sd_db", "ring_detuning_sd", "ring_k_rel_sd",
                                 "supply_rel_sd", "pd_gain_rel_sd", "slope_gain_rel_sd", "monitor_gain_rel_sd",
                                 "receiver_gain_rel_sd", "receiver_phase_sd", "source_gain_rel_sd",
                                 "source_phase_sd", "monitor_noise", "monitor_floor", "receiver_noise",
                                 "pd_noise", "slope_noise")}
        return cls(thermo=ThermoOpticVariation.none(), **zero)

    def without_noise(self) -> "ChipVariation":
        """Same fabrication spread, noise-free detectors."""
        return replace(self, monitor_noise=0.0, monitor_floor=0.0, receiver_noise=0.0, pd_noise=0.0, slope_noise=0.0)


@dataclass
class LayerTruth:
    """Hidden truth of one mesh layer."""

    mesh_errors: list[MeshErrors]
    attenuator: tuple[NDArray, NDArray, NDArray] | None
    heaters: HeaterArrayTruth
    monitor_gain: NDArray[np.float64]
    out_receiver: NDArray[np.complex128]
    in_receiver: NDArray[np.complex128]
    injector: NDArray[np.complex128]
    adjoint_source: NDArray[np.complex128]


@dataclass
class ActivationTruth:
    """Hidden truth of one bank of EO activations."""

    detuning_offset: NDArray[np.float64]
    k: NDArray[np.float64]
    supply: NDArray[np.float64]
    pd_gain: NDArray[np.float64]
    slope_gain: NDArray[np.float64]


@dataclass
class ChipTruth:
    """Hidden ground truth of one chip."""

    seed: int
    layers: list[LayerTruth]
    activations: list[ActivationTruth]
    source: NDArray[np.complex128]
    output_gain: NDArray[np.float64]

    @classmethod
    def draw(cls, design: ChipDesign, variation: ChipVariation, seed: int) -> "ChipTruth":
        """Draw a chip from the process-variation model with a seeded generator."""
        rng = np.random.default_rng(seed)
        v = variation
        ports = design.ports
        eta0_db = design.loss_db_per_column
        cplx = lambda n, g, p: (1 + g * rng.standard_normal(n)) * np.exp(1j * p * rng.standard_normal(n))  # noqa: E731
        layers = []
        for n in ports:
            lay = mesh_layout(n, design.mesh)
            n_blocks = 2 if design.layer_kind == "svd" else 1
            errs = []
            for _ in range(n_blocks):
                loss_db = np.maximum(eta0_db + v.loss_sd_db * rng.standard_normal((lay.n_columns, n)), 0.0)
                errs.append(MeshErrors(v.coupler_sd_rad * rng.standard_normal(lay.n_mzi),
                                       v.coupler_sd_rad * rng.standard_normal(lay.n_mzi), 10 ** (-loss_db / 20)))
            att = None
            if design.layer_kind == "svd":
                att_loss = np.maximum(eta0_db + v.loss_sd_db * rng.standard_normal((2, n)), 0.0)
                att = (v.coupler_sd_rad * rng.standard_normal(n), v.coupler_sd_rad * rng.standard_normal(n),
                       10 ** (-att_loss / 20))
            proto = MeshLayer.build(design.layer_kind, n, design.mesh, screen=design.screen)
            heaters = HeaterArrayTruth.draw(proto.heater_positions(), rng, v.thermo, p_pi_w=design.p_pi_w,
                                            resistance_ohm=design.resistance_ohm,
                                            crosstalk_nearest=design.crosstalk_nearest,
                                            crosstalk_decay=design.crosstalk_decay,
                                            crosstalk_cutoff=design.crosstalk_cutoff)
            layers.append(LayerTruth(
                errs, att, heaters,
                monitor_gain=1 + v.monitor_gain_rel_sd * rng.standard_normal(proto.n_shifters),
                out_receiver=cplx(n, v.receiver_gain_rel_sd, v.receiver_phase_sd),
                in_receiver=cplx(n, v.receiver_gain_rel_sd, v.receiver_phase_sd),
                injector=cplx(n, v.source_gain_rel_sd, v.source_phase_sd),
                adjoint_source=cplx(n, v.source_gain_rel_sd, v.source_phase_sd)))
        acts = []
        for h in design.hidden:
            acts.append(ActivationTruth(
                detuning_offset=v.ring_detuning_sd * rng.standard_normal(h),
                k=design.ring_k * (1 + v.ring_k_rel_sd * rng.standard_normal(h)),
                supply=design.ring_supply * (1 + v.supply_rel_sd * rng.standard_normal(h)),
                pd_gain=1 + v.pd_gain_rel_sd * rng.standard_normal(h),
                slope_gain=1 + v.slope_gain_rel_sd * rng.standard_normal(h)))
        source = cplx(ports[0], v.source_gain_rel_sd, v.source_phase_sd)
        out_gain = 1 + v.pd_gain_rel_sd * rng.standard_normal(design.n_out)
        return cls(seed, layers, acts, source, out_gain)
