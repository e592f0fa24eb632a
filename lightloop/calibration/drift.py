"""Drift handling during training: a monitored readout figure and re-calibration on a schedule or on demand.

Training never imports calibration: the bench builder (from the config's calibration.recalibrate
section) or a script attaches a `RecalibrationHook` to the processor as `processor.step_hooks`,
and the Trainer calls every step hook after each update.

The monitored figure is the readout error: a fixed reference weight pattern and input batch are
shown, and each forward tap is compared with what the HAL's calibrated model predicts from the
tap before it (pre tap: W @ previous post tap; post tap: g(pre tap; a0)). It grows when LO phases,
gains, weights or the cells' optical depth drift away from the calibration.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lightloop.calibration.base import RunContext
from lightloop.calibration.runner import calibrate
from lightloop.calibration.store import CalibrationStore
from lightloop.hal.processor import OpticalProcessor

__all__ = ["ReadoutMonitor", "RecalibrationHook", "attach_recalibration"]


class ReadoutMonitor:
    """Relative error between measured forward taps and the calibrated model, on a fixed reference pattern."""

    def __init__(self, proc: OpticalProcessor, frames: int = 32, seed: int = 12345, amplitude: float = 0.5):
        rng = np.random.default_rng(seed)
        self.proc = proc
        self.w_ref = [(rng.uniform(-amplitude, amplitude, s) * w.max_weight).astype(np.float32)
                      for s, w in zip(proc.parameter_shapes(), proc.weights)]  # type: ignore[attr-defined]
        self.x_ref = rng.random((frames, proc.layer_sizes[0])).astype(np.float32)

    def measure(self) -> dict[str, float]:
        """Per-tap relative rms error (and 'max'); reprograms the reference weights."""
        p = self.proc
        p.program(self.w_ref)
        taps = p.forward(self.x_ref)
        out: dict[str, float] = {}
        prev = taps.inputs.astype(np.float64)
        for layer, w in enumerate(self.w_ref):
            z_meas = taps.pre[layer].astype(np.float64)
            z_model = prev @ w.T.astype(np.float64)
            out[f"pre{layer}"] = float(np.linalg.norm(z_meas - z_model) / max(np.linalg.norm(z_model), 1e-12))
            if layer < len(self.w_ref) - 1:
                a_meas = taps.post[layer].astype(np.float64)
                a_model = p.absorbers[layer].forward_model(z_meas)  # type: ignore[attr-defined]
                out[f"post{layer}"] = float(np.linalg.norm(a_meas - a_model) / max(np.linalg.norm(a_model), 1e-12))
                prev = a_meas
        out["max"] = max(out.values())
        return out


class RecalibrationHook:
    """Trainer step hook: re-calibrate every N steps, and/or when the monitored readout error exceeds a threshold."""

    def __init__(self, proc: OpticalProcessor, routines: Sequence[str] = ("lo_phase", "saturable_absorber"),
                 every_steps: int | None = None, check_every_steps: int | None = None,
                 max_check_error: float = 0.05, store: CalibrationStore | None = None, bench: str = "",
                 ctx: RunContext | None = None):
        self.proc, self.routines = proc, list(routines)
        self.every_steps, self.check_every_steps = every_steps, check_every_steps
        self.max_check_error = float(max_check_error)
        self.store, self.bench = store, bench
        self.ctx = ctx or RunContext()
        self.monitor = ReadoutMonitor(proc)
        self.events: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []

    def __call__(self, info: dict[str, Any]) -> None:
        step = int(info["global_step"])
        reason = None
        if self.every_steps and step % self.every_steps == 0:
            reason = "schedule"
        elif self.check_every_steps and step % self.check_every_steps == 0:
            err = self.monitor.measure()
            self.checks.append({"step": step, "readout_error": err["max"]})
            if err["max"] > self.max_check_error:
                reason = f"readout error {err['max']:.3f} > {self.max_check_error:g}"
        if reason:
            self.recalibrate(step, reason)

    def recalibrate(self, step: int, reason: str) -> list[Any]:
        """Run the routines now (results applied to the HAL; stored when a store is set)."""
        outcomes = calibrate(self.proc, self.routines, self.ctx, self.store, self.bench)
        self.events.append({
            "step": step, "reason": reason, "status": {o.routine: o.status for o in outcomes},
            "acquisitions": sum(o.result.counts.acquisitions for o in outcomes if o.result is not None),
        })
        return outcomes

    def summary(self) -> dict[str, Any]:
        """Events and checks so far."""
        return {"recalibrations": len(self.events), "events": self.events, "checks": self.checks}


def attach_recalibration(proc: OpticalProcessor, settings: Any, store_path: str | None = None,
                         bench: str = "") -> RecalibrationHook:
    """Build a hook from config settings (routines, every_steps, check_every_steps, max_check_error, save)."""
    store = CalibrationStore(store_path) if (settings.save and store_path) else None
    hook = RecalibrationHook(proc, settings.routines, settings.every_steps, settings.check_every_steps,
                             settings.max_check_error, store, bench)
    proc.step_hooks = [*getattr(proc, "step_hooks", []), hook]  # type: ignore[attr-defined]
    proc.recalibration = hook  # type: ignore[attr-defined]
    return hook
