"""Build a processor (HAL devices on twins or real instruments) from a lab config: the one entry point."""

from __future__ import annotations

from lightloop.config import LabConfig, bench_module
from lightloop.hal.processor import OpticalProcessor
from lightloop.schema import BuildOverrides

__all__ = ["BuildOverrides", "build_processor"]


def build_processor(cfg: LabConfig, n_inputs: int, n_outputs: int,
                    overrides: BuildOverrides | None = None) -> OpticalProcessor:
    """Processor for a dataset with n_inputs features and n_outputs classes."""
    mod = bench_module(cfg.processor.kind, cfg.source)
    proc = mod.build(cfg, n_inputs, n_outputs, overrides or BuildOverrides())
    if cfg.ledger is not None:  # the energy / latency ledger listens on the processor's hooks
        from lightloop.ledger import attach_ledger

        attach_ledger(proc, cfg.ledger, cfg.source)
    return proc
