"""Calibration: routines that measure through the HAL and fit models; results are versioned files.

Public API:
  Routine, CalibrationResult, RunContext, register_routine, get_routine, routines_for  (base)
  calibrate(proc, ["all"] | names, ctx, store, bench)                                    (runner)
  CalibrationStore, load_into_processor, CalibrationWarning                               (store)
  RecalibrationHook, ReadoutMonitor, attach_recalibration                                 (drift)
  twin_truth_report, TOLERANCES                                                          (report: twins only)
The free-space routines live in the package lightloop.calibration.free_space (one module per routine);
other benches add a module to base.CALIBRATION_PLUGINS. Only the report modules (report, chip_report)
read a twin's truth, to grade results.
"""

from lightloop.calibration.base import (
    CalibrationResult,
    Counts,
    Routine,
    RunContext,
    get_routine,
    register_routine,
    routines_for,
)
from lightloop.calibration.runner import calibrate
from lightloop.calibration.store import CalibrationStore, CalibrationWarning, load_into_processor

__all__ = [
    "CalibrationResult",
    "Counts",
    "Routine",
    "RunContext",
    "get_routine",
    "register_routine",
    "routines_for",
    "calibrate",
    "CalibrationStore",
    "CalibrationWarning",
    "load_into_processor",
]
