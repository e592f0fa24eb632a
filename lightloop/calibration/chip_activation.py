"""Opto-electronic (ring-modulator) activation calibration of the integrated chip, acting only through the HAL.

Routine `activation` (after `readout`, which calibrates the receivers, the photodiode power gains and the layer
meshes' loss-aware model this routine leans on): for every hidden layer l, with the forward gate open and the input
modulators at zero, the injector at layer l's inputs sends a batch of fields x = U_l^-1 z chosen through the
calibrated model U_l of the layer so that every neuron's photodiode sees a power spread over [0, p_max] (field
amplitude uniform: dense near p = 0, where the resonance is). For each batch the HAL reads

  p       the photodiode powers (what drives each ring, in the HAL's calibrated units),
  s       the activation-slope output,
  z       the coherent receivers at the outputs of layer l + 1, whose inputs are the activations: with the calibrated
          model U_(l+1), a e^{i w} = lstsq(U_(l+1)[:, :h], z) (w: the supply carrier's phase per port, removed as the
          angle of the batch sum since a >= 0).

Per neuron, the ring model a(p) = sqrt(S T(d + k p)), T(u) = 1 - (1 - t_min) / (1 + u^2) (t_min: the design's) and
its slope g s = a'(p) are fitted jointly (Levenberg-Marquardt, several starting detunings): detuning d (linewidths),
k (linewidths per unit power), supply S and the slope readout's remaining gain g. The HAL's model then holds per
neuron k, S, the resonance offset d - (commanded bias detuning) and slope_gain_v x g, so transfer_model and
slope_model match the bench. The last batch is held out: its residuals (model vs measured a and slope) are recorded
and must also pass. p_max: option `activation_p_max`, default the 99th percentile of the photodiode readings of a
forward probe (random inputs at Haar-random meshes: the operating range), at least 3 / k.

Gauges: S is in the field units of the layer-(l+1) receivers (readout's gauge: geometric-mean |injector gain| = 1);
the photodiode's own responsivity is absorbed into k (the ring is driven by the same photocurrent the HAL reads).
Options: activation_batch (64), activation_settings (4 batches, the last held out), activation_p_max (auto),
activation_fit_threshold (0.02 of the rms reading).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from lightloop.calibration.base import (
    CalibrationResult,
    Counts,
    Routine,
    RunContext,
    register_routine,
)
from lightloop.calibration.chip_common import _all_sources_dark, layer_model
from lightloop.errors import CalibrationError
from lightloop.physics.mzi import eo_activation, eo_activation_slope

__all__ = ["ActivationRoutine", "activation_options", "fit_ring"]


def activation_options(ctx: RunContext) -> tuple[int, int, float | None, float]:
    """(batch, settings, p_max or None for auto, fit threshold) from the run options; bad values are one-line errors."""
    o = ctx.options

    def num(key: str, default: Any, lo: float, hi: float, integer: bool) -> Any:
        raw = o.get(key, default)
        ok = isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw) and lo <= raw <= hi
        if not ok or (integer and int(raw) != raw):
            kind = "an integer" if integer else "a number"
            raise CalibrationError(f"calibrate option {key}: expected {kind} in [{lo:g}, {hi:g}], got {raw!r}")
        return int(raw) if integer else float(raw)

    batch = num("activation_batch", 64, 8, 100_000, True)
    settings = num("activation_settings", 4, 2, 1000, True)
    p_max = o.get("activation_p_max")
    if p_max is not None:
        p_max = num("activation_p_max", None, 1e-6, 1e6, False)
    threshold = num("activation_fit_threshold", 0.02, 1e-6, 1.0, False)
    return batch, settings, p_max, threshold


def fit_ring(p: NDArray, a: NDArray, s: NDArray, t_min: float, k0: float, d0: float) -> tuple[NDArray, float, float]:
    """Fit a = sqrt(S T(d + k p)) and s = g a'(p) for one neuron; returns ([d, k, S, g], rms a residual / rms a,
    rms slope residual / rms slope).

    Stage 1 fits the activation alone (continuous in p) from the best points of a (d, k) grid; stage 2 fits both
    readings together with a soft-l1 loss: the slope flips sign at the resonance u = 0, so the few samples whose
    photodiode noise puts them on the wrong side of it must not pull the fit."""
    p, a, s = (np.asarray(v, np.float64) for v in (p, a, s))
    wa, ws = 1.0 / max(float(np.sqrt(np.mean(a ** 2))), 1e-12), 1.0 / max(float(np.sqrt(np.mean(s ** 2))), 1e-12)

    def res_a(x: NDArray) -> NDArray:
        return (eo_activation(p, x[0], np.exp(x[1]), t_min, np.exp(x[2])) - a) * wa

    def res_both(x: NDArray) -> NDArray:
        d, k, sup, g = x[0], np.exp(x[1]), np.exp(x[2]), x[3]
        return np.concatenate([(eo_activation(p, d, k, t_min, sup) - a) * wa,
                               (g * eo_activation_slope(p, d, k, t_min, sup) - s) * ws])

    best = None
    for x0 in _grid_starts(p, a, t_min, k0, d0):
        r = least_squares(res_a, x0, method="lm", max_nfev=400)
        if best is None or r.cost < best.cost:
            best = r
    d, k, sup = best.x[0], math.exp(best.x[1]), math.exp(best.x[2])
    f = eo_activation_slope(p, d, k, t_min, sup)
    u = d + k * p
    ok = (np.abs(u) > 0.1) & (np.abs(f) > 0.1 * max(float(np.max(np.abs(f))), 1e-300))
    g = float(np.median(s[ok] / f[ok])) if ok.any() else 1.0
    r = least_squares(res_both, np.array([*best.x, g]), method="trf", loss="soft_l1", f_scale=0.02, max_nfev=400)
    x = r.x
    fun = res_both(x)
    na = a.size
    ra = float(np.sqrt(np.mean(fun[:na] ** 2)))
    rs = float(np.sqrt(np.mean(fun[na:] ** 2)))
    return np.array([x[0], math.exp(x[1]), math.exp(x[2]), x[3]]), ra, rs


def _grid_starts(p: NDArray, a: NDArray, t_min: float, k0: float, d0: float, keep: int = 3) -> list[NDArray]:
    """Starting points [d, log k, log S] of the activation fit: the best few of a (d, k) grid whose S is solved
    linearly, and the previous model's d."""
    k0 = max(k0, 1e-3)
    cand = []
    for k in k0 * np.array([0.6, 0.8, 1.0, 1.25, 1.6]):
        for d in np.concatenate([np.linspace(-3.0, 3.0, 121), [d0]]):
            t = eo_activation(p, d, k, t_min, 1.0)      # sqrt(T)
            root_s = float(np.sum(a * t) / max(float(np.sum(t * t)), 1e-300))
            if root_s > 0:
                cand.append((float(np.sum((root_s * t - a) ** 2)), d, k, root_s ** 2))
    cand.sort(key=lambda c: c[0])
    starts = [np.array([d, math.log(k), math.log(sup)]) for _, d, k, sup in cand[:keep]]
    sat = max(float(np.quantile(a, 0.95)) ** 2, 1e-6)   # a -> sqrt(S) far from the resonance
    return starts + [np.array([d0, math.log(k0), math.log(sat)])]


def _layer_matrix(lay: Any) -> NDArray[np.complex128]:
    """The HAL's calibrated model U of a unitary layer at the phases its bank last wrote (loss-aware when fitted)."""
    phases = lay.bank.cal.phase(lay.bank.written_volts)
    if getattr(lay, "loss_model", None) is not None:
        return np.asarray(lay.loss_model.layer(phases).matrix(), np.complex128)
    return layer_model(lay).matrix(phases)


def _rel_rms(model: NDArray, meas: NDArray) -> float:
    return float(np.sqrt(np.mean((model - meas) ** 2)) / max(float(np.sqrt(np.mean(meas ** 2))), 1e-300))


@register_routine
class ActivationRoutine(Routine):
    """Per-neuron ring-modulator model (detuning offset, k, supply) and slope-output gain of every hidden layer."""

    name = "activation"
    version = "0.1"
    order = 27
    summary = ("per-neuron ring activation model (resonance offset, k, supply) and slope gain: photodiode powers "
               "swept by the injector, activations read through the next layer's receivers")

    def applicable(self, proc: Any) -> str | None:
        acts, layers = getattr(proc, "activations", None), getattr(proc, "layers", None)
        if acts is None or not layers:
            return "not an integrated chip processor (needs EO activations between mesh layers)"
        if not acts:
            return "the chip has no hidden layer: no activations to calibrate"
        need = ("bank", "injector", "out_receiver")
        if not all(all(hasattr(l, a) for a in need) for l in layers):
            return "activation needs heater banks, injectors and output receivers on every mesh layer"
        if any(getattr(l, "kind", "") != "unitary" for l in layers):
            return "activation supports 'unitary' mesh layers only (the next layer's model reads the activations)"
        return None

    def instruments(self, proc: Any) -> dict[str, str]:
        return {f"activation{i}": a.name for i, a in enumerate(proc.activations)}

    def layout(self, proc: Any) -> dict[str, Any]:
        return {"ports": [int(l.n_ports) for l in proc.layers], "hidden": [int(a.n_channels) for a in proc.activations]}

    def run(self, proc: Any, ctx: RunContext) -> CalibrationResult:
        res, t0 = self.new_result(proc), time.perf_counter()
        batch, n_set, p_max_opt, threshold = activation_options(ctx)
        rng = ctx.rng(47)
        acq = writes = 0
        src = proc.source
        p_max_auto = None
        if p_max_opt is None:      # operating range: photodiodes during a forward pass (random inputs, Haar meshes)
            vals = []
            for _ in range(2):
                for lay in proc.layers:
                    lay.bank.set_phases(lay.random_phases(rng))
                    writes += 1
                _all_sources_dark(proc)
                src.display(rng.uniform(0, 1, (batch, src.n_features)))
                vals.append([np.asarray(a.acquire(), np.float64) for a in proc.activations])
                acq += len(proc.activations)
            p_max_auto = [float(np.quantile(np.concatenate([v[ai] for v in vals]), 0.99))
                          for ai in range(len(proc.activations))]
        res.meta.update(activations={}, t_min="design value (not fitted)",
                        gauge="supply in the next layer's receiver field units; photodiode responsivity inside k")
        try:
            for ai, act in enumerate(proc.activations):
                lay, nxt, h = proc.layers[ai], proc.layers[ai + 1], act.n_channels
                m = act.model
                k_nom = float(np.mean(m.k))
                p_max = p_max_opt if p_max_opt is not None else max(p_max_auto[ai], 3.0 / max(k_nom, 1e-6))
                rx_cal = not bool(np.all(nxt.out_receiver.gain == 1))
                gain_p = np.ones(h) * float(lay.detector_gain) if lay.power_gain is None else \
                    np.asarray(lay.power_gain, np.float64)[:h]
                ps, ss, aa = [], [], []
                for _ in ctx.bar(range(n_set), desc=f"activation layer {ai}", total=n_set):
                    lay.bank.set_phases(lay.random_phases(rng))
                    nxt.bank.set_phases(nxt.random_phases(rng))
                    writes += 2
                    u, un = _layer_matrix(lay), _layer_matrix(nxt)
                    # target photodiode powers: field amplitude uniform in [0, sqrt(p_max)], random phases
                    amp = np.sqrt(p_max / gain_p) * rng.uniform(0, 1, (batch, h))
                    z = np.zeros((batch, lay.n_ports), np.complex128)
                    z[:, :h] = amp * np.exp(1j * rng.uniform(0, 2 * np.pi, (batch, h)))
                    x = np.linalg.solve(u, z.T).T
                    peak = np.max(np.abs(lay.injector.command(x)), axis=1)
                    x *= np.minimum(1.0, 0.95 * lay.injector.max_field / np.maximum(peak, 1e-300))[:, None]
                    _all_sources_dark(proc)
                    src.port.write_fields(np.zeros((batch, src.n_ports), src.cdtype))   # dark inputs, same batch
                    src.on()
                    lay.injector.inject(x.astype(np.complex64))
                    ps.append(np.asarray(act.acquire(), np.float64))
                    ss.append(np.asarray(act.acquire_slope(), np.float64))
                    zr = np.asarray(nxt.out_receiver.acquire(), np.complex128)
                    acq += 3
                    xa = np.linalg.lstsq(un[:, :h], zr.T, rcond=None)[0].T      # fields entering layer ai + 1
                    aa.append(xa)
                    lay.injector.off()
                    src.dark()
                xa = np.concatenate(aa)
                w = np.angle(np.sum(xa, 0))
                a_all = np.real(xa * np.exp(-1j * w))
                p_all, s_all = np.concatenate(ps), np.concatenate(ss)
                fit_n = (n_set - 1) * batch              # the last batch is held out
                params = np.zeros((4, h))
                r_a, r_s, h_a, h_s = (np.zeros(h) for _ in range(4))
                d_cmd = np.broadcast_to(np.asarray(m.detuning, np.float64), (h,))
                d_prev = d_cmd + np.broadcast_to(np.asarray(m.detuning_offset, np.float64), (h,))
                for j in range(h):
                    fp, fa, fs = p_all[:fit_n, j], a_all[:fit_n, j], s_all[:fit_n, j]
                    params[:, j], r_a[j], r_s[j] = fit_ring(fp, fa, fs, float(m.t_min), k_nom, float(d_prev[j]))
                    d, k, sup, g = params[:, j]
                    hp, ha, hs = p_all[fit_n:, j], a_all[fit_n:, j], s_all[fit_n:, j]
                    h_a[j] = _rel_rms(eo_activation(hp, d, k, float(m.t_min), sup), ha)
                    h_s[j] = _rel_rms(g * eo_activation_slope(hp, d, k, float(m.t_min), sup), hs)
                old_g = np.broadcast_to(np.asarray(m.slope_gain_v, np.float64), (h,))
                res.arrays[f"detuning_offset_{ai}"] = params[0] - d_cmd
                res.arrays[f"k_{ai}"] = params[1]
                res.arrays[f"supply_{ai}"] = params[2]
                res.arrays[f"slope_gain_{ai}"] = old_g * params[3]
                res.arrays[f"sweep_{ai}"] = np.stack([p_all, a_all, s_all])
                res.meta["activations"][str(ai)] = {
                    "p_max": p_max, "samples": int(p_all.shape[0]), "held_out": batch,
                    "receivers_calibrated": rx_cal, "carrier_phase_rad": [float(v) for v in w],
                    "detuning": [float(v) for v in params[0]], "k": [float(v) for v in params[1]],
                    "supply": [float(v) for v in params[2]], "slope_gain_change": [float(v) for v in params[3]],
                    "fit_rms_rel_activation": float(r_a.max()), "fit_rms_rel_slope": float(r_s.max()),
                    "holdout_rms_rel_activation": float(h_a.max()), "holdout_rms_rel_slope": float(h_s.max())}
                if not rx_cal:
                    res.meta["activations"][str(ai)]["note"] = (f"layer {ai + 1} receivers uncalibrated (run readout "
                                                                "first): supply and carrier phase carry their gains")
                for what, r in (("activation fit", r_a), ("slope fit", r_s), ("held-out activation", h_a),
                                ("held-out slope", h_s)):
                    if not np.all(r <= threshold):
                        j = int(np.argmax(np.where(np.isfinite(r), r, np.inf)))
                        res.fail(f"activation layer {ai} neuron {j}: {what} residual {r[j]:.3g} of the rms reading "
                                 f"(threshold {threshold}); are the meshes and receivers calibrated (readout)?")
                res.plots.append((f"activation_layer{ai}", _plot_fit(p_all, a_all, s_all, params, float(m.t_min), ai)))
        finally:
            _all_sources_dark(proc)
        res.counts = Counts(acquisitions=acq, frames=acq, writes=writes)
        res.seconds = time.perf_counter() - t0
        return res

    def apply(self, proc: Any, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        for ai, act in enumerate(proc.activations):
            if f"k_{ai}" not in arrays:
                continue
            act.set_calibration(arrays[f"k_{ai}"], arrays[f"supply_{ai}"], arrays[f"detuning_offset_{ai}"],
                                arrays[f"slope_gain_{ai}"])


def _plot_fit(p: NDArray, a: NDArray, s: NDArray, params: NDArray, t_min: float, ai: int) -> Any:
    """PNG drawer: measured activation and slope vs photodiode power per neuron, with the fitted ring model."""
    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        grid = np.linspace(0.0, float(np.max(p)), 200)
        for j in range(params.shape[1]):
            d, k, sup, g = params[:, j]
            c = f"C{j % 10}"
            ax1.plot(p[:, j], a[:, j], ".", ms=2, color=c)
            ax1.plot(grid, eo_activation(grid, d, k, t_min, sup), "-", lw=0.8, color=c)
            ax2.plot(p[:, j], s[:, j], ".", ms=2, color=c)
            ax2.plot(grid, g * eo_activation_slope(grid, d, k, t_min, sup), "-", lw=0.8, color=c)
        ax1.set(xlabel="photodiode power p (reference power units)", ylabel="activation a (field)",
                title=f"layer {ai}: measured (dots) and fitted ring model")
        ax2.set(xlabel="photodiode power p (reference power units)", ylabel="slope output da/dp (field per power)",
                title="slope output and fitted model")
    return draw
