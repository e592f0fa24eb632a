"""Build a processor (HAL devices on twins or real drivers) from a lab config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lightloop.config import LabConfig, bench_module
from lightloop.hal.processor import OpticalProcessor

__all__ = ["BuildOverrides", "build_processor"]


@dataclass
class BuildOverrides:
    """Command-line overrides of a config's processor section (None: keep the config's value)."""

    hidden: list[int] | None = None
    ideal: bool | None = None
    optical_depth: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_processor(cfg: LabConfig, n_inputs: int, n_outputs: int,
                    overrides: BuildOverrides | None = None) -> OpticalProcessor:
    """Processor for a dataset with n_inputs features and n_outputs classes."""
    mod = bench_module(cfg.processor.kind, cfg.source)
    return mod.build(cfg, n_inputs, n_outputs, overrides or BuildOverrides())
