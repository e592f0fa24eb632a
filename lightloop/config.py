"""Lab-config loading. Strict: unknown keys, wrong types and out-of-range values are errors reported in one
line naming the file, the field and what was expected.

A config names its processor kind; the bench module ``lightloop.benches.<kind>`` owns the schema of its
``processor`` section (module attribute ``Schema``) and validates the sections it understands
(``validate_sections(cfg)``: e.g. the station's ``instruments`` / ``roles`` / ``emulator``). The shared
section models live on the ground floor (``lightloop.schema``). Only the command-line modules and the
bench builder (``lightloop.bench``) import this module (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lightloop.errors import ConfigError
from lightloop.schema import FeedbackSettings, LabConfig, StrictModel, TrainingDefaults, validation_message

__all__ = ["StrictModel", "TrainingDefaults", "LabConfig", "load_config", "parse_config", "validation_message",
           "bench_module"]


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
        try:
            cfg.feedback = FeedbackSettings.model_validate(cfg.feedback)
        except ValidationError as exc:
            raise ConfigError(validation_message(source, exc, "feedback")) from None
    validate_sections = getattr(mod, "validate_sections", None)
    if validate_sections is not None:
        validate_sections(cfg)
    elif cfg.instruments is not None or cfg.roles is not None or cfg.emulator is not None:
        raise ConfigError(f"{source}: instruments: a {proc['kind']!r} bench has no instrument station; expected no "
                          "instruments/roles/emulator sections")
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
