"""Config section models every layer may share (ground floor: imports nothing of lightloop above errors/units).

StrictModel (unknown keys are errors), the top level LabConfig, TrainingDefaults, BuildOverrides (command-line
overrides of a processor section) and FeedbackSettings (the optional photon-counting feedback channel).
Bench-specific sections live with their bench (``lightloop.benches.<kind>.Schema``), the station's with the
station (``lightloop.station``); ``lightloop.config`` loads a file and asks the bench module to validate them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["StrictModel", "TrainingDefaults", "LabConfig", "BuildOverrides", "FeedbackSettings", "validation_message"]


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingDefaults(StrictModel):
    """Training defaults of a bench (each can be overridden on the command line)."""

    dataset: str = "digits"
    gradient: str = "pump_probe"
    loss: Literal["mse", "cross_entropy"] = "mse"
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(5e-3, gt=0)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    init_scale: float = Field(0.1, gt=0)
    seed: int = 0
    gradient_options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the gradient method")


class LabConfig(StrictModel):
    """A bench: its processor (with devices or twins) and training defaults."""

    bench: str
    description: str = ""
    processor: Any
    training: TrainingDefaults = TrainingDefaults()
    feedback: Any = None  # optional photon-counting feedback channel (FeedbackSettings)
    # optional station (lightloop.station): instruments, the HAL roles they serve, the wire twin
    instruments: Any = None
    roles: Any = None
    emulator: Any = None
    source: str = Field("<memory>", exclude=True)


class FeedbackSettings(StrictModel):
    """Top-level `feedback:` section: the photon-counting backward channel (twin detectors).

    The nominal figures are the twin's truth (scattered per channel by `spread`) and, when
    `calibrated` is true, also what the HAL believes (otherwise the HAL assumes ideal detectors).
    q and n_p are not here: they are parameters of the gradient method (training.gradient_options).
    """

    device: Literal["twin"] = "twin"
    detection_efficiency: float = Field(1.0, gt=0, le=1)
    dark_count_probability: float = Field(0.0, ge=0, lt=1, description="per detector per gate")
    polarisation_error: float = Field(0.0, ge=0, lt=0.5, description="probability a photon's bit is misread")
    spread: float = Field(0.0, ge=0, le=1, description="relative channel-to-channel scatter of the truth")
    calibrated: bool = True
    max_emission_probability: float = Field(1.0, ge=0, le=1)
    max_background_probability: float = Field(1.0, ge=0, le=1)
    truth_seed: int = 11
    noise_seed: int = 0


@dataclass
class BuildOverrides:
    """Command-line overrides of a config's processor section (None: keep the config's value)."""

    hidden: list[int] | None = None
    ideal: bool | None = None
    optical_depth: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def validation_message(source: str, exc: ValidationError, prefix: str = "") -> str:
    """One line: file: field: what was expected (got what)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    got = err.get("input")
    got_s = "" if err["type"] in ("missing",) else f" (got {got!r})"
    if err["type"] == "extra_forbidden":
        return f"{source}: {loc}: unknown key"
    return f"{source}: {loc}: {err['msg']}{got_s}"
