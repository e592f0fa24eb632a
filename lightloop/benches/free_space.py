"""Free-space saturable-absorber bench (Guo et al. 2021): config schema and the one builder (twin or instruments)."""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from lightloop.benches._common import LockedPort, check_role_counts, resolve_store, station_ports, store_for
from lightloop.schema import BuildOverrides, LabConfig, LayerSize, Seed, StrictModel
from lightloop.units import Seconds, Temperature, Voltage, Volume
from lightloop.errors import ConfigError
from lightloop.hal.calibration_maps import HomodyneMap, VaporCellMap
from lightloop.hal.free_space import FreeSpaceProcessor
from lightloop.physics.saturable_absorber import rb_number_density_m3
from lightloop.hal.free_space_roles import (
    AnalogWeightBlock,
    DMDWeightBlock,
    HomodyneDetector,
    InputEncoder,
    ProbeSource,
    SaturableAbsorber,
    SLMWeightBlock,
    TemperatureLimits,
)

__all__ = ["Schema", "build", "validate_sections", "CalibrationSettings", "DriftSettings", "RecalibrationSettings",
           "check_optical_depth", "SIGMA_L_MAX_M3", "CELL_T_MAX_K", "resolve_store"]

#: largest sigma*L (m^3): the Rb D2 resonant cross-section (3 lambda^2 / 2 pi ~ 3e-13 m^2) times a 1 m cell, x3
SIGMA_L_MAX_M3 = 1e-12
#: hottest vapor-cell temperature a config may name (K); glass cells and heaters stay far below
CELL_T_MAX_K = 1000.0


class DriftSettings(StrictModel):
    """Twin drift: seeded random walks in simulated time (rates 0: no drift; off in ideal mode)."""

    lo_phase_rad_per_sqrt_s: float = Field(0.0, ge=0, description="LO-phase random walk of every homodyne channel")
    lo_phase_common_rad_per_sqrt_s: float = Field(0.0, ge=0, description="LO-phase walk common to a detector array")
    cell_temperature_k_per_sqrt_s: float = Field(0.0, ge=0, description="true-minus-read vapor temperature walk")
    frame_period_s: Seconds = Field(1e-3, gt=0, description="simulated time per displayed frame")
    seed: Seed = 0


class TwinSettings(StrictModel):
    """In-process twin: hidden-truth draw and noise seeds; ideal switches every imperfection off."""

    truth_seed: Seed = 7
    noise_seed: Seed = 0
    ideal: bool = False
    shot_noise: float = Field(2e-3, ge=0)
    electronic_noise_v: Voltage = Field(1e-3, ge=0)
    adc_bits: int | None = Field(14, ge=4, le=24)
    drift: DriftSettings = DriftSettings()


class RecalibrationSettings(StrictModel):
    """Re-calibration during training: on a schedule and/or when the monitored weight-readout error degrades."""

    routines: list[str] = Field(default_factory=lambda: ["lo_phase", "saturable_absorber"], min_length=1)
    every_steps: int | None = Field(None, ge=1, description="re-calibrate every N training steps")
    check_every_steps: int | None = Field(None, ge=1, description="measure the readout error every N steps")
    max_check_error: float = Field(0.05, gt=0, description="re-calibrate when the relative readout error exceeds this")
    save: bool = Field(False, description="write each re-calibration to the store as a new version")


class CalibrationSettings(StrictModel):
    """Calibration store: where `lightloop calibrate` writes and from where the builder loads the newest records."""

    store: str | None = Field(None, description="store directory (relative paths: to the config file)")
    max_age_days: float | None = Field(None, gt=0, description="older records are stale")
    on_mismatch: Literal["error", "warn"] = "error"
    recalibrate: RecalibrationSettings | None = None


class WeightSettings(StrictModel):
    """Weight devices: 'slm' (8-bit phase), 'dmd' (binary blocks) or 'analog' (ideal modulator)."""

    device: Literal["slm", "dmd", "analog"] = "slm"
    max_weight: float = Field(1.0, gt=0, description="largest |W| after the amplifier")
    efficiency: float = Field(0.5, gt=0, le=1, description="nominal 4f + slit power efficiency")
    dmd_block_pixels: int = Field(16, ge=1, le=64)


class VaporCellSettings(StrictModel):
    """Vapor cells: nominal sigma*L (m^3) and heater limits (K)."""

    sigma_l_m3: Volume = Field(1.3e-17, gt=0, le=SIGMA_L_MAX_M3, description="cross-section x cell length, m^3")
    t_min_k: Temperature = Field(273.15, gt=0, le=CELL_T_MAX_K)
    t_max_k: Temperature = Field(423.15, gt=0, le=CELL_T_MAX_K)

    @model_validator(mode="after")
    def _order(self) -> "VaporCellSettings":
        if self.t_min_k >= self.t_max_k:
            raise ValueError(f"t_min_k {self.t_min_k:g} K >= t_max_k {self.t_max_k:g} K; expected t_min_k < t_max_k")
        return self

    def max_optical_depth(self) -> float:
        """Largest optical depth a0 = n_Rb(t_max_k) sigma L the heaters can reach (dimensionless)."""
        return float(rb_number_density_m3(self.t_max_k) * self.sigma_l_m3)


def check_optical_depth(a0: float, cell: VaporCellSettings, field: str) -> float:
    """a0 finite, >= 0 and reachable below the heater limit t_max_k (ValueError naming field otherwise)."""
    a0_max = cell.max_optical_depth()
    if not math.isfinite(a0) or a0 < 0 or a0 > a0_max * (1 + 1e-9):
        raise ValueError(f"{field}: {a0!r}; expected 0 <= a0 <= {a0_max:.4g} (what the vapor cell reaches at "
                         f"t_max_k = {cell.t_max_k:g} K with sigma_l_m3 = {cell.sigma_l_m3:g})")
    return a0


class Schema(StrictModel):
    """processor section of a free-space bench config."""

    kind: Literal["free_space"]
    hidden: list[LayerSize] = Field(default_factory=lambda: [64], min_length=1)
    optical_depth: float = Field(10.0, ge=0, description="a0 of every vapor cell")
    input_field_scale: float = Field(1.0, gt=0, le=10, description="input field per unit pixel value")
    probe_field: float = Field(0.1, gt=0, description="peak backward-probe field (saturation units)")
    error_detector_gain_v: float = Field(10.0, gt=0, description="nominal gain of the backward homodynes, V/field")
    error_averages: int = Field(1, ge=1, le=1024, description="backward acquisitions averaged per error tap and step")
    error_readout: Literal["single", "differential"] = Field(
        "single", description="differential: probe +delta and -delta and halve the difference (cancels offsets)")
    weights: WeightSettings = WeightSettings()
    vapor_cell: VaporCellSettings = VaporCellSettings()
    twin: TwinSettings = TwinSettings()
    calibration: CalibrationSettings = CalibrationSettings()

    @model_validator(mode="after")
    def _reachable(self) -> "Schema":
        check_optical_depth(self.optical_depth, self.vapor_cell, "optical_depth")
        return self


def validate_sections(cfg: LabConfig) -> None:
    """Validate the optional station sections (instruments / roles / emulator) against this processor section."""
    if cfg.instruments is not None or cfg.roles is not None or cfg.emulator is not None:
        from lightloop.station import validate_station

        validate_station(cfg)


def _resolve(cfg: LabConfig, n_inputs: int, n_outputs: int, ov: BuildOverrides) -> tuple[tuple[int, ...], float, bool]:
    """(layer sizes, a0, ideal) of this run from the config and the command-line overrides."""
    p: Schema = cfg.processor
    if ov.extra:
        raise ConfigError(f"{cfg.source}: options {sorted(ov.extra)} do not apply to a free_space bench; expected none")
    hidden = list(ov.hidden) if ov.hidden is not None else list(p.hidden)
    if any(h < 1 for h in hidden):
        raise ConfigError(f"--hidden: expected positive integer layer sizes, got {hidden}")
    a0 = p.optical_depth if ov.optical_depth is None else ov.optical_depth
    if ov.optical_depth is not None:
        try:
            check_optical_depth(a0, p.vapor_cell, "--optical-depth")
        except ValueError as exc:
            raise ConfigError(f"{cfg.source}: {exc}") from None
    ideal = p.twin.ideal if ov.ideal is None else ov.ideal
    return (n_inputs, *hidden, n_outputs), a0, ideal


def _check_station_run(cfg: LabConfig, sizes: tuple[int, ...], ideal: bool, simulated: bool) -> None:
    """The station wires the network this run needs (roles per layer, wire-twin sizes, ideal only when simulated)."""
    roles, src = cfg.roles, cfg.source
    n_layers = len(sizes) - 1
    check_role_counts(cfg, sizes, [("weights", len(roles.weights), n_layers),
                                   ("vapor_cells", len(roles.vapor_cells), n_layers - 1),
                                   ("detectors.pre", len(roles.detectors.pre), n_layers),
                                   ("detectors.post", len(roles.detectors.post), n_layers - 1),
                                   ("detectors.error", len(roles.detectors.error), n_layers - 1)])
    if ideal and not simulated:
        raise ConfigError(f"--ideal: {src} drives real instruments; expected a simulated bench "
                          "(emulator.autostart: true or twin instruments)")


def build(cfg: LabConfig, n_inputs: int, n_outputs: int, ov: BuildOverrides) -> FreeSpaceProcessor:
    """FreeSpaceProcessor for (n_inputs, *hidden, n_outputs): the one place the free-space roles are assembled.

    Each role's port comes from the in-process twin, or - for a config with an ``instruments`` section -
    from the station (real drivers, or the wire-level twin auto-started for the run) where the role's
    instrument has a driver. The twin (simulator code) is loaded only when some port is simulated.
    """
    sizes, a0, ideal = _resolve(cfg, n_inputs, n_outputs, ov)
    insts = cfg.instruments
    autostart = cfg.emulator is not None and cfg.emulator.autostart
    all_twin = insts is None or all(s.driver == "twin" for s in insts.values())
    simulated = all_twin or autostart
    station = None
    if insts is not None:
        _check_station_run(cfg, sizes, ideal, simulated)
        from lightloop.station import Station

        station = Station(cfg.source)
        station.mode = "twin" if all_twin else ("wire-twin" if autostart else "drivers")
    try:
        return _assemble(cfg, sizes, a0, ideal, simulated, all_twin, station)
    except BaseException:
        if station is not None:
            station.close()
        raise


def _assemble(cfg: LabConfig, sizes: tuple[int, ...], a0: float, ideal: bool, simulated: bool, all_twin: bool,
              station: Any) -> FreeSpaceProcessor:
    """Ports (twin or station) -> HAL roles -> FreeSpaceProcessor, with the station's meter and calibration."""
    p: Schema = cfg.processor
    roles = cfg.roles
    n_inputs, n_outputs, n_layers = sizes[0], sizes[-1], len(sizes) - 1
    emu = tw = None
    if simulated:
        from lightloop.simulators import free_space as tw

        emu = tw.make_free_space_emulator(p, sizes, ideal)

    def start_twin() -> Any:
        from lightloop.simulators.wire.free_space import start_free_space_twin

        return start_free_space_twin(cfg, sizes, emu)

    def make_ports(*args: Any) -> Any:
        from lightloop.station import FreeSpaceStation

        return FreeSpaceStation(*args)

    ports, lock = station_ports(cfg, station, start_twin if simulated else None, make_ports)

    def served(instrument: Callable[[], str]) -> bool:
        """A driver on the station serves the role (its instrument is read only when there is a station)."""
        return ports is not None and cfg.instruments[instrument()].driver != "twin"

    def twin(cls_name: str, *args: Any) -> Any:
        port = getattr(tw, cls_name)(emu, *args)
        return LockedPort(port, lock) if lock is not None else port

    laser = ports.laser() if served(lambda: roles.source.laser) else None
    enc_port = ports.display(roles.input, n_inputs, "input") if served(lambda: roles.input.instrument) \
        else twin("SourceTwin")
    probe_port = ports.display(roles.probe, n_outputs, "probe") if served(lambda: roles.probe.instrument) \
        else twin("ProbeTwin")

    device = "analog" if (ideal and all_twin) else p.weights.device
    block_cls = {"analog": AnalogWeightBlock, "slm": SLMWeightBlock, "dmd": DMDWeightBlock}[device]
    twin_cls = {"analog": "AnalogWeightTwin", "slm": "SLMWeightTwin", "dmd": "DMDWeightTwin"}[device]
    kw = dict(max_weight=p.weights.max_weight, efficiency=p.weights.efficiency)
    blocks = []
    for i in range(n_layers):
        shape = (sizes[i + 1], sizes[i])
        on_station = served(lambda: roles.weights[i].instrument)
        blocks.append(block_cls(ports.weights(roles.weights[i], shape) if on_station else twin(twin_cls, i), shape, **kw))

    cell_map = VaporCellMap(p.vapor_cell.sigma_l_m3)
    absorbers = []
    for i in range(n_layers - 1):
        t_lo, t_hi = p.vapor_cell.t_min_k, p.vapor_cell.t_max_k
        if served(lambda: roles.vapor_cells[i].instrument):
            port, t_lo, t_hi = ports.vapor_cell(i, roles.vapor_cells[i], t_lo, t_hi)
        else:
            port = twin("VaporCellHeaterTwin", i)
        absorbers.append(SaturableAbsorber(port, cell_map, TemperatureLimits(t_lo, t_hi)))

    def detector(tap: str, layer: int) -> Any:
        if served(lambda: getattr(roles.detectors, tap)[layer].instrument):
            return ports.detector(tap, getattr(roles.detectors, tap)[layer], sizes[layer + 1])
        return twin("HomodyneTwin", tap, layer)

    # registration order = the processor's acquisition order: pre, post, then error taps
    pre = [HomodyneDetector(detector("pre", i)) for i in range(n_layers)]
    post = [HomodyneDetector(detector("post", i)) for i in range(n_layers - 1)]
    err_gain = 1.0 if ideal else p.error_detector_gain_v
    error = [HomodyneDetector(detector("error", i), HomodyneMap.unity(sizes[i + 1], err_gain))
             for i in range(n_layers - 1)]
    proc = FreeSpaceProcessor(
        encoder=InputEncoder(enc_port, n_inputs, p.input_field_scale),
        probe=ProbeSource(probe_port, n_outputs, p.probe_field),
        weights=blocks, absorbers=absorbers, pre_taps=pre, post_taps=post, error_taps=error,
        stateful=[emu] if emu is not None else [])
    if station is not None:
        proc.station = station
        station.meter.attach(proc)
    proc.set_optical_depth(a0)
    proc.error_averages, proc.error_readout = p.error_averages, p.error_readout
    if laser is not None:
        laser.on(cfg.roles.source.operating_current)
    proc.emulator = emu  # the twin (None on hardware), for truth reports; training never touches it
    proc.device = device
    return _attach_calibration(proc, cfg)


def _attach_calibration(proc: FreeSpaceProcessor, cfg: LabConfig) -> FreeSpaceProcessor:
    """Load the newest matching calibration records from the config's store into the HAL maps; wire the
    re-calibration hook when the config asks for one."""
    p: Schema = cfg.processor
    proc.bench_name = cfg.bench
    proc.calibration_log = []
    path, default = store_for(cfg)
    if path and (not default or Path(path).is_dir()):
        from lightloop.calibration.store import CalibrationStore, load_into_processor

        store = CalibrationStore(path)
        try:   # the default store (no store in the config) warns on a record that does not fit, never fails
            proc.calibration_log = load_into_processor(
                proc, store, cfg.bench, max_age_days=p.calibration.max_age_days,
                on_mismatch="warn" if default else p.calibration.on_mismatch)
        except BaseException:
            proc.close()  # leave the instruments safe and released
            raise
    if p.calibration.recalibrate is not None:
        from lightloop.calibration.drift import attach_recalibration

        attach_recalibration(proc, p.calibration.recalibrate, resolve_store(cfg), cfg.bench)
    return proc
