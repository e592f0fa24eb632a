"""Error-budget paths of the integrated chip (`lightloop check`): every receiver, photodiode, slope and tap path.

The calibrated model of a mesh layer is rebuilt from what the HAL holds (never the twin's truth): the phases the
bank believes it wrote (its calibration of the written volts), the calibrated coupler errors or loss-aware model
where present, the nominal per-column transmission eta, and for 'svd' layers the nominal attenuators and the
design amplifier gain. From it come the output fields (U x), the adjoint fields (U^T s) and the batch-integrated
intensity at every tap monitor (sum_b |T x_b|^2 with forward light, injected light or adjoint light).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.check_stats import PathResult
from lightloop.check_stats import private_copy as _a
from lightloop.check_stats import rms as _rms
from lightloop.physics.mesh import MeshErrors, MeshLayer
from lightloop.physics.mzi import mesh_layout

__all__ = ["chip_paths", "layer_model"]

_FIELD = "field (sqrt of reference power)"
_TAPS = "intensity (batch-integrated, reference power units)"


def layer_model(proc: Any, lay: Any, svd_gain: float = 1.0) -> MeshLayer:
    """The calibrated model of one mesh layer (complex128) at the phases (rad) the bank believes it wrote."""
    phases = np.asarray(lay.bank.cal.phase(lay.bank.written_volts), np.float64)
    if lay.kind == "unitary" and lay.loss_model is not None:
        return lay.loss_model.layer(phases)
    n = lay.n_ports
    layout = mesh_layout(n, lay.mesh)
    eta = float(proc.eta)
    if lay.kind == "unitary":
        cp = np.zeros((2, layout.n_mzi)) if lay.couplers is None else np.asarray(lay.couplers, np.float64)
        errs = [MeshErrors(cp[0], cp[1], np.full((layout.n_columns, n), eta))]
        model = MeshLayer.build("unitary", n, lay.mesh, errs, dtype=np.complex128, screen=lay.screen)
    else:   # 'svd': nominal couplers, attenuators and loss (no routine calibrates them yet), design gain
        errs = [MeshErrors.ideal(layout.n_mzi, layout.n_columns, n, eta) for _ in range(2)]
        att = (np.zeros(n), np.zeros(n), np.full((2, n), eta))
        model = MeshLayer.build("svd", n, lay.mesh, errs, att, float(svd_gain), dtype=np.complex128)
    model.set_phases(phases)
    return model


def _taps(model: MeshLayer, x: NDArray, forward: bool = True) -> NDArray:
    """Model batch-integrated tap intensities (n_taps,) for fields x (batch, n) entering forward or backward."""
    return model.tap_powers(np.asarray(x, np.complex128), forward)[1]


def chip_paths(proc: Any, n: int, rng: np.random.Generator, svd_gain: float = 1.0) -> tuple[list[PathResult],
                                                                                               list[str]]:
    """Mesh forward, injected and adjoint fields, taps (forward / injected / adjoint light), photodiodes,
    activation slopes and every detector's dark reading, per layer ('unitary' and 'svd')."""
    notes: list[str] = []
    layers, acts, n_layers = proc.layers, proc.activations, len(proc.layers)
    proc.program(proc.init_parameters(rng, 1.0))
    models = [layer_model(proc, lay, svd_gain) for lay in layers]
    if any(lay.kind == "svd" for lay in layers):
        notes.append("svd layers: modelled with nominal couplers, attenuators and loss and the design amplifier "
                     "gain (no routine calibrates them)")
    x = rng.uniform(0.0, 1.0, (n, proc.source.n_features)).astype(np.float32)
    runs = []
    for _ in range(2):
        t = proc.forward(x)
        z = [_a(lay.out_receiver.acquire()) for lay in layers]
        slopes = [_a(act.acquire_slope()) for act in acts]
        taps = [_a(lay.monitor.acquire()) for lay in layers]
        runs.append(([_a(p) for p in t.pre], z, slopes, taps, _a(t.extra["ports"])))
    (pre, z, slopes, taps, ports), (pre2, z2, slopes2, taps2, _) = runs
    out: list[PathResult] = []
    sig_z, sig_p, sig_t = [], [], []
    for l, lay in enumerate(layers):
        x_in = np.zeros((n, lay.n_ports), np.complex128)
        if l == 0:
            x_in[:, : ports.shape[1]] = ports
        else:
            a = acts[l - 1].transfer_model(pre[l - 1].astype(np.float64))
            x_in[:, : a.shape[1]] = a
        u = models[l].matrix()
        model = x_in @ u.T
        out.append(PathResult(f"layer{l}.mesh", "complex", _FIELD, z[l], model, z2[l]))
        sig_z.append(_rms(model))
        model_t = _taps(models[l], x_in)
        out.append(PathResult(f"layer{l}.taps", "real", _TAPS, taps[l], model_t, taps2[l]))
        sig_t.append(_rms(model_t))
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
    # input port and phase, unlike the activations' real fields) and at its outputs (read at its inputs, v = U^T s);
    # the tap monitors see either light (the adjoint gradient's I_adj exposure and the backward light)
    sig_v = []
    for l, lay in enumerate(layers):
        vs = []
        for src, rx, fwd in ((lay.injector, lay.out_receiver, True), (lay.adjoint_source, lay.in_receiver, False)):
            s = rng.normal(size=(n, lay.n_ports)) + 1j * rng.normal(size=(n, lay.n_ports))
            s = (s * proc.adjoint_field / max(src.command_peak(s), 1e-30)).astype(np.complex64)
            proc.source.dark()
            src.inject(s)
            vs.append((s.astype(np.complex128), _a(rx.acquire()), _a(rx.acquire()), _a(lay.monitor.acquire()),
                       _a(lay.monitor.acquire()), fwd))
            src.off()
        u = models[l].matrix()
        (r, y1, y2, t1, t2, _), (s, v1, v2, b1, b2, _) = vs
        out.append(PathResult(f"layer{l}.mesh_injected", "complex", _FIELD, y1, r @ u.T, y2))
        out.append(PathResult(f"layer{l}.taps_injected", "real", _TAPS, t1, _taps(models[l], r), t2))
        model = s @ u
        out.append(PathResult(f"layer{l}.adjoint", "complex", _FIELD, v1, model, v2))
        out.append(PathResult(f"layer{l}.taps_adjoint", "real", _TAPS, b1, _taps(models[l], s, False), b2))
        sig_v.append(_rms(model))
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
        out.append(PathResult(f"detector.taps{l}.dark", "dark", _TAPS, _a(lay.monitor.acquire()), np.zeros(0),
                              ref_rms=sig_t[l]))
    for l, act in enumerate(acts):
        out.append(PathResult(f"detector.photodiodes{l}.dark", "dark", "power", _a(act.acquire()), np.zeros(0),
                              ref_rms=sig_p[l]))
    out.append(PathResult("detector.output.dark", "dark", "power", _a(proc.output.acquire()) * proc.output_gain,
                          np.zeros(0), ref_rms=sig_p[-1]))
    proc.source.on()
    return out, notes
