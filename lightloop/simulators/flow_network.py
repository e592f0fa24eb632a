r"""Linear flow (resistor) network that learns by a non-interfering feedback signal.

Physics and learning rules of Anisetti, Scellier & Schwarz, "Learning by
non-interfering feedback chemical signaling in physical networks",
arXiv:2203.12098 (Phys. Rev. Research 5, 023024, 2023) -- "ASS22" below -- with
the two baselines it compares against: coupled learning (Stern, Hexner, Rocks &
Liu, Phys. Rev. X 11, 021045, 2021 -- "SHRL21") and equilibrium propagation
(Scellier & Bengio, Front. Comput. Neurosci. 11, 24, 2017 -- "SB17").

Units
-----
The model is dimensionless, as in ASS22. Read node potentials ``v`` as
pressures (or volts), edge conductances ``w`` as flow per pressure (siemens),
injected currents ``I`` as volumetric flow (amperes). Any consistent unit
system works because every equation is linear.

Network (ASS22)
-----------------------
Nodes ``0..n-1``, undirected edges ``e = (x, y)`` with conductance ``w_e > 0``.
With the incidence matrix ``B`` (``B[e, x] = +1``, ``B[e, y] = -1``) the
weighted graph Laplacian is ``L(w) = B^T diag(w) B`` and Kirchhoff's current
law for injected node currents ``I`` reads::

    L(w) v = I                                                     (1)

``L`` is singular (potentials are defined up to a constant), so one *ground*
node is held at ``v = 0`` and (1) is solved on the remaining nodes with the
reduced Laplacian, which is symmetric positive definite for a connected graph
with positive conductances. It is factored once per conductance vector (a
banded Cholesky in reverse Cuthill-McKee order, values assembled in place on the
fixed pattern -- :mod:`lightloop.simulators.flow_factor`; SuperLU in symmetric
mode for wide-band graphs) and reused for every right-hand side (inputs,
feedback, probes), so a whole batch is one pair of triangular solves. Every drive used here injects balanced
currents at node *pairs* (``+x`` at ``a``, ``-x`` at ``b``), so the choice of
ground node does not change any pressure drop; unbalanced currents drain into
the ground node (a reservoir).

Inputs, outputs, cost
---------------------
Following ASS22 inputs are applied as
currents: feature ``x_k`` is injected at input node ``a_k`` and withdrawn at
``b_k`` (:func:`input_currents`). Outputs are pressure drops across output
pairs ``(c_j, d_j)``: ``Delta v_j = v_{c_j} - v_{d_j} = (P v)_j`` with the
pair operator ``P`` (rows ``e_c - e_d``, :func:`pair_operator`). The cost of a
sample with desired outputs ``t`` is::

    C = 1/2 sum_j (Delta v_j - t_j)^2                               (2)

and batch quantities are means over the batch.

Chemical-signalling rule and why it is exact gradient descent (ASS22)
-------------------------------------------------------------------
The feedback (chemical) signal ``u`` is driven by currents injected at the
output pairs, ``E = -eta dC/dv = -eta P^T (P v - t)`` -- i.e.
``-eta (Delta v_j - t_j)`` enters at ``c_j`` and leaves at ``d_j`` -- and it
spreads through the *same* conductances without disturbing ``v`` (the two
signals superpose linearly but are read out separately, hence
"non-interfering")::

    L(w) u = E.                                                     (3)

Derivation. Differentiate (1) with respect to the conductance of edge
``e = (x, y)``: ``dL/dw_e = q_e q_e^T`` with ``q_e = e_x - e_y`` and ``I``
fixed, so ``L dv/dw_e = -q_e q_e^T v = -q_e v_xy``, i.e.
``dv/dw_e = -L^{-1} q_e v_xy`` (``v_xy = v_x - v_y``). By the chain rule and
the symmetry of ``L``::

    dC/dw_e = (dC/dv)^T dv/dw_e = -(P^T(Pv - t))^T L^{-1} q_e v_xy
            = (1/eta) (L^{-1} E)^T q_e v_xy = (1/eta) u_xy v_xy.      (4)

Hence the purely local update (ASS22's learning rule)::

    dw_xy = -alpha u_xy v_xy = -alpha eta dC/dw_xy                  (5)

is exactly gradient descent with step ``alpha * eta``: no free state needs to
be stored, because ``u`` and ``v`` coexist. The grounded node changes nothing
in (4): the derivation holds on the reduced system, and a grounded endpoint
simply has ``v = u = 0``. :func:`chemical_signaling_update` implements (3)-(5)
and is checked against central finite differences in the tests.

Equilibrium propagation (SB17, applied to resistor networks)
-----------------------------------------------------------
With current sources the equilibrium (1) minimises the energy
``E(v) = 1/2 sum_e w_e v_e^2 - I^T v`` (dissipation-like co-content minus
the work of the sources); ``dE/dw_e = 1/2 v_e^2`` at fixed ``v``. The nudged
state minimises ``E + beta C``, i.e.
``(L + beta P^T P) v^beta = I + beta P^T t``: physically each output pair is
tied through a conductance ``beta`` to a pressure source ``t_j``, which
injects the nudge current ``-beta dC/dv`` evaluated *at the nudged state*.
The EP theorem gives ``dC/dw_e = lim_{beta->0} (1/beta)[dE/dw_e(v^beta) -
dE/dw_e(v^0)] = lim (1/(2 beta)) [(v^beta_e)^2 - (v^0_e)^2]``, so::

    dw_EP = -alpha eta / (2 beta) [(v^beta_e)^2 - (v^0_e)^2]          (6)

converges to (5) with an error ``O(beta)`` (``O(beta^2)`` for the symmetric
``+-beta`` estimate). It needs the free state ``v^0`` stored while the
nudged one is measured -- the storage ASS22 remove.

Coupled learning (SHRL21)
-------------------------
The clamped state holds the output drops at
``Delta v^C = Delta v^F + nudge (t - Delta v^F)`` (pressure sources across the
output pairs, Lagrange-multiplier currents ``lambda``). The update::

    dw_CL = -alpha eta / (2 nudge) [(v^C_e)^2 - (v^F_e)^2]           (7)

(SHRL21's ``alpha/eta [(Delta p^F)^2 - (Delta p^C)^2]`` with the 1/2 and the
learning-rate convention of (5)). Since ``v^C - v^F = nudge L^{-1} P^T G^{-1}
(t - P v^F)`` exactly, with the output *transfer-resistance matrix*
``G = P L^{-1} P^T``, the limit ``nudge -> 0`` of (7) is the chemical rule
with *preconditioned* feedback currents ``E = -eta G^{-1} (P v - t)`` --
equivalently, feedback whose output pressure drops (not currents) equal
``-eta (Delta v - t)``. That is gradient descent on the metric cost
``1/2 (Delta v - t)^T G^{-1} (Delta v - t)`` with ``G`` held fixed, which
coincides with (5) only when ``G`` is the identity (e.g. one output pair of
unit transfer resistance). :func:`chemical_signaling_update` offers both
feedback modes (``feedback="current"``, ASS22; ``feedback="pressure"``, the CL
limit) and the tests check that CL converges linearly to the latter.

Conductance limits
------------------
Conductances live in ``[w_min, w_max]`` with ``w_min > 0`` (a vanishing
conductance could disconnect the graph and make (1) singular).
:meth:`FlowNetwork.apply_update` adds ``dw`` and clips each conductance into
the box -- projected gradient descent; edges sitting at a limit simply stop
moving in that direction, and the number clipped is returned so a trainer
can log saturation. Setting conductances directly outside the box is an
error, never a silent clip.

The perturbed lattice and the Iris protocol of ASS22 are in
:mod:`lightloop.simulators.flow_lattice`, which builds on this module
(imports point one way: ``flow_lattice -> flow_network``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import ArrayLike, NDArray

from lightloop.errors import ConfigError
from lightloop.simulators.flow_factor import ReducedLaplacian

__all__ = [
    "FlowNetwork",
    "chemical_signaling_update",
    "coupled_learning_update",
    "cost",
    "equilibrium_propagation_update",
    "input_currents",
    "loss_gradient",
    "loss_gradient_fd",
    "pair_operator",
    "pressure_drops",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _as_pairs(pairs: ArrayLike, n_nodes: int, name: str = "pairs") -> IntArray:
    """Validate node pairs -> int array (k, 2) of distinct in-range nodes."""
    p = np.asarray(pairs, dtype=np.int64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ConfigError(f"flow network: {name} must have shape (k, 2), got {p.shape}")
    if p.size and (p.min() < 0 or p.max() >= n_nodes):
        raise ConfigError(f"flow network: {name} must index nodes 0..{n_nodes - 1}")
    if np.any(p[:, 0] == p[:, 1]):
        raise ConfigError(f"flow network: {name} must join two distinct nodes")
    return p


def pair_operator(pairs: ArrayLike, n_nodes: int) -> FloatArray:
    """Pair operator P (k, n_nodes), rows e_a - e_b: drops = v @ P.T, currents = x @ P (dimensionless)."""
    p = _as_pairs(pairs, n_nodes)
    P = np.zeros((p.shape[0], n_nodes))
    rows = np.arange(p.shape[0])
    P[rows, p[:, 0]] += 1.0
    P[rows, p[:, 1]] -= 1.0
    return P


def pressure_drops(v: ArrayLike, pairs: ArrayLike) -> FloatArray:
    """Pressure drops v_a - v_b (batch, k) across node pairs (pressure units)."""
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    p = _as_pairs(pairs, v.shape[1])
    return v[:, p[:, 0]] - v[:, p[:, 1]]


def input_currents(
    x: ArrayLike, input_pairs: ArrayLike, n_nodes: int, gain: float = 1.0
) -> FloatArray:
    """Node currents (batch, n_nodes): gain * x_k injected at a_k, withdrawn at b_k (ASS22 current drive)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    P = pair_operator(input_pairs, n_nodes)
    if x.shape[1] != P.shape[0]:
        raise ConfigError(
            f"flow network: x has {x.shape[1]} features but there are {P.shape[0]} input pairs"
        )
    return gain * (x @ P)


def cost(v: ArrayLike, output_pairs: ArrayLike, desired: ArrayLike) -> FloatArray:
    """Per-sample cost C = 1/2 sum_j (Delta v_j - t_j)^2 (batch,) (pressure^2); ASS22, Eq. (2) above."""
    r = pressure_drops(v, output_pairs) - np.atleast_2d(np.asarray(desired, dtype=np.float64))
    return 0.5 * np.sum(r * r, axis=1)


class FlowNetwork:
    """Linear flow/resistor network L(w) v = I with a grounded node (ASS22, Eq. (1) above); float64."""

    def __init__(
        self,
        n_nodes: int,
        edges: ArrayLike,
        conductances: ArrayLike,
        ground: int = 0,
        w_min: float = 1e-6,
        w_max: float = np.inf,
        positions: ArrayLike | None = None,
    ) -> None:
        """Graph of n_nodes and edges (m, 2), conductances (m,), ground node, limits [w_min, w_max]."""
        if int(n_nodes) < 2:
            raise ConfigError(f"flow network: n_nodes must be >= 2, got {n_nodes}")
        self.n_nodes: int = int(n_nodes)
        self.edges: IntArray = _as_pairs(edges, self.n_nodes, "edges")
        if not 0 <= int(ground) < self.n_nodes:
            raise ConfigError(f"flow network: ground must be a node 0..{self.n_nodes - 1}, got {ground}")
        self.ground: int = int(ground)
        if not (w_min > 0.0 and w_max > w_min):
            raise ConfigError(
                f"flow network: need 0 < w_min < w_max, got w_min={w_min}, w_max={w_max}"
            )
        self.w_min: float = float(w_min)
        self.w_max: float = float(w_max)
        self.positions: FloatArray | None = (
            None if positions is None else np.asarray(positions, dtype=np.float64)
        )
        m = self.edges.shape[0]
        x, y = self.edges[:, 0], self.edges[:, 1]
        rows = np.arange(m)
        self.incidence: sp.csr_matrix = sp.csr_matrix(
            (np.r_[np.ones(m), -np.ones(m)], (np.r_[rows, rows], np.r_[x, y])),
            shape=(m, self.n_nodes),
        )
        self._lap_rows = np.concatenate([x, y, x, y])
        self._lap_cols = np.concatenate([x, y, y, x])
        self._free = np.flatnonzero(np.arange(self.n_nodes) != self.ground)
        self._w: FloatArray = np.empty(0)
        # the pattern is fixed: its maps and ordering are built once, each write only refills values
        self._lap = ReducedLaplacian(self.n_nodes, self.edges, self.ground)
        self.conductances = conductances  # validates and factorises

    # -- state --------------------------------------------------------------------------
    @property
    def n_edges(self) -> int:
        """Number of edges (conductances)."""
        return int(self.edges.shape[0])

    @property
    def conductances(self) -> FloatArray:
        """Edge conductances w (n_edges,) (flow per pressure, or siemens); a copy."""
        return self._w.copy()

    @conductances.setter
    def conductances(self, w: ArrayLike) -> None:
        """Set all conductances; must lie in [w_min, w_max] (no silent clipping) and connect the graph."""
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if w.shape != (self.n_edges,):
            raise ConfigError(
                f"flow network: conductances must have shape ({self.n_edges},), got {w.shape}"
            )
        if not np.all(np.isfinite(w)):
            raise ConfigError("flow network: conductances must be finite")
        if np.any(w < self.w_min) or np.any(w > self.w_max):
            raise ConfigError(
                f"flow network: conductances must lie in [{self.w_min}, {self.w_max}], "
                f"got range [{w.min()}, {w.max()}]"
            )
        old = self._w
        self._w = w
        try:
            self._refactor()
        except ConfigError:
            self._w = old  # keep the previous, consistent state
            raise

    def _refactor(self) -> None:
        """Factor the reduced (grounded) Laplacian for the current w on the fixed pattern (flow_factor)."""
        self._lap.factorize(self._w)

    def _reduce(self, A: sp.spmatrix) -> sp.csc_matrix:
        """Drop the ground row and column -> CSC (n_nodes-1, n_nodes-1)."""
        f = self._free
        return sp.csc_matrix(sp.csr_matrix(A)[f][:, f])

    def laplacian_sparse(self) -> sp.csr_matrix:
        """Weighted graph Laplacian L(w) = B^T diag(w) B as a sparse CSR matrix (conductance units)."""
        w = self._w
        return sp.csr_matrix(
            (np.concatenate([w, w, -w, -w]), (self._lap_rows, self._lap_cols)),
            shape=(self.n_nodes, self.n_nodes),
        )

    def laplacian(self) -> FloatArray:
        """Weighted graph Laplacian L(w) = B^T diag(w) B (n_nodes, n_nodes) dense (conductance units)."""
        return self.laplacian_sparse().toarray()

    def copy(self) -> FlowNetwork:
        """Independent copy (same graph, copied conductances and limits)."""
        return FlowNetwork(
            self.n_nodes, self.edges.copy(), self._w.copy(), self.ground,
            self.w_min, self.w_max, None if self.positions is None else self.positions.copy(),
        )

    # -- solves -------------------------------------------------------------------------
    def _check_currents(self, I: ArrayLike) -> FloatArray:
        """Validate node currents -> float64 (batch, n_nodes)."""
        I = np.atleast_2d(np.asarray(I, dtype=np.float64))
        if I.ndim != 2 or I.shape[1] != self.n_nodes:
            raise ConfigError(
                f"flow network: currents must have shape (batch, {self.n_nodes}), got {I.shape}"
            )
        return I

    def solve(self, I: ArrayLike) -> FloatArray:
        """Node pressures v (batch, n_nodes) solving L(w) v = I, v[ground] = 0 (ASS22, Eq. (1) above)."""
        I = self._check_currents(I)
        v = np.zeros_like(I)
        v[:, self._free] = self._lap.solve(I[:, self._free].T).T
        return v

    def edge_drops(self, v: ArrayLike) -> FloatArray:
        """Pressure drops v_x - v_y across every edge (batch, n_edges)."""
        v = np.atleast_2d(np.asarray(v, dtype=np.float64))
        return v[:, self.edges[:, 0]] - v[:, self.edges[:, 1]]

    def edge_flows(self, v: ArrayLike) -> FloatArray:
        """Flows w_e (v_x - v_y) from x to y on every edge (batch, n_edges) (current units)."""
        return self._w * self.edge_drops(v)

    def dissipated_power(self, v: ArrayLike) -> FloatArray:
        """Half the dissipated power, P = 1/2 sum_e w_e v_e^2 (batch,) -- the SB17/SHRL21 'energy'."""
        d = self.edge_drops(v)
        return 0.5 * np.sum(self._w * d * d, axis=1)

    def transfer_resistance(self, pairs: ArrayLike) -> FloatArray:
        """Port transfer-resistance matrix G = P L^{-1} P^T (k, k) between node pairs (pressure/current)."""
        P = pair_operator(pairs, self.n_nodes)
        return pressure_drops(self.solve(P), pairs)

    def solve_clamped(self, I: ArrayLike, pairs: ArrayLike, drops: ArrayLike) -> FloatArray:
        """Pressures (batch, n_nodes) with `drops` across `pairs` held by pressure sources (SHRL21 clamp)."""
        I = self._check_currents(I)
        P = pair_operator(pairs, self.n_nodes)
        c = np.atleast_2d(np.asarray(drops, dtype=np.float64))
        c = np.broadcast_to(c, (I.shape[0], P.shape[0]))
        f = self._free
        Pr = sp.csr_matrix(P[:, f])
        # bordered (KKT) system: L v = I + P^T lam, P v = c; indefinite -> pivoting LU
        kkt = sp.bmat([[self._reduce(self.laplacian_sparse()), Pr.T], [Pr, None]], format="csc")
        rhs = np.concatenate([I[:, f], c], axis=1).T
        sol = spla.splu(kkt).solve(np.ascontiguousarray(rhs)).T
        v = np.zeros_like(I)
        v[:, f] = sol[:, : f.size]
        return v

    def solve_nudged(
        self, I: ArrayLike, pairs: ArrayLike, desired: ArrayLike, beta: float
    ) -> FloatArray:
        """Pressures (batch, n_nodes) minimising E + beta C: (L + beta P^T P) v = I + beta P^T t (SB17)."""
        I = self._check_currents(I)
        P = pair_operator(pairs, self.n_nodes)
        t = np.atleast_2d(np.asarray(desired, dtype=np.float64))
        t = np.broadcast_to(t, (I.shape[0], P.shape[0]))
        f = self._free
        Ps = sp.csr_matrix(P)
        A = self._reduce(self.laplacian_sparse() + beta * (Ps.T @ Ps))
        rhs = np.ascontiguousarray((I + beta * (t @ P))[:, f].T)
        v = np.zeros_like(I)
        # beta < 0 (symmetric EP) stays definite for small |beta|; pivoting LU covers it regardless
        v[:, f] = (_factor_spd(A) if beta >= 0.0 else spla.splu(A)).solve(rhs).T
        return v

    # -- learning -----------------------------------------------------------------------
    def clip(self, w: ArrayLike) -> FloatArray:
        """Clip conductances into [w_min, w_max] (the documented hardware-limit policy)."""
        return np.clip(np.asarray(w, dtype=np.float64), self.w_min, self.w_max)

    def apply_update(self, dw: ArrayLike) -> int:
        """w <- clip(w + dw, w_min, w_max) (projected gradient step); returns how many edges were clipped."""
        dw = np.asarray(dw, dtype=np.float64).reshape(-1)
        if dw.shape != (self.n_edges,):
            raise ConfigError(f"flow network: dw must have shape ({self.n_edges},), got {dw.shape}")
        if not np.all(np.isfinite(dw)):
            raise ConfigError("flow network: dw contains NaN or inf; update refused")
        target = self._w + dw
        new = self.clip(target)
        n_clipped = int(np.count_nonzero(new != target))
        self._w = new
        self._refactor()
        return n_clipped


def _factor_spd(A: sp.csc_matrix) -> Any:
    """Sparse LU of a symmetric positive-definite matrix without pivoting (a sparse Cholesky in effect)."""
    try:
        lu = spla.splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options={"SymmetricMode": True})
    except RuntimeError as exc:  # exactly singular
        raise ConfigError(
            "flow network: reduced Laplacian is singular (graph disconnected from the ground node?)"
        ) from exc
    d = lu.U.diagonal()
    if not np.all(d > 1e-12 * np.max(np.abs(d))):
        raise ConfigError(
            "flow network: reduced Laplacian is not positive definite (disconnected graph?)"
        )
    return lu


# -- update rules -----------------------------------------------------------------------------
def _targets(desired: ArrayLike, batch: int, k: int) -> FloatArray:
    """Broadcast desired outputs to (batch, k)."""
    t = np.atleast_2d(np.asarray(desired, dtype=np.float64))
    if t.shape[1] != k:
        raise ConfigError(f"flow network: desired has {t.shape[1]} outputs, expected {k}")
    return np.broadcast_to(t, (batch, k))


def loss_gradient(
    net: FlowNetwork, I: ArrayLike, output_pairs: ArrayLike, desired: ArrayLike
) -> FloatArray:
    """Exact dC/dw (n_edges,) of the batch-mean cost, adjoint formula Eq. (4) above (pressure^2/conductance)."""
    v = net.solve(I)
    P = pair_operator(output_pairs, net.n_nodes)
    r = v @ P.T - _targets(desired, v.shape[0], P.shape[0])
    lam = net.solve(r @ P)  # L^{-1} dC/dv
    return -np.mean(net.edge_drops(lam) * net.edge_drops(v), axis=0)


def chemical_signaling_update(
    net: FlowNetwork,
    I: ArrayLike,
    output_pairs: ArrayLike,
    desired: ArrayLike,
    alpha: float = 1.0,
    eta: float = 1.0,
    feedback: Literal["current", "pressure"] = "current",
) -> FloatArray:
    """dw = -alpha <u_xy v_xy>_batch (n_edges,), L u = -eta dC/dv at the outputs (ASS22, Eqs. (3)-(5) above).

    ``feedback="current"`` is ASS22 and equals ``-alpha*eta*dC/dw`` exactly;
    ``feedback="pressure"`` scales the feedback currents by ``G^{-1}`` so the
    feedback *pressure drops* at the outputs are ``-eta (Delta v - t)`` -- the
    ``nudge -> 0`` limit of coupled learning.
    """
    v = net.solve(I)
    P = pair_operator(output_pairs, net.n_nodes)
    err = v @ P.T - _targets(desired, v.shape[0], P.shape[0])  # dC/d(Delta v)
    if feedback == "pressure":
        G = net.transfer_resistance(output_pairs)
        err = sla.solve(G, err.T, assume_a="pos").T
    elif feedback != "current":
        raise ConfigError(f"flow network: feedback must be 'current' or 'pressure', got {feedback!r}")
    E = -eta * (err @ P)  # feedback currents: -eta*err_j in at c_j, out at d_j
    u = net.solve(E)
    return -alpha * np.mean(net.edge_drops(u) * net.edge_drops(v), axis=0)


def equilibrium_propagation_update(
    net: FlowNetwork,
    I: ArrayLike,
    output_pairs: ArrayLike,
    desired: ArrayLike,
    beta: float,
    alpha: float = 1.0,
    eta: float = 1.0,
    symmetric: bool = False,
) -> FloatArray:
    """EP: dw = -alpha eta/(2 beta) <(v^b_e)^2 - (v^0_e)^2> (n_edges,) -> -alpha eta dC/dw (SB17, Eq. 6)."""
    if beta <= 0.0:
        raise ConfigError(f"flow network: beta must be > 0, got {beta}")
    I = np.atleast_2d(np.asarray(I, dtype=np.float64))
    vp = net.edge_drops(net.solve_nudged(I, output_pairs, desired, beta))
    if symmetric:
        vm = net.edge_drops(net.solve_nudged(I, output_pairs, desired, -beta))
        diff = (vp * vp - vm * vm) / 2.0
    else:
        v0 = net.edge_drops(net.solve(I))
        diff = vp * vp - v0 * v0
    return -alpha * eta / (2.0 * beta) * np.mean(diff, axis=0)


def coupled_learning_update(
    net: FlowNetwork,
    I: ArrayLike,
    output_pairs: ArrayLike,
    desired: ArrayLike,
    nudge: float,
    alpha: float = 1.0,
    eta: float = 1.0,
) -> FloatArray:
    """CL: dw = -alpha eta/(2 nudge) <(v^C_e)^2 - (v^F_e)^2> (n_edges,), clamp Dv^F + nudge (t - Dv^F) (SHRL21)."""
    if not 0.0 < nudge <= 1.0:
        raise ConfigError(f"flow network: nudge must lie in (0, 1], got {nudge}")
    I = np.atleast_2d(np.asarray(I, dtype=np.float64))
    vF = net.solve(I)
    dF = pressure_drops(vF, output_pairs)
    t = _targets(desired, I.shape[0], dF.shape[1])
    vC = net.solve_clamped(I, output_pairs, dF + nudge * (t - dF))
    eF, eC = net.edge_drops(vF), net.edge_drops(vC)
    return -alpha * eta / (2.0 * nudge) * np.mean(eC * eC - eF * eF, axis=0)


def loss_gradient_fd(
    net: FlowNetwork,
    I: ArrayLike,
    output_pairs: ArrayLike,
    desired: ArrayLike,
    rel_step: float = 1e-5,
) -> FloatArray:
    """Central finite-difference dC/dw (n_edges,) of the batch-mean cost, step rel_step * w_e (reference)."""
    w0 = net.conductances
    probe = FlowNetwork(net.n_nodes, net.edges, w0, net.ground, w_min=1e-300, w_max=np.inf)
    grad = np.empty(net.n_edges)
    for e in range(net.n_edges):  # reference only: one pair of solves per edge
        h = rel_step * w0[e]
        wp, wm = w0.copy(), w0.copy()
        wp[e] += h
        wm[e] -= h
        probe.conductances = wp
        cp = cost(probe.solve(I), output_pairs, desired).mean()
        probe.conductances = wm
        cm = cost(probe.solve(I), output_pairs, desired).mean()
        grad[e] = (cp - cm) / (2.0 * h)
    return grad
