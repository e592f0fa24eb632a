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
        self._cols = []
        for c, m in enumerate(layout.columns):
            k = m.size
            if k and np.all(np.diff(m) == 2):
                sl_t, sl_b = slice(int(m[0]), int(m[0]) + 2 * k - 1, 2), slice(int(m[0]) + 1, int(m[0]) + 2 * k, 2)
            else:
                sl_t, sl_b = m, m + 1
            paired = np.zeros(self.n, bool)
            paired[m] = paired[m + 1] = True
            self._cols.append((slice(int(off[c]), int(off[c + 1])), sl_t, sl_b, m, ~paired))
        e = self.errors
        c1, s1 = _coupler(e.alpha1)
        c2, s2 = _coupler(e.alpha2)
        col, mode = layout.col, layout.mode
        eta_t, eta_b = e.eta[col, mode], e.eta[col, mode + 1]
        r = self.rdtype
        self._k1c, self._k1s = c1.astype(r), (1j * s1).astype(self.cdtype)
        self._k2c, self._k2s = c2.astype(r), (1j * s2).astype(self.cdtype)
        self._eta_t, self._eta_b = eta_t.astype(r), eta_b.astype(r)
        self._lossless_pass = bool(np.all(e.eta == 1.0))
        self._pass = [e.eta[c].astype(r) for c in range(layout.n_columns)]
        self.set_phases(np.zeros(self.n_shifters))

    # --- phases ------------------------------------------------------------------------------------
    def set_phases(self, phases: NDArray) -> None:
        """True phases [theta..., phi...] (rad)."""
        k = self.n_mzi
        th, ph = np.asarray(phases[:k], np.float64), np.asarray(phases[k:], np.float64)
        self._et = np.exp(1j * th).astype(self.cdtype)
        self._ep = np.exp(1j * ph).astype(self.cdtype)
        # fused 2x2: T = B2 diag(eta_t e^{i th}, eta_b) B1 diag(e^{i ph}, 1)
        k1c, k1s, k2c, k2s = self._k1c, self._k1s, self._k2c, self._k2s
        a = self._eta_t * self._et
        b = self._eta_b
        t00 = (k2c * a * k1c + k2s * b * k1s) * self._ep
        t01 = k2c * a * k1s + k2s * b * k1c
        t10 = (k2s * a * k1c + k2c * b * k1s) * self._ep
        t11 = k2s * a * k1s + k2c * b * k1c
        self._t = [x.astype(self.cdtype) for x in (t00, t01, t10, t11)]
        # combined coefficients of the recording passes
        self._a1 = (self._et * k1c).astype(self.cdtype)          # field after theta from a
        self._a2 = (self._et * k1s).astype(self.cdtype)          # ... from the bottom input
        self._c1 = (k2c * self._eta_t).astype(self.cdtype)       # top output from the theta field
        self._c2 = (k2s * self._eta_b).astype(self.cdtype)       # top output from the bottom arm
        self._c3 = (k2s * self._eta_t).astype(self.cdtype)
        self._c4 = (k2c * self._eta_b).astype(self.cdtype)

    # --- propagation -------------------------------------------------------------------------------
    def forward(self, x: NDArray, taps: NDArray | None = None) -> NDArray:
        """Propagate fields x (batch, n) input -> output; fill taps (batch, n_shifters) if given."""
        x = np.array(x, dtype=self.cdtype, copy=True)
        t00, t01, t10, t11 = self._t
        k = self.n_mzi
        for c, (fl, st, sb, _, unpaired) in enumerate(self._cols):
            if not self._lossless_pass and unpaired.any():
                x[:, unpaired] *= self._pass[c][unpaired]
            if fl.start == fl.stop:
                continue
            top, bot = x[:, st], x[:, sb]
            if taps is None:
                nt = t00[fl] * top + t01[fl] * bot
                nb = t10[fl] * top + t11[fl] * bot
            else:
                a = self._ep[fl] * top
                taps[:, k + fl.start: k + fl.stop] = a
                cc = self._a1[fl] * a
                cc += self._a2[fl] * bot
                taps[:, fl] = cc
                dd = self._k1s[fl] * a
                dd += self._k1c[fl] * bot
                nt = self._c1[fl] * cc
                nt += self._c2[fl] * dd
                nb = self._c3[fl] * cc
                nb += self._c4[fl] * dd
            x[:, st] = nt
            x[:, sb] = nb
        return x

    def backward(self, y: NDArray, taps: NDArray | None = None) -> NDArray:
        """Propagate adjoint fields y (batch, n) output -> input with U^T; fill taps if given."""
        y = np.array(y, dtype=self.cdtype, copy=True)
        t00, t01, t10, t11 = self._t
        k = self.n_mzi
        for c in range(len(self._cols) - 1, -1, -1):
            fl, st, sb, _, unpaired = self._cols[c]
            if fl.start != fl.stop:
                top, bot = y[:, st], y[:, sb]
                if taps is None:
                    nt = t00[fl] * top + t10[fl] * bot
                    nb = t01[fl] * top + t11[fl] * bot
                else:
                    p = self._c1[fl] * top
                    p += self._c3[fl] * bot
                    q = self._c2[fl] * top
                    q += self._c4[fl] * bot
                    taps[:, fl] = p
                    a = self._a1[fl] * p
                    a += self._k1s[fl] * q
                    taps[:, k + fl.start: k + fl.stop] = a
                    nb = self._a2[fl] * p
                    nb += self._k1c[fl] * q
                    nt = self._ep[fl] * a
                y[:, st] = nt
                y[:, sb] = nb
            if not self._lossless_pass and unpaired.any():
                y[:, unpaired] *= self._pass[c][unpaired]
        return y

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
        self._matrix = None

    def matrix(self) -> NDArray:
        """Transfer matrix U (n, n) of the layer (cached until the phases change)."""
        if self._matrix is None:
            x = np.eye(self.n, dtype=self.cdtype)
            for s in self.stages:
                x = s.forward(x)
            self._matrix = x.T.copy()   # rows of x are U e_j, so U = x.T
        return self._matrix

    def forward(self, x: NDArray, record: bool = False) -> tuple[NDArray, NDArray | None]:
        """Output fields (batch, n) and, if record, the field at every shifter (batch, n_shifters)."""
        if not record:
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
