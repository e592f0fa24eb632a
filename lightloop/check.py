"""Bench error budget (`lightloop check`): every optical path measured through the HAL against the calibrated model.

For each path of a bench (a layer's forward product, the backward / adjoint path, the nonlinearity, each
detector's dark reading) random inputs are sent through the HAL and the measured values compared with what the
bench's *calibrated* model predicts from the HAL's own knowledge (never the twin's hidden truth). A linear fit
measured = gain * model + offset (on the mean of two repeated measurements) gives the systematic error (gain
error, phase of a complex gain, offset); their difference / sqrt 2 the noise; the rms of mean - fit less the
noise the model error. Everything is in the HAL's physical units; bounds (``check:`` config section, ``CheckSettings``) are
relative to the rms of the path's model signal (a dark path: to the detector's signal in its forward path).
Per bench kind: free space here; the chip in `check_chip`, flow network and digital in `check_flow`; the statistics
in `check_stats`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lightloop.check_stats import PathResult, bounds_for, judge, path_stats, repeat_passes
from lightloop.check_stats import private_copy as _a
from lightloop.check_stats import rms as _rms
from lightloop.schema import CheckSettings

__all__ = ["PathResult", "path_stats", "judge", "bounds_for", "run_budget", "budget_summary", "plot_budget",
           "check_processor", "gate_check"]


# --- free-space bench ---------------------------------------------------------------------------------------
def _free_space(proc: Any, n: int, rng: np.random.Generator) -> tuple[list[PathResult], list[str]]:
    """Forward product per layer, vapor-cell nonlinearity, backward probe path, every homodyne array's dark reading."""
    sizes, n_layers = proc.layer_sizes, len(proc.weights)
    ws = []
    for l, blk in enumerate(proc.weights):
        w = rng.normal(0.0, 2.0 / math.sqrt(sizes[l]), blk.shape)
        ws.append(np.clip(w, -blk.max_weight, blk.max_weight).astype(np.float32))
    proc.program(ws)
    x = rng.uniform(0.0, 1.0, (n, sizes[0])).astype(np.float32)
    delta = rng.normal(0.0, 1.0, (n, sizes[-1])).astype(np.float32)
    (pre, post, a0, errs), (pre2, post2, _, errs2) = repeat_passes(proc, x, delta)
    field_unit = "field (saturation units)"
    out: list[PathResult] = []
    sig_pre, sig_post, sig_err = [], [], []
    for l in range(n_layers):
        a_in = a0 if l == 0 else post[l - 1]
        model = a_in.astype(np.float64) @ ws[l].T.astype(np.float64)
        out.append(PathResult(f"layer{l}.forward", "real", field_unit, pre[l], model, pre2[l]))
        sig_pre.append(_rms(model))
    for l in range(n_layers - 1):
        model = proc.absorbers[l].forward_model(pre[l].astype(np.float64))
        out.append(PathResult(f"layer{l}.nonlinearity", "real", field_unit, post[l], model, post2[l]))
        sig_post.append(_rms(model))
    for l in range(n_layers - 1):
        model = (errs[l + 1].astype(np.float64) @ ws[l + 1].astype(np.float64)) * \
            proc.probe_transmission(l, pre[l].astype(np.float64))
        out.append(PathResult(f"layer{l}.backward", "real", "field per unit of output error", errs[l], model,
                              errs2[l]))
        peak = float(np.abs(delta).max()) or 1.0
        sig_err.append(_rms(model) * proc.probe.probe_field / peak)   # the raw probe field the detector saw
    # dark: no input light, then no probe light; the detectors should read zero field
    proc.encoder.display_fields(np.zeros((n, sizes[0]), np.float32))
    for group, dets, sig in (("pre", proc.pre_taps, sig_pre), ("post", proc.post_taps, sig_post)):
        for l, d in enumerate(dets):
            out.append(PathResult(f"detector.{group}{l}.dark", "dark", field_unit, _a(d.acquire()),
                                  np.zeros(0), ref_rms=sig[l]))
    proc.probe.display_fields(np.zeros((n, sizes[-1]), np.float32))
    for l, d in enumerate(proc.error_taps):
        out.append(PathResult(f"detector.error{l}.dark", "dark", field_unit, _a(d.acquire()), np.zeros(0),
                              ref_rms=sig_err[l]))
    return out, []


def run_budget(proc: Any, settings: CheckSettings | None = None, samples: int | None = None,
               seed: int | None = None, svd_gain: float = 1.0) -> tuple[list[PathResult], list[str]]:
    """Measure every path of a built bench through its HAL; returns the judged paths and notes on what is unchecked
    (svd_gain: the design amplifier field gain of a chip's 'svd' layers)."""
    from lightloop.check_chip import chip_paths
    from lightloop.check_flow import digital_paths, flow_paths
    from lightloop.hal.chip import ChipProcessor
    from lightloop.hal.flow_network import FlowProcessor
    from lightloop.hal.free_space import FreeSpaceProcessor

    settings = settings or CheckSettings()
    n = int(samples if samples is not None else settings.samples)
    rng = np.random.default_rng(settings.seed if seed is None else seed)
    if isinstance(proc, FreeSpaceProcessor):
        paths, notes = _free_space(proc, n, rng)
    elif isinstance(proc, ChipProcessor):
        paths, notes = chip_paths(proc, n, rng, svd_gain)
    elif isinstance(proc, FlowProcessor):
        paths, notes = flow_paths(proc, n, rng)
    elif type(proc).__name__ == "DigitalProcessor":   # the simulators' numpy MLP (check never imports simulators)
        paths, notes = digital_paths(proc, n, rng)
    else:
        paths, notes = [], [f"{type(proc).__name__}: no paths with a calibrated model to check (a bench kind "
                            "lightloop check does not know)"]
    for p in paths:
        p.stats = path_stats(p)
        p.failures = judge(p.stats, bounds_for(settings, p.name))
    return paths, notes


def budget_summary(paths: list[PathResult], notes: list[str], **info: Any) -> dict[str, Any]:
    """JSON-able summary: overall verdict, failing path names, per-path unit, stats and failures."""
    def clean(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {**info, "passed": all(p.passed for p in paths), "failed": [p.name for p in paths if not p.passed],
            "paths": [{"name": p.name, "kind": p.kind, "unit": p.unit, "passed": p.passed, "failures": p.failures,
                       **{k: clean(v) for k, v in p.stats.items()}} for p in paths],
            "notes": notes}


def plot_budget(paths: list[PathResult], title: str = "") -> Any:
    """One Figure: per path, measured vs model (scatter; real and imaginary parts) and the error histograms."""
    from matplotlib.figure import Figure

    rows = max(len(paths), 1)
    fig = Figure(figsize=(10, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    for (ax_s, ax_h), p in zip(axes, paths):
        colour = "C0" if p.passed else "C3"
        verdict = "pass" if p.passed else "FAIL"
        if p.kind == "dark":
            ax_s.plot(np.ravel(p.measured).real, ".", ms=2, color=colour)
            ax_s.set(xlabel="sample", ylabel=f"dark reading [{p.unit}]", title=f"{p.name}: {verdict}")
            ax_h.hist(np.ravel(p.measured).real, bins=40, color=colour, alpha=0.8)
            ax_h.set(xlabel=f"dark reading [{p.unit}]", ylabel="count")
            continue
        m, y = np.ravel(p.model), np.ravel(p.measured)
        parts = [("re", m.real, y.real), ("im", m.imag, y.imag)] if p.kind == "complex" else [("", m, y)]
        for (lab, mm, yy), c in zip(parts, (colour, "C1")):
            ax_s.plot(mm, yy, ".", ms=2, color=c, label=lab or None)
        lo, hi = float(np.min(parts[0][1])), float(np.max(parts[0][1]))
        ax_s.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax_s.set(xlabel=f"model [{p.unit}]", ylabel="measured", title=f"{p.name}: {verdict} (gain error "
                 f"{p.stats.get('gain_error', float('nan')):+.3g})")
        if p.kind == "complex":
            ax_s.legend(fontsize="small")
        ax_h.hist(np.abs(y - m) if p.kind == "complex" else y - m, bins=40, alpha=0.7, color=colour,
                  label="measured - model")
        if p.repeat is not None:
            d = (np.ravel(p.repeat) - y) / math.sqrt(2.0)
            ax_h.hist(np.abs(d) if p.kind == "complex" else d.real, bins=40, alpha=0.6, color="C2",
                      label="noise (repeat diff / sqrt 2)")
        ax_h.set(xlabel=f"error [{p.unit}]" + (" (magnitude)" if p.kind == "complex" else ""), ylabel="count")
        ax_h.legend(fontsize="small")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def _settings(cfg: Any) -> Any:
    from lightloop.schema import CheckSettings

    return cfg.check if cfg.check is not None else CheckSettings()


def check_processor(proc: Any, cfg: Any, samples: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """Run the error budget on a built bench with the config's bounds; returns {"summary": ..., "paths": [...]}."""
    settings = _settings(cfg)
    paths, notes = run_budget(proc, settings, samples, seed, float(getattr(cfg.processor, "svd_gain", 1.0)))
    info = {"bench": cfg.bench, "config": cfg.source, "samples": int(samples or settings.samples),
            "seed": int(settings.seed if seed is None else seed),
            "calibration_loaded": [r.get("routine") for r in proc.calibration_log]}
    return {"summary": budget_summary(paths, notes, **info), "paths": paths}


def gate_check(proc: Any, cfg: Any) -> dict[str, Any]:
    """Error budget before training: raises CalibrationError (one line naming the config and the failing paths)."""
    from lightloop.errors import CalibrationError

    summary = check_processor(proc, cfg)["summary"]
    if not summary["passed"]:
        first = next(p for p in summary["paths"] if not p["passed"])
        raise CalibrationError(f"{cfg.source}: check: {len(summary['failed'])} optical path(s) outside the error "
                               f"budget ({', '.join(summary['failed'])}; {first['name']}: {first['failures'][0]}); "
                               "expected every path within the check bounds - recalibrate or widen check.bounds")
    return summary
