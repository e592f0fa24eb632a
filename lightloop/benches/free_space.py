"""Free-space saturable-absorber bench (Guo et al. 2021): config schema and builder (in-process twin)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lightloop.bench import BuildOverrides
from lightloop.config import LabConfig, StrictModel
from lightloop.errors import ConfigError
from lightloop.hal.calibration_maps import HomodyneMap, VaporCellMap
from lightloop.hal.free_space import FreeSpaceProcessor
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

__all__ = ["Schema", "build", "CalibrationSettings", "DriftSettings", "RecalibrationSettings"]


class DriftSettings(StrictModel):
    """Twin drift: seeded random walks in simulated time (rates 0: no drift; off in ideal mode)."""

    lo_phase_rad_per_sqrt_s: float = Field(0.0, ge=0, description="LO-phase random walk of every homodyne channel")
    lo_phase_common_rad_per_sqrt_s: float = Field(0.0, ge=0, description="LO-phase walk common to a detector array")
    cell_temperature_k_per_sqrt_s: float = Field(0.0, ge=0, description="true-minus-read vapor temperature walk")
    frame_period_s: float = Field(1e-3, gt=0, description="simulated time per displayed frame")
    seed: int = 0


class TwinSettings(StrictModel):
    """In-process twin: hidden-truth draw and noise seeds; ideal switches every imperfection off."""

    truth_seed: int = 7
    noise_seed: int = 0
    ideal: bool = False
    shot_noise: float = Field(2e-3, ge=0)
    electronic_noise_v: float = Field(1e-3, ge=0)
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

    sigma_l_m3: float = Field(1.3e-17, gt=0)
    t_min_k: float = Field(273.15, gt=0)
    t_max_k: float = Field(423.15, gt=0)

    @model_validator(mode="after")
    def _order(self) -> "VaporCellSettings":
        if self.t_min_k >= self.t_max_k:
            raise ValueError("t_min_k must be below t_max_k")
        return self


class Schema(StrictModel):
    """processor section of a free-space bench config."""

    kind: Literal["free_space"]
    hidden: list[int] = Field(default_factory=lambda: [64], min_length=1)
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


def build(cfg: LabConfig, n_inputs: int, n_outputs: int, ov: BuildOverrides) -> FreeSpaceProcessor:
    """FreeSpaceProcessor on the in-process twin for (n_inputs, *hidden, n_outputs).

    A config with an `instruments` section is built on those instruments instead (real drivers, the
    wire-level twin or twin instruments; lightloop.benches.instruments).
    """
    if getattr(cfg, "instruments", None) is not None:
        from lightloop.benches.instruments import build_free_space

        return _attach_calibration(build_free_space(cfg, n_inputs, n_outputs, ov), cfg)
    from lightloop.simulators.free_space import (
        AnalogWeightTwin,
        DMDWeightTwin,
        HomodyneTwin,
        ProbeTwin,
        SLMWeightTwin,
        SourceTwin,
        VaporCellHeaterTwin,
        make_free_space_emulator,
    )

    p: Schema = cfg.processor
    if ov.extra:
        raise ConfigError(f"{cfg.source}: options {sorted(ov.extra)} do not apply to a free_space bench")
    hidden = list(ov.hidden) if ov.hidden is not None else list(p.hidden)
    if any(h < 1 for h in hidden):
        raise ConfigError(f"--hidden: layer sizes must be positive integers, got {hidden}")
    a0 = p.optical_depth if ov.optical_depth is None else ov.optical_depth
    if a0 < 0:
        raise ConfigError(f"--optical-depth: expected a0 >= 0 (a vapor cell absorbs), got {a0}")
    ideal = p.twin.ideal if ov.ideal is None else ov.ideal
    sizes = (n_inputs, *hidden, n_outputs)
    emu = make_free_space_emulator(p, sizes, ideal)
    n_layers = len(sizes) - 1
    device = "analog" if ideal else p.weights.device
    blocks = []
    for i in range(n_layers):
        shape = (sizes[i + 1], sizes[i])
        kw = dict(max_weight=p.weights.max_weight, efficiency=p.weights.efficiency)
        if device == "analog":
            blocks.append(AnalogWeightBlock(AnalogWeightTwin(emu, i), shape, **kw))
        elif device == "slm":
            blocks.append(SLMWeightBlock(SLMWeightTwin(emu, i), shape, **kw))
        else:
            blocks.append(DMDWeightBlock(DMDWeightTwin(emu, i), shape, **kw))
    limits = TemperatureLimits(p.vapor_cell.t_min_k, p.vapor_cell.t_max_k)
    cell_map = VaporCellMap(p.vapor_cell.sigma_l_m3)
    absorbers = [SaturableAbsorber(VaporCellHeaterTwin(emu, i), cell_map, limits) for i in range(n_layers - 1)]
    err_gain = 1.0 if ideal else p.error_detector_gain_v
    proc = FreeSpaceProcessor(
        encoder=InputEncoder(SourceTwin(emu), n_inputs, p.input_field_scale),
        probe=ProbeSource(ProbeTwin(emu), n_outputs, p.probe_field),
        weights=blocks,
        absorbers=absorbers,
        pre_taps=[HomodyneDetector(HomodyneTwin(emu, "pre", i)) for i in range(n_layers)],
        post_taps=[HomodyneDetector(HomodyneTwin(emu, "post", i)) for i in range(n_layers - 1)],
        error_taps=[HomodyneDetector(HomodyneTwin(emu, "error", i), HomodyneMap.unity(sizes[i + 1], err_gain))
                    for i in range(n_layers - 1)],
        stateful=[emu],
    )
    proc.set_optical_depth(a0)
    proc.error_averages, proc.error_readout = p.error_averages, p.error_readout
    proc.emulator = emu  # the twin, for truth reports; training never touches it
    proc.device = device
    return _attach_calibration(proc, cfg)


def _attach_calibration(proc: FreeSpaceProcessor, cfg: LabConfig) -> FreeSpaceProcessor:
    """Load the newest matching calibration records from the config's store into the HAL maps; wire the
    re-calibration hook when the config asks for one."""
    p: Schema = cfg.processor
    proc.bench_name = cfg.bench  # type: ignore[attr-defined]
    proc.calibration_log = []  # type: ignore[attr-defined]
    if p.calibration.store:
        from lightloop.calibration.store import CalibrationStore, load_into_processor

        store = CalibrationStore(resolve_store(cfg))
        try:
            proc.calibration_log = load_into_processor(  # type: ignore[attr-defined]
                proc, store, cfg.bench, max_age_days=p.calibration.max_age_days,
                on_mismatch=p.calibration.on_mismatch)
        except BaseException:
            proc.close()  # leave the instruments safe and released
            raise
    if p.calibration.recalibrate is not None:
        from lightloop.calibration.drift import attach_recalibration

        attach_recalibration(proc, p.calibration.recalibrate, resolve_store(cfg), cfg.bench)
    return proc


def resolve_store(cfg: LabConfig) -> str | None:
    """The calibration store directory of a config (relative paths resolve against the config file)."""
    from pathlib import Path

    store = cfg.processor.calibration.store
    if not store:
        return None
    path = Path(store).expanduser()
    if not path.is_absolute() and cfg.source not in ("<memory>", ""):
        path = Path(cfg.source).resolve().parent / path
    return str(path)
