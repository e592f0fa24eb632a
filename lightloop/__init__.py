"""lightloop: hardware-in-the-loop training of photonic neural networks."""

from lightloop.errors import (
    CalibrationError,
    ConfigError,
    DatasetError,
    InstrumentError,
    LightloopError,
    SafetyLimitError,
)

__version__ = "0.1.0"

__all__ = [
    "CalibrationError",
    "ConfigError",
    "DatasetError",
    "InstrumentError",
    "LightloopError",
    "SafetyLimitError",
    "__version__",
]
