"""Integrated photonic chip (Ashtiani, Idjadi, Kim, Nature 2026; Pai et al., Science 2023): config schema
and builder on the in-process twin.

The HAL gets only nominal (design) knowledge: phi0 = 0, nominal P_pi and R, the designed thermal crosstalk
matrix (compensated when `phase_shifters.compensate_crosstalk`), the nominal per-column loss, unity gains.
The twin draws the chip's hidden truth from the process-variation model with `chip.seed`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from lightloop.schema import BuildOverrides, LabConfig, LayerSize, Seed, StrictModel
from lightloop.errors import ConfigError
from lightloop.hal.chip import ChipProcessor
from lightloop.hal.chip_roles import (
    ChipLayer,
    CoherentReceiver,
    EOActivation,
    EOActivationModel,
    FieldInjector,
    ForwardSource,
    MeshMonitor,
    PowerDetector,
)
from lightloop.hal.phase_shifters import PhaseShifterBank, ThermoOpticCalibration

__all__ = ["Schema", "build", "validate_sections", "HEATER_DRIVER_V_MAX"]

#: hardware limit of the heater driver (Qontrol-style, 12 V); configs may only narrow it
HEATER_DRIVER_V_MAX = 12.0


class EncoderSettings(StrictModel):
    """Input IQ modulators: amplitude s (2x - 1) per feature (signed) or s x, plus constant bias ports."""

    field_scale: float = Field(3.0, gt=0, le=10)
    signed: bool = True
    bias_ports: int = Field(2, ge=0)
    bias_amplitude: float = Field(1.0, ge=0, le=10)


class ActivationSettings(StrictModel):
    """Ring-modulator activations: a(p) = sqrt(P_s T(detuning + k p))."""

    k: float = Field(3.0, gt=0, description="resonance shift (linewidths) per unit optical power")
    t_min: float = Field(0.0, ge=0, lt=1, description="ring transmission on resonance")
    supply: float = Field(1.0, gt=0, description="supply-carrier power")
    detuning: float = Field(0.0, description="ring bias detuning (linewidths)")
    detuning_per_volt: float = Field(1.0, gt=0)
    v_bias_max: float = Field(5.0, gt=0)


class PhaseShifterSettings(StrictModel):
    """Thermo-optic heaters: phase = phi0 + (C P) / P_pi, P = V^2 / R."""

    p_pi_w_per_rad: float = Field(0.025 / np.pi, gt=0, description="heater power per radian (W/rad)")
    resistance_ohm: float = Field(1000.0, gt=0)
    v_max: float = Field(9.0, gt=0, description="per-channel voltage limit (V)")
    crosstalk_nearest: float = Field(0.04, ge=0, lt=0.5, description="thermal crosstalk at one mode pitch")
    crosstalk_decay: float = Field(1.0, gt=0)
    compensate_crosstalk: bool = True

    @model_validator(mode="after")
    def _limits(self) -> "PhaseShifterSettings":
        if self.v_max > HEATER_DRIVER_V_MAX:
            raise ValueError(f"v_max {self.v_max} V widens the heater driver's {HEATER_DRIVER_V_MAX} V limit; "
                             f"expected v_max <= {HEATER_DRIVER_V_MAX} V")
        return self


class VariationSettings(StrictModel):
    """Process variation (standard deviations) of the twin's hidden truth."""

    phi0_sd_rad: float = Field(0.3, ge=0)
    coupler_sd_rad: float = Field(0.02, ge=0)
    loss_sd_db: float = Field(0.02, ge=0)
    p_pi_rel_sd: float = Field(0.05, ge=0)
    resistance_rel_sd: float = Field(0.03, ge=0)
    crosstalk_scale_sd: float = Field(0.2, ge=0)
    crosstalk_pair_sd: float = Field(0.1, ge=0)
    drift_rad_per_sqrt_s: float = Field(1e-3, ge=0)
    ring_detuning_sd: float = Field(0.15, ge=0)
    ring_k_rel_sd: float = Field(0.05, ge=0)
    supply_rel_sd: float = Field(0.03, ge=0)
    gain_rel_sd: float = Field(0.02, ge=0, description="photodiode, slope, monitor, receiver and source gains")
    phase_error_sd_rad: float = Field(0.02, ge=0, description="receiver and source phase errors")


class NoiseSettings(StrictModel):
    """Detector noise of the twin."""

    monitor: float = Field(1e-3, ge=0, description="relative noise of a tap reading")
    monitor_floor: float = Field(1e-5, ge=0, description="absolute tap noise floor (intensity units)")
    receiver: float = Field(1e-3, ge=0, description="coherent-receiver field noise")
    photodiode: float = Field(1e-3, ge=0, description="relative noise of a power reading")
    slope: float = Field(1e-3, ge=0)


class ChipTwinSettings(StrictModel):
    """In-process twin: chip draw, noise seed, ideal switch, precision."""

    seed: Seed = 1
    noise_seed: Seed = 0
    ideal: bool = False
    precision: Literal["single", "double"] = "single"
    variation: VariationSettings = VariationSettings()
    noise: NoiseSettings = NoiseSettings()
    acquisition_s: float = Field(1e-3, ge=0)
    settle_s: float = Field(1e-3, ge=0)


class Schema(StrictModel):
    """processor section of an integrated-chip config."""

    kind: Literal["integrated_chip"]
    hidden: list[LayerSize] = Field(default_factory=lambda: [8], min_length=1)
    layer: Literal["unitary", "svd"] = "unitary"
    mesh: Literal["rectangular", "triangular"] = "rectangular"
    loss_db_per_column: float = Field(0.1, ge=0, le=3)
    output_gain: float = Field(1.0, gt=0)
    svd_gain: float = Field(1.0, ge=1, description="amplifier gain of svd layers")
    adjoint_field: float = Field(1.0, gt=0, description="peak adjoint-source field")
    max_injection_field: float = Field(10.0, gt=0)
    encoder: EncoderSettings = EncoderSettings()
    activation: ActivationSettings = ActivationSettings()
    phase_shifters: PhaseShifterSettings = PhaseShifterSettings()
    chip: ChipTwinSettings = ChipTwinSettings()

    @model_validator(mode="after")
    def _check(self) -> "Schema":
        if any(h < 1 for h in self.hidden):
            raise ValueError("expected positive hidden layer sizes")
        if self.adjoint_field > self.max_injection_field:
            raise ValueError(f"adjoint_field {self.adjoint_field:g} exceeds max_injection_field "
                             f"{self.max_injection_field:g}; expected adjoint_field <= max_injection_field")
        return self


_EXTRA = {"chip_seed", "noise_seed", "precision", "phi0_sd_rad"}


def validate_sections(cfg: LabConfig) -> None:
    """Validate the station sections (so `lightloop safe` can secure a chip station; building on it is refused)."""
    if cfg.instruments is None and cfg.roles is None and cfg.emulator is None:
        return
    from lightloop.station import validate_station

    validate_station(cfg)


def build(cfg: LabConfig, n_inputs: int, n_outputs: int, ov: BuildOverrides) -> ChipProcessor:
    """ChipProcessor on the in-process twin for (n_inputs, *hidden, n_outputs)."""
    if cfg.instruments is not None:   # refused before anything is connected
        raise ConfigError(f"{cfg.source}: instruments: the 'integrated_chip' builder does not drive instruments yet "
                          "(its HAL wiring onto drivers is pending); expected processor.kind free_space, or no "
                          "instruments section to use the twin")
    from lightloop.physics.mzi import thermal_crosstalk
    from lightloop.simulators.chip import ChipEmulator
    from lightloop.simulators.chip_ports import (
        ActivationTwin,
        AdjointSourceTwin,
        ForwardSourceTwin,
        HeaterDriverTwin,
        InjectorTwin,
        InputReceiverTwin,
        OutputDetectorTwin,
        OutputReceiverTwin,
        TapMonitorTwin,
    )
    from lightloop.simulators.chip_truth import ChipDesign, ChipTruth, ChipVariation
    from lightloop.simulators.thermo_optic import ThermoOpticVariation

    p: Schema = cfg.processor
    unknown = set(ov.extra) - _EXTRA
    if unknown:
        raise ConfigError(f"{cfg.source}: options {sorted(unknown)} do not apply to an integrated_chip bench "
                          f"(expected some of {sorted(_EXTRA)})")
    if ov.optical_depth is not None:
        raise ConfigError("--optical-depth: an integrated_chip bench has no vapor cell; expected no --optical-depth")
    hidden = tuple(ov.hidden) if ov.hidden is not None else tuple(p.hidden)
    if any(h < 1 for h in hidden):
        raise ConfigError(f"--hidden: expected positive integer layer sizes, got {list(hidden)}")
    ideal = p.chip.ideal if ov.ideal is None else ov.ideal
    chip_seed = int(ov.extra.get("chip_seed", p.chip.seed))
    noise_seed = int(ov.extra.get("noise_seed", p.chip.noise_seed))
    precision = ov.extra.get("precision", p.chip.precision)
    if precision not in ("single", "double"):
        raise ConfigError(f"precision: expected 'single' or 'double', got {precision!r}")
    if n_inputs + p.encoder.bias_ports < 1:
        raise ConfigError(f"{cfg.source}: processor.encoder: no input port; expected at least one input port")
    ps = p.phase_shifters
    v = p.chip.variation
    if ideal:
        var = ChipVariation.none()
        var.acquisition_s, var.settle_s = p.chip.acquisition_s, p.chip.settle_s
        loss_db, xt = 0.0, 0.0
    else:
        thermo = ThermoOpticVariation(float(ov.extra.get("phi0_sd_rad", v.phi0_sd_rad)), v.p_pi_rel_sd,
                                      v.resistance_rel_sd, v.crosstalk_scale_sd, v.crosstalk_pair_sd,
                                      v.drift_rad_per_sqrt_s)
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
    design = ChipDesign(n_in=n_inputs, hidden=hidden, n_out=n_outputs, layer_kind=p.layer, mesh=p.mesh,
                        bias_ports=p.encoder.bias_ports, svd_gain=p.svd_gain, screen=False,
                        loss_db_per_column=loss_db, p_pi_w=ps.p_pi_w_per_rad, resistance_ohm=ps.resistance_ohm,
                        crosstalk_nearest=xt, crosstalk_decay=ps.crosstalk_decay, ring_k=p.activation.k,
                        ring_t_min=p.activation.t_min, ring_supply=p.activation.supply,
                        ring_detuning_per_volt=p.activation.detuning_per_volt,
                        dtype=np.complex64 if precision == "single" else np.complex128)
    truth = ChipTruth.draw(design, var, chip_seed)
    emu = ChipEmulator(design, truth, var, seed=noise_seed)
    rd = np.float32 if precision == "single" else np.float64
    layers = []
    for i, lay in enumerate(emu.layers):
        c_nom = None
        if xt > 0 and ps.compensate_crosstalk:
            c_nom = thermal_crosstalk(lay.heater_positions(), xt, ps.crosstalk_decay)
        cal = ThermoOpticCalibration.nominal(lay.n_shifters, ps.p_pi_w_per_rad, ps.resistance_ohm, c_nom)
        bank = PhaseShifterBank(HeaterDriverTwin(emu, i, HEATER_DRIVER_V_MAX), cal, ps.v_max,
                                name=f"{cfg.source}: layer {i} phase shifters")
        layers.append(ChipLayer(
            kind=p.layer, n_ports=lay.n, bank=bank, monitor=MeshMonitor(TapMonitorTwin(emu, i), name=f"layer {i} taps"),
            out_receiver=CoherentReceiver(OutputReceiverTwin(emu, i), name=f"layer {i} output receivers"),
            in_receiver=CoherentReceiver(InputReceiverTwin(emu, i), name=f"layer {i} input receivers"),
            adjoint_source=FieldInjector(AdjointSourceTwin(emu, i), p.max_injection_field, f"layer {i} adjoint source"),
            injector=FieldInjector(InjectorTwin(emu, i), p.max_injection_field, f"layer {i} injector"),
            tap_depth=lay.tap_depth(), detector_gain=emu.detector_gain[i], mesh=p.mesh, screen=False))
    acts = []
    a = p.activation
    for i in range(len(hidden)):
        model = EOActivationModel(k=a.k, t_min=a.t_min, supply=a.supply, detuning=a.detuning,
                                  detuning_per_volt=a.detuning_per_volt)
        act = EOActivation(ActivationTwin(emu, i), model, a.v_bias_max, name=f"layer {i} activations")
        act.set_detuning(a.detuning)
        acts.append(act)
    source = ForwardSource(ForwardSourceTwin(emu), n_inputs, p.encoder.field_scale, p.encoder.signed,
                           p.encoder.bias_ports, p.encoder.bias_amplitude, dtype=rd)
    info: dict[str, Any] = {"chip_seed": chip_seed, "ideal": bool(ideal), "mesh": p.mesh, "layer": p.layer,
                            "mesh_ports": list(design.ports)}
    proc = ChipProcessor(source, layers, acts, PowerDetector(OutputDetectorTwin(emu)), n_outputs,
                         output_gain=p.output_gain, adjoint_field=p.adjoint_field,
                         eta_per_column=design.eta_per_column, stateful=[emu], info=info, precision=precision)
    proc.emulator = emu  # the twin, for truth reports and tests; training never touches it
    return proc
