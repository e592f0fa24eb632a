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

__all__ = ["Schema", "build"]


class TwinSettings(StrictModel):
    """In-process twin: hidden-truth draw and noise seeds; ideal switches every imperfection off."""

    truth_seed: int = 7
    noise_seed: int = 0
    ideal: bool = False
    shot_noise: float = Field(2e-3, ge=0)
    electronic_noise_v: float = Field(1e-3, ge=0)
    adc_bits: int | None = Field(14, ge=4, le=24)


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
    weights: WeightSettings = WeightSettings()
    vapor_cell: VaporCellSettings = VaporCellSettings()
    twin: TwinSettings = TwinSettings()


def build(cfg: LabConfig, n_inputs: int, n_outputs: int, ov: BuildOverrides) -> FreeSpaceProcessor:
    """FreeSpaceProcessor on the in-process twin for (n_inputs, *hidden, n_outputs)."""
    from lightloop.simulators.free_space import (
        AnalogWeightTwin,
        DMDWeightTwin,
        FreeSpaceEmulator,
        FreeSpaceTruth,
        HomodyneTwin,
        Imperfections,
        ProbeTwin,
        SLMWeightTwin,
        SourceTwin,
        VaporCellHeaterTwin,
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
    if ideal:
        imp = Imperfections.none()
    else:
        imp = Imperfections(shot_noise=p.twin.shot_noise, electronic_noise_v=p.twin.electronic_noise_v,
                            adc_bits=p.twin.adc_bits)
    truth = FreeSpaceTruth.draw(sizes, p.twin.truth_seed, imp, nominal_efficiency=p.weights.efficiency,
                                nominal_sigma_l_m3=p.vapor_cell.sigma_l_m3,
                                dmd_block_pixels=p.weights.dmd_block_pixels,
                                error_gain_v=p.error_detector_gain_v)
    emu = FreeSpaceEmulator(sizes, truth, seed=p.twin.noise_seed)
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
    proc.emulator = emu  # the twin, for truth reports; training never touches it
    return proc
