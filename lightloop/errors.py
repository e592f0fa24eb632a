"""Exception types; every message is one line naming the file/instrument, the field and the expectation."""

from __future__ import annotations


class LightloopError(Exception):
    """Base class for every error lightloop raises on purpose."""


class ConfigError(LightloopError, ValueError):
    """A lab config, CLI flag or parameter is invalid."""


class DatasetError(LightloopError):
    """A dataset file is missing, corrupt or fails its checksum."""


class CalibrationError(LightloopError):
    """A calibration file is missing, corrupt, stale or belongs to another bench."""


class RunFolderError(LightloopError):
    """A run folder is in use, holds another run, or its checkpoint or metrics log is unusable."""


class SafetyLimitError(LightloopError):
    """A command would violate a configured safety limit; nothing was written."""


class InstrumentError(LightloopError):
    """An instrument timed out, dropped its connection or answered garbage."""
