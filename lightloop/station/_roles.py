"""The `roles:` and `emulator:` sections: which instrument channel serves each HAL role, and the wire twin's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from lightloop.schema import LayerSize, StrictModel
from lightloop.units import Current, SlopeEfficiency, TemperatureDelta, Seconds, Voltage

__all__ = ["LaserRole", "DisplayRole", "GainRef", "WeightRole", "CellRole", "ChannelRef", "DetectorRoles", "FreeSpaceRoles", "HeaterBankRole", "IQBlockRole", "ChipChannelRef", "ChipDetectorRoles", "ChipRoles", "FaultSettings", "EmulatorSettings", "ROLE_SCHEMAS", "ROLE_DRIVERS"]


class LaserRole(StrictModel):
    """The light source: a laser controller, its operating current and P-I model; optional power meter."""

    laser: str
    operating_current: Current
    threshold_current: Current = 0.0
    slope_efficiency: SlopeEfficiency = 1.0
    power_meter: str | None = None

    @model_validator(mode="after")
    def _above_threshold(self) -> "LaserRole":
        if not self.threshold_current < self.operating_current:
            raise PydanticCustomError("threshold", "threshold_current: {t} A is not below operating_current {o} A; "
                                      "expected threshold_current < operating_current (the laser would stay dark)",
                                      {"t": self.threshold_current, "o": self.operating_current})
        return self

    @field_validator("operating_current", "slope_efficiency")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise PydanticCustomError("positive", "expected a value > 0")
        return v


class DisplayRole(StrictModel):
    """An SLM sequence panel showing signed fields; full_scale_field = field at the extreme code."""

    instrument: str
    full_scale_field: float = Field(gt=0)


class GainRef(StrictModel):
    """Amplifier gain via a voltage-controlled amplifier on a source channel (driver numbering)."""

    instrument: str
    channel: int = Field(ge=0)
    volts_per_gain: Voltage

    @field_validator("volts_per_gain")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise PydanticCustomError("positive", "expected a voltage > 0 per unit gain")
        return v


class WeightRole(StrictModel):
    """One weight layer: an SLM (layout pairs | checkerboard) or DMD (block pairs), and its amplifier gain."""

    instrument: str
    layout: Literal["pairs", "checkerboard"] = "pairs"
    block_pixels: int = Field(1, ge=1, le=64)
    gain: GainRef | None = None
    fixed_gain: float | None = Field(None, gt=0)


class CellRole(StrictModel):
    """One vapor cell's temperature controller and its settling criterion."""

    instrument: str
    settle_tolerance: TemperatureDelta = 0.05
    settle_timeout: Seconds = 120.0
    poll_interval: Seconds = 0.5

    @field_validator("poll_interval")
    @classmethod
    def _polls(cls, v: float) -> float:
        if not 1e-3 <= v <= 60:
            raise PydanticCustomError("poll", "expected a poll interval in [1 ms, 60 s] (0 would poll the controller "
                                      "in a busy loop)")
        return v


class ChannelRef(StrictModel):
    """An instrument channel (driver numbering)."""

    instrument: str
    channel: int = Field(ge=0)


class DetectorRoles(StrictModel):
    """Homodyne arrays: pre taps (one per weight layer), post and error taps (one per vapor cell)."""

    pre: list[ChannelRef] = Field(min_length=1)
    post: list[ChannelRef] = Field(default_factory=list)
    error: list[ChannelRef] = Field(default_factory=list)


class FreeSpaceRoles(StrictModel):
    """HAL roles of a free_space bench."""

    source: LaserRole
    input: DisplayRole
    probe: DisplayRole
    weights: list[WeightRole] = Field(min_length=1)
    vapor_cells: list[CellRole] = Field(default_factory=list)
    detectors: DetectorRoles


class HeaterBankRole(StrictModel):
    """A contiguous block of heater channels (driver numbering) serving one layer's phase shifters or biases."""

    instrument: str
    first_channel: int = Field(0, ge=0)
    count: int = Field(ge=1)


class IQBlockRole(StrictModel):
    """A contiguous block of IQ channels of an AWG (driver numbering from 1) driving one mesh layer's IQ modulators.

    Channel first_channel + k drives port k; a field of full_scale_field in a quadrature is the AWG's code
    32767 at the channel's full-scale output `amplitude` (V)."""

    instrument: str
    first_channel: int = Field(1, ge=1)
    count: int = Field(ge=1, description="IQ channels = the mesh layer's ports")
    full_scale_field: float = Field(gt=0, description="field (sqrt of the chip's reference power) at code 32767")
    amplitude: Voltage = Field(description="full-scale output amplitude of every channel (V)")

    @field_validator("amplitude")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v > 0:
            raise PydanticCustomError("positive", "expected a full-scale amplitude > 0 V")
        return v


class ChipChannelRef(ChannelRef):
    """A digitiser channel carrying one of the chip's detector arrays, with its front-end gain."""

    volts_per_unit: float = Field(1.0, gt=0, le=1e6, description="volts per unit of power or field (transimpedance)")


class ChipDetectorRoles(StrictModel):
    """Digitiser channels (each an array) of the chip's detectors.

    Receivers carry I and Q interleaved (2 n samples per pattern); a monitor channel is one integrated reading
    per tap over the exposure of the whole batch (an integrating readout, or a sampling one summed by the HAL)."""

    outputs: ChipChannelRef
    monitors: list[ChipChannelRef] = Field(default_factory=list, description="tap monitors, one per mesh layer")
    output_receivers: list[ChipChannelRef] = Field(default_factory=list, description="coherent receivers at each mesh "
                                               "layer's outputs (forward light)")
    input_receivers: list[ChipChannelRef] = Field(default_factory=list, description="coherent receivers at each mesh "
                                              "layer's inputs (backward light)")
    activation_power: list[ChipChannelRef] = Field(default_factory=list, description="activation photodiodes, one per "
                                               "hidden layer")
    activation_slope: list[ChipChannelRef] = Field(default_factory=list, description="activation slope outputs, one per "
                                               "hidden layer")


class ChipRoles(StrictModel):
    """HAL roles of an integrated_chip bench: laser, IQ sources, heater banks, activation biases, detectors."""

    source: LaserRole
    encoder: IQBlockRole = Field(description="input IQ modulators (ports of mesh layer 1)")
    injectors: list[IQBlockRole] = Field(default_factory=list, description="forward injection at each mesh layer's "
                                         "inputs (the time-reversed adjoint)")
    adjoint_sources: list[IQBlockRole] = Field(default_factory=list, description="backward injection at each mesh "
                                               "layer's outputs (the adjoint source)")
    phase_shifters: list[HeaterBankRole] = Field(min_length=1)
    activation_bias: list[HeaterBankRole] = Field(default_factory=list)
    detectors: ChipDetectorRoles


FAULT_KINDS = ("drop", "timeout", "garbage", "bad_reading", "reboot")
_Probability = Field(None, ge=0, le=1, description="probability per transaction")


class FaultSettings(StrictModel):
    """Random faults of the wire twin per transaction: a probability per kind (sum <= 1), a seed, which instruments.

    ``rate`` is a total split equally over the five kinds; a kind given explicitly overrides its share.
    """

    rate: float | None = Field(None, ge=0, le=1, description="total fault probability per transaction")
    drop: float | None = _Probability
    timeout: float | None = _Probability
    garbage: float | None = _Probability
    bad_reading: float | None = _Probability
    reboot: float | None = _Probability
    seed: int = Field(0, ge=0, le=2**32 - 1, strict=True)
    instruments: list[str] | None = Field(None, min_length=1, description="only these instruments (default: all)")

    def probabilities(self) -> dict[str, float]:
        """{kind: probability per transaction} after splitting `rate`."""
        share = (self.rate or 0.0) / len(FAULT_KINDS)
        return {k: share if getattr(self, k) is None else float(getattr(self, k)) for k in FAULT_KINDS}

    @model_validator(mode="after")
    def _total(self) -> "FaultSettings":
        total = sum(self.probabilities().values())
        if total > 1.0 + 1e-12:
            raise PydanticCustomError("faults", "probabilities sum to {total}; expected at most 1 per transaction",
                                      {"total": round(total, 12)})
        return self


class EmulatorSettings(StrictModel):
    """The wire-level twin for this config."""

    autostart: bool = False
    host: str = "127.0.0.1"
    layer_sizes: list[LayerSize] | None = Field(None, max_length=64)
    time_scale: float = Field(1000.0, gt=0, le=1e9, description="twin seconds per wall second (temperature ramps)")
    sequence_length: int = Field(1024, ge=16, le=1 << 16, description="patterns per SLM sequence frame")
    faults: FaultSettings | None = Field(None, description="random per-transaction faults (rehearsal and soak tests)")

    @field_validator("host")
    @classmethod
    def _loopback(cls, v: str) -> str:
        if v not in ("127.0.0.1", "localhost"):
            raise PydanticCustomError("loopback", "expected 127.0.0.1 (the wire twin binds the loopback interface only)")
        return "127.0.0.1"

    @field_validator("layer_sizes")
    @classmethod
    def _sizes(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) < 2 or any(n < 1 for n in v)):
            raise PydanticCustomError("sizes", "expected at least two positive layer sizes (input first)")
        return v


ROLE_SCHEMAS: dict[str, type[StrictModel]] = {"free_space": FreeSpaceRoles, "integrated_chip": ChipRoles}


ROLE_DRIVERS = {"laser": {"laser_controller"}, "power_meter": {"power_meter"}, "slm": {"slm"},
                 "weights": {"slm", "dmd"}, "gain": {"scpi_source"}, "cell": {"temperature_controller"},
                 "detector": {"digitizer"}, "heater": {"qontrol_heater", "scpi_source"},
                "iq": {"awg"}}
