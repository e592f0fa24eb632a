"""lightloop: hardware-in-the-loop training of photonic neural networks.

Python API (loaded on first use, so ``import lightloop`` stays cheap)::

    import lightloop
    with lightloop.open_bench("free_space_sa", hidden=[8], ideal=True) as bench:
        result = bench.train(epochs=1)

``open_bench``, ``Bench``, ``packaged_configs``, ``station_instruments`` (lightloop.api); ``load_config``,
``build_processor``, ``BuildOverrides``, ``LabConfig`` (the config and builder entry points); the error classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightloop.errors import (
    CalibrationError,
    ConfigError,
    DatasetError,
    InstrumentError,
    LightloopError,
    RunFolderError,
    SafetyLimitError,
)

if TYPE_CHECKING:
    from lightloop.api import (Bench, BuildOverrides, LabConfig, build_processor, load_config, open_bench,
                               packaged_configs, station_instruments)

__version__ = "0.1.0"

#: names served lazily from lightloop.api
_API = ("Bench", "BuildOverrides", "LabConfig", "build_processor", "load_config", "open_bench", "packaged_configs",
        "station_instruments")

__all__ = [
    "Bench",
    "BuildOverrides",
    "CalibrationError",
    "ConfigError",
    "DatasetError",
    "InstrumentError",
    "LabConfig",
    "LightloopError",
    "RunFolderError",
    "SafetyLimitError",
    "__version__",
    "build_processor",
    "load_config",
    "open_bench",
    "packaged_configs",
    "station_instruments",
]


def __getattr__(name: str) -> Any:
    """The Python API's names, imported from lightloop.api on first use."""
    if name in _API:
        from lightloop import api

        return getattr(api, name)
    raise AttributeError(f"module 'lightloop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
