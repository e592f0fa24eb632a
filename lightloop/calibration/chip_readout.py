"""Readout calibration of the integrated chip for exact in-situ gradients, acting only through the HAL.

Routine `readout` (after `phase_shifters` / `crosstalk`): the complex gains of every layer's output and input
coherent receivers, injectors and adjoint sources, the gain and dark offset of every tap monitor, the power
gain of every photodiode (activations and outputs) and the gain of every activation-slope output.

Reference (what makes the numbers physical): the heater-calibrated mesh model U(phases) of each layer
(`lightloop.calibration.chip.layer_model`: fitted couplers, calibrated phi0 / P_pi, nominal loss) is a known
interferometer. With the forward source dark,

  injector  -> output receivers:   M_f = diag(g_out) U diag(t_inj)       (one column per lit input port)
  adjoint   -> input receivers:    M_b = diag(g_in) U^T diag(t_adj)      (reciprocity: the same U)
  injector  -> tap monitors:       I_t = o_t + m_t |(U_pre t_inj f)_t|^2  (single ports lit; dark for o_t)

are fitted (rank-one alternating least squares over several random phase settings) for the diagonal gains;
each fit leaves one complex scale free (g_out c, t_inj / c). Those scales are gauges the gradient does not
see: the adjoint procedure needs only t_adj conj(g_out), t_inj conj(g_in) and m_t |t_inj|^2-type products,
and every quantity below is measured with the SAME fitted receivers, so the free scales cancel. With the
forward light on (random batches, random phases of the earlier layers):

  power gain  h_k = p_k / |z_k|^2 per photodiode (activation or output reading over the calibrated receiver
              field): dL/dz = e h conj(z) without knowing the receiver's or the photodiode's absolute gain;
  activation frame: the fields entering layer l >= 1 are the (real, >= 0) activations; solving z = U x on
              the calibrated receivers gives x = e^{i w} a, so the input receivers and injectors of layer l
              are rotated by e^{-i w} (dL/da = 2 Re(v) needs v in the activations' phase);
  slope gain  the activations a(p) so measured are fitted with the ring model a = sqrt(S T(d + k p)) per
              neuron; the slope output divided by the model's da/dp is the slope readout's gain.

Uneven waveguide loss (layers up to `readout_loss_max_ports`, default 64): the taps are also read with each
adjoint source lit (same tap gains; they pin every column's loss, which forward taps leave to the tap gains) and
all data are refitted with a loss-aware mesh model (lightloop.calibration.chip_losses: per-waveguide
transmission, couplers, phase offsets, refined gains and tap gains, exact matrix-free Jacobian products; above
8 ports the taps weigh as `readout_loss_lit_ports` (4) lit ports per setting); its residuals are then the
pass/fail test. The HAL keeps it
as ChipLayer.loss_model, and the adjoint adds the model's bias of the time-reversal step (exact for uniform loss
only). Larger layers keep the nominal-loss fit, whose tap gains absorb the true loss's deviation. Probes: `readout_settings` (8) random
phase settings at `readout_field` (3.0, the encoder's full amplitude) per lit port.
Gradient-relevant accuracy is graded against the twin's truth by lightloop.calibration.chip_report.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from lightloop.calibration.base import CalibrationResult, Counts, Routine, RunContext, register_routine
from lightloop.calibration.chip import layer_model
from lightloop.calibration.chip_losses import fit_layer_losses
from lightloop.calibration.mesh_model import MeshModel, propagate
from lightloop.hal.chip_roles import MeshLossModel
from lightloop.physics.mzi import eo_activation, eo_activation_slope

__all__ = ["ReadoutRoutine", "model_taps", "fit_rank_one"]


def _all_dark(proc: Any, batch: int | None = None) -> None:
    """Forward source dark, every injector and adjoint source off; with batch, the input modulators are
    re-written with zeros of that batch (a batch left from a forward pass must not meet the probe batch)."""
    proc.source.dark()
    if batch is not None:
        proc.source.port.write_fields(np.zeros((batch, proc.source.n_ports), proc.source.cdtype))
    for lay in proc.layers:
        lay.injector.off()
        lay.adjoint_source.off()


def _loss_model(lay: Any, f: dict[str, NDArray]) -> MeshLossModel:
    """The HAL's loss model of a layer from the fitted arrays (eta, alpha1, alpha2, phase_offset)."""
    a = {k: np.asarray(f[k], np.float64).copy() for k in ("alpha1", "alpha2", "eta", "phase_offset")}
    return MeshLossModel(lay.mesh, a["alpha1"], a["alpha2"], a["eta"], a["phase_offset"], bool(lay.screen))


def model_taps(model: MeshModel, phases: NDArray) -> NDArray[np.complex128]:
    """Model field at every tap (channels, N) per unit field at each input port, nominal loss included."""
    lay = model.layout
    k = lay.n_mzi
    u, pre, _ = propagate(model, np.atleast_2d(np.asarray(phases, np.float64)), keep=True)
    th, ph = phases[:k], phases[k: 2 * k]
    c1, s1 = np.cos(model.alpha1 + np.pi / 4), 1j * np.sin(model.alpha1 + np.pi / 4)
    out = np.zeros((model.n_channels, lay.n), np.complex128)
    off = lay.offsets
    for c, m in enumerate(lay.columns):
        sl = slice(off[c], off[c + 1])
        top, bot = pre[c][0][m, :], pre[c][0][m + 1, :]
        a = np.exp(1j * ph[sl])[:, None] * top
        out[k + sl.start: k + sl.stop] = a * model.eta ** c
        out[sl] = np.exp(1j * th[sl])[:, None] * (c1[sl, None] * a + s1[sl, None] * bot) * model.eta ** c
    if model.screen:
        out[2 * k:] = u[0]                     # screen taps: after the screen, at the layer output
    return out


def fit_rank_one(data: list[NDArray], mats: list[NDArray], iters: int = 200) -> tuple[NDArray, NDArray, float]:
    """Fit data_s[k, j] = a_k mats_s[k, j] b_j (complex a, b) by alternating least squares; returns (a, b,
    rms residual / rms data). Gauge: geometric-mean |b| = 1, sum(b) real positive."""
    n_k, n_j = data[0].shape
    a, b = np.ones(n_k, complex), np.ones(n_j, complex)
    for _ in range(iters):
        a_old = a
        num = sum(np.sum(d * np.conj(m * b[None, :]), axis=1) for d, m in zip(data, mats))
        den = sum(np.sum(np.abs(m * b[None, :]) ** 2, axis=1) for m in mats)
        a = num / np.maximum(den, 1e-300)
        num = sum(np.sum(d * np.conj(a[:, None] * m), axis=0) for d, m in zip(data, mats))
        den = sum(np.sum(np.abs(a[:, None] * m) ** 2, axis=0) for m in mats)
        b = num / np.maximum(den, 1e-300)
        if np.max(np.abs(a - a_old)) <= 1e-13 * np.max(np.abs(a)):
            break
    c = np.exp(np.mean(np.log(np.abs(b)))) * np.exp(1j * np.angle(np.sum(b)))
    a, b = a * c, b / c
    res = np.sqrt(sum(np.sum(np.abs(d - a[:, None] * m * b[None, :]) ** 2) for d, m in zip(data, mats)))
    ref = np.sqrt(sum(np.sum(np.abs(d) ** 2) for d in data))
    return a, b, float(res / max(ref, 1e-300))


def _fit_activation(p: NDArray, a: NDArray, model: Any, j: int) -> tuple[NDArray, float]:
    """Ring model a = sqrt(S T(d + k p)) fitted to measured (p, a) of one neuron; returns ([d, k, S], rel rms)."""
    t_min = float(model.t_min)

    def resid(x: NDArray) -> NDArray:
        return eo_activation(p, x[0], np.exp(x[1]), t_min, np.exp(x[2])) - a

    best = None
    for d0 in (float(np.mean(model.detuning + model.detuning_offset)), -1.0, 1.0, 0.3, -0.3):
        x0 = np.array([d0, np.log(max(float(np.mean(model.k)), 1e-3)), np.log(max(float(np.max(a)) ** 2, 1e-6))])
        r = least_squares(resid, x0, method="lm", max_nfev=400)
        if best is None or r.cost < best.cost:
            best = r
    rms = float(np.sqrt(np.mean(best.fun ** 2)) / max(float(np.sqrt(np.mean(a ** 2))), 1e-300))
    return np.array([best.x[0], np.exp(best.x[1]), np.exp(best.x[2])]), rms


@register_routine
class ReadoutRoutine(Routine):
    """Receivers, injectors, adjoint sources, tap monitors, photodiode and slope gains (mesh model reference)."""

    name = "readout"
    version = "0.1"
    order = 25
    summary = ("gains/phases of receivers, injectors, adjoint sources; tap gains + offsets; photodiode power and "
               "slope gains (heater-calibrated mesh as the reference)")

    def applicable(self, proc: Any) -> str | None:
        layers = getattr(proc, "layers", None)
        need = ("bank", "monitor", "injector", "adjoint_source", "in_receiver", "out_receiver")
        if not layers or not all(all(hasattr(l, a) for a in need) for l in layers):
            return "not an integrated chip processor (needs receivers, injectors, adjoint sources, tap monitors)"
        if any(getattr(l, "kind", "") != "unitary" for l in layers):
            return "readout supports 'unitary' mesh layers only"
        return None

    def instruments(self, proc: Any) -> dict[str, str]:
        out = {}
        for i, l in enumerate(proc.layers):
            for role in ("monitor", "out_receiver", "in_receiver", "injector", "adjoint_source"):
                out[f"layer{i}.{role}"] = getattr(l, role).name
        return out

    def layout(self, proc: Any) -> dict[str, Any]:
        return {"ports": [int(l.n_ports) for l in proc.layers], "mesh": [l.mesh for l in proc.layers],
                "hidden": [int(a.n_channels) for a in proc.activations], "n_out": int(proc.n_out)}

    def run(self, proc: Any, ctx: RunContext) -> CalibrationResult:
        res, t0 = self.new_result(proc), time.perf_counter()
        n_set = int(ctx.options.get("readout_settings", 8))
        batch = int(ctx.options.get("readout_batch", 64))
        amp = float(ctx.options.get("readout_field", 3.0))   # the encoder's full amplitude (field_scale)
        threshold = float(ctx.options.get("readout_fit_threshold", 0.02))
        loss_ports = int(ctx.options.get("readout_loss_max_ports", 64))   # loss-aware refinement up to this size
        lit_ports = int(ctx.options.get("readout_loss_lit_ports", 4))     # tap weight: as this many lit ports
        rng = ctx.rng(31)
        acq = writes = 0
        _all_dark(proc)
        res.meta["layers"], res.meta["activations"] = {}, {}
        settings = [[rng.uniform(0, 2 * np.pi, l.bank.n_channels) for l in proc.layers] for _ in range(n_set)]
        models = [layer_model(l) for l in proc.layers]
        fits = []
        for li, lay in enumerate(proc.layers):
            n = lay.n_ports
            eye = (amp * np.eye(n)).astype(np.complex128)
            _all_dark(proc, n)
            zf, zb, mf, mb, taps_r, taps_p, taps_b = [], [], [], [], [], [], []
            dark = np.asarray(lay.monitor.acquire(), np.float64)
            acq += 1
            for ph in settings:
                lay.bank.set_phases(ph[li])
                writes += 1
                u = models[li].matrix(ph[li])
                lay.injector.inject(eye)
                zf.append(np.asarray(lay.out_receiver.acquire(), np.complex128).T / amp)   # [k, j]
                lay.injector.off()
                lay.adjoint_source.inject(eye)
                zb.append(np.asarray(lay.in_receiver.acquire(), np.complex128).T / amp)    # [j, k]
                lay.adjoint_source.off()
                mf.append(u)
                mb.append(u.T)
                tf = model_taps(models[li], ph[li])
                _all_dark(proc, 1)
                for j in range(n):
                    lay.injector.inject(eye[j: j + 1])
                    taps_r.append(np.asarray(lay.monitor.acquire(), np.float64) - dark)
                    taps_p.append(tf[:, j])
                lay.injector.off()
                if n <= loss_ports:    # adjoint sources lit one by one: the taps read the backward field too
                    for j in range(n):
                        lay.adjoint_source.inject(eye[j: j + 1])
                        taps_b.append(np.asarray(lay.monitor.acquire(), np.float64) - dark)
                    lay.adjoint_source.off()
                    acq += n
                _all_dark(proc, n)
                acq += 2 + n
            g_out, t_inj, r_f = fit_rank_one(zf, mf)
            g_in, t_adj, r_b = fit_rank_one(zb, mb)
            pred = np.array([np.abs(t * t_inj[j]) ** 2 * amp ** 2 for t, j in zip(taps_p, np.tile(np.arange(n), n_set))])
            meas = np.array(taps_r)
            m_t = np.sum(meas * pred, 0) / np.maximum(np.sum(pred * pred, 0), 1e-300)
            r_t = float(np.sqrt(np.sum((meas - m_t * pred) ** 2) / max(np.sum(meas ** 2), 1e-300)))
            fits.append({"g_out": g_out, "t_inj": t_inj, "g_in": g_in, "t_adj": t_adj, "m": m_t, "o": dark})
            res.meta["layers"][str(li)] = {"forward_rms_rel": r_f, "backward_rms_rel": r_b, "taps_rms_rel": r_t}
            if n <= loss_ports:
                lf = fit_layer_losses(n, lay.mesh, bool(lay.screen), float(models[li].eta),
                                      (models[li].alpha1, models[li].alpha2), [ph[li] for ph in settings], zf, zb,
                                      list(meas.reshape(n_set, n, -1)), fits[-1], amp,
                                      lit_ports=lit_ports if n > 8 else 0,
                                      taps_b=list(np.array(taps_b).reshape(n_set, n, -1)))
                fits[-1].update({g: lf[g] for g in ("g_out", "t_inj", "g_in", "t_adj", "m")}, loss=lf)
                res.meta["layers"][str(li)]["loss_fit"] = {q: lf[q] for q in (
                    "field_rms_rel", "taps_rms_rel", "cost_ratio", "loss_rms_db", "evaluations", "cpu_seconds")}
            checks = (("injector -> output receivers", r_f), ("adjoint source -> input receivers", r_b),
                      ("injector -> taps", r_t))
            if "loss" in fits[-1]:     # the loss-aware model is the one the HAL uses: its residuals are the test
                lf = fits[-1]["loss"]
                checks = (("receivers (loss-aware model)", lf["field_rms_rel"]),
                          ("injector -> taps (loss-aware model)", lf["taps_rms_rel"]))
            for what, r in checks:
                if not r <= threshold:
                    res.fail(f"readout layer {li}: {what} fit residual {r:.3g} of the rms reading (threshold "
                             f"{threshold}); is the layer heater-calibrated (phase_shifters)?")
        # forward light: photodiode power gains, activation frames and slope gains
        n_feat = proc.source.n_features
        z_all = [[] for _ in proc.layers]
        p_all = [[] for _ in proc.activations]
        s_all = [[] for _ in proc.activations]
        o_all, x_set = [], []
        for ph in settings:
            for li, lay in enumerate(proc.layers):
                lay.bank.set_phases(ph[li])
                writes += 1
            x = rng.uniform(0, 1, (batch, n_feat))
            proc.source.display(x)
            for li, lay in enumerate(proc.layers):
                z_all[li].append(np.asarray(lay.out_receiver.acquire(), np.complex128) / fits[li]["g_out"])
            for ai, act in enumerate(proc.activations):
                p_all[ai].append(np.asarray(act.acquire(), np.float64))
                s_all[ai].append(np.asarray(act.acquire_slope(), np.float64))
            o_all.append(np.asarray(proc.output.acquire(), np.float64))
            x_set.append(ph)
            acq += len(proc.layers) + 2 * len(proc.activations) + 1
        proc.source.dark()
        n_hidden = [a.n_channels for a in proc.activations] + [proc.n_out]
        for li, lay in enumerate(proc.layers):
            z = np.concatenate(z_all[li])[:, : n_hidden[li]]
            p = np.concatenate(p_all[li]) if li < len(proc.activations) else np.concatenate(o_all)
            z2 = np.abs(z) ** 2
            h = np.full(lay.n_ports, float(lay.detector_gain))
            h[: n_hidden[li]] = np.sum(p * z2, 0) / np.maximum(np.sum(z2 * z2, 0), 1e-300)
            fits[li]["h"] = h
            r_h = float(np.sqrt(np.sum((p - h[: n_hidden[li]] * z2) ** 2) / max(np.sum(p ** 2), 1e-300)))
            res.meta["layers"][str(li)]["power_rms_rel"] = r_h
            if not r_h <= threshold:
                res.fail(f"readout layer {li}: photodiode power vs |receiver field|^2 residual {r_h:.3g} "
                         f"(threshold {threshold})")
        for ai, act in enumerate(proc.activations):
            li = ai + 1
            hn = act.n_channels
            xs = []
            for si, ph in enumerate(x_set):
                lm = fits[li].get("loss")
                u = models[li].matrix(ph[li]) if lm is None else _loss_model(proc.layers[li], lm).layer(ph[li]).matrix()
                xs.append(np.linalg.solve(u, z_all[li][si].T).T)          # fields entering layer li
            xin = np.concatenate(xs)[:, :hn]
            w = np.angle(np.sum(xin, 0))
            a_meas = np.real(xin * np.exp(-1j * w))
            p = np.concatenate(p_all[ai])
            sl = np.concatenate(s_all[ai])
            gains, fit_rms, params = np.ones(hn), np.zeros(hn), np.zeros((3, hn))
            for j in range(hn):
                params[:, j], fit_rms[j] = _fit_activation(p[:, j], a_meas[:, j], act.model, j)
                model_slope = eo_activation_slope(p[:, j], params[0, j], params[1, j], float(act.model.t_min),
                                                  params[2, j])
                # away from the resonance crossing u = d + k p = 0 (the slope flips sign there) and from flat parts
                u = params[0, j] + params[1, j] * p[:, j]
                ok = (np.abs(u) > 0.1) & (np.abs(model_slope) > 0.1 * np.max(np.abs(model_slope)))
                if not ok.any():
                    res.fail(f"readout activations {ai} neuron {j}: no sample away from the resonance crossing")
                    continue
                gains[j] = float(np.median(sl[ok, j] / model_slope[ok]))
            fits[li]["w"] = np.concatenate([w, np.zeros(proc.layers[li].n_ports - hn)])
            old = np.broadcast_to(np.asarray(act.model.slope_gain_v, np.float64), (hn,))
            fits[li]["slope_gain"] = old * gains
            fits[li]["act_params"] = params
            res.meta["activations"][str(ai)] = {"model_rms_rel_max": float(fit_rms.max()),
                                                "imaginary_over_real": float(np.linalg.norm(np.imag(
                                                    xin * np.exp(-1j * w))) / max(np.linalg.norm(a_meas), 1e-300))}
            if not fit_rms.max() <= threshold:
                res.fail(f"readout activations {ai}: ring-model fit residual {fit_rms.max():.3g} of the rms "
                         f"activation (threshold {threshold})")
        # compose with the gains the HAL already applied (the fits saw calibrated readings)
        for li, lay in enumerate(proc.layers):
            f = fits[li]
            rot = np.exp(-1j * f.get("w", np.zeros(lay.n_ports)))
            arrays = {"g_out": lay.out_receiver.gain * f["g_out"], "g_in": lay.in_receiver.gain * f["g_in"] * rot,
                      "t_inj": lay.injector.gain * f["t_inj"] * rot, "t_adj": lay.adjoint_source.gain * f["t_adj"]}
            for k, v in arrays.items():
                res.arrays[f"{k}_{li}"] = np.stack([v.real, v.imag])
            res.arrays[f"tap_gain_{li}"] = lay.monitor.gain * f["m"]
            res.arrays[f"tap_offset_{li}"] = lay.monitor.offset + lay.monitor.gain * f["o"]
            res.arrays[f"power_gain_{li}"] = f["h"]
            if "loss" in f:
                res.arrays[f"loss_eta_{li}"] = f["loss"]["eta"]
                res.arrays[f"loss_alpha_{li}"] = np.stack([f["loss"]["alpha1"], f["loss"]["alpha2"]])
                res.arrays[f"loss_phase_{li}"] = f["loss"]["phase_offset"]
            if "slope_gain" in f:
                res.arrays[f"slope_gain_{li - 1}"] = f["slope_gain"]
                res.arrays[f"activation_model_{li - 1}"] = f["act_params"]
        res.meta["gauge"] = ("one free complex scale per layer and direction (receivers x c, sources / c), fixed by "
                             "geometric-mean |source gain| = 1; input ports rotated into the activations' phase")
        _all_dark(proc)
        res.counts = Counts(acquisitions=acq, frames=acq, writes=writes)
        res.seconds = time.perf_counter() - t0
        return res

    def apply(self, proc: Any, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        for li, lay in enumerate(proc.layers):
            if f"g_out_{li}" not in arrays:
                continue
            c = {k: arrays[f"{k}_{li}"][0] + 1j * arrays[f"{k}_{li}"][1] for k in ("g_out", "g_in", "t_inj", "t_adj")}
            lay.out_receiver.set_gain(c["g_out"])
            lay.in_receiver.set_gain(c["g_in"])
            lay.injector.set_gain(c["t_inj"])
            lay.adjoint_source.set_gain(c["t_adj"])
            lay.monitor.set_gain(arrays[f"tap_gain_{li}"], arrays[f"tap_offset_{li}"])
            lay.power_gain = np.asarray(arrays[f"power_gain_{li}"], np.float64).copy()
            if f"loss_eta_{li}" in arrays:
                a = np.asarray(arrays[f"loss_alpha_{li}"], np.float64)
                lay.loss_model = _loss_model(lay, {"eta": arrays[f"loss_eta_{li}"], "alpha1": a[0], "alpha2": a[1],
                                                   "phase_offset": arrays[f"loss_phase_{li}"]})
        for ai, act in enumerate(proc.activations):
            if f"slope_gain_{ai}" in arrays:
                act.model.slope_gain_v = np.asarray(arrays[f"slope_gain_{ai}"], np.float64).copy()
