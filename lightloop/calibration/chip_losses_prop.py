"""Column-local propagation of a lossy MZI mesh with its exact forward (JVP) and reverse (VJP) derivatives.

The loss-aware readout fit (lightloop.calibration.chip_losses) needs the Jacobian of the receivers' fields and
the taps' powers with respect to every waveguide's transmission, every coupler and every heater offset. Each
parameter acts inside one column, so instead of a dense finite-difference Jacobian (one full evaluation per
parameter: O(P N^3), 12.8k parameters at N = 64) the mesh is propagated once per direction keeping each
column's input fields and its MZIs' (S, k, 4, 2) maps with their six parameter derivatives, and Jacobian-vector
products (forward mode) and vector-Jacobian products (reverse mode) cost about one more propagation each
(O(S N^3)). Geometry and conventions are lightloop.physics.mesh's:

  MZI forward   phi (tap after) -> coupler alpha1 -> theta (tap after) -> arm loss eta -> coupler alpha2
  MZI backward  (U^T) coupler alpha2 -> arm loss -> (theta tap) theta -> coupler alpha1 -> (phi tap) phi
  unpaired modes pass with their eta; the optional output screen psi: forward tap after, backward tap before.

Fields are (settings S, modes n, batch B); a tap record is (S, channels [theta, phi, psi], B). Cotangents of
complex quantities follow g = dL/dRe + i dL/dIm, so a complex-linear map A has the adjoint A^H.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.physics.mzi import mesh_layout

__all__ = ["MeshPropagator"]

_FWD = (("ph", "phi"), ("tap", "phi"), ("cp", "a1"), ("ph", "th"), ("tap", "th"), ("loss", ""), ("cp", "a2"))
_BWD = (("cp", "a2"), ("loss", ""), ("tap", "th"), ("ph", "th"), ("cp", "a1"), ("tap", "phi"), ("ph", "phi"))


def _rsum(x: NDArray) -> NDArray:
    """Real part summed over settings and batch: (S, k, B) -> (k,)."""
    return np.real(x).sum(axis=(0, 2))


class MeshPropagator:
    """Lossy mesh of one layer at S phase settings (rad): propagation, taps, JVP and VJP in its parameters."""

    def __init__(self, n: int, mesh: str, screen: bool, phases: NDArray):
        self.lo = lo = mesh_layout(n, mesh)
        self.n, self.k, self.ncol, self.screen = n, lo.n_mzi, lo.n_columns, bool(screen)
        self.nch = 2 * self.k + (n if screen else 0)
        self.phases = np.asarray(phases, np.float64)           # (S, nch)
        off = lo.offsets
        self.cols = []
        for c, m in enumerate(lo.columns):
            paired = np.zeros(n, bool)
            paired[m] = paired[m + 1] = True
            self.cols.append((slice(int(off[c]), int(off[c + 1])), np.asarray(m, np.intp), np.flatnonzero(~paired)))

    def set_params(self, eta: NDArray, a1: NDArray, a2: NDArray, d: NDArray) -> None:
        """Amplitude transmissions eta (columns, n), couplers a1, a2 (n_mzi,) (rad), heater offsets d (nch,) (rad).

        Per column and direction, every MZI's map from its two input fields to [first tap, second tap, top out,
        bottom out] is one (S, k, 4, 2) matrix; its derivatives in theta, phi, alpha1, alpha2 and the two arms'
        log transmissions are kept too (the column's Jacobian blocks)."""
        k = self.k
        ang = self.phases + np.asarray(d, np.float64)[None, :]
        e = np.exp(1j * ang)
        self.eta = np.asarray(eta, np.float64)
        self.mats: dict[bool, list] = {True: [], False: []}
        for c, (sl, m, unp) in enumerate(self.cols):
            q = {"th": e[:, sl, None], "phi": e[:, k + sl.start: k + sl.stop, None],
                 "a1": (np.cos(a1[sl] + np.pi / 4)[:, None], np.sin(a1[sl] + np.pi / 4)[:, None]),
                 "a2": (np.cos(a2[sl] + np.pi / 4)[:, None], np.sin(a2[sl] + np.pi / 4)[:, None]),
                 "et": self.eta[c, m][:, None], "eb": self.eta[c, m + 1][:, None], "pass": self.eta[c, unp][:, None]}
            for forward in (True, False):
                self.mats[forward].append((q["pass"], *self._column_matrices(q, forward, e.shape[0], m.size)))
        self.e_psi = e[:, 2 * k:, None] if self.screen else None

    def _column_matrices(self, q: dict, forward: bool, s: int, kc: int) -> tuple[NDArray, NDArray, NDArray]:
        """(S, k, 4, 2) map of a column's MZIs, its conjugate transpose and the derivatives (6, S, k, 4, 2)."""
        basis = np.zeros((s, kc, 2), np.complex128)
        x0, x1 = basis.copy(), basis.copy()
        x0[..., 0], x1[..., 1] = 1.0, 1.0
        keys = ("th", "phi", "a1", "a2", "lt", "lb")
        vals = [[x0, x1]] + [[basis, basis] for _ in keys]          # value, then one tangent per parameter
        rows: list[list[NDArray]] = [[] for _ in range(len(keys) + 1)]
        for kind, key in (_FWD if forward else _BWD):
            if kind == "tap":
                for r, v in zip(rows, vals):
                    r.append(v[0])
                continue
            y0, y1 = vals[0]
            for i, v in enumerate(vals[1:]):
                d0, d1 = v
                if kind == "ph":
                    d0 = q[key] * d0 + (1j * q[key] * y0 if keys[i] == key else 0)
                elif kind == "cp":
                    cc, sn = q[key]
                    t0, t1 = cc * d0 + 1j * sn * d1, 1j * sn * d0 + cc * d1
                    if keys[i] == key:
                        t0, t1 = t0 + (-sn * y0 + 1j * cc * y1), t1 + (1j * cc * y0 - sn * y1)
                    d0, d1 = t0, t1
                else:
                    d0 = q["et"] * d0 + (q["et"] * y0 if keys[i] == "lt" else 0)
                    d1 = q["eb"] * d1 + (q["eb"] * y1 if keys[i] == "lb" else 0)
                v[0], v[1] = d0, d1
            vals[0] = list(self._apply(kind, key, q, y0, y1))
        mats = np.stack([np.stack(r + v, axis=2) for r, v in zip(rows, vals)])     # (7, S, k, 4, 2)
        return mats[0], np.conj(np.swapaxes(mats[0], -1, -2)), mats[1:]

    def _chan(self, key: str, sl: slice) -> slice:
        return sl if key == "th" else slice(self.k + sl.start, self.k + sl.stop)

    @staticmethod
    def _apply(kind: str, key: str, q: dict, x0: NDArray, x1: NDArray) -> tuple[NDArray, NDArray]:
        if kind == "ph":
            return x0 * q[key], x1
        if kind == "cp":
            c, s = q[key]
            return c * x0 + 1j * s * x1, 1j * s * x0 + c * x1
        return q["et"] * x0, q["eb"] * x1

    def _rows(self, c: int) -> NDArray:
        m = self.cols[c][1]
        return np.stack([m, m + 1], 1).ravel()

    def run(self, x: NDArray, forward: bool) -> tuple[NDArray, NDArray, Any]:
        """Fields x (S, n, B) through the mesh (forward: U, backward: U^T): output, taps (S, nch, B), record."""
        X = np.array(x, np.complex128)
        s, b = X.shape[0], X.shape[2]
        taps = np.empty((s, self.nch, b), np.complex128)
        store: list = [None] * self.ncol
        k = self.k
        keys = ("phi", "th") if forward else ("th", "phi")
        if not forward and self.screen:
            taps[:, 2 * k:] = X
            X = X * self.e_psi
        screen_in = None
        for c in (range(self.ncol) if forward else range(self.ncol - 1, -1, -1)):
            sl, m, unp = self.cols[c]
            ps, m4, _, _ = self.mats[forward][c]
            rows = self._rows(c)
            y = X[:, rows].reshape(s, m.size, 2, b)
            p_in = X[:, unp]
            X[:, unp] = ps * p_in
            o = m4 @ y
            taps[:, self._chan(keys[0], sl)], taps[:, self._chan(keys[1], sl)] = o[:, :, 0], o[:, :, 1]
            X[:, rows] = o[:, :, 2:].reshape(s, 2 * m.size, b)
            store[c] = (y, p_in)
        if forward and self.screen:
            screen_in = X
            X = X * self.e_psi
            taps[:, 2 * k:] = X
        return X, taps, (store, screen_in if forward else x, forward)

    def jvp(self, rec: Any, dle: NDArray, da1: NDArray, da2: NDArray, dd: NDArray,
            dx: NDArray) -> tuple[NDArray, NDArray]:
        """Tangent of (output, taps) of a recorded run for tangents of log eta (columns, n), a1, a2, d, input."""
        store, s_in, forward = rec
        k = self.k
        D = np.array(dx, np.complex128)
        s, b = D.shape[0], D.shape[2]
        dt = np.empty((s, self.nch, b), np.complex128)
        keys = ("phi", "th") if forward else ("th", "phi")
        if not forward and self.screen:
            dt[:, 2 * k:] = D
            D = D * self.e_psi + 1j * dd[None, 2 * k:, None] * self.e_psi * s_in
        for c in (range(self.ncol) if forward else range(self.ncol - 1, -1, -1)):
            sl, m, unp = self.cols[c]
            ps, m4, _, dm = self.mats[forward][c]
            y, p_in = store[c]
            rows = self._rows(c)
            D[:, unp] = ps * D[:, unp] + (dle[c, unp][:, None] * ps) * p_in
            tang = np.stack([dd[sl], dd[k + sl.start: k + sl.stop], da1[sl], da2[sl], dle[c, m], dle[c, m + 1]])
            dm4 = (tang[:, None, :, None, None] * dm).sum(0)
            o = m4 @ D[:, rows].reshape(s, m.size, 2, b) + dm4 @ y
            dt[:, self._chan(keys[0], sl)], dt[:, self._chan(keys[1], sl)] = o[:, :, 0], o[:, :, 1]
            D[:, rows] = o[:, :, 2:].reshape(s, 2 * m.size, b)
        if forward and self.screen:
            D = D * self.e_psi + 1j * dd[None, 2 * k:, None] * self.e_psi * s_in
            dt[:, 2 * k:] = D
        return D, dt

    def vjp(self, rec: Any, g_out: NDArray, g_taps: NDArray) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray]:
        """Cotangents of (input, log eta, a1, a2, d) of a recorded run from those of its output and taps."""
        store, s_in, forward = rec
        k = self.k
        G = np.array(g_out, np.complex128)
        s, b = G.shape[0], G.shape[2]
        gle, ga1, ga2, gd = np.zeros((self.ncol, self.n)), np.zeros(k), np.zeros(k), np.zeros(self.nch)
        keys = ("phi", "th") if forward else ("th", "phi")
        if forward and self.screen:
            G = G + g_taps[:, 2 * k:]
            gd[2 * k:] = _rsum(np.conj(G) * 1j * self.e_psi * s_in)
            G = np.conj(self.e_psi) * G
        for c in (range(self.ncol - 1, -1, -1) if forward else range(self.ncol)):
            sl, m, unp = self.cols[c]
            ps, _, m4h, dm = self.mats[forward][c]
            y, p_in = store[c]
            rows = self._rows(c)
            g4 = np.concatenate([g_taps[:, self._chan(keys[0], sl), None], g_taps[:, self._chan(keys[1], sl), None],
                                 G[:, rows].reshape(s, m.size, 2, b)], axis=2)
            w = g4 @ np.conj(np.swapaxes(y, -1, -2))                          # (S, k, 4, 2)
            gp = np.real(np.einsum("skij,pskij->pk", np.conj(w), dm))
            G[:, rows] = (m4h @ g4).reshape(s, 2 * m.size, b)
            gle[c, unp] += _rsum(np.conj(G[:, unp]) * ps * p_in)
            G[:, unp] = ps * G[:, unp]
            gd[sl], gd[k + sl.start: k + sl.stop], ga1[sl], ga2[sl] = gp[0], gp[1], gp[2], gp[3]
            gle[c, m] += gp[4]
            gle[c, m + 1] += gp[5]
        if not forward and self.screen:
            gd[2 * k:] = _rsum(np.conj(G) * 1j * self.e_psi * s_in)
            G = np.conj(self.e_psi) * G + g_taps[:, 2 * k:]
        return G, gle, ga1, ga2, gd
