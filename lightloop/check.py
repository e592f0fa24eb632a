"""Bench error budget (`lightloop check`): every optical path measured through the HAL against the calibrated model.

For each path of a bench (a layer's forward product, the backward / adjoint path, the nonlinearity, each
detector's dark reading) random inputs are sent through the HAL and the measured values compared with what the
bench's *calibrated* model predicts from the HAL's own knowledge (never the twin's hidden truth). A linear fit
measured = gain * model + offset (on the mean of two repeated measurements) gives the systematic error (gain
error, phase of a complex gain, offset); their difference / sqrt 2 the noise; the rms of mean - fit less the
noise the model error. Everything is in the HAL's physical units; bounds (``check:`` config section, ``CheckSettings``) are
relative to the rms of the path's model signal (a dark path: to the detector's signal in its forward path).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.schema import CheckBounds, CheckSettings

__all__ = ["PathResult", "path_stats", "judge", "bounds_for", "run_budget", "budget_summary", "plot_budget",
           "check_processor", "gate_check"]


@dataclass
class PathResult:
    """One optical path: measured vs model arrays (physical units), a repeat measurement, stats and the verdict."""

    name: str
    kind: str                       # 'real' | 'complex' | 'dark'
    unit: str
    measured: NDArray
    model: NDArray
    repeat: NDArray | None = None
    ref_rms: float | None = None    # dark paths: the detector's signal rms the offset and noise are relative to
    stats: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every bounded figure is within its bound."""
        return not self.failures


def _rms(a: NDArray) -> float:
    return float(np.sqrt(np.mean(np.abs(a) ** 2))) if a.size else 0.0


def path_stats(res: PathResult) -> dict[str, float]:
    """Systematic (gain, phase, offset) and random (residual, noise) error of one path, in its physical units."""
    cplx = res.kind == "complex" or np.iscomplexobj(res.measured)
    y = np.asarray(res.measured, np.complex128 if cplx else np.float64).ravel()
    m = np.asarray(res.model, y.dtype).ravel()
    out: dict[str, float] = {}
    if res.kind == "dark":   # a complex reading: the offset's magnitude
        scale, mean = float(res.ref_rms or 0.0), np.mean(y) if y.size else 0.0
        out.update(offset=float(abs(mean) if cplx else mean), noise_rms=_rms(y - mean), signal_rms=scale)
        out["offset_rel"] = abs(out["offset"]) / scale if scale > 0 else math.inf
        out["noise_rel"] = out["noise_rms"] / scale if scale > 0 else math.inf
        return out
    scale = _rms(m)
    noise2 = 0.0
    if res.repeat is not None:   # fit the mean of the two measurements; their difference is pure noise
        r = np.asarray(res.repeat, y.dtype).ravel()
        noise2 = _rms(r - y) ** 2 / 2.0
        out["noise_rms"] = math.sqrt(noise2)
        out["noise_rel"] = out["noise_rms"] / scale if scale > 0 else math.inf
        y = 0.5 * (y + r)
    a = np.stack([m, np.ones_like(m)], axis=1)
    (g, b), *_ = np.linalg.lstsq(a, y, rcond=None)
    fit2 = _rms(y - (g * m + b)) ** 2
    out.update(signal_rms=scale, residual_rms=_rms(y - m), fit_residual_rms=math.sqrt(fit2))
    if res.kind == "complex":
        out.update(gain=float(abs(g)), gain_error=float(abs(g) - 1.0), phase_error_rad=float(np.angle(g)),
                   offset=float(abs(b)))
    else:
        out.update(gain=float(g.real), gain_error=float(g.real - 1.0), offset=float(b.real))
    out["offset_rel"] = abs(out["offset"]) / scale if scale > 0 else math.inf
    # model error: the fit residual of the mean less its noise (variance noise^2 / 2 = s2); judged only beyond two
    # standard errors (2 s2 / sqrt(N) each) of that difference of two variance estimates: noise never fails it
    mean_noise2 = noise2 / 2.0
    out["model_error_rms"] = math.sqrt(max(fit2 - mean_noise2, 0.0))
    significant = math.sqrt(max(fit2 - mean_noise2 - 4.0 * mean_noise2 / math.sqrt(max(y.size, 1)), 0.0))
    out["residual_rel"] = significant / scale if scale > 0 else math.inf
    return out


def judge(stats: dict[str, float], bounds: CheckBounds) -> list[str]:
    """Failures of one path's stats against its bounds, one short text each (empty: the path passes)."""
    checks = [("gain_error", bounds.max_gain_error, True), ("phase_error_rad", bounds.max_phase_error_rad, True),
              ("offset_rel", bounds.max_offset, True), ("residual_rel", bounds.max_residual, True),
              ("noise_rel", bounds.max_noise, True)]
    fails = []
    for key, bound, absolute in checks:
        if key in stats:
            v = abs(stats[key]) if absolute else stats[key]
            if not v <= bound:   # NaN fails
                fails.append(f"{key} {stats[key]:.4g} exceeds {bound:g}")
    return fails


def bounds_for(settings: CheckSettings, name: str) -> CheckBounds:
    """Bounds of a path: the first override whose fnmatch pattern matches its name, else the section's bounds."""
    for pattern, b in settings.overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            return b
    return settings.bounds


def _a(x: NDArray) -> NDArray:
    """A private copy of a reading (ports may hand out buffers they reuse)."""
    return np.array(x, copy=True)


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
    runs = []
    for _ in range(2):
        t = proc.forward(x)
        taps = ([_a(a) for a in t.pre], [_a(a) for a in t.post], _a(t.inputs))
        errs = [_a(e) for e in proc.backward(delta)]
        runs.append((taps, errs))
    (pre, post, a0), errs = runs[0]
    (pre2, post2, _), errs2 = runs[1]
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


# --- integrated chip ------------------------------------------------------------------------------------------
def _mesh_matrix(proc: Any, lay: Any) -> NDArray:
    """The calibrated model U (ports, ports) of a unitary layer at the phases the bank believes it wrote."""
    phases = lay.bank.cal.phase(lay.bank.written_volts)
    if lay.loss_model is not None:
        return np.asarray(lay.loss_model.layer(phases).matrix(), np.complex128)
    from lightloop.calibration.mesh_model import MeshModel
    from lightloop.physics.mzi import mesh_layout

    layout = mesh_layout(lay.n_ports, lay.mesh)
    cp = lay.couplers if lay.couplers is not None else np.zeros((2, layout.n_mzi))
    model = MeshModel(layout, np.asarray(cp[0], np.float64), np.asarray(cp[1], np.float64), proc.eta, lay.screen)
    return model.matrix(phases)


def _chip(proc: Any, n: int, rng: np.random.Generator) -> tuple[list[PathResult], list[str]]:
    """Mesh forward and adjoint per unitary layer, photodiodes, activation slopes, every detector's dark reading."""
    notes = ["chip tap monitors: no per-tap intensity model yet; only their dark reading is checked"]
    layers, acts, n_layers = proc.layers, proc.activations, len(proc.layers)
    proc.program(proc.init_parameters(rng, 1.0))
    x = rng.uniform(0.0, 1.0, (n, proc.source.n_features)).astype(np.float32)
    runs = []
    for _ in range(2):
        t = proc.forward(x)
        z = [_a(lay.out_receiver.acquire()) for lay in layers]
        slopes = [_a(act.acquire_slope()) for act in acts]
        taps = [_a(lay.monitor.acquire()) for lay in layers]
        runs.append(([_a(p) for p in t.pre], z, slopes, taps, _a(t.extra["ports"])))
    (pre, z, slopes, taps, ports), (pre2, z2, slopes2, _, _) = runs
    out: list[PathResult] = []
    mats: list[NDArray | None] = []
    sig_z, sig_p = [], []
    for l, lay in enumerate(layers):
        x_in = np.zeros((n, lay.n_ports), np.complex128)
        if l == 0:
            x_in[:, : ports.shape[1]] = ports
        else:
            a = acts[l - 1].transfer_model(pre[l - 1].astype(np.float64))
            x_in[:, : a.shape[1]] = a
        if lay.kind != "unitary":
            notes.append(f"layer{l}: '{lay.kind}' layer has no calibrated mesh model; mesh and adjoint not checked")
            mats.append(None)
            sig_z.append(_rms(z[l]))
        else:
            u = _mesh_matrix(proc, lay)
            mats.append(u)
            model = x_in @ u.T
            out.append(PathResult(f"layer{l}.mesh", "complex", "field (sqrt of reference power)", z[l], model, z2[l]))
            sig_z.append(_rms(model))
        last = l == n_layers - 1
        k = proc.n_out if last else acts[l].n_channels
        gain = lay.detector_gain if lay.power_gain is None else np.asarray(lay.power_gain, np.float64)[:k]
        model_p = gain * np.abs(z[l][:, :k].astype(np.complex128)) ** 2 * (proc.output_gain if last else 1.0)
        name = "output.detectors" if last else f"layer{l}.photodiodes"
        out.append(PathResult(name, "real", "power (reference power units)", pre[l], model_p, pre2[l]))
        sig_p.append(_rms(model_p))
        if not last:
            out.append(PathResult(f"layer{l}.activation_slope", "real", "da/dp (field per power)", slopes[l],
                                  acts[l].slope_model(pre[l].astype(np.float64)), slopes2[l]))
    # forward light off; random complex fields injected at a layer's inputs (read at its outputs, z = U r: every
    # input port and phase, unlike the activations' real fields) and at its outputs (read at its inputs, v = U^T s)
    sig_v = []
    for l, lay in enumerate(layers):
        vs = []
        for src, rx in ((lay.injector, lay.out_receiver), (lay.adjoint_source, lay.in_receiver)):
            s = rng.normal(size=(n, lay.n_ports)) + 1j * rng.normal(size=(n, lay.n_ports))
            s = (s * proc.adjoint_field / max(src.command_peak(s), 1e-30)).astype(np.complex64)
            proc.source.dark()
            src.inject(s)
            vs.append((s.astype(np.complex128), _a(rx.acquire()), _a(rx.acquire())))
            src.off()
        (r, y1, y2), (s, v1, v2) = vs
        if mats[l] is not None:
            model = r @ mats[l].T
            out.append(PathResult(f"layer{l}.mesh_injected", "complex", "field (sqrt of reference power)", y1, model,
                                  y2))
            model = s @ mats[l]
            out.append(PathResult(f"layer{l}.adjoint", "complex", "field (sqrt of reference power)", v1, model, v2))
            sig_v.append(_rms(model))
        else:
            sig_v.append(_rms(v1))
    # dark: forward light off, no injection: every receiver, photodiode and tap should read zero
    proc.source.dark()
    for lay in layers:
        lay.injector.off()
        lay.adjoint_source.off()
    for l, lay in enumerate(layers):
        out.append(PathResult(f"detector.out_receiver{l}.dark", "dark", "field", _a(lay.out_receiver.acquire()),
                              np.zeros(0), ref_rms=sig_z[l]))
        out.append(PathResult(f"detector.in_receiver{l}.dark", "dark", "field", _a(lay.in_receiver.acquire()),
                              np.zeros(0), ref_rms=sig_v[l]))
        out.append(PathResult(f"detector.taps{l}.dark", "dark", "intensity (batch-integrated)",
                              _a(lay.monitor.acquire()), np.zeros(0), ref_rms=_rms(taps[l])))
    for l, act in enumerate(acts):
        out.append(PathResult(f"detector.photodiodes{l}.dark", "dark", "power", _a(act.acquire()), np.zeros(0),
                              ref_rms=sig_p[l]))
    out.append(PathResult("detector.output.dark", "dark", "power", _a(proc.output.acquire()) * proc.output_gain,
                          np.zeros(0), ref_rms=sig_p[-1]))
    proc.source.on()
    return out, notes


def run_budget(proc: Any, settings: CheckSettings | None = None, samples: int | None = None,
               seed: int | None = None) -> tuple[list[PathResult], list[str]]:
    """Measure every path of a built bench through its HAL; returns the judged paths and notes on what is unchecked."""
    from lightloop.hal.chip import ChipProcessor
    from lightloop.hal.free_space import FreeSpaceProcessor

    settings = settings or CheckSettings()
    n = int(samples if samples is not None else settings.samples)
    rng = np.random.default_rng(settings.seed if seed is None else seed)
    if isinstance(proc, FreeSpaceProcessor):
        paths, notes = _free_space(proc, n, rng)
    elif isinstance(proc, ChipProcessor):
        paths, notes = _chip(proc, n, rng)
    else:
        paths, notes = [], [f"{type(proc).__name__}: no optical paths with a calibrated model to check "
                            "(digital and flow-network benches: not yet)"]
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
    paths, notes = run_budget(proc, settings, samples, seed)
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
