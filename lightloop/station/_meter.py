"""Per training step: transactions, instrument time and framework overhead (attached to a processor as hooks)."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["StepMeter"]


class StepMeter:
    """Per training step: transactions, instrument time and wall time (overhead = wall - instrument time).

    Preferred measure: the interval between two consecutive training-step hooks of one epoch (the
    trainer calls ``processor.step_hooks`` after every update), which brackets exactly one step -
    program, forward, error, backward, gradient, update - whatever the gradient method. Without hook
    calls it falls back to program() -> program() intervals that ran an optical backward pass.
    """

    def __init__(self, stats: Any) -> None:
        self.stats = stats
        self._open: list[Any] | None = None
        self._sums = {True: [0, 0.0, 0, 0.0], False: [0, 0.0, 0, 0.0]}  # n, wall, tx, instrument s
        self._hook_sums = [0, 0.0, 0, 0.0]
        self._last_hook: tuple[Any, float, int, float] | None = None

    def _now(self) -> tuple[float, int, float]:
        return time.perf_counter(), self.stats.transactions, self.stats.instrument_seconds

    def begin(self) -> None:
        """A program() call: close the current interval and open the next."""
        now = time.perf_counter()
        self._close(now)
        self._open = [now, self.stats.transactions, self.stats.instrument_seconds, False]

    def training_step(self) -> None:
        """The current interval ran an optical backward pass."""
        if self._open is not None:
            self._open[3] = True

    def on_step(self, info: dict[str, Any]) -> None:
        """Trainer step hook (after the update): one step since the previous hook of the same epoch."""
        t, tx, inst = self._now()
        epoch = info.get("epoch")
        last = self._last_hook
        if last is not None and last[0] == epoch:
            s = self._hook_sums
            s[0] += 1
            s[1] += t - last[1]
            s[2] += tx - last[2]
            s[3] += inst - last[3]
        self._last_hook = (epoch, t, tx, inst)

    def _close(self, now: float) -> None:
        if self._open is None:
            return
        t0, tx0, inst0, training = self._open
        s = self._sums[training]
        s[0] += 1
        s[1] += now - t0
        s[2] += self.stats.transactions - tx0
        s[3] += self.stats.instrument_seconds - inst0
        self._open = None

    def summary(self) -> dict[str, Any]:
        """Mean transactions, instrument seconds and overhead seconds per step."""
        for sums in (self._hook_sums, self._sums[True], self._sums[False]):
            if sums[0]:
                n, wall, tx, inst = sums
                return {"transactions_per_step": tx / n, "instrument_seconds_per_step": inst / n,
                        "overhead_seconds_per_step": (wall - inst) / n, "steps_measured": n}
        return {"transactions_per_step": None, "instrument_seconds_per_step": None,
                "overhead_seconds_per_step": None, "steps_measured": 0}

    def on_activity(self, event: str) -> None:
        """Processor activity hook: "program" opens a step interval, "backward" marks it a training step."""
        if event == "program":
            self.begin()
        elif event == "backward":
            self.training_step()

    def attach(self, processor: Any) -> None:
        """Listen to a processor: its activity hooks (program/backward) and the Trainer's step hooks."""
        processor.activity_hooks.append(self.on_activity)
        processor.step_hooks = [*processor.step_hooks, self.on_step]
