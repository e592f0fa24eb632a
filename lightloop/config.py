"""Lab-config schema and loading. Strict: unknown keys, wrong types and out-of-range values are errors
reported in one line naming the file, the field and what was expected.

A config names its processor kind; the schema of the `processor` section lives with the bench
builder in `lightloop.benches.<kind>` (module attribute `Schema`), so each kind owns its fields.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lightloop.errors import ConfigError

__all__ = ["StrictModel", "TrainingDefaults", "LabConfig", "load_config", "validation_message", "bench_module"]


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
    feedback: Any = None  # optional photon-counting feedback channel (lightloop.benches.digital.FeedbackSettings)
    # optional station (lightloop.benches.instruments): instruments, the HAL roles they serve, the wire twin
    instruments: Any = None
    roles: Any = None
    emulator: Any = None
    source: str = Field("<memory>", exclude=True)


def validation_message(source: str, exc: ValidationError, prefix: str = "") -> str:
    """One line: file: field: what was expected (got what)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    got = err.get("input")
    got_s = "" if err["type"] in ("missing",) else f" (got {got!r})"
    if err["type"] == "extra_forbidden":
        return f"{source}: {loc}: unknown key"
    return f"{source}: {loc}: {err['msg']}{got_s}"


def bench_module(kind: str, source: str = "<config>") -> Any:
    """The `lightloop.benches.<kind>` module that defines Schema and build()."""
    if not isinstance(kind, str) or not kind.isidentifier():
        raise ConfigError(f"{source}: processor.kind: expected a processor kind name, got {kind!r}")
    try:
        return importlib.import_module(f"lightloop.benches.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name == f"lightloop.benches.{kind}":
            from lightloop.benches import available_kinds

            raise ConfigError(f"{source}: processor.kind: unknown kind '{kind}'; expected one of: "
                              f"{', '.join(available_kinds())}") from None
        raise


def parse_config(data: Any, source: str = "<memory>") -> LabConfig:
    """Validate a config mapping (already parsed from YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}")
    try:
        cfg = LabConfig.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(validation_message(source, exc)) from None
    proc = cfg.processor
    if not isinstance(proc, dict) or "kind" not in proc:
        raise ConfigError(f"{source}: processor: expected a mapping with a 'kind' key")
    mod = bench_module(proc["kind"], source)
    try:
        cfg.processor = mod.Schema.model_validate(proc)
    except ValidationError as exc:
        raise ConfigError(validation_message(source, exc, "processor")) from None
    if cfg.feedback is not None:
        from lightloop.benches.digital import FeedbackSettings

        try:
            cfg.feedback = FeedbackSettings.model_validate(cfg.feedback)
        except ValidationError as exc:
            raise ConfigError(validation_message(source, exc, "feedback")) from None
    if cfg.instruments is not None or cfg.roles is not None or cfg.emulator is not None:
        from lightloop.benches.instruments import validate_station

        validate_station(cfg)
    return cfg


def load_config(path: str | Path) -> LabConfig:
    """Read and validate a YAML lab config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    return parse_config(data, str(path))
