"""Shared plumbing of a controller with one switched output: counted calls through its link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from lightloop.station._clock import BenchClock
from lightloop.station._link import Link

__all__ = ["OutputDevice"]


T = TypeVar("T")


class OutputDevice:
    """Shared plumbing of a controller with one switched output: counted calls through its link."""

    link: Link
    clock: BenchClock | None

    def _call(self, label: str, fn: Callable[[Any], T], n: int = 1) -> T:
        def op(drv: Any) -> T:
            r = fn(drv)
            self.link.tick(n)
            return r

        return self.link.run(label, op)

    def on_reconnect(self, fn: Callable[[], None]) -> None:
        """Run fn() after every reconnect, after the adapter's own limit set-up and before any other command."""
        self.link.on_connect(lambda drv: fn())

    def read_output(self) -> bool:
        """``OUTP?``."""
        return bool(self._call("OUTP?", lambda d: d.output()))

    def write_output(self, on: bool) -> None:
        """``OUTP ON|OFF``."""
        self._call("OUTP", lambda d: d.output(bool(on)))
        if self.clock is not None:
            self.clock.changed()
