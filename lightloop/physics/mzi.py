"""Integrated-chip physics: MZI transfer matrices, rectangular and triangular meshes, unitary and SVD
decompositions, thermo-optic phase shifters, the opto-electronic activation and the in-situ gradient.

Conventions (Hughes et al., Optica 5, 864 (2018); Pai et al., Science 380, 398 (2023)):

* A directional coupler with splitting error alpha is B(alpha) = [[cos(pi/4 + alpha), i sin(pi/4 + alpha)],
  [i sin(pi/4 + alpha), cos(pi/4 + alpha)]]; alpha = 0 is an ideal 50:50 coupler.
* An MZI on modes (m, m+1) applies the external phase phi on its top input arm, coupler 1, the internal
  phase theta on its top arm, its insertion loss (amplitude eta on both arms) and coupler 2:
  T(theta, phi) = eta B(alpha2) diag(e^{i theta}, 1) B(alpha1) diag(e^{i phi}, 1)
                = eta i e^{i theta/2} [[e^{i phi} sin(theta/2), cos(theta/2)], [e^{i phi} cos(theta/2), -sin(theta/2)]]
  for ideal couplers: theta = 0 is the cross state, theta = pi the bar state.
* A mesh is a sequence of columns of MZIs on disjoint mode pairs, followed by an output phase screen
  D = diag(e^{i psi}): U = D T_K ... T_1. Fields are batch-first, y = x @ U.T.
  Rectangular (Clements et al., Optica 3, 1460 (2016)): N columns, N(N-1)/2 MZIs, column k holds the MZIs
  on modes (m, m+1) with m = k mod 2, k mod 2 + 2, ... Triangular (Reck et al., PRL 73, 58 (1994)):
  2N-3 columns, the same number of MZIs.
* Thermo-optic shifter (docs/architecture.md): phase = phi0 + (C P) / P_pi with heater power P = V^2 / R and thermal
  crosstalk matrix C (C_ii = 1) acting on heater powers; P_pi is the heater power per radian (W/rad).
* Opto-electronic activation (Ashtiani et al., Nature 606, 501 (2022); Ashtiani & Idjadi, arXiv 2307.10179):
  a photodiode turns the layer's output power p = |z|^2 into a current that shifts a ring modulator's
  resonance; the ring modulates a fresh supply carrier of power P_s:
  u = delta + k p,  T(u) = 1 - (1 - T_min) / (1 + u^2),  a(p) = sqrt(P_s T(u))   (real amplitude),
  a'(p) = sqrt(P_s) (1 - T_min) k u / ((1 + u^2)^2 sqrt(T(u))).
* In-situ gradient (Hughes 2018, Eq. 7; Pai 2023): for a loss L of the mesh outputs, a phase shifter with
  forward field u (after the shifter) and adjoint field v (injected at the outputs as dL/dy, propagated
  backward) has dL/dphi = -2 Im(u v). Injecting the time-reversed adjoint x_TR = -i conj(v_in) together
  with the forward input gives dL/dphi = I_sum - I_fwd - I_adj from three intensity measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "beamsplitter",
    "mzi_transfer",
    "MeshLayout",
    "rectangular_layout",
    "triangular_layout",
    "mesh_layout",
    "MeshPhases",
    "mesh_matrix",
    "decompose",
    "random_unitary",
    "SVDPhases",
    "svd_decompose",
    "svd_matrix",
    "attenuator_transmission",
    "heater_power",
    "thermo_optic_phase",
    "eo_activation",
    "eo_activation_slope",
    "insitu_gradient",
    "mesh_heater_positions",
    "thermal_crosstalk",
]

_PI4 = np.pi / 4


# --- single elements ------------------------------------------------------------------------------
def beamsplitter(alpha: ArrayLike = 0.0) -> NDArray[np.complex128]:
    """Directional coupler(s) with splitting error alpha (rad): (..., 2, 2), 50:50 at alpha = 0."""
    a = np.asarray(alpha, dtype=np.float64) + _PI4
    c, s = np.cos(a), 1j * np.sin(a)
    return np.stack([np.stack([c, s], -1), np.stack([s, c], -1)], -2)


def mzi_transfer(theta: ArrayLike, phi: ArrayLike, alpha1: ArrayLike = 0.0, alpha2: ArrayLike = 0.0,
                 eta: ArrayLike = 1.0) -> NDArray[np.complex128]:
    """MZI transfer matrices T = eta B(alpha2) diag(e^{i theta}, 1) B(alpha1) diag(e^{i phi}, 1): (..., 2, 2)."""
    theta, phi = np.asarray(theta, np.float64), np.asarray(phi, np.float64)
    shape = np.broadcast_shapes(theta.shape, phi.shape, np.shape(alpha1), np.shape(alpha2), np.shape(eta))
    b1 = beamsplitter(np.broadcast_to(alpha1, shape))
    b2 = beamsplitter(np.broadcast_to(alpha2, shape))
    d_t = np.zeros(shape + (2, 2), np.complex128)
    d_t[..., 0, 0] = np.exp(1j * np.broadcast_to(theta, shape))
    d_t[..., 1, 1] = 1.0
    d_p = np.zeros(shape + (2, 2), np.complex128)
    d_p[..., 0, 0] = np.exp(1j * np.broadcast_to(phi, shape))
    d_p[..., 1, 1] = 1.0
    return np.asarray(eta)[..., None, None] * (b2 @ d_t @ b1 @ d_p)


def attenuator_transmission(theta: ArrayLike, phi: ArrayLike, alpha1: ArrayLike = 0.0, alpha2: ArrayLike = 0.0,
                            eta: ArrayLike = 1.0) -> NDArray[np.complex128]:
    """Through field of an MZI attenuator (second input dark, second output dumped): T[0, 0]."""
    return mzi_transfer(theta, phi, alpha1, alpha2, eta)[..., 0, 0]


# --- layouts ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MeshLayout:
    """Positions of the MZIs of an N-mode mesh: columns[k] holds the top modes m of column k's MZIs.

    MZIs are numbered column by column (flat order); col[j], mode[j] give MZI j's column and top mode.
    """

    n: int
    kind: str
    columns: tuple[NDArray[np.intp], ...]

    @property
    def n_mzi(self) -> int:
        """Number of MZIs, N(N-1)/2 for a full mesh."""
        return int(sum(c.size for c in self.columns))

    @property
    def n_columns(self) -> int:
        """Number of MZI columns (optical depth of the mesh)."""
        return len(self.columns)

    @property
    def col(self) -> NDArray[np.intp]:
        """Column index of each MZI (flat order)."""
        return np.concatenate([np.full(c.size, k, np.intp) for k, c in enumerate(self.columns)]) \
            if self.columns else np.zeros(0, np.intp)

    @property
    def mode(self) -> NDArray[np.intp]:
        """Top mode of each MZI (flat order)."""
        return np.concatenate(self.columns) if self.columns else np.zeros(0, np.intp)

    @property
    def offsets(self) -> NDArray[np.intp]:
        """Flat index of the first MZI of every column (length n_columns + 1)."""
        return np.concatenate([[0], np.cumsum([c.size for c in self.columns])]).astype(np.intp)


def _clements_sequence(n: int) -> tuple[list[tuple[str, int, int, int]], int]:
    """Nulling steps of the Clements algorithm: ('R'|'L', row, col, top mode) in nulling order."""
    steps = []
    for i in range(n - 1):
        if i % 2 == 0:
            for j in range(i + 1):
                steps.append(("R", n - 1 - j, i - j, i - j))
        else:
            for j in range(1, i + 2):
                steps.append(("L", n + j - i - 2, j - 1, n + j - i - 3))
    return steps, n


def _reck_sequence(n: int) -> list[tuple[str, int, int, int]]:
    """Nulling steps of the Reck algorithm (right multiplications only)."""
    return [("R", r, c, c) for r in range(n - 1, 0, -1) for c in range(r)]


def _application_order(kind: str, n: int) -> list[tuple[int, int]]:
    """(step index, top mode) of each MZI in the order light meets it (first = nearest the input)."""
    if kind == "rectangular":
        steps, _ = _clements_sequence(n)
        rights = [(k, s[3]) for k, s in enumerate(steps) if s[0] == "R"]
        lefts = [(k, s[3]) for k, s in enumerate(steps) if s[0] == "L"]
        return rights + lefts[::-1]
    steps = _reck_sequence(n)
    return [(k, s[3]) for k, s in enumerate(steps)]


@lru_cache(maxsize=None)
def _schedule(kind: str, n: int) -> tuple[tuple[NDArray[np.intp], ...], NDArray[np.intp]]:
    """Columns of a mesh (as-soon-as-possible layering with column parity = mode parity) and, for
    each flat MZI, the index of the nulling step that sets it."""
    order = _application_order(kind, n)
    last = np.full(n, -1)
    placed: dict[int, list[tuple[int, int]]] = {}
    for step, m in order:
        c = max(last[m], last[m + 1]) + 1
        if c % 2 != m % 2:
            c += 1
        last[m] = last[m + 1] = c
        placed.setdefault(c, []).append((m, step))
    n_cols = max(placed) + 1 if placed else 0
    columns, steps = [], []
    for c in range(n_cols):
        items = sorted(placed.get(c, []))
        columns.append(np.array([m for m, _ in items], np.intp))
        steps.extend(s for _, s in items)
    for col in columns:
        col.setflags(write=False)
    return tuple(columns), np.array(steps, np.intp)


def rectangular_layout(n: int) -> MeshLayout:
    """Clements rectangular mesh of n modes: n columns (n >= 2), N(N-1)/2 MZIs."""
    if n < 1:
        raise ValueError(f"mesh size must be >= 1, got {n}")
    cols, _ = _schedule("rectangular", n)
    if n > 1:
        assert len(cols) <= n, "Clements schedule must fit n columns"
    return MeshLayout(n, "rectangular", cols)


def triangular_layout(n: int) -> MeshLayout:
    """Reck triangular mesh of n modes: 2n-3 columns (n >= 2), N(N-1)/2 MZIs."""
    if n < 1:
        raise ValueError(f"mesh size must be >= 1, got {n}")
    cols, _ = _schedule("triangular", n)
    return MeshLayout(n, "triangular", cols)


def mesh_layout(n: int, kind: str = "rectangular") -> MeshLayout:
    """Layout by name: 'rectangular' (Clements) or 'triangular' (Reck)."""
    if kind == "rectangular":
        return rectangular_layout(n)
    if kind == "triangular":
        return triangular_layout(n)
    raise ValueError(f"mesh kind must be 'rectangular' or 'triangular', got {kind!r}")


# --- mesh matrix and decomposition -----------------------------------------------------------------
@dataclass
class MeshPhases:
    """Phases of a mesh: theta, phi per MZI (flat layout order) and the output screen psi (n,), rad."""

    theta: NDArray[np.float64]
    phi: NDArray[np.float64]
    out_phase: NDArray[np.float64]

    def flat(self) -> NDArray[np.float64]:
        """[theta..., phi..., psi...] (the order of a mesh's phase-shifter channels)."""
        return np.concatenate([self.theta, self.phi, self.out_phase])


def mesh_matrix(layout: MeshLayout, theta: ArrayLike, phi: ArrayLike, out_phase: ArrayLike | None = None,
                alpha1: ArrayLike = 0.0, alpha2: ArrayLike = 0.0, eta: ArrayLike = 1.0) -> NDArray[np.complex128]:
    """Transfer matrix U (n, n) of a mesh, complex128 (column loop; for physics and tests)."""
    n, k = layout.n, layout.n_mzi
    bc = lambda a: np.broadcast_to(np.asarray(a, np.float64), (k,))  # noqa: E731
    t = mzi_transfer(bc(theta), bc(phi), bc(alpha1), bc(alpha2), bc(eta))
    u = np.eye(n, dtype=np.complex128)
    off = layout.offsets
    for c, m in enumerate(layout.columns):
        tc = t[off[c]: off[c + 1]]
        top, bot = u[m].copy(), u[m + 1].copy()
        u[m] = tc[:, 0, 0, None] * top + tc[:, 0, 1, None] * bot
        u[m + 1] = tc[:, 1, 0, None] * top + tc[:, 1, 1, None] * bot
    if out_phase is not None:
        u = np.exp(1j * np.asarray(out_phase, np.float64))[:, None] * u
    return u


def _null_right(u: NDArray, r: int, c: int) -> tuple[float, float]:
    """(theta, phi) with (U T^-1)[r, c] = 0, T on modes (c, c+1)."""
    a, b = u[r, c], u[r, c + 1]
    theta = 2 * np.arctan2(abs(b), abs(a))
    phi = np.angle(a) - np.angle(b) + np.pi if abs(b) > 0 else 0.0
    return float(theta), float(phi)


def _null_left(u: NDArray, r: int, c: int) -> tuple[float, float]:
    """(theta, phi) with (T U)[r+1, c] = 0, T on modes (r, r+1)."""
    a, b = u[r, c], u[r + 1, c]
    theta = 2 * np.arctan2(abs(a), abs(b))
    phi = np.angle(b) - np.angle(a) if abs(a) > 0 else 0.0
    return float(theta), float(phi)


def decompose(u: ArrayLike, kind: str = "rectangular") -> MeshPhases:
    """Phases (theta, phi, psi) of an ideal mesh realising the unitary U (Clements 2016 / Reck 1994)."""
    u = np.array(u, dtype=np.complex128)
    n = u.shape[0]
    if u.shape != (n, n):
        raise ValueError(f"decompose: expected a square matrix, got shape {u.shape}")
    if not np.allclose(u @ u.conj().T, np.eye(n), atol=1e-8):
        raise ValueError("decompose: matrix is not unitary (|U U^H - I| > 1e-8)")
    layout = mesh_layout(n, kind)
    _, step_of = _schedule(kind, n)
    steps = _clements_sequence(n)[0] if kind == "rectangular" else _reck_sequence(n)
    theta = np.zeros(len(steps))
    phi = np.zeros(len(steps))
    lefts = []
    for k, (side, r, c, m) in enumerate(steps):
        if side == "R":
            th, ph = _null_right(u, r, c)
            t = mzi_transfer(th, ph)
            cols = u[:, [m, m + 1]] @ t.conj().T
            u[:, m], u[:, m + 1] = cols[:, 0], cols[:, 1]
            theta[k], phi[k] = th, ph
        else:
            th, ph = _null_left(u, m, c)
            t = mzi_transfer(th, ph)
            rows = t @ u[[m, m + 1], :]
            u[m], u[m + 1] = rows[0], rows[1]
            theta[k] = th
            lefts.append((k, m, th, ph))
    d = np.diag(u).copy()
    # move every left MZI to the right of the diagonal: T^-1(theta, phi) D = D' T(theta, phi')
    for k, m, th, ph in reversed(lefts):
        d1, d2 = d[m], d[m + 1]
        phi[k] = np.angle(d1) - np.angle(d2)
        d[m] = -np.exp(-1j * (th + ph)) * d2
        d[m + 1] = -np.exp(-1j * th) * d2
    return MeshPhases(theta[step_of], np.mod(phi[step_of], 2 * np.pi), np.mod(np.angle(d), 2 * np.pi))


def random_unitary(n: int, rng: np.random.Generator) -> NDArray[np.complex128]:
    """Haar-random unitary (QR of a complex Gaussian matrix with phase-corrected R)."""
    z = (rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))) / np.sqrt(2)
    q, r = np.linalg.qr(z)
    return q * (np.diag(r) / np.abs(np.diag(r)))[None, :]


# --- SVD layers ------------------------------------------------------------------------------------
@dataclass
class SVDPhases:
    """An arbitrary (out, in) matrix as W = gain * crop(D2 M2 diag(att) M1): two meshes, a column of MZI
    attenuators and an amplifier gain (>= 1 only where the largest singular value demands it)."""

    n: int
    mesh_in: MeshPhases     # M1 realises V^H (its output screen is folded into the attenuator phases)
    att_theta: NDArray[np.float64]
    att_phi: NDArray[np.float64]
    mesh_out: MeshPhases    # D2 M2 realises U
    gain: float

    def flat(self) -> NDArray[np.float64]:
        """[M1 theta, M1 phi, att theta, att phi, M2 theta, M2 phi, M2 psi] (phase-shifter channel order)."""
        return np.concatenate([self.mesh_in.theta, self.mesh_in.phi, self.att_theta, self.att_phi,
                               self.mesh_out.theta, self.mesh_out.phi, self.mesh_out.out_phase])


def svd_decompose(w: ArrayLike, kind: str = "rectangular", n: int | None = None) -> SVDPhases:
    """Phases and gain realising W (out, in) on n = max(out, in) ports (zero-padded): W = U S V^H."""
    w = np.asarray(w, dtype=np.complex128)
    n_out, n_in = w.shape
    n = n or max(n_out, n_in)
    if n < max(n_out, n_in):
        raise ValueError(f"svd_decompose: {n} ports cannot hold a {w.shape} matrix")
    wp = np.zeros((n, n), np.complex128)
    wp[:n_out, :n_in] = w
    u, s, vh = np.linalg.svd(wp)
    gain = max(1.0, float(s[0]))
    t = np.clip(s / gain, 0.0, 1.0)
    m1 = decompose(vh, kind)
    m2 = decompose(u, kind)
    att_theta = 2 * np.arcsin(t)
    # T00 = i e^{i theta/2} e^{i phi} sin(theta/2) must equal t_k d1_k (it takes over mesh 1's output screen)
    att_phi = np.mod(m1.out_phase - np.pi / 2 - att_theta / 2, 2 * np.pi)
    mesh_in = MeshPhases(m1.theta, m1.phi, np.zeros(n))
    return SVDPhases(n, mesh_in, att_theta, att_phi, m2, gain)


def svd_matrix(p: SVDPhases, kind: str = "rectangular", shape: tuple[int, int] | None = None) -> NDArray[np.complex128]:
    """The (cropped) matrix realised by SVD-layer phases on an ideal chip."""
    layout = mesh_layout(p.n, kind)
    m1 = mesh_matrix(layout, p.mesh_in.theta, p.mesh_in.phi)
    m2 = mesh_matrix(layout, p.mesh_out.theta, p.mesh_out.phi, p.mesh_out.out_phase)
    att = attenuator_transmission(p.att_theta, p.att_phi)
    w = p.gain * (m2 @ (att[:, None] * m1))
    return w if shape is None else w[: shape[0], : shape[1]]


# --- thermo-optic phase shifters -----------------------------------------------------------------------
def heater_power(volts: ArrayLike, resistance_ohm: ArrayLike) -> NDArray[np.float64]:
    """Joule power P = V^2 / R (W)."""
    v = np.asarray(volts, np.float64)
    return v * v / np.asarray(resistance_ohm, np.float64)


def thermo_optic_phase(volts: ArrayLike, phi0: ArrayLike, p_pi_w: ArrayLike, resistance_ohm: ArrayLike,
                       crosstalk: object | None = None) -> NDArray[np.float64]:
    """phase = phi0 + (C P) / P_pi, P = V^2 / R; C (dense or scipy.sparse, C_ii = 1) couples heater powers."""
    p = heater_power(volts, resistance_ohm)
    if crosstalk is not None:
        p = crosstalk @ p
    return np.asarray(phi0, np.float64) + p / np.asarray(p_pi_w, np.float64)


# --- opto-electronic activation ---------------------------------------------------------------------
def _eo_u_t(p: NDArray, detuning: ArrayLike, k: ArrayLike, t_min: ArrayLike) -> tuple[NDArray, NDArray]:
    u = detuning + k * p
    t = 1.0 - (1.0 - t_min) / (1.0 + u * u)
    return u, t


def eo_activation(p: ArrayLike, detuning: ArrayLike = 0.0, k: ArrayLike = 1.0, t_min: ArrayLike = 0.0,
                  supply: ArrayLike = 1.0) -> NDArray:
    """Ring-modulator activation a(p) = sqrt(P_s T(delta + k p)), T(u) = 1 - (1 - T_min)/(1 + u^2)."""
    p = np.asarray(p)
    _, t = _eo_u_t(p, detuning, k, t_min)
    return np.sqrt(supply * np.maximum(t, 0.0))


def eo_activation_slope(p: ArrayLike, detuning: ArrayLike = 0.0, k: ArrayLike = 1.0, t_min: ArrayLike = 0.0,
                        supply: ArrayLike = 1.0) -> NDArray:
    """da/dp = sqrt(P_s) (1 - T_min) k u / ((1 + u^2)^2 sqrt(T(u))) (0 where T = 0)."""
    p = np.asarray(p)
    u, t = _eo_u_t(p, detuning, k, t_min)
    root = np.sqrt(np.maximum(t, 0.0))
    num = np.sqrt(supply) * (1.0 - t_min) * k * u
    den = (1.0 + u * u) ** 2 * root
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(root > 0, num / np.where(root > 0, den, 1.0), np.sqrt(supply) * np.sqrt(1.0 - t_min) * k)
    return out.astype(p.dtype, copy=False) if p.dtype.kind == "f" else out


def insitu_gradient(i_fwd: ArrayLike, i_adj: ArrayLike, i_sum: ArrayLike) -> NDArray:
    """dL/dphi = I_sum - I_fwd - I_adj (time-reversed adjoint injected with phase -i; Hughes 2018)."""
    return np.asarray(i_sum) - np.asarray(i_fwd) - np.asarray(i_adj)


# --- thermal crosstalk geometry -------------------------------------------------------------------------
def mesh_heater_positions(layout: MeshLayout, x0: float = 0.0, out_phase: bool = True) -> NDArray[np.float64]:
    """(x, y) of a mesh's heaters in channel order [theta..., phi..., psi...], in units of the mode pitch.

    The external (phi) heater of an MZI in column c sits at x0 + 2c on its top input arm, the internal
    (theta) heater at x0 + 2c + 1 on its top arm; the output screen at x0 + 2 n_columns.
    """
    col, mode = layout.col.astype(np.float64), layout.mode.astype(np.float64)
    theta = np.stack([x0 + 2 * col + 1, mode], 1)
    phi = np.stack([x0 + 2 * col, mode], 1)
    parts = [theta, phi]
    if out_phase:
        parts.append(np.stack([np.full(layout.n, x0 + 2 * layout.n_columns), np.arange(layout.n, dtype=np.float64)], 1))
    return np.concatenate(parts, 0)


def thermal_crosstalk(positions: NDArray, nearest: float, decay_length: float = 1.0, cutoff: float = 3.0):
    """Sparse crosstalk matrix C (scipy CSR): C_ii = 1, C_ij = nearest * exp(-(d_ij - 1) / decay_length)
    for heaters closer than cutoff (d in mode pitches; nearest is the coupling at one pitch)."""
    from scipy import sparse
    from scipy.spatial import cKDTree

    n = positions.shape[0]
    if nearest == 0 or n == 0:
        return sparse.identity(n, format="csr", dtype=np.float64)
    pairs = cKDTree(positions).query_pairs(cutoff, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.linalg.norm(positions[i] - positions[j], axis=1)
    c = nearest * np.exp(-(d - 1.0) / decay_length)
    rows = np.concatenate([i, j, np.arange(n)])
    cols = np.concatenate([j, i, np.arange(n)])
    vals = np.concatenate([c, c, np.ones(n)])
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n, n))
