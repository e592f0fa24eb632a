"""The integrated chip's calibrated differentiable model (physics-aware training; twin refinement).

The forward pass is measured on the chip (ForwardTaps: taps.pre[l] = measured powers p(l), taps.extra["ports"] =
encoded input fields, taps.extra["volts"] = heater volts written); this model takes the backward pass DIGITALLY
through the bench's calibrated optics at that measured state, never through the twin's hidden truth:

    a(l-1) = ports (l = 0) | transfer_model(p(l-1)) on the first h ports (the chip routes activation i to port i)
    z(l)   = M_l a(l-1)           M_l: ChipLayer.loss_model, else a MeshLossModel of the calibrated couplers
                                  (zeros if None) and the nominal uniform eta, at the calibrated realised phases
                                  bank.cal.phase(volts) + the refinement's phase-offset correction (rad)
    e(L)   = G delta_out / B      on the detected ports (the in-situ adjoint's convention, ChipProcessor)
    s(l)   = e(l) conj(z(l)) g    (g: calibrated power_gain per port, else the designed detector_gain)
    dL/dphase = -2 Im(sum_b fu fv)    (fu, fv: model fields at every shifter, forward of a(l-1), backward of s(l))
    e(l-1) = 2 Re(v(l)[:, :h]) * slope_model(p(l-1))   (v(l): the model's adjoint at the layer inputs)

Cost: one forward acquisition set per step (the activation photodiodes of every hidden layer and the output
detectors: L reads; the in-situ adjoint takes 13 for one hidden layer); refinement uses those taps, no acquisition.

Refinement: a per-layer phase-offset correction delta (rad, one per phase shifter; drift of the heaters' phi0)
is fitted to the measured powers of recent forward batches by Levenberg-Marquardt on
||(p_model(phase + delta) - p_meas) / rms(p_meas)||^2 + (noise_rel / prior_rad)^2 ||delta||^2 (a MAP fit: noise_rel =
0.03 the relative misfit the offsets cannot explain - detector noise and the uncalibrated rest, e.g. ring activations
and gains - and prior_rad = 0.3 rad the offsets' prior sd; the ridge pulls toward 0 what the data do not see, e.g.
shifters lit by no input, and keeps a refit over a short window from wandering), with the exact Jacobian
dp_k/dphase_j = -2 g Im(conj(z_k) fu_j fv_kj) (fv_k: the model's backward record of a unit field at output k).
'svd' layers have no calibrated model in the HAL (amplifier gain and attenuator couplers): a ConfigError.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError
from lightloop.hal.chip_roles import ChipLayer, MeshLossModel
from lightloop.hal.processor import ForwardTaps
from lightloop.physics.mesh import MeshLayer
from lightloop.physics.mzi import mesh_layout

__all__ = ["ChipModel", "StackedMesh"]


class StackedMesh:
    """One layer's calibrated optics (MeshLossModel) at H phase settings at once (complex128, batch-first): the same
    fields and shifter records as physics.mesh.MeshLayer (MZI: T = B2 diag(eta_t e^{i theta}, eta_b) B1
    diag(e^{i phi}, 1); unpaired modes pass the column loss; optional output screen), vectorised over the settings
    so a refit over many forward batches costs one pass per column, not one per batch."""

    def __init__(self, optics: MeshLossModel, phases: NDArray):
        ph = np.asarray(phases, np.float64) + optics.phase_offset
        eta = np.asarray(optics.eta, np.float64)
        n = eta.shape[1]
        lay = mesh_layout(n, optics.mesh)
        k = lay.n_mzi
        self.n, self.layout, self.screen = n, lay, bool(optics.screen)
        self.n_shifters = 2 * k + (n if self.screen else 0)
        a1, a2 = np.asarray(optics.alpha1, np.float64) + np.pi / 4, np.asarray(optics.alpha2, np.float64) + np.pi / 4
        k1c, k1s, c2, s2 = np.cos(a1), 1j * np.sin(a1), np.cos(a2), 1j * np.sin(a2)
        col, mode = lay.col, lay.mode
        eta_t, eta_b = eta[col, mode], eta[col, mode + 1]
        b1, b2, b3, b4 = c2 * eta_t, s2 * eta_b, s2 * eta_t, c2 * eta_b
        et, ep = np.exp(1j * ph[:, :k]), np.exp(1j * ph[:, k: 2 * k])
        at, ab = et * k1c, et * k1s                                    # after theta, from the top / bottom input
        self._ep, self._at, self._ab = ep, at, ab
        self._t = (ep * (b1 * at + b2 * k1s), b1 * ab + b2 * k1c, ep * (b3 * at + b4 * k1s), b3 * ab + b4 * k1c)
        self._b = (b1, b2, b3, b4, k1c, k1s)
        self._psi = np.exp(1j * ph[:, 2 * k: 2 * k + n]) if self.screen else None
        self._cols = []
        for c, m in enumerate(lay.columns):
            paired = np.zeros(n, bool)
            paired[m] = paired[m + 1] = True
            unp = np.flatnonzero(~paired)
            loss = None if unp.size == 0 or np.all(eta[c, unp] == 1.0) else (unp, eta[c, unp][None, :, None])
            self._cols.append((slice(int(lay.offsets[c]), int(lay.offsets[c + 1])), m, loss))

    def forward(self, x: NDArray, record: bool = False) -> tuple[NDArray, NDArray | None]:
        """Output fields (H, batch, n) of inputs x (H, batch, n), and (record) the field after every shifter."""
        X = np.array(np.swapaxes(x, 1, 2), np.complex128)               # (H, n, batch)
        h, _, b = X.shape
        k = self.layout.n_mzi
        taps = np.empty((h, self.n_shifters, b), np.complex128) if record else None
        t00, t01, t10, t11 = self._t
        for sl, m, loss in self._cols:
            if loss is not None:
                X[:, loss[0]] *= loss[1]
            top, bot = X[:, m], X[:, m + 1]
            if taps is not None:
                ep = self._ep[:, sl, None]
                taps[:, k + sl.start: k + sl.stop] = ep * top
                taps[:, sl] = self._at[:, sl, None] * ep * top + self._ab[:, sl, None] * bot
            X[:, m], X[:, m + 1] = (t00[:, sl, None] * top + t01[:, sl, None] * bot,
                                    t10[:, sl, None] * top + t11[:, sl, None] * bot)
        if self._psi is not None:
            X *= self._psi[:, :, None]
            if taps is not None:
                taps[:, 2 * k:] = X
        return np.swapaxes(X, 1, 2), (None if taps is None else np.swapaxes(taps, 1, 2))

    def backward(self, y: NDArray, record: bool = False) -> tuple[NDArray, NDArray | None]:
        """Adjoint fields at the inputs (H, batch, n) of y injected at the outputs (U^T), and (record) the adjoint
        at every shifter."""
        Y = np.array(np.swapaxes(y, 1, 2), np.complex128)
        h, _, b = Y.shape
        k = self.layout.n_mzi
        taps = np.empty((h, self.n_shifters, b), np.complex128) if record else None
        if self._psi is not None:
            if taps is not None:
                taps[:, 2 * k:] = Y
            Y *= self._psi[:, :, None]
        b1, b2, b3, b4, k1c, k1s = self._b
        for sl, m, loss in reversed(self._cols):
            top, bot = Y[:, m], Y[:, m + 1]
            at, ab, ep = self._at[:, sl, None], self._ab[:, sl, None], self._ep[:, sl, None]
            q1, q2, q3, q4 = (c[sl, None] for c in (b1, b2, b3, b4))
            v_th = q1 * top + q3 * bot
            v_ph = (at * q1 + k1s[sl, None] * q2) * top + (at * q3 + k1s[sl, None] * q4) * bot
            if taps is not None:
                taps[:, sl], taps[:, k + sl.start: k + sl.stop] = v_th, v_ph
            v_bot = (ab * q1 + k1c[sl, None] * q2) * top + (ab * q3 + k1c[sl, None] * q4) * bot
            Y[:, m], Y[:, m + 1] = ep * v_ph, v_bot
            if loss is not None:
                Y[:, loss[0]] *= loss[1]
        return np.swapaxes(Y, 1, 2), (None if taps is None else np.swapaxes(taps, 1, 2))


class ChipModel:
    """Calibrated model of a ChipProcessor's mesh layers (complex128) with a fitted phase-offset correction (rad)."""

    def __init__(self, proc: Any):   # a lightloop.hal.chip.ChipProcessor (not imported: no import cycle)
        self.proc = proc
        #: per layer: the refinement's phase-offset correction (rad), added to the calibrated realised phases
        self.correction = [np.zeros(lay.bank.n_channels) for lay in proc.layers]
        self._own: list[tuple[Any, MeshLossModel] | None] = [None] * len(proc.layers)

    def checked_correction(self, corr: Any) -> list[NDArray[np.float64]]:
        """A stored phase-offset correction (rad) as float64 arrays; ValueError unless one per shifter of each layer."""
        want = [lay.bank.n_channels for lay in self.proc.layers]
        got = [np.asarray(c, np.float64) for c in corr] if isinstance(corr, (list, tuple)) else None
        if got is None or [c.shape for c in got] != [(n,) for n in want]:
            raise ValueError(f"chip model_correction: expected {len(want)} phase-offset vectors of {want} rad values")
        return got

    # --- the model of one layer ----------------------------------------------------------------------
    def _optics(self, l: int) -> MeshLossModel:
        """The calibrated optics of layer l: its loss model, else couplers (zeros if None) and the nominal eta."""
        lay: ChipLayer = self.proc.layers[l]
        where = f"chip processor: physics_aware model of layer {l}"
        if lay.kind != "unitary":
            raise ConfigError(f"{where}: layer kind {lay.kind!r} has no calibrated model in the HAL (amplifier "
                              "gain, attenuator couplers); expected 'unitary' layers")
        layout = mesh_layout(lay.n_ports, lay.mesh)
        want = 2 * layout.n_mzi + (lay.n_ports if lay.screen else 0)
        if lay.bank.n_channels != want:
            raise ConfigError(f"{where}: bank has {lay.bank.n_channels} phase shifters; expected {want} for a "
                              f"{lay.n_ports}-port {lay.mesh} mesh (screen={lay.screen})")
        if lay.loss_model is not None:
            lm = lay.loss_model
            if lm.eta.shape != (layout.n_columns, lay.n_ports) or lm.phase_offset.shape != (want,):
                raise ConfigError(f"{where}: loss_model has eta {lm.eta.shape} and phase_offset "
                                  f"{lm.phase_offset.shape}; expected {(layout.n_columns, lay.n_ports)} and {(want,)}")
            return lm
        cp = lay.couplers
        hit = self._own[l]
        if hit is None or hit[0] is not cp:
            if cp is None:
                a1 = a2 = np.zeros(layout.n_mzi)
            else:
                c = np.asarray(cp, np.float64)
                if c.shape != (2, layout.n_mzi):
                    raise ConfigError(f"{where}: couplers has shape {c.shape}; expected (2, {layout.n_mzi})")
                a1, a2 = c[0], c[1]
            eta = np.full((layout.n_columns, lay.n_ports), float(self.proc.eta))
            hit = (cp, MeshLossModel(lay.mesh, a1, a2, eta, np.zeros(want), lay.screen))
            self._own[l] = hit
        return hit[1]

    def layer(self, l: int, volts: NDArray | None = None, delta: NDArray | None = None) -> MeshLayer:
        """Model layer l at the calibrated phases of `volts` (V; default: the last write) plus the correction."""
        bank = self.proc.layers[l].bank
        v = bank.written_volts if volts is None else np.asarray(volts, np.float64)
        corr = self.correction[l] if delta is None else delta
        return self._optics(l).layer(bank.cal.phase(v) + corr)

    def _gain(self, l: int, k: int) -> NDArray[np.float64]:
        """Power per |z|^2 of the first k detected ports (calibrated power_gain, else the designed detector_gain)."""
        lay = self.proc.layers[l]
        if lay.power_gain is None:
            g = np.full(k, float(lay.detector_gain))
        else:
            g = np.broadcast_to(np.asarray(lay.power_gain, np.float64).ravel(), (lay.n_ports,))[:k].copy()
        if l == len(self.proc.layers) - 1:
            g = g * self.proc.output_gain
        return g

    def _detected(self, l: int) -> int:
        """Ports read at layer l's outputs: its activations' photodiodes, or the output detectors."""
        p = self.proc
        return p.activations[l].n_channels if l < len(p.activations) else p.n_out

    def inputs(self, taps: ForwardTaps, l: int) -> NDArray[np.complex128]:
        """Model input a(l-1) of layer l (batch, ports) from the measured forward state."""
        p = self.proc
        n = p.layers[l].n_ports
        if l == 0:
            ports = taps.extra.get("ports") if taps.extra else None
            if ports is None:
                raise ConfigError("chip processor: forward taps have no extra['ports']; expected the encoded input "
                                  "fields of ChipProcessor.forward")
            a = np.asarray(ports, np.float64)
        else:
            a = np.asarray(p.activations[l - 1].transfer_model(np.asarray(taps.pre[l - 1], np.float64)), np.float64)
        if a.ndim != 2 or a.shape[1] > n:
            raise ConfigError(f"chip processor: layer {l} model input has shape {a.shape}; expected (batch, <= {n})")
        x = np.zeros((a.shape[0], n), np.complex128)
        x[:, : a.shape[1]] = a
        return x

    def _volts(self, taps: ForwardTaps, l: int) -> NDArray | None:
        vs = taps.extra.get("volts") if taps.extra else None
        return None if vs is None else vs[l]

    def _check(self, taps: ForwardTaps) -> None:
        if len(taps.pre) != len(self.proc.layers):
            raise ConfigError(f"chip processor: forward taps have {len(taps.pre)} measured layers; expected "
                              f"{len(self.proc.layers)}")

    # --- physics-aware gradient and prediction ---------------------------------------------------------
    def gradients(self, taps: ForwardTaps, delta_out: NDArray) -> list[NDArray]:
        """dL/dphase (rad^-1) of every layer, backward through the model at the measured state (delta_out = B dL/dy)."""
        p = self.proc
        self._check(taps)
        d = np.asarray(delta_out, np.float64)
        if d.ndim != 2 or d.shape != (np.shape(taps.pre[-1])[0], p.n_out):
            raise ConfigError(f"chip processor: delta_out has shape {d.shape}; expected "
                              f"{(np.shape(taps.pre[-1])[0], p.n_out)}")
        e = d * (p.output_gain / d.shape[0])
        grads: list[NDArray] = [np.zeros(0)] * len(p.layers)
        for l in range(len(p.layers) - 1, -1, -1):
            m = self.layer(l, self._volts(taps, l))
            z, fu = m.forward(self.inputs(taps, l), record=True)
            k = e.shape[1]
            gain = self._gain(l, k) / (p.output_gain if l == len(p.layers) - 1 else 1.0)
            s = np.zeros_like(z)
            s[:, :k] = e * np.conj(z[:, :k]) * gain
            v, fv = m.backward(s, record=True)
            grads[l] = (-2 * np.imag(np.sum(fu * fv, 0))).astype(p._rd)   # type: ignore[operator]
            if l > 0:
                h = p.activations[l - 1].n_channels
                slope = p.activations[l - 1].slope_model(np.asarray(taps.pre[l - 1], np.float64))
                e = 2 * np.real(v[:, :h]) * slope
        return grads

    def prediction(self, taps: ForwardTaps, delta: Sequence[NDArray] | None = None) -> list[NDArray]:
        """The model's p(l) (as taps.pre[l]: hidden powers, output G p) from the measured inputs of every layer."""
        self._check(taps)
        out = []
        for l in range(len(self.proc.layers)):
            m = self.layer(l, self._volts(taps, l), None if delta is None else delta[l])
            z, _ = m.forward(self.inputs(taps, l))
            k = self._detected(l)
            out.append((np.abs(z[:, :k]) ** 2 * self._gain(l, k)).astype(self.proc._rd))
        return out

    # --- refinement ------------------------------------------------------------------------------------
    def _problem(self, l: int, history: Sequence[ForwardTaps], max_samples: int) -> tuple[NDArray, NDArray, NDArray]:
        """Layer l over the batches: calibrated phases (H, S) rad, model inputs (H, b, n) and measured powers (H, b, k)
        of at most max_samples samples in all (spread evenly; shorter batches padded with dark, zero-power rows)."""
        bank = self.proc.layers[l].bank
        per = max(1, max_samples // len(history))
        b = min(per, max(np.shape(t.pre[l])[0] for t in history))
        k, n = self._detected(l), self.proc.layers[l].n_ports
        ph = np.empty((len(history), bank.n_channels))
        xs, ms = np.zeros((len(history), b, n), np.complex128), np.zeros((len(history), b, k))
        for i, t in enumerate(history):
            v = self._volts(t, l)
            ph[i] = bank.cal.phase(bank.written_volts if v is None else np.asarray(v, np.float64))
            x, meas = self.inputs(t, l), np.asarray(t.pre[l], np.float64)
            if x.shape[0] > b:
                rows = np.linspace(0, x.shape[0] - 1, b).round().astype(np.intp)
                x, meas = x[rows], meas[rows]
            xs[i, : x.shape[0]], ms[i, : x.shape[0]] = x, meas
        return ph, xs, ms

    def _residual(self, l: int, problem: tuple[NDArray, NDArray, NDArray], delta: NDArray, jac: bool,
                  scale: float) -> tuple[NDArray, NDArray | None, NDArray | None]:
        """Scaled residuals of layer l over the batches and (jac) J^T J, J^T r (StackedMesh: all batches at once)."""
        ph, x, meas = problem
        k = meas.shape[2]
        g = self._gain(l, k)
        st = StackedMesh(self._optics(l), ph + delta)
        z, fu = st.forward(x, record=jac)
        zk = z[:, :, :k]
        r = ((zk.real ** 2 + zk.imag ** 2) * g - meas).ravel() / scale
        if not jac:
            return r, None, None
        unit = np.zeros((ph.shape[0], k, st.n), np.complex128)
        unit[:, np.arange(k), np.arange(k)] = 1.0
        _, fv = st.backward(unit, record=True)                                           # (H, k, S)
        j = np.imag(np.conj(zk)[:, :, :, None] * fu[:, :, None, :] * fv[:, None, :, :])   # (H, b, k, S)
        j = (j * (-2 * g / scale)[None, None, :, None]).reshape(-1, delta.size)
        return r, j.T @ j, j.T @ r

    def refine(self, history: Sequence[ForwardTaps], noise_rel: float = 0.03, prior_rad: float = 0.3,
               max_iter: int = 12, tol: float = 1e-10, max_samples: int = 256) -> dict[str, float]:
        """Fit the per-layer phase-offset correction (rad) to the measured powers of `history` (LM, MAP with a ridge
        toward 0: relative misfit noise_rel, prior sd prior_rad; at most max_samples samples of the batches);
        returns the model's relative rms prediction error over all of `history` before and after, and fit figures."""
        t0 = time.perf_counter()
        hist = [t for t in history if t is not None]
        out: dict[str, float] = {"batches": float(len(hist))}
        if not hist:
            return out
        for t in hist:
            self._check(t)
        before = self.prediction_error(hist)
        iters = 0
        for l in range(len(self.proc.layers)):
            delta = self.correction[l].copy()
            prob = self._problem(l, hist, max_samples)
            lit = np.count_nonzero(np.any(prob[1], 2)) * prob[2].shape[2]        # measured values (no padding)
            scale = float(np.sqrt(np.sum(prob[2] ** 2) / max(lit, 1))) or 1.0
            r, jtj, jtr = self._residual(l, prob, delta, True, scale)
            lam = (noise_rel / prior_rad) ** 2
            cost = float(r @ r + lam * delta @ delta)
            mu = 1e-3 * max(float(np.max(np.diag(jtj))), 1e-30)
            for _ in range(max_iter):
                a = jtj + (lam + mu) * np.eye(delta.size)
                step = np.linalg.solve(a, -(jtr + lam * delta))
                trial = np.mod(delta + step + np.pi, 2 * np.pi) - np.pi     # phases are periodic: the same model
                r2, _, _ = self._residual(l, prob, trial, False, scale)
                c2 = float(r2 @ r2 + lam * trial @ trial)
                iters += 1
                if c2 < cost:
                    done = cost - c2 < tol * max(cost, 1e-30) or float(np.max(np.abs(step))) < 1e-9
                    delta, cost, mu = trial, c2, mu / 3
                    if done:
                        break
                    r, jtj, jtr = self._residual(l, prob, delta, True, scale)
                else:
                    mu *= 4
                    if mu > 1e12 * max(float(np.max(np.diag(jtj))), 1e-30):
                        break
            self.correction[l] = delta
            out[f"correction_rms_rad_layer{l}"] = float(np.sqrt(np.mean(delta ** 2))) if delta.size else 0.0
        out.update(prediction_error_before=before, prediction_error_after=self.prediction_error(hist),
                   iterations=float(iters), seconds=time.perf_counter() - t0)
        return out

    def prediction_error(self, history: Sequence[ForwardTaps]) -> float:
        """Relative rms error ||p_model - p_meas|| / ||p_meas|| over every measured layer of the batches."""
        num = den = 0.0
        for t in history:
            for pred, meas in zip(self.prediction(t), t.pre):
                m = np.asarray(meas, np.float64)
                num += float(np.sum((np.asarray(pred, np.float64) - m) ** 2))
                den += float(np.sum(m ** 2))
        return float(np.sqrt(num / den)) if den > 0 else 0.0
