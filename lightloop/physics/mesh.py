"""Physical MZI meshes with hidden fabrication errors: batched field propagation, forward and backward,
with the fields at every phase shifter (what the tap monitors see).

A mesh layer is a chain of stages, each owning a contiguous block of phase-shifter channels:

* ``MZIColumns`` - a rectangular (Clements) or triangular (Reck) mesh, channels [theta..., phi...];
* ``PhaseScreen`` - one shifter per mode at the output, channels [psi...];
* ``AttenuatorColumn`` - one MZI attenuator per mode (second input dark, second output dumped),
  channels [theta..., phi...];
* ``Gain`` - an amplifier (no channels).

``unitary`` layer = MZIColumns + PhaseScreen; ``svd`` layer = MZIColumns + AttenuatorColumn + MZIColumns
+ PhaseScreen + Gain (lightloop.physics.mzi.svd_decompose gives its phases for any matrix).

Fields are batch-first (batch, n), y = x @ U.T; the backward (adjoint) pass propagates with U^T
(reciprocity). Taps return the complex field at each shifter: for the forward pass the field just after
the shifter, for the backward pass the adjoint field at the same point, so dL/dphi = -2 Im(u v)
(Hughes et al. 2018). Hot paths run in complex64 unless a complex128 mesh is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lightloop.physics.mzi import MeshLayout, mesh_heater_positions, mesh_layout

__all__ = ["MeshErrors", "MZIColumns", "PhaseScreen", "AttenuatorColumn", "Gain", "MeshLayer",
           "layer_stage_sizes", "layer_ports"]


#: layers of at most this many ports keep dense tap matrices (MeshLayer.dense_taps) with their transfer matrix
DENSE_PORTS = 32
#: a tap record takes the dense tap matrices when n^3 * batch is at most this (measured crossover against the
#: column pass on one core: N = 8 / 16 / 32 at batch 32 - 5x / 4.6x / 1.7x faster; N = 32 at batch 128 slower)
DENSE_WORK = 1 << 20


def layer_ports(n_in: int, hidden: tuple[int, ...], n_out: int, bias_ports: int) -> tuple[int, ...]:
    """Ports of each square mesh layer: N(1) = max(n_in + bias, h1), N(l) = max(h(l-1), h(l))."""
    sizes = (n_in, *hidden, n_out)
    return tuple(max(sizes[i] + (bias_ports if i == 0 else 0), sizes[i + 1]) for i in range(len(sizes) - 1))


@dataclass
class MeshErrors:
    """Hidden imperfections of one MZI block: coupler errors (rad) and arm amplitude transmissions."""

    alpha1: NDArray[np.float64]     # (n_mzi,) first coupler of each MZI
    alpha2: NDArray[np.float64]     # (n_mzi,) second coupler
    eta: NDArray[np.float64]        # (n_columns, n) amplitude transmission of every waveguide per column

    @classmethod
    def ideal(cls, n_mzi: int, n_columns: int, n: int, eta: float = 1.0) -> "MeshErrors":
        """Perfect couplers, uniform loss eta per column."""
        return cls(np.zeros(n_mzi), np.zeros(n_mzi), np.full((n_columns, n), float(eta)))


def _coupler(alpha: NDArray) -> tuple[NDArray, NDArray]:
    a = alpha + np.pi / 4
    return np.cos(a), np.sin(a)


class MZIColumns:
    """A mesh of MZI columns (no output screen); channels [theta (n_mzi), phi (n_mzi)]."""

    def __init__(self, layout: MeshLayout, errors: MeshErrors | None = None, dtype: type = np.complex64):
        self.layout, self.n = layout, layout.n
        self.n_mzi = layout.n_mzi
        self.n_shifters = 2 * self.n_mzi
        self.errors = errors or MeshErrors.ideal(self.n_mzi, layout.n_columns, self.n)
        self.cdtype = np.dtype(dtype)
        self.rdtype = np.float32 if self.cdtype == np.complex64 else np.float64
        off = layout.offsets
        # fields are propagated mode-major (n, batch): per column the rows of its MZIs form one (k, 2, batch)
        # block (a slice when the MZIs sit on every other mode, else gathered rows); unpaired modes pass
        self._mm_cols = []
        for c, m in enumerate(layout.columns):
            k = m.size
            paired = np.zeros(self.n, bool)
            paired[m] = paired[m + 1] = True
            rows = None if k == 0 or np.all(np.diff(m) == 2) else np.stack([m, m + 1], 1).ravel()
            unp = np.flatnonzero(~paired)
            self._mm_cols.append((slice(int(off[c]), int(off[c + 1])), int(m[0]) if k else 0, k, rows,
                                  unp if unp.size else None))
        e = self.errors
        c1, s1 = _coupler(e.alpha1)
        c2, s2 = _coupler(e.alpha2)
        col, mode = layout.col, layout.mode
        eta_t, eta_b = e.eta[col, mode], e.eta[col, mode + 1]
        self._lossless_pass = bool(np.all(e.eta == 1.0))
        self._pass = [e.eta[c].astype(self.rdtype) for c in range(layout.n_columns)]
        # couplers B = [[c, i s], [i s, c]], arm transmissions eta (complex128; cast once per set_phases)
        self._k1 = (c1.astype(np.complex128), 1j * s1)
        self._b = (c2 * eta_t, 1j * s2 * eta_b, 1j * s2 * eta_t, c2 * eta_b)   # top/bottom outputs from the arms
        self.set_phases(np.zeros(self.n_shifters))

    # --- phases ------------------------------------------------------------------------------------
    def set_phases(self, phases: NDArray) -> None:
        """True phases [theta..., phi...] (rad).

        MZI: T = B2 diag(eta_t e^{i th}, eta_b) B1 diag(e^{i ph}, 1). Stored as per-MZI matrices on [top, bottom]:
        forward rows [field after phi, after theta, top out, bottom out]; backward (U^T) rows [adjoint at theta,
        at phi, top in, bottom in]."""
        k = self.n_mzi
        et = np.exp(1j * np.asarray(phases[:k], np.float64))
        ep = np.exp(1j * np.asarray(phases[k:], np.float64))
        k1c, k1s = self._k1
        b1, b2, b3, b4 = self._b
        a1, a2 = et * k1c, et * k1s                  # field after theta from the top / bottom input
        fwd = np.zeros((k, 4, 2), np.complex128)
        fwd[:, 0, 0] = ep
        fwd[:, 1, 0], fwd[:, 1, 1] = a1 * ep, a2
        fwd[:, 2, 0], fwd[:, 2, 1] = ep * (b1 * a1 + b2 * k1s), b1 * a2 + b2 * k1c
        fwd[:, 3, 0], fwd[:, 3, 1] = ep * (b3 * a1 + b4 * k1s), b3 * a2 + b4 * k1c
        bwd = np.empty((k, 4, 2), np.complex128)
        bwd[:, 0, 0], bwd[:, 0, 1] = b1, b3
        bwd[:, 1, 0], bwd[:, 1, 1] = a1 * b1 + k1s * b2, a1 * b3 + k1s * b4
        bwd[:, 2] = ep[:, None] * bwd[:, 1]
        bwd[:, 3, 0], bwd[:, 3, 1] = a2 * b1 + k1c * b2, a2 * b3 + k1c * b4
        self._m4f, self._m4b = fwd.astype(self.cdtype), bwd.astype(self.cdtype)
        self._m2f, self._m2b = self._m4f[:, 2:].copy(), self._m4b[:, 2:].copy()

    # --- propagation -------------------------------------------------------------------------------
    def _pass_mm(self, x: NDArray, forward: bool, record: bool) -> tuple[NDArray, NDArray | None]:
        """Mode-major pass: fields (n, batch) and, if record, per-MZI rows (n_mzi, 4, batch) (see set_phases)."""
        X = np.array(np.asarray(x).T, dtype=self.cdtype, order="C")
        bsz = X.shape[1]
        taps4 = np.empty((self.n_mzi, 4, bsz), self.cdtype) if record else None
        m4 = self._m4f if forward else self._m4b
        m2 = self._m2f if forward else self._m2b
        lossy = not self._lossless_pass
        order = range(len(self._mm_cols)) if forward else range(len(self._mm_cols) - 1, -1, -1)
        for c in order:
            fl, start, k, rows, unp = self._mm_cols[c]
            if forward and lossy and unp is not None:
                X[unp] *= self._pass[c][unp, None]
            if k:
                y = X[start: start + 2 * k].reshape(k, 2, bsz) if rows is None else X[rows].reshape(k, 2, bsz)
                if taps4 is not None:
                    out = np.matmul(m4[fl], y, out=taps4[fl])[:, 2:]
                else:
                    out = np.matmul(m2[fl], y)
                if rows is None:
                    y[...] = out
                else:
                    X[rows] = out.reshape(2 * k, bsz)
            if not forward and lossy and unp is not None:
                X[unp] *= self._pass[c][unp, None]
        return X, taps4

    def _taps_to(self, taps: NDArray, taps4: NDArray, forward: bool) -> None:
        """Channel-order taps (batch, [theta..., phi...]) from the mode-major rows."""
        k = self.n_mzi
        th, ph = (1, 0) if forward else (0, 1)
        taps[:, :k] = taps4[:, th].T
        taps[:, k:] = taps4[:, ph].T

    def tap_powers(self, x: NDArray, forward: bool = True) -> tuple[NDArray, NDArray[np.float64]]:
        """Output fields (batch, n) and sum over the batch of |tap|^2 per channel (float64), one pass."""
        X, taps4 = self._pass_mm(x, forward, True)
        r = taps4[:, :2].view(self.rdtype)            # interleaved re, im of the two tap rows
        pw = np.einsum("ijk,ijk->ij", r, r).astype(np.float64)   # accumulated in the mesh's real precision
        th, ph = (1, 0) if forward else (0, 1)
        return X.T, np.concatenate([pw[:, th], pw[:, ph]])

    def tap_record(self, x: NDArray, forward: bool = True) -> tuple[NDArray, NDArray]:
        """Output fields (batch, n) and the complex tap rows (n_mzi, [after phi, after theta] forward or
        [theta, phi] backward, batch) of one pass: records of two fields add up to the record of their sum."""
        X, taps4 = self._pass_mm(x, forward, True)
        return X.T, taps4[:, :2]

    def record_powers(self, rec: NDArray, forward: bool = True) -> NDArray[np.float64]:
        """sum over the batch of |tap|^2 per channel [theta..., phi...] (float64) of a tap_record."""
        r = rec.view(self.rdtype)
        pw = np.einsum("ijk,ijk->ij", r, r).astype(np.float64)
        th, ph = (1, 0) if forward else (0, 1)
        return np.concatenate([pw[:, th], pw[:, ph]])

    def forward(self, x: NDArray, taps: NDArray | None = None) -> NDArray:
        """Propagate fields x (batch, n) input -> output; fill taps (batch, n_shifters) if given."""
        X, taps4 = self._pass_mm(x, True, taps is not None)
        if taps4 is not None:
            self._taps_to(taps, taps4, True)
        return X.T

    def backward(self, y: NDArray, taps: NDArray | None = None) -> NDArray:
        """Propagate adjoint fields y (batch, n) output -> input with U^T; fill taps if given."""
        Y, taps4 = self._pass_mm(y, False, taps is not None)
        if taps4 is not None:
            self._taps_to(taps, taps4, False)
        return Y.T

    def tap_depth(self) -> NDArray[np.intp]:
        """Loss stages (columns) between the input and each tap, channel order."""
        col = self.layout.col
        return np.concatenate([col, col])

    def heater_positions(self, x0: float) -> tuple[NDArray, float]:
        """Heater (x, y) positions from x0 and the x where the next stage starts."""
        return mesh_heater_positions(self.layout, x0, out_phase=False), x0 + 2 * self.layout.n_columns


class PhaseScreen:
    """Output phase shifters, one per mode: channels [psi (n)]."""

    def __init__(self, n: int, dtype: type = np.complex64):
        self.n, self.n_shifters = n, n
        self.cdtype = np.dtype(dtype)
        self.set_phases(np.zeros(n))

    def set_phases(self, phases: NDArray) -> None:
        """True phases psi (rad)."""
        self._e = np.exp(1j * np.asarray(phases, np.float64)).astype(self.cdtype)

    def forward(self, x: NDArray, taps: NDArray | None = None) -> NDArray:
        """x * e^{i psi}; taps see the field after the shifter."""
        x = np.asarray(x, self.cdtype) * self._e
        if taps is not None:
            taps[:] = x
        return x

    def backward(self, y: NDArray, taps: NDArray | None = None) -> NDArray:
        """Adjoint through the screen (diagonal: its own transpose)."""
        y = np.asarray(y, self.cdtype)
        if taps is not None:
            taps[:] = y
        return y * self._e

    def tap_depth(self) -> NDArray[np.intp]:
        """Screen taps sit after every column of the layer (set by MeshLayer)."""
        return np.zeros(self.n, np.intp)

    def heater_positions(self, x0: float) -> tuple[NDArray, float]:
        """One heater per mode at x0."""
        return np.stack([np.full(self.n, x0), np.arange(self.n, dtype=np.float64)], 1), x0 + 2


class AttenuatorColumn:
    """One MZI attenuator per mode (second input dark, second output dumped): channels [theta, phi]."""

    def __init__(self, n: int, alpha1: NDArray | None = None, alpha2: NDArray | None = None,
                 eta: NDArray | None = None, dtype: type = np.complex64):
        self.n, self.n_shifters = n, 2 * n
        self.cdtype = np.dtype(dtype)
        r = np.float32 if self.cdtype == np.complex64 else np.float64
        c1, s1 = _coupler(np.zeros(n) if alpha1 is None else alpha1)
        c2, s2 = _coupler(np.zeros(n) if alpha2 is None else alpha2)
        eta = np.ones((2, n)) if eta is None else np.asarray(eta)
        self._k1c, self._k1s = c1.astype(r), (1j * s1).astype(self.cdtype)
        self._k2c, self._k2s = c2.astype(r), (1j * s2).astype(self.cdtype)
        self._eta_t, self._eta_b = eta[0].astype(r), eta[1].astype(r)
        self.set_phases(np.zeros(2 * n))

    def set_phases(self, phases: NDArray) -> None:
        """True phases [theta..., phi...] (rad)."""
        n = self.n
        self._et = np.exp(1j * np.asarray(phases[:n], np.float64)).astype(self.cdtype)
        self._ep = np.exp(1j * np.asarray(phases[n:], np.float64)).astype(self.cdtype)
        self._tau = (self._ep * (self._eta_t * self._k1c * self._k2c * self._et
                                 + self._eta_b * self._k1s * self._k2s)).astype(self.cdtype)

    def forward(self, x: NDArray, taps: NDArray | None = None) -> NDArray:
        """Through fields tau * x; taps see theta (top arm) and phi (input) fields."""
        x = np.asarray(x, self.cdtype)
        if taps is not None:
            a = self._ep * x
            taps[:, self.n:] = a
            taps[:, : self.n] = self._et * self._k1c * a
        return x * self._tau

    def backward(self, y: NDArray, taps: NDArray | None = None) -> NDArray:
        """Adjoint through the attenuators (tau is its own transpose)."""
        y = np.asarray(y, self.cdtype)
        if taps is not None:
            p = self._eta_t * self._k2c * y
            q = self._eta_b * self._k2s * y
            taps[:, : self.n] = p
            taps[:, self.n:] = self._k1c * self._et * p + self._k1s * q
        return y * self._tau

    def tap_depth(self) -> NDArray[np.intp]:
        """Attenuator taps: before the attenuator's own loss."""
        return np.zeros(2 * self.n, np.intp)

    def heater_positions(self, x0: float) -> tuple[NDArray, float]:
        """phi heaters at x0, theta heaters at x0 + 1."""
        y = np.arange(self.n, dtype=np.float64)
        pos = np.concatenate([np.stack([np.full(self.n, x0 + 1), y], 1), np.stack([np.full(self.n, x0), y], 1)])
        return pos, x0 + 2


class Gain:
    """Amplifier of field gain A on every mode (no phase shifters)."""

    n_shifters = 0

    def __init__(self, n: int, gain: float, dtype: type = np.complex64):
        self.n, self.gain, self.cdtype = n, float(gain), np.dtype(dtype)

    def set_phases(self, phases: NDArray) -> None:
        """No phases."""

    def forward(self, x: NDArray, taps: NDArray | None = None) -> NDArray:
        """A * x."""
        return np.asarray(x, self.cdtype) * self.cdtype.type(self.gain)

    def backward(self, y: NDArray, taps: NDArray | None = None) -> NDArray:
        """A * y."""
        return np.asarray(y, self.cdtype) * self.cdtype.type(self.gain)

    def tap_depth(self) -> NDArray[np.intp]:
        """No taps."""
        return np.zeros(0, np.intp)

    def heater_positions(self, x0: float) -> tuple[NDArray, float]:
        """No heaters."""
        return np.zeros((0, 2)), x0


def layer_stage_sizes(kind: str, n: int, mesh: str = "rectangular", screen: bool = True) -> list[tuple[str, int]]:
    """(stage name, channels) of a layer of kind 'unitary' or 'svd' on n ports."""
    k = mesh_layout(n, mesh).n_mzi
    if kind == "unitary":
        return [("mesh", 2 * k)] + ([("screen", n)] if screen else [])
    if kind == "svd":
        return [("mesh_in", 2 * k), ("attenuators", 2 * n), ("mesh_out", 2 * k), ("screen", n), ("gain", 0)]
    raise ValueError(f"layer kind must be 'unitary' or 'svd', got {kind!r}")


class MeshLayer:
    """A chain of stages on n ports with one flat vector of phase-shifter channels (and taps)."""

    def __init__(self, stages: list, n: int):
        self.stages, self.n = stages, n
        sizes = [s.n_shifters for s in stages]
        self._bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
        self.n_shifters = int(self._bounds[-1])
        self.cdtype = stages[0].cdtype
        self._matrix: NDArray | None = None
        self._taps: list[NDArray | None] | None = None   # tap matrices per stage (dense_taps), with _matrix
        self.phases = np.zeros(self.n_shifters)

    @classmethod
    def build(cls, kind: str, n: int, mesh: str = "rectangular", errors: list[MeshErrors] | None = None,
              attenuator: tuple[NDArray, NDArray, NDArray] | None = None, gain: float = 1.0,
              dtype: type = np.complex64, screen: bool = True) -> "MeshLayer":
        """A 'unitary' or 'svd' layer; errors holds one MeshErrors per MZI block (None: ideal).

        screen=False drops the output phase screen of a unitary layer (its phases do not change output
        powers); svd layers always keep it (it is part of the programmed matrix)."""
        layout = mesh_layout(n, mesh)
        errs = errors or [None, None]
        if kind == "unitary":
            stages: list = [MZIColumns(layout, errs[0], dtype)]
            if screen:
                stages.append(PhaseScreen(n, dtype))
            return cls(stages, n)
        if kind == "svd":
            a1, a2, eta = attenuator if attenuator is not None else (None, None, None)
            return cls([MZIColumns(layout, errs[0], dtype), AttenuatorColumn(n, a1, a2, eta, dtype),
                        MZIColumns(layout, errs[1], dtype), PhaseScreen(n, dtype), Gain(n, gain, dtype)], n)
        raise ValueError(f"layer kind must be 'unitary' or 'svd', got {kind!r}")

    def set_phases(self, phases: NDArray) -> None:
        """True phases of every channel (rad), in channel order."""
        phases = np.asarray(phases, np.float64)
        if phases.shape != (self.n_shifters,):
            raise ValueError(f"mesh layer: expected {self.n_shifters} phases, got {phases.shape}")
        self.phases = phases.copy()
        b = self._bounds
        for i, s in enumerate(self.stages):
            s.set_phases(phases[b[i]: b[i + 1]])
        self._matrix = self._taps = None

    def matrix(self) -> NDArray:
        """Transfer matrix U (n, n) of the layer (cached until the phases change)."""
        if self._matrix is None:
            x = np.eye(self.n, dtype=self.cdtype)
            for s in self.stages:
                x = s.forward(x)
            self._matrix = x.T.copy()   # rows of x are U e_j, so U = x.T
        return self._matrix

    def dense_work(self, batch: int) -> bool:
        """Whether tap records of this batch take the dense tap matrices (n <= DENSE_PORTS, n^3 batch <= DENSE_WORK)."""
        return self.n <= DENSE_PORTS and self.n ** 3 * batch <= DENSE_WORK

    def forward(self, x: NDArray, record: bool = False) -> tuple[NDArray, NDArray | None]:
        """Output fields (batch, n) and, if record, the field at every shifter (batch, n_shifters); a batch whose
        tap records will be dense gets the transfer matrix from the identity's recorded pass (dense_taps)."""
        if not record:
            if self._matrix is None and self.dense_work(np.shape(x)[0]):
                self.dense_taps()
            return np.asarray(x, self.cdtype) @ self.matrix().T, None
        taps = np.empty((x.shape[0], self.n_shifters), self.cdtype)
        b = self._bounds
        for i, s in enumerate(self.stages):
            x = s.forward(x, taps[:, b[i]: b[i + 1]] if s.n_shifters else None)
        return x, taps

    def backward(self, y: NDArray, record: bool = False) -> tuple[NDArray, NDArray | None]:
        """Adjoint fields at the inputs (batch, n) for adjoint y injected at the outputs, and taps."""
        if not record:
            return np.asarray(y, self.cdtype) @ self.matrix(), None
        taps = np.empty((y.shape[0], self.n_shifters), self.cdtype)
        b = self._bounds
        for i in range(len(self.stages) - 1, -1, -1):
            s = self.stages[i]
            y = s.backward(y, taps[:, b[i]: b[i + 1]] if s.n_shifters else None)
        return y, taps

    def tap_powers(self, x: NDArray, forward: bool = True) -> tuple[NDArray, NDArray[np.float64]]:
        """Fields after the pass (batch, n) and the batch sum of |tap|^2 at every shifter (n_shifters,), float64."""
        out = np.zeros(self.n_shifters, np.float64)
        b = self._bounds
        order = range(len(self.stages)) if forward else range(len(self.stages) - 1, -1, -1)
        for i in order:
            s = self.stages[i]
            if isinstance(s, MZIColumns):
                x, out[b[i]: b[i + 1]] = s.tap_powers(x, forward)
            elif s.n_shifters:
                t = np.empty((np.shape(x)[0], s.n_shifters), self.cdtype)
                x = s.forward(x, t) if forward else s.backward(x, t)
                out[b[i]: b[i + 1]] = np.sum(t.real.astype(np.float64) ** 2 + t.imag.astype(np.float64) ** 2, 0)
            else:
                x = s.forward(x) if forward else s.backward(x)
        return x, out

    def dense_taps(self) -> list[NDArray | None]:
        """Tap matrices per stage from one recorded pass of the identity (cached with matrix() until the phases
        change): MZI columns (2 n_mzi, n) with rows [after phi, after theta] of each MZI, so the record of fields
        x is T @ x.T; other stages (n, channels), record x @ T; None for stages without shifters."""
        if self._taps is None:
            x: NDArray = np.eye(self.n, dtype=self.cdtype)
            taps: list[NDArray | None] = []
            for s in self.stages:
                if isinstance(s, MZIColumns):
                    xm, t4 = s._pass_mm(x, True, True)
                    x = xm.T
                    taps.append(np.ascontiguousarray(t4[:, :2]).reshape(2 * s.n_mzi, self.n))
                elif s.n_shifters:
                    r = np.empty((self.n, s.n_shifters), self.cdtype)
                    x = s.forward(x, r)
                    taps.append(r)
                else:
                    x = s.forward(x)
                    taps.append(None)
            self._taps = taps
            if self._matrix is None:
                self._matrix = np.ascontiguousarray(x.T)   # rows of x are U e_j, so U = x.T
        return self._taps

    def tap_record(self, x: NDArray) -> list[NDArray]:
        """Complex fields at every shifter for forward fields x (batch, n), one array per stage (MZI columns:
        (n_mzi, 2, batch) rows, other stages (batch, channels)); records add like the fields (linearity).
        Small work (n^3 batch <= DENSE_WORK, n <= DENSE_PORTS) takes one product per stage with dense_taps."""
        if self.dense_work(np.shape(x)[0]):
            xc = np.asarray(x, self.cdtype)
            out: list[NDArray] = []
            for s, t in zip(self.stages, self.dense_taps()):
                if isinstance(s, MZIColumns):
                    out.append(np.matmul(t, xc.T).reshape(s.n_mzi, 2, xc.shape[0]))
                elif t is not None:
                    out.append(xc @ t)
                else:
                    out.append(np.zeros((xc.shape[0], 0), self.cdtype))
            return out
        recs: list[NDArray] = []
        for s in self.stages:
            if isinstance(s, MZIColumns):
                x, r = s.tap_record(x, True)
            elif s.n_shifters:
                r = np.empty((np.shape(x)[0], s.n_shifters), self.cdtype)
                x = s.forward(x, r)
            else:
                x, r = s.forward(x), np.zeros((np.shape(x)[0], 0), self.cdtype)
            recs.append(r)
        return recs

    def record_powers(self, *records: list[NDArray]) -> NDArray[np.float64]:
        """Batch sum of |tap|^2 per shifter (n_shifters,), float64, of the sum of one or more tap_records."""
        if len(self.stages) == 1 and isinstance(self.stages[0], MZIColumns):     # a unitary layer without screen
            r = records[0][0]
            for rec in records[1:]:
                r = r + rec[0]
            return self.stages[0].record_powers(r, True)
        out = np.zeros(self.n_shifters, np.float64)
        b = self._bounds
        for i, s in enumerate(self.stages):
            r = records[0][i] if len(records) == 1 else sum(rec[i] for rec in records[1:]) + records[0][i]
            if isinstance(s, MZIColumns):
                out[b[i]: b[i + 1]] = s.record_powers(r, True)
            elif s.n_shifters:
                out[b[i]: b[i + 1]] = np.sum(r.real.astype(np.float64) ** 2 + r.imag.astype(np.float64) ** 2, 0)
        return out

    def tap_depth(self) -> NDArray[np.intp]:
        """Loss stages (MZI columns) between the layer input and each tap, channel order."""
        out, depth = [], 0
        for s in self.stages:
            out.append(s.tap_depth() + depth)
            if isinstance(s, MZIColumns):
                depth += s.layout.n_columns
        return np.concatenate(out) if out else np.zeros(0, np.intp)

    def loss_columns(self) -> int:
        """Columns of lossy waveguide between the layer's input and output (MZI columns, attenuators)."""
        return int(sum(s.layout.n_columns if isinstance(s, MZIColumns) else isinstance(s, AttenuatorColumn)
                       for s in self.stages))

    def heater_positions(self) -> NDArray[np.float64]:
        """(x, y) of every heater, channel order (mode pitch units)."""
        x0, out = 0.0, []
        for s in self.stages:
            pos, x0 = s.heater_positions(x0)
            out.append(pos)
        return np.concatenate(out, 0)
