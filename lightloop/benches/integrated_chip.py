"""Integrated photonic chip (Ashtiani, Idjadi, Kim, Nature 2026; Pai et al., Science 2023): config schema
and the one builder (in-process twin, wire-level twin or instruments).

The HAL gets only nominal (design) knowledge: phi0 = 0, nominal P_pi and R, the designed thermal crosstalk
matrix (compensated when `phase_shifters.compensate_crosstalk`), the nominal per-column loss, unity gains.
The twin draws the chip's hidden truth from the process-variation model with `chip.seed`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from lightloop.benches._common import LockedPort, check_role_counts, station_ports, store_for
from lightloop.errors import ConfigError
from lightloop.physics.mesh import MeshLayer, layer_ports
from lightloop.schema import BuildOverrides, LabConfig, LayerSize, Seed, StrictModel
from lightloop.units import Angle, PowerPerAngle, Resistance, Seconds, Voltage
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

__all__ = ["Schema", "build", "validate_sections", "check_station_sizes", "nominal_layers", "HEATER_DRIVER_V_MAX"]

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
    v_bias_max: Voltage = Field(5.0, gt=0)


class PhaseShifterSettings(StrictModel):
    """Thermo-optic heaters: phase = phi0 + (C P) / P_pi, P = V^2 / R."""

    p_pi_w_per_rad: PowerPerAngle = Field(0.025 / np.pi, gt=0, description="heater power per radian (W/rad)")
    resistance_ohm: Resistance = Field(1000.0, gt=0)
    v_max: Voltage = Field(9.0, gt=0, description="per-channel voltage limit (V)")
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

    phi0_sd_rad: Angle = Field(0.3, ge=0)
    phi0_distribution: Literal["normal", "uniform"] = Field(
        "normal", description="heater offsets: normal (sd phi0_sd_rad) or uniform on [0, 2 pi) (phi0_sd_rad unused)")
    coupler_sd_rad: Angle = Field(0.02, ge=0)
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
    acquisition_s: Seconds = Field(1e-3, ge=0)
    settle_s: Seconds = Field(1e-3, ge=0)


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
    calibration: ChipCalibrationSettings = Field(default_factory=lambda: ChipCalibrationSettings())

    @model_validator(mode="after")
    def _check(self) -> "Schema":
        if any(h < 1 for h in self.hidden):
            raise ValueError("expected positive hidden layer sizes")
        if self.adjoint_field > self.max_injection_field:
            raise ValueError(f"adjoint_field {self.adjoint_field:g} exceeds max_injection_field "
                             f"{self.max_injection_field:g}; expected adjoint_field <= max_injection_field")
        return self


class ChipCalibrationSettings(StrictModel):
    """Calibration store: where `lightloop calibrate` writes and from where the builder loads the newest records."""

    store: str | None = Field(None, description="store directory (relative paths: to the config file)")
    max_age_days: float | None = Field(None, gt=0, description="older records are stale")
    on_mismatch: Literal["error", "warn"] = "error"


_EXTRA = {"chip_seed", "noise_seed", "precision", "phi0_sd_rad"}


def validate_sections(cfg: LabConfig) -> None:
    """Validate the optional station sections (instruments / roles / emulator) against this processor section."""
    if cfg.instruments is not None or cfg.roles is not None or cfg.emulator is not None:
        from lightloop.station import validate_station

        validate_station(cfg)


def nominal_layers(p: Any, sizes: tuple[int, ...], ideal: bool) -> list[MeshLayer]:
    """The designed (error-free) mesh of every layer: phase-shifter count, heater positions, tap depths, loss columns."""
    ports = layer_ports(sizes[0], tuple(sizes[1:-1]), sizes[-1], p.encoder.bias_ports)
    return [MeshLayer.build(p.layer, n, p.mesh, gain=p.svd_gain, screen=False) for n in ports]


def check_station_sizes(cfg: LabConfig, sizes: tuple[int, ...], ideal: bool = False, emulator_sizes: bool = True) -> None:
    """The station wires the network of these layer sizes: one entry per layer, every block as wide as its mesh
    (and, emulator_sizes, emulator.layer_sizes equal to them - `lightloop emulate --layer-sizes` overrides it)."""
    p: Schema = cfg.processor
    roles, src = cfg.roles, cfg.source
    layers = nominal_layers(p, sizes, ideal)
    n_layers, hidden = len(layers), sizes[1:-1]
    check_role_counts(cfg, sizes, [("phase_shifters", len(roles.phase_shifters), n_layers),
                             ("injectors", len(roles.injectors), n_layers),
                             ("adjoint_sources", len(roles.adjoint_sources), n_layers),
                             ("activation_bias", len(roles.activation_bias), n_layers - 1),
                             ("detectors.monitors", len(roles.detectors.monitors), n_layers),
                             ("detectors.output_receivers", len(roles.detectors.output_receivers), n_layers),
                             ("detectors.input_receivers", len(roles.detectors.input_receivers), n_layers),
                             ("detectors.activation_power", len(roles.detectors.activation_power), n_layers - 1),
                             ("detectors.activation_slope", len(roles.detectors.activation_slope), n_layers - 1)],
                      emulator_sizes)
    blocks = [("roles.encoder", roles.encoder.count, layers[0].n, "IQ channels for the mesh-1 inputs")]
    for l, lay in enumerate(layers):
        blocks += [(f"roles.injectors[{l}]", roles.injectors[l].count, lay.n, f"IQ channels for the {lay.n} mesh ports"),
                   (f"roles.adjoint_sources[{l}]", roles.adjoint_sources[l].count, lay.n,
                    f"IQ channels for the {lay.n} mesh ports"),
                   (f"roles.phase_shifters[{l}]", roles.phase_shifters[l].count, lay.n_shifters,
                    f"heater channels for the {lay.n_shifters} phase shifters of a {lay.n}-port {p.mesh} {p.layer} mesh")]
    blocks += [(f"roles.activation_bias[{i}]", roles.activation_bias[i].count, h, f"ring biases for {h} activations")
               for i, h in enumerate(hidden)]
    for loc, have, want, what in blocks:
        if have != want:
            raise ConfigError(f"{src}: {loc}.count: {have}; expected {want} ({what}; layer sizes {list(sizes)})")


def _resolve(cfg: LabConfig, n_inputs: int, n_outputs: int, ov: BuildOverrides) -> tuple[tuple[int, ...], Any]:
    """(layer sizes, ChipDraw-like settings) of this run from the config and the command-line overrides."""
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
    precision = ov.extra.get("precision", p.chip.precision)
    if precision not in ("single", "double"):
        raise ConfigError(f"precision: expected 'single' or 'double', got {precision!r}")
    if n_inputs + p.encoder.bias_ports < 1:
        raise ConfigError(f"{cfg.source}: processor.encoder: no input port; expected at least one input port")
    phi0 = ov.extra.get("phi0_sd_rad")
    draw = dict(chip_seed=int(ov.extra.get("chip_seed", p.chip.seed)),
                noise_seed=int(ov.extra.get("noise_seed", p.chip.noise_seed)),
                ideal=bool(p.chip.ideal if ov.ideal is None else ov.ideal), precision=precision,
                phi0_sd_rad=None if phi0 is None else float(phi0))
    return (n_inputs, *hidden, n_outputs), draw


def build(cfg: LabConfig, n_inputs: int, n_outputs: int, ov: BuildOverrides) -> ChipProcessor:
    """ChipProcessor for (n_inputs, *hidden, n_outputs): the one place the chip's roles are assembled.

    Each role's port comes from the in-process twin, or - for a config with an ``instruments`` section - from
    the station (real drivers, or the wire-level twin auto-started for the run) where the role's instrument
    has a driver. Every size is checked before anything connects; simulator code loads only when some port
    is simulated."""
    sizes, draw = _resolve(cfg, n_inputs, n_outputs, ov)
    insts = cfg.instruments
    autostart = cfg.emulator is not None and cfg.emulator.autostart
    all_twin = insts is None or all(s.driver == "twin" for s in insts.values())
    simulated = all_twin or autostart
    station = None
    if insts is not None:
        check_station_sizes(cfg, sizes, draw["ideal"])
        if draw["ideal"] and not simulated:
            raise ConfigError(f"--ideal: {cfg.source} drives real instruments; expected a simulated bench "
                              "(emulator.autostart: true or twin instruments)")
        from lightloop.station import Station

        station = Station(cfg.source)
        station.mode = "twin" if all_twin else ("wire-twin" if autostart else "drivers")
    try:
        return _assemble(cfg, sizes, draw, simulated, station)
    except BaseException:
        if station is not None:
            station.close()
        raise


def _assemble(cfg: LabConfig, sizes: tuple[int, ...], draw: dict[str, Any], simulated: bool,
              station: Any) -> ChipProcessor:
    """Ports (twin or station) -> HAL roles -> ChipProcessor, with the station's meter and calibration."""
    from lightloop.physics.mzi import thermal_crosstalk

    p: Schema = cfg.processor
    roles = cfg.roles
    ideal, precision = draw["ideal"], draw["precision"]
    hidden, n_inputs, n_outputs = sizes[1:-1], sizes[0], sizes[-1]
    layers_nom = nominal_layers(p, sizes, ideal)
    emu = tw = None
    if simulated:
        from lightloop.simulators import chip_ports as tw
        from lightloop.simulators.chip_build import ChipDraw, make_chip_emulator

        emu = make_chip_emulator(p, sizes, ChipDraw(**draw))

    def start_twin() -> Any:
        from lightloop.simulators.wire.integrated_chip import start_chip_twin

        return start_chip_twin(cfg, sizes, emu)

    def make_ports(*args: Any) -> Any:
        from lightloop.station import ChipStation

        return ChipStation(*args)

    ports, lock = station_ports(cfg, station, start_twin if simulated else None, make_ports)

    def served(*instruments: Callable[[], str]) -> bool:
        """Drivers on the station serve the role (its instruments are read only when there is a station)."""
        if ports is None:
            return False
        kinds = {cfg.instruments[i()].driver != "twin" for i in instruments}
        if len(kinds) > 1:
            raise ConfigError(f"{cfg.source}: roles: {[i() for i in instruments]} serve one role; expected all "
                              "drivers or all twins")
        return kinds == {True}

    def twin(cls_name: str, *args: Any) -> Any:
        port = getattr(tw, cls_name)(emu, *args)
        return LockedPort(port, lock) if lock is not None else port

    laser = ports.laser() if served(lambda: roles.source.laser) else None
    enc_peak = max(p.encoder.field_scale, p.encoder.bias_amplitude)
    enc_port = ports.iq_block(roles.encoder, "encoder", enc_peak, gate=True) \
        if served(lambda: roles.encoder.instrument) else twin("ForwardSourceTwin")
    ps = p.phase_shifters
    det = roles.detectors if roles is not None else None
    xt = 0.0 if ideal else ps.crosstalk_nearest
    eta = 1.0 if ideal else float(10 ** (-p.loss_db_per_column / 20))
    layers = []
    for i, lay in enumerate(layers_nom):
        c_nom = None
        if xt > 0 and ps.compensate_crosstalk:
            c_nom = thermal_crosstalk(lay.heater_positions(), xt, ps.crosstalk_decay)
        cal = ThermoOpticCalibration.nominal(lay.n_shifters, ps.p_pi_w_per_rad, ps.resistance_ohm, c_nom)
        heater = ports.voltage_block(roles.phase_shifters[i], f"roles.phase_shifters[{i}]") \
            if served(lambda: roles.phase_shifters[i].instrument) else twin("HeaterDriverTwin", i, HEATER_DRIVER_V_MAX)
        bank = PhaseShifterBank(heater, cal, ps.v_max, name=f"{cfg.source}: layer {i} phase shifters")
        if served(lambda: det.monitors[i].instrument):
            mon, out_rx = ports.taps(det.monitors[i], lay.n_shifters), ports.fields(det.output_receivers[i], lay.n)
            in_rx = ports.fields(det.input_receivers[i], lay.n)
        else:
            mon, out_rx, in_rx = (twin("TapMonitorTwin", i), twin("OutputReceiverTwin", i),
                                  twin("InputReceiverTwin", i))
        mi = p.max_injection_field
        if served(lambda: roles.adjoint_sources[i].instrument, lambda: roles.injectors[i].instrument):
            adj = ports.iq_block(roles.adjoint_sources[i], f"layer {i} adjoint source", mi)
            inj = ports.iq_block(roles.injectors[i], f"layer {i} injector", mi)
        else:
            adj, inj = twin("AdjointSourceTwin", i), twin("InjectorTwin", i)
        layers.append(ChipLayer(
            kind=p.layer, n_ports=lay.n, bank=bank, monitor=MeshMonitor(mon, name=f"layer {i} taps"),
            out_receiver=CoherentReceiver(out_rx, name=f"layer {i} output receivers"),
            in_receiver=CoherentReceiver(in_rx, name=f"layer {i} input receivers"),
            adjoint_source=FieldInjector(adj, mi, f"layer {i} adjoint source"),
            injector=FieldInjector(inj, mi, f"layer {i} injector"),
            tap_depth=lay.tap_depth(), detector_gain=float(eta ** (-2 * lay.loss_columns())), mesh=p.mesh,
            screen=False))
    acts = []
    a = p.activation
    for i, h in enumerate(hidden):
        model = EOActivationModel(k=a.k, t_min=a.t_min, supply=a.supply, detuning=a.detuning,
                                  detuning_per_volt=a.detuning_per_volt)
        on_station = served(lambda: roles.activation_bias[i].instrument, lambda: det.activation_power[i].instrument,
                            lambda: det.activation_slope[i].instrument)
        act = EOActivation(ports.activation(i, h) if on_station else twin("ActivationTwin", i), model, a.v_bias_max,
                           name=f"layer {i} activations")
        act.set_detuning(a.detuning)
        acts.append(act)
    out_port = ports.powers(det.outputs, n_outputs) if served(lambda: det.outputs.instrument) \
        else twin("OutputDetectorTwin")
    rd = np.float32 if precision == "single" else np.float64
    source = ForwardSource(enc_port, n_inputs, p.encoder.field_scale, p.encoder.signed, p.encoder.bias_ports,
                           p.encoder.bias_amplitude, dtype=rd)
    info: dict[str, Any] = {"chip_seed": draw["chip_seed"], "ideal": bool(ideal), "mesh": p.mesh, "layer": p.layer,
                            "mesh_ports": [lay.n for lay in layers_nom]}
    proc = ChipProcessor(source, layers, acts, PowerDetector(out_port), n_outputs, output_gain=p.output_gain,
                         adjoint_field=p.adjoint_field, eta_per_column=eta,
                         stateful=[emu] if emu is not None else [], info=info, precision=precision)
    if station is not None:
        proc.station = station
        station.meter.attach(proc)
    if laser is not None:
        laser.on(roles.source.operating_current)
    proc.emulator = emu  # the twin (None on hardware), for truth reports and tests; training never touches it
    return _load_calibration(proc, cfg)


def _load_calibration(proc: ChipProcessor, cfg: LabConfig) -> ChipProcessor:
    """Apply the newest matching records of the config's calibration store to the HAL (none configured: nominal)."""
    p: Schema = cfg.processor
    proc.bench_name = cfg.bench
    proc.calibration_log = []
    path, default = store_for(cfg)
    if path and (not default or Path(path).is_dir()):
        from lightloop.calibration.store import CalibrationStore, load_into_processor

        try:   # the default store (no store in the config) warns on a record that does not fit, never fails
            proc.calibration_log = load_into_processor(proc, CalibrationStore(path), cfg.bench,
                                                       max_age_days=p.calibration.max_age_days,
                                                       on_mismatch="warn" if default else p.calibration.on_mismatch)
        except BaseException:
            proc.close()  # leave the instruments safe and released
            raise
    return proc
