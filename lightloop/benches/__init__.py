"""Bench builders: one module per processor kind, each with `Schema` (pydantic) and `build(...)`.

`build(cfg: LabConfig, n_inputs: int, n_outputs: int, overrides: BuildOverrides) -> OpticalProcessor`.

Other packages add kinds through the entry-point group ``lightloop.benches`` (name -> a module, or any object,
with ``Schema`` and ``build``; ``validate_sections`` optional).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

__all__ = ["available_kinds", "load_bench_module"]


def available_kinds() -> list[str]:
    """Processor kinds that have a bench module (built-in ones and those registered by entry point)."""
    from lightloop.plugins import entry_points_of

    builtin = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return sorted(builtin | set(entry_points_of("lightloop.benches")))


def load_bench_module(kind: str) -> Any:
    """The bench module of a kind: ``lightloop.benches.<kind>``, else the ``lightloop.benches`` entry point."""
    if kind in {m.name for m in pkgutil.iter_modules(__path__)}:
        return importlib.import_module(f"lightloop.benches.{kind}")
    from lightloop.errors import ConfigError
    from lightloop.plugins import load_entry_point

    mod = load_entry_point("lightloop.benches", kind)
    missing = [a for a in ("Schema", "build") if not hasattr(mod, a)]
    if missing:
        raise ConfigError(f"entry point lightloop.benches:{kind}: {mod!r} has no {' and no '.join(missing)}; expected "
                          "a bench module with Schema (pydantic model of the processor section) and build(cfg, "
                          "n_inputs, n_outputs, overrides)")
    return mod
