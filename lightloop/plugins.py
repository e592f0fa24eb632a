"""Plugins: optional modules imported if they exist, and objects other packages register through entry points.

Entry-point groups (``importlib.metadata``): ``lightloop.drivers`` (QCoDeS Instrument classes),
``lightloop.benches`` (bench modules with ``Schema`` and ``build``), ``lightloop.gradients``
(GradientMethod classes) and ``lightloop.datasets`` (loaders ``fn(data_dir) -> Dataset``).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Iterable

from lightloop.errors import ConfigError

__all__ = ["import_plugins", "ENTRY_POINT_GROUPS", "entry_points_of", "load_entry_point"]

#: what each entry-point group registers
ENTRY_POINT_GROUPS = {
    "lightloop.drivers": "a QCoDeS Instrument class",
    "lightloop.benches": "a bench module (Schema, build)",
    "lightloop.gradients": "a GradientMethod class",
    "lightloop.datasets": "a dataset loader fn(data_dir) -> Dataset",
}


def import_plugins(modules: Iterable[str]) -> None:
    """Import every module that exists (an absent one is skipped; a broken one raises)."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def entry_points_of(group: str) -> dict[str, metadata.EntryPoint]:
    """Entry points installed packages register in ``group`` (name -> entry point; the first of a name wins)."""
    out: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=group):
        out.setdefault(ep.name, ep)
    return out


def load_entry_point(group: str, name: str) -> Any:
    """The object registered as ``name`` in ``group``; a missing or broken entry point is one ConfigError line."""
    ep = entry_points_of(group).get(name)
    if ep is None:
        raise ConfigError(f"entry point {group}:{name}: not registered by any installed package; expected "
                          f"{ENTRY_POINT_GROUPS.get(group, 'an object')} registered under [project.entry-points."
                          f"\"{group}\"]")
    try:
        return ep.load()
    except Exception as exc:   # a plugin's own import error: name it in one line
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ConfigError(f"entry point {group}:{name} ({ep.value}): cannot be loaded ({detail}); expected "
                          f"{ENTRY_POINT_GROUPS.get(group, 'an importable object')}") from None
