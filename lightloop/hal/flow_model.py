r"""The HAL's calibrated model of a flow (resistor) network: Kirchhoff solves on the conductances it believes are realised.

FlowModel knows only what the HAL knows -- the netlist (`NetworkTopology`), the conductances it wrote
(S) and a per-edge conductance gain c (dimensionless, 1 = the nominal map) -- never the twin's hidden
truth. The model conductances are w_model = c * w_written; node potentials solve

    L(w_model) v = I,   L(w) = B^T diag(w) B   (B: edge-node incidence, ground node held at 0 V)

on the reduced (grounded) Laplacian, factored once per conductance vector (sparse LU) and reused for a
whole batch of right-hand sides.

Physics-aware backward pass (`FlowModel.feedback`, used by `FlowProcessor.model_gradients`): the feedback
currents E (A) at the output pairs are solved DIGITALLY in the model, u = L(w_model)^-1 P^T E (V),
exactly what the chemical channel would measure on a bench equal to the model (ASS22, eq. (4) of
`lightloop.simulators.flow_network`: dC/dw_e = u_e v_e / eta for E = -eta dC/dDelta v).

Refinement (`FlowModel.fit_gain`): with measured potentials v_b for input currents I_b at written
conductances w_b, Kirchhoff's law is LINEAR in the gain, B_r^T diag(s_b) c = I_b with s_b = w_b * (B v_b)
(A per unit gain; B_r: incidence without the ground column). The fit solves the ridge least squares

    min_c  sum_b ||B_r^T diag(s_b) c - I_b||^2 + lam ||c - 1||^2,   lam = ridge * mean diag(sum_b M_b^T M_b)

(normal matrix sum_b diag(s_b) B_r B_r^T diag(s_b), sparse on the edge adjacency) per edge ("edge") or
for one global gain ("global"); edges that carry no current in the window stay near 1.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import ArrayLike, NDArray

from lightloop.errors import ConfigError
from lightloop.hal.flow_network_roles import NetworkTopology

__all__ = ["FlowModel", "pair_currents"]

FloatArray = NDArray[np.float64]


def pair_currents(amps: ArrayLike, pairs: NDArray[np.int64], n_nodes: int) -> FloatArray:
    """Node currents (batch, n_nodes), A, of pair sources (batch, n_pairs): +I into pairs[:, 0], -I at pairs[:, 1]."""
    a = np.atleast_2d(np.asarray(amps, dtype=np.float64))
    out = np.zeros((a.shape[0], n_nodes))
    np.add.at(out, (slice(None), pairs[:, 0]), a)
    np.add.at(out, (slice(None), pairs[:, 1]), -a)
    return out


class FlowModel:
    """Calibrated model of the network: w_model = gain * w_written (S); grounded Kirchhoff solves (V)."""

    def __init__(self, topology: NetworkTopology, gain: ArrayLike | None = None):
        self.topology = t = topology
        m, n = t.n_edges, t.n_nodes
        rows = np.repeat(np.arange(m), 2)
        cols = t.edges.reshape(-1)
        vals = np.tile([1.0, -1.0], m)
        self._B = sp.csr_matrix((vals, (rows, cols)), shape=(m, n))
        self._keep = np.flatnonzero(np.arange(n) != t.ground)     # non-ground nodes
        self._Br = self._B[:, self._keep].tocsc()                  # (m, n - 1)
        self._K = (self._Br @ self._Br.T).tocoo()                  # edge adjacency B_r B_r^T (m, m)
        # reduced Laplacian on a fixed pattern: L.data = bincount(_slot, _sign * w[_edge]) (no sparse products)
        red = np.full(n, -1)
        red[self._keep] = np.arange(n - 1)
        a, b = red[t.edges[:, 0]], red[t.edges[:, 1]]
        e = np.arange(m)
        rows = np.concatenate([a, b, a, b])
        cols = np.concatenate([a, b, b, a])
        sign = np.concatenate([np.ones(2 * m), -np.ones(2 * m)])
        ok = (rows >= 0) & (cols >= 0)                             # entries on the ground node drop out
        self._edge, self._sign = np.tile(e, 4)[ok], sign[ok]
        pattern = sp.csc_matrix((np.ones(int(ok.sum())), (rows[ok], cols[ok])), shape=(n - 1, n - 1))
        pattern.sum_duplicates()
        pattern.sort_indices()
        self._indices, self._indptr = pattern.indices, pattern.indptr
        keys = np.repeat(np.arange(n - 1), np.diff(pattern.indptr)) * (n - 1) + pattern.indices
        self._slot = np.searchsorted(keys, cols[ok] * (n - 1) + rows[ok])
        self._nnz = keys.size
        self.gain = np.ones(m)
        self._cached: tuple[bytes, object] | None = None          # (model conductances, their factor): one per step
        if gain is not None:
            self.set_gain(gain)

    def set_gain(self, gain: ArrayLike) -> None:
        """Set the per-edge conductance gain (n_edges,) or a scalar; finite and > 0."""
        g = np.broadcast_to(np.asarray(gain, dtype=np.float64), (self.topology.n_edges,)).copy()
        if not (np.all(np.isfinite(g)) and np.all(g > 0)):
            raise ConfigError(f"flow model: gain must be finite and > 0 for all {self.topology.n_edges} edges")
        self.gain = g

    def realised(self, written: ArrayLike) -> FloatArray:
        """Model conductances (n_edges,), S: gain * written."""
        return self.gain * np.asarray(written, dtype=np.float64).reshape(-1)

    def _factor(self, written: ArrayLike):
        w = self.realised(written)
        if w.shape != (self.topology.n_edges,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ConfigError(f"flow model: conductances must be {self.topology.n_edges} finite values > 0 S")
        key = w.tobytes()
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        data = np.bincount(self._slot, self._sign * w[self._edge], minlength=self._nnz)
        n = self.topology.n_nodes - 1
        lu = spla.splu(sp.csc_matrix((data, self._indices, self._indptr), shape=(n, n)))
        self._cached = (key, lu)
        return lu

    def solve(self, written: ArrayLike, currents: ArrayLike) -> FloatArray:
        """Node potentials (batch, n_nodes), V, of node currents (batch, n_nodes) A at the model conductances."""
        I = np.atleast_2d(np.asarray(currents, dtype=np.float64))
        v = np.zeros_like(I)
        v[:, self._keep] = self._factor(written).solve(np.ascontiguousarray(I[:, self._keep].T)).T
        return v

    def potentials(self, written: ArrayLike, input_amps: ArrayLike) -> FloatArray:
        """Free-state potentials (batch, n_nodes), V, for input-pair currents (batch, n_input_pairs) A."""
        return self.solve(written, pair_currents(input_amps, self.topology.input_pairs, self.topology.n_nodes))

    def feedback(self, written: ArrayLike, feedback_amps: ArrayLike) -> FloatArray:
        """Feedback potentials u (batch, n_nodes), V, of currents E (batch, n_output_pairs) A at the output pairs."""
        return self.solve(written, pair_currents(feedback_amps, self.topology.output_pairs, self.topology.n_nodes))

    def fit_gain(self, written: list[FloatArray], input_amps: list[FloatArray], potentials: list[FloatArray], *,
                 mode: Literal["edge", "global"] = "edge", ridge: float = 1e-5) -> FloatArray:
        """Ridge fit of the gain to measured potentials (batch, n_nodes) V per batch; returns it (does not set it)."""
        if mode not in ("edge", "global"):
            raise ConfigError(f"flow model: refine mode must be 'edge' or 'global', got {mode!r}")
        if not (np.isfinite(ridge) and ridge > 0):
            raise ConfigError(f"flow model: ridge must be a number > 0, got {ridge!r}")
        t, m = self.topology, self.topology.n_edges
        K, k_rows, k_cols = self._K, self._K.row, self._K.col
        acc = np.zeros(K.nnz)
        rhs = np.zeros(m)
        for w, a, v in zip(written, input_amps, potentials):
            s = np.asarray(w, np.float64)[None, :] * t.edge_drops(v)               # (batch, m) A per unit gain
            I = pair_currents(a, t.input_pairs, t.n_nodes)[:, self._keep]          # (batch, n - 1) A
            acc += np.einsum("bk,bk->k", s[:, k_rows], s[:, k_cols])
            rhs += np.einsum("bm,bm->m", s, (self._Br @ I.T).T)
        if mode == "global":   # one gain: c = <s^T B_r I> / <s^T B_r B_r^T s> (ridge toward 1)
            num, den = float(rhs.sum()), float(np.sum(K.data * acc))
            lam = ridge * den
            return np.full(m, (num + lam) / (den + lam) if den + lam > 0 else 1.0)
        N = sp.csc_matrix((K.data * acc, (k_rows, k_cols)), shape=(m, m))
        lam = ridge * float(np.mean(N.diagonal())) or ridge
        c = spla.spsolve((N + lam * sp.identity(m, format="csc")).tocsc(), rhs + lam)
        return np.clip(np.asarray(c, np.float64), 0.05, 20.0)   # a gain outside 1/20..20 is no calibration
