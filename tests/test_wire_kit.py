"""Shared helpers for the wire-twin, safety and instrument-config tests (no tests here).

Import with ``from test_wire_kit import ...``; fixtures defined here are re-exported by the modules that use them.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from conftest import REPO

WIRE_YAML = REPO / "lab_configs" / "wire_free_space.yaml"
REAL_YAML = REPO / "lab_configs" / "real_free_space.yaml"
CHIP_YAML = REPO / "lab_configs" / "real_integrated_chip.yaml"


def raw(path: Path = WIRE_YAML) -> dict[str, Any]:
    """A config file as a plain dict (fresh copy)."""
    return copy.deepcopy(yaml.safe_load(path.read_text()))


def write(tmp_path: Path, data: dict[str, Any], name: str = "bench.yaml") -> Path:
    """Write a config dict to tmp_path/name."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wire_config(tmp_path: Path, mutate: Callable[[dict[str, Any]], None] | None = None, name: str = "wire.yaml"):
    """The wire config (optionally mutated) loaded from a temporary file."""
    from lightloop.config import load_config

    data = raw()
    if mutate is not None:
        mutate(data)
    return load_config(write(tmp_path, data, name))


def wire_threads() -> list[threading.Thread]:
    """Live wire-twin server threads."""
    return [t for t in threading.enumerate() if t.name == "lightloop-wire-twin" and t.is_alive()]


@pytest.fixture
def clean_wire():
    """The test must stop every server and close every instrument it started."""
    from qcodes.instrument import Instrument

    before = set(wire_threads())
    yield
    leaked_threads = [t for t in wire_threads() if t not in before]
    leaked = list(Instrument._all_instruments)
    Instrument.close_all()
    assert not leaked_threads, f"wire twin threads still running: {leaked_threads}"
    assert not leaked, f"instruments left open: {leaked}"
