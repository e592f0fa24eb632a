"""Shared light-path state of one bench: a generation counter and the batch on the sources."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BenchClock"]


@dataclass
class BenchClock:
    """Shared state of one bench: `gen` changes whenever light-path settings change; `batch` = patterns shown."""

    gen: int = 0
    batch: int = 0

    def changed(self) -> None:
        """Something that affects the light changed (detectors must acquire again)."""
        self.gen += 1

    def displayed(self, batch: int) -> None:
        """A new pattern sequence of `batch` patterns is on the sources."""
        self.batch = int(batch)
        self.gen += 1
