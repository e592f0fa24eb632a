"""Run calibration routines on a processor: measure, fit, apply to the HAL, store, plot, summarise."""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lightloop.calibration.base import CalibrationResult, Counts, Routine, RunContext, get_routine, routines_for
from lightloop.calibration.store import CalibrationStore, contained
from lightloop.errors import CalibrationError
from lightloop.hal.processor import OpticalProcessor

_log = logging.getLogger("lightloop.calibration")

__all__ = ["Outcome", "select_routines", "calibrate", "save_plots"]


@dataclass
class Outcome:
    """What happened to one routine in a run."""

    routine: str
    status: str  # "ok" | "failed" | "skipped"
    result: CalibrationResult | None = None
    reason: str = ""
    path: str | None = None
    plots: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary of this routine's run."""
        out: dict[str, Any] = {"routine": self.routine, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        r = self.result
        if r is not None:
            out.update({"version": r.version, "measurements": r.counts.as_dict(), "seconds": round(r.seconds, 3),
                        "problems": r.problems, "fit": r.meta})
        if self.path:
            out["record"] = self.path
        if self.plots:
            out["plots"] = self.plots
        return out


def select_routines(proc: OpticalProcessor, names: Sequence[str]) -> list[Routine]:
    """Routines named (or 'all': every applicable one, in dependency order)."""
    if list(names) == ["all"]:
        return routines_for(proc)
    out = []
    for name in names:
        r = get_routine(name)
        reason = r.applicable(proc)
        if reason:
            raise CalibrationError(f"routine '{name}' does not apply to this bench: {reason}")
        out.append(r)
    return out


def save_plots(result: CalibrationResult, plot_dir: Path) -> list[str]:
    """One PNG per fit of a result (matplotlib Figure objects: the caller's backend is never changed)."""
    from matplotlib.figure import Figure

    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for title, draw in result.plots:
        path = contained(plot_dir, f"{title}.png")   # a title never names a file outside the plot folder
        fig = Figure(figsize=(9, 4.5), layout="constrained")   # labels and titles never overlap or clip
        draw(fig)
        fig.savefig(path, dpi=90)
        paths.append(str(path))
    return paths


def calibrate(proc: OpticalProcessor, names: Sequence[str], ctx: RunContext, store: CalibrationStore | None = None,
              bench: str = "", apply: bool = True) -> list[Outcome]:
    """Run routines in order; each successful result is applied to the HAL (so later routines use it) and stored."""
    outcomes = []
    for routine in select_routines(proc, names):
        result = routine.run(proc, ctx)
        out = Outcome(routine.name, "ok" if result.ok else "failed", result)
        if result.ok:
            if apply:
                routine.apply(proc, result.arrays, result.meta)
            if store is not None:
                out.path = str(store.save(result, bench, routine.layout(proc)))
        else:
            out.reason = "; ".join(result.problems)
        if ctx.plot_dir is not None and result.plots:
            out.plots = save_plots(result, Path(ctx.plot_dir))
        outcomes.append(out)
        _log.info("calibration %s: %s, %d acquisitions, %.1f s%s", routine.name, out.status, result.counts.acquisitions,
                  result.seconds, f" ({out.reason})" if out.reason else "")
    return outcomes


def total_counts(outcomes: Sequence[Outcome]) -> Counts:
    """Sum of the routines' measurement counts."""
    c = Counts()
    for o in outcomes:
        if o.result is not None:
            c = c + o.result.counts
    return c


def now_utc() -> str:
    """ISO timestamp (UTC)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
