"""Bench builders: one module per processor kind, each with `Schema` (pydantic) and `build(...)`.

`build(cfg: LabConfig, n_inputs: int, n_outputs: int, overrides: BuildOverrides) -> OpticalProcessor`.
"""

from __future__ import annotations

import pkgutil

__all__ = ["available_kinds"]


def available_kinds() -> list[str]:
    """Processor kinds that have a bench module."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
