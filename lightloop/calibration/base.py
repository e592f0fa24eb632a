"""Calibration framework: routines, their results, measurement counting and the routine registry.

A routine measures through the HAL only (so it runs on real instruments and on twins alike),
fits a model in float64, and returns a `CalibrationResult` (arrays + metadata). `apply` pushes
a result (fresh, or loaded from the store) into the HAL's calibration maps. Routines of other
benches (e.g. the integrated chip) register themselves from their own module, listed in
`CALIBRATION_PLUGINS`, with the `register_routine` decorator.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import CalibrationError
from lightloop.hal.processor import OpticalProcessor

__all__ = [
    "Counts",
    "CalibrationResult",
    "RunContext",
    "Routine",
    "ROUTINES",
    "CALIBRATION_PLUGINS",
    "register_routine",
    "get_routine",
    "routines_for",
    "count_hal",
]


@dataclass
class Counts:
    """HAL operations a routine needed: detector-array acquisitions, frames acquired, device writes."""

    acquisitions: int = 0
    frames: int = 0
    writes: int = 0
    setpoints: int = 0

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts(self.acquisitions - other.acquisitions, self.frames - other.frames,
                      self.writes - other.writes, self.setpoints - other.setpoints)

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.acquisitions + other.acquisitions, self.frames + other.frames,
                      self.writes + other.writes, self.setpoints + other.setpoints)

    def as_dict(self) -> dict[str, int]:
        """JSON-able counts."""
        return {"acquisitions": self.acquisitions, "frames": self.frames, "writes": self.writes,
                "setpoints": self.setpoints}


def count_hal(proc: OpticalProcessor) -> Counts:
    """Totals of the HAL roles' operation counters (detectors, weight devices, heaters)."""
    c = Counts()
    for name in ("pre_taps", "post_taps", "error_taps"):
        for d in getattr(proc, name, ()):
            c.acquisitions += getattr(d, "acquisitions", 0)
            c.frames += getattr(d, "frames", 0)
    for w in getattr(proc, "weights", ()):
        c.writes += getattr(w, "writes", 0)
    for a in getattr(proc, "absorbers", ()):
        c.setpoints += getattr(a, "setpoints", 0)
    return c


@dataclass
class CalibrationResult:
    """One routine's outcome: float64 arrays (-> NPZ) and JSON metadata (fit residuals, per-channel stats)."""

    routine: str
    version: str
    arrays: dict[str, NDArray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    #: (figure title, draw(fig)) pairs for the PNG of each fit; not stored
    plots: list[tuple[str, Callable[[Any], None]]] = field(default_factory=list, repr=False)
    instruments: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def fail(self, message: str) -> None:
        """Record a fit that did not reach its quality threshold (the result is then not applied)."""
        self.ok = False
        self.problems.append(message)


@dataclass
class RunContext:
    """Options shared by the routines of one calibration run."""

    progress: bool = False
    plot_dir: Path | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def bar(self, iterable: Any, desc: str, total: int | None = None) -> Iterator[Any]:
        """tqdm progress bar over a sweep (hidden unless progress is on)."""
        from tqdm.auto import tqdm

        return iter(tqdm(iterable, desc=desc, total=total, leave=False, disable=not self.progress, unit="step"))

    def rng(self, salt: int = 0) -> np.random.Generator:
        """Seeded generator for randomised test patterns."""
        return np.random.default_rng([self.seed, salt])


class Routine(ABC):
    """A calibration routine: measure through the HAL, fit, apply to the HAL maps."""

    #: CLI name (`lightloop calibrate NAME`)
    name: ClassVar[str]
    #: bumped whenever the measurement or the model changes; stored with every record
    version: ClassVar[str] = "1"
    #: position in `calibrate all` (lower runs first: later routines use earlier results)
    order: ClassVar[int] = 100
    #: one line for `--help` and the summary
    summary: ClassVar[str] = ""

    @abstractmethod
    def applicable(self, proc: OpticalProcessor) -> str | None:
        """None if the routine can run on this processor, else the reason why not."""

    @abstractmethod
    def instruments(self, proc: OpticalProcessor) -> dict[str, str]:
        """Identities of the instruments whose calibration this routine produces (role -> identity)."""

    @abstractmethod
    def layout(self, proc: OpticalProcessor) -> dict[str, Any]:
        """What a stored record must match to apply to this processor (layer sizes, device kind ...)."""

    @abstractmethod
    def run(self, proc: OpticalProcessor, ctx: RunContext) -> CalibrationResult:
        """Measure and fit (HAL access only); does not change the HAL maps."""

    @abstractmethod
    def apply(self, proc: OpticalProcessor, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        """Push a result (fresh or from the store) into the HAL calibration maps."""

    def new_result(self, proc: OpticalProcessor) -> CalibrationResult:
        """An empty result stamped with this routine's name, version and instruments."""
        return CalibrationResult(self.name, self.version, instruments=self.instruments(proc))


ROUTINES: dict[str, type[Routine]] = {}

#: modules that register further routines when imported (the integrated-chip routines go here)
CALIBRATION_PLUGINS = ("lightloop.calibration.free_space", "lightloop.calibration.chip",
                       "lightloop.calibration.chip_mesh", "lightloop.calibration.chip_readout",
                       "lightloop.calibration.chip_activation")


def register_routine(cls: type[Routine]) -> type[Routine]:
    """Class decorator adding a routine to the registry under cls.name."""
    if not cls.name.isidentifier():
        raise ValueError(f"routine name must be an identifier, got {cls.name!r}")
    ROUTINES[cls.name] = cls
    return cls


def _load_plugins() -> None:
    for mod in CALIBRATION_PLUGINS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def get_routine(name: str) -> Routine:
    """Instantiate a registered routine by name."""
    _load_plugins()
    if name not in ROUTINES:
        raise CalibrationError(f"unknown calibration routine '{name}'; expected one of: "
                               f"{', '.join(sorted(ROUTINES))} or all")
    return ROUTINES[name]()


def routines_for(proc: OpticalProcessor) -> list[Routine]:
    """Every registered routine applicable to this processor, in `all` order."""
    _load_plugins()
    out = [cls() for cls in sorted(ROUTINES.values(), key=lambda c: (c.order, c.name))]
    return [r for r in out if r.applicable(proc) is None]
