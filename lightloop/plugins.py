"""Optional plugin modules: import each if it exists, re-raise errors from inside it."""

from __future__ import annotations

import importlib
from typing import Iterable

__all__ = ["import_plugins"]


def import_plugins(modules: Iterable[str]) -> None:
    """Import every module that exists (an absent one is skipped; a broken one raises)."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
