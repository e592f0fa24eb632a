"""Factorisation of a flow network's grounded Laplacian on a fixed sparsity pattern (dimensionless, float64).

The graph never changes during training, only the conductances do, so everything that depends on
the pattern alone is done once: the reduced (ground row and column dropped) index maps, a reverse
Cuthill-McKee ordering and, per write, one `np.bincount` that assembles the values in place. The
factor is a banded Cholesky (LAPACK dpbtrf/dpbtrs, no scipy.sparse object per write) when the
ordered bandwidth is small, else SuperLU in symmetric mode on a CSC matrix whose data array is
refilled in place. Both solve exactly the same system as before (equal within float64 rounding).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import NDArray
from scipy.linalg.lapack import dpbtrf, dpbtrs
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee

from lightloop.errors import ConfigError

__all__ = ["BANDED_MAX_BANDWIDTH", "ReducedLaplacian"]

FloatArray = NDArray[np.float64]

#: banded Cholesky when the RCM bandwidth is at most this (cost n * bw^2), else sparse LU
BANDED_MAX_BANDWIDTH = 64

_SINGULAR = "flow network: reduced Laplacian is singular (graph disconnected from the ground node?)"
_NOT_PD = "flow network: reduced Laplacian is not positive definite (disconnected graph?)"


class ReducedLaplacian:
    """Grounded Laplacian L(w)[free, free] of a fixed graph: assemble in place, factor once, solve many."""

    def __init__(self, n_nodes: int, edges: NDArray[np.int64], ground: int, method: str = "auto") -> None:
        """Pattern maps for n_nodes, edges (m, 2) and the ground node; method 'auto', 'banded' or 'sparse'."""
        if method not in ("auto", "banded", "sparse"):
            raise ConfigError(f"flow network: factor method must be 'auto', 'banded' or 'sparse', got {method!r}")
        n = int(n_nodes) - 1
        self.n = n
        self.free = np.flatnonzero(np.arange(n_nodes) != ground)
        red = np.full(n_nodes, -1, dtype=np.int64)
        red[self.free] = np.arange(n)
        x, y = red[edges[:, 0]], red[edges[:, 1]]
        both = (x >= 0) & (y >= 0)
        self._xf, self._yf, self._both = x >= 0, y >= 0, both
        # the graph must connect every node to the ground (structure only; checked once)
        adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
        if connected_components(adj, directed=False)[0] != 1:
            raise ConfigError(_SINGULAR)
        pattern = sp.csr_matrix((np.ones(2 * both.sum() + n), (np.r_[x[both], y[both], np.arange(n)],
                                 np.r_[y[both], x[both], np.arange(n)])), shape=(n, n))
        perm = reverse_cuthill_mckee(pattern, symmetric_mode=True).astype(np.int64)
        pos = np.empty(n, dtype=np.int64)
        pos[perm] = np.arange(n)
        px, py = pos[x[both]], pos[y[both]]
        bw = int(np.max(np.abs(px - py))) if px.size else 0
        self.method = method if method != "auto" else ("banded" if bw <= BANDED_MAX_BANDWIDTH else "sparse")
        self.bandwidth = bw
        if self.method == "banded":
            self._perm = perm
            lo, hi = np.minimum(px, py), np.maximum(px, py)
            # upper band storage: ab[bw + i - j, j] = A[i, j] for i <= j (LAPACK dpbtrf, lower=0)
            self._shape = (bw + 1, n)
            self._idx = np.r_[bw * n + pos[x[self._xf]], bw * n + pos[y[self._yf]], (bw + lo - hi) * n + hi]
        else:
            # CSC of the reduced matrix in the natural order; bincount targets are positions in its data
            A = sp.csc_matrix(pattern)
            A.sort_indices()
            slot = sp.csc_matrix((np.arange(A.nnz, dtype=np.float64) + 1.0, A.indices, A.indptr), shape=(n, n))

            def where(r: NDArray[np.int64], c: NDArray[np.int64]) -> NDArray[np.int64]:
                """Positions in the CSC data array of the entries (r, c)."""
                return np.asarray(slot[r, c]).ravel().astype(np.int64) - 1

            xb, yb = x[both], y[both]
            self._idx = np.r_[where(x[self._xf], x[self._xf]), where(y[self._yf], y[self._yf]),
                              where(xb, yb), where(yb, xb)]
            self._csc = sp.csc_matrix((np.zeros(A.nnz), A.indices.copy(), A.indptr.copy()), shape=(n, n))
            self._shape = (A.nnz,)
        self._factor: Any = None

    def _values(self, w: FloatArray) -> FloatArray:
        """Assembled entries (the band array or the CSC data) for conductances w (n_edges,)."""
        wb = w[self._both]
        if self.method == "banded":
            vals = np.concatenate([w[self._xf], w[self._yf], -wb])
        else:
            vals = np.concatenate([w[self._xf], w[self._yf], -wb, -wb])
        size = int(np.prod(self._shape))
        return np.bincount(self._idx, weights=vals, minlength=size).reshape(self._shape)

    def factorize(self, w: FloatArray) -> None:
        """Assemble L(w) on the fixed pattern and factor it (raises ConfigError if not positive definite)."""
        vals = self._values(w)
        if self.method == "banded":
            c, info = dpbtrf(vals, lower=0, overwrite_ab=1)
            if info != 0:
                raise ConfigError(_NOT_PD if info > 0 else _SINGULAR)
            d = c[-1] * c[-1]   # the LDL^T pivots
            if not np.all(d > 1e-12 * np.max(d)):
                raise ConfigError(_NOT_PD)
            self._factor = c
            return
        self._csc.data[:] = vals
        try:
            lu = spla.splu(self._csc, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
        except RuntimeError as exc:  # exactly singular
            raise ConfigError(_SINGULAR) from exc
        d = lu.U.diagonal()
        if not np.all(d > 1e-12 * np.max(np.abs(d))):
            raise ConfigError(_NOT_PD)
        self._factor = lu

    def solve(self, rhs: FloatArray) -> FloatArray:
        """Solution X (n, k) of L_red X = rhs for right-hand sides rhs (n, k) (pressure units)."""
        if self.method == "sparse":
            return self._factor.solve(np.ascontiguousarray(rhs))
        xp, info = dpbtrs(self._factor, rhs[self._perm], lower=0)
        if info != 0:
            raise ConfigError(f"flow network: banded solve failed (LAPACK info {info})")
        out = np.empty_like(xp)
        out[self._perm] = xp
        return out
