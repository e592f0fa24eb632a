r"""Roles of the flow (resistor) network bench: a linear flow / resistor network that learns in place.

Physics (Anisetti, Scellier & Schwarz, arXiv:2203.12098, Phys. Rev. Research 5, 023024 (2023), "ASS22";
conventions fixed in docs/architecture.md and in `lightloop.simulators.flow_network`): node potentials v solve
L(w) v = I on the weighted graph Laplacian; inputs are currents injected across input node pairs,
outputs are potential (pressure) drops across output node pairs; a second, NON-INTERFERING signal
(ASS22's chemical; in an electrical build e.g. a small AC signal read by lock-in, or a second solute)
is injected at the output pairs with currents E = -eta (Delta v - t) and settles to L(w) u = E in the
same conductances without disturbing v. Each edge then updates locally, dw_xy = -alpha u_xy v_xy,
which is exact gradient descent on C = 1/2 ||Delta v - t||^2 with step alpha*eta.

Units: conductances in siemens (S), currents in amperes (A), potentials and drops in volts (V); read
them as flow per pressure, volumetric flow and pressure for a hydraulic network. The paper's model is
dimensionless and every equation is linear, so any consistent set works.

Layers
------
Ports (device interfaces the twin or a real instrument adapter implements), in `lightloop.hal.ports`
(flow-network section):
  ConductancePort     writes every edge conductance (S) in one batched write
  PairCurrentPort     current sources across fixed node pairs; a batch of frames (batch, n_pairs) A
  PotentialProbePort  node-potential probe array; (batch, n_nodes) V for the frames last driven
  PairClampPort       Thevenin sources across the output pairs: EMF (batch, n_pairs) V in series with
                      a conductance g (S); g = inf is an ideal voltage source (coupled learning's
                      clamp), finite g is equilibrium propagation's nudge (beta = g)
The feedback ("chemical") channel is a second PairCurrentPort at the output pairs plus a second
PotentialProbePort; the two channels share only the conductances.

ConductanceNetwork (the role, here) owns the topology (netlist: nodes, edges, terminal pairs, ground)
and the limits, and checks every command BEFORE it reaches a port:
  * conductances: non-finite values -> SafetyLimitError (nothing written); values outside the
    per-edge box [w_min_e, w_max_e] are CLIPPED into it (policy "clip", default: projected gradient
    descent, the count is returned and logged) or refused with SafetyLimitError (policy "error");
  * currents (input and feedback sources) and clamp EMFs: |value| above the limit -> SafetyLimitError,
    never clipped (a clipped drive would silently distort the signal the rule relies on);
  * a probe returning NaN/inf -> InstrumentError.

FlowProcessor (`lightloop.hal.flow_network`) wraps the role as an OpticalProcessor for the generic
Trainer (see its docstring for how classification and the per-epoch desired outputs map onto one-hot
targets and argmax).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lightloop.errors import ConfigError, InstrumentError, SafetyLimitError
from lightloop.hal.ports import ConductancePort, PairClampPort, PairCurrentPort, PotentialProbePort

__all__ = [
    "NetworkTopology",
    "ConductanceLimits",
    "ConductanceInit",
    "ConductanceNetwork",
    "desired_from_class_means",
]

FloatArray = NDArray[np.float64]


# --- topology, limits, init --------------------------------------------------------------------
def _pairs(p: ArrayLike, n_nodes: int, name: str) -> NDArray[np.int64]:
    a = np.asarray(p, dtype=np.int64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ConfigError(f"conductance network: {name} must have shape (k, 2), got {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= n_nodes):
        raise ConfigError(f"conductance network: {name} must index nodes 0..{n_nodes - 1}")
    if np.any(a[:, 0] == a[:, 1]):
        raise ConfigError(f"conductance network: {name} must join two distinct nodes")
    return a


@dataclass(frozen=True)
class NetworkTopology:
    """Netlist known to the HAL: nodes, edges (m, 2), input and output node pairs, ground node, layout (m)."""

    n_nodes: int
    edges: NDArray[np.int64]
    input_pairs: NDArray[np.int64]
    output_pairs: NDArray[np.int64]
    ground: int
    positions: FloatArray | None = None

    def __post_init__(self) -> None:
        n = int(self.n_nodes)
        if n < 2:
            raise ConfigError(f"conductance network: n_nodes must be >= 2, got {n}")
        object.__setattr__(self, "n_nodes", n)
        for name in ("edges", "input_pairs", "output_pairs"):
            object.__setattr__(self, name, _pairs(getattr(self, name), n, name))
        if not 0 <= int(self.ground) < n:
            raise ConfigError(f"conductance network: ground must be a node 0..{n - 1}, got {self.ground}")
        if self.positions is not None:
            pos = np.asarray(self.positions, dtype=np.float64)
            if pos.shape != (n, 2):
                raise ConfigError(f"conductance network: positions must have shape ({n}, 2), got {pos.shape}")
            object.__setattr__(self, "positions", pos)

    @property
    def n_edges(self) -> int:
        """Number of tunable edges."""
        return int(self.edges.shape[0])

    def edge_drops(self, potentials: NDArray) -> FloatArray:
        """Drops v_x - v_y across every edge (batch, n_edges), V."""
        v = np.atleast_2d(potentials)
        return v[:, self.edges[:, 0]] - v[:, self.edges[:, 1]]

    def output_drops(self, potentials: NDArray) -> FloatArray:
        """Drops v_c - v_d across the output pairs (batch, n_output_pairs), V."""
        v = np.atleast_2d(potentials)
        return v[:, self.output_pairs[:, 0]] - v[:, self.output_pairs[:, 1]]


@dataclass
class ConductanceLimits:
    """What may be written or driven: per-edge conductance box (S), source currents (A), clamp EMF (V).

    w_min / w_max are scalars or per-edge arrays (w_min > 0: a vanishing conductance could cut the
    graph). on_violation: "clip" clips conductances into the box (returns the count), "error" refuses
    the whole write with SafetyLimitError. Currents and EMFs beyond their limits are always refused.
    """

    w_min: float | NDArray = 1e-3
    w_max: float | NDArray = 1.0
    on_violation: Literal["clip", "error"] = "clip"
    max_current_a: float = 10.0
    max_feedback_current_a: float = 10.0
    max_clamp_v: float = 100.0

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.w_min, np.float64), np.asarray(self.w_max, np.float64)
        if not (np.all(np.isfinite(lo)) and np.all(lo > 0) and np.all(hi > lo)):
            raise ConfigError(f"conductance limits: need 0 < w_min < w_max (S), got w_min={self.w_min}, "
                              f"w_max={self.w_max}")
        if self.on_violation not in ("clip", "error"):
            raise ConfigError(f"conductance limits: on_violation must be 'clip' or 'error', got {self.on_violation!r}")
        for name in ("max_current_a", "max_feedback_current_a", "max_clamp_v"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ConfigError(f"conductance limits: {name} must be a positive number, got {v}")

    def box(self, n_edges: int) -> tuple[FloatArray, FloatArray]:
        """Per-edge (w_min, w_max) arrays (n_edges,), S."""
        lo = np.broadcast_to(np.asarray(self.w_min, np.float64), (n_edges,)).copy()
        hi = np.broadcast_to(np.asarray(self.w_max, np.float64), (n_edges,)).copy()
        return lo, hi


@dataclass(frozen=True)
class ConductanceInit:
    """Initial conductances: normal(mean, sd) truncated to [low, high], S (ASS22: 0.1, 0.01, 0.01, 0.19)."""

    mean: float = 0.1
    sd: float = 0.01
    low: float = 0.01
    high: float = 0.19

    def __post_init__(self) -> None:
        if not (self.sd > 0 and 0 < self.low < self.high):
            raise ConfigError(f"conductance init: need sd > 0 and 0 < low < high, got {self}")

    def draw(self, n: int, rng: np.random.Generator) -> FloatArray:
        """n conductances (S) from the seeded generator."""
        from scipy import stats

        a, b = (self.low - self.mean) / self.sd, (self.high - self.mean) / self.sd
        return np.asarray(stats.truncnorm.rvs(a, b, loc=self.mean, scale=self.sd, size=n, random_state=rng),
                          dtype=np.float64)


# --- the role ----------------------------------------------------------------------------------
class ConductanceNetwork:
    """Tunable-conductance network in physical units: write w (S), drive pairs (A), probe potentials (V).

    Optional: the output clamp (nudge / clamp for EP and CL) and the non-interfering feedback channel
    (feedback currents at the output pairs, its own potential probes).
    """

    def __init__(
        self,
        topology: NetworkTopology,
        conductances: ConductancePort,
        sources: PairCurrentPort,
        probe: PotentialProbePort,
        limits: ConductanceLimits | None = None,
        *,
        clamp: PairClampPort | None = None,
        feedback_sources: PairCurrentPort | None = None,
        feedback_probe: PotentialProbePort | None = None,
    ):
        self.topology = topology
        self.limits = limits or ConductanceLimits()
        t = topology
        if conductances.n_edges != t.n_edges:
            raise ConfigError(f"conductance network: port has {conductances.n_edges} edges, netlist {t.n_edges}")
        if sources.n_pairs != len(t.input_pairs) or probe.n_nodes != t.n_nodes:
            raise ConfigError("conductance network: source or probe port does not match the netlist")
        for port in (clamp, feedback_sources):
            if port is not None and port.n_pairs != len(t.output_pairs):
                raise ConfigError("conductance network: output-pair port does not match the netlist")
        if feedback_probe is not None and feedback_probe.n_nodes != t.n_nodes:
            raise ConfigError("conductance network: feedback probe does not match the netlist")
        if (feedback_sources is None) != (feedback_probe is None):
            raise ConfigError("conductance network: the feedback channel needs both sources and a probe")
        self.conductance_port, self.sources, self.probe = conductances, sources, probe
        self.clamp, self.feedback_sources, self.feedback_probe = clamp, feedback_sources, feedback_probe
        self._lo, self._hi = self.limits.box(t.n_edges)
        self._w: FloatArray | None = None
        self.writes = 0          # conductance writes made
        self.clipped = 0         # edge values clipped into the box, summed over writes

    # -- conductances ------------------------------------------------------------------------
    @property
    def conductances(self) -> FloatArray | None:
        """Last written conductances (S), a copy; None before the first write."""
        return None if self._w is None else self._w.copy()

    @property
    def bounds(self) -> tuple[FloatArray, FloatArray]:
        """Per-edge (w_min, w_max), S."""
        return self._lo.copy(), self._hi.copy()

    def check_conductances(self, siemens: ArrayLike) -> tuple[FloatArray, int]:
        """What a write would send (after the limit policy) and how many edges it clips; raises if refused."""
        w = np.asarray(siemens, dtype=np.float64).reshape(-1)
        if w.shape != (self.topology.n_edges,):
            raise ConfigError(f"conductance network: expected {self.topology.n_edges} conductances, got {w.shape}")
        if not np.all(np.isfinite(w)):
            raise SafetyLimitError("conductance network: conductances contain NaN or inf; nothing written")
        out = (w < self._lo) | (w > self._hi)
        n_out = int(np.count_nonzero(out))
        if n_out and self.limits.on_violation == "error":
            e = int(np.flatnonzero(out)[0])
            raise SafetyLimitError(f"conductance network: {n_out} conductances outside their limits, e.g. edge {e}: "
                                   f"{w[e]:.4g} S not in [{self._lo[e]:.4g}, {self._hi[e]:.4g}] S; nothing written")
        return (np.clip(w, self._lo, self._hi) if n_out else w), n_out

    def write_conductances(self, siemens: ArrayLike) -> int:
        """Write every edge conductance (S) in one batch after the limit check; returns the number clipped."""
        w, n_clipped = self.check_conductances(siemens)
        self.conductance_port.write_conductances(w)
        self._w = w
        self.writes += 1
        self.clipped += n_clipped
        return n_clipped

    # -- drives and probes ------------------------------------------------------------------
    @staticmethod
    def _check_drive(values: ArrayLike, n: int, limit: float, what: str, unit: str) -> FloatArray:
        a = np.atleast_2d(np.asarray(values, dtype=np.float64))
        if a.ndim != 2 or a.shape[1] != n:
            raise ConfigError(f"conductance network: {what} must have shape (batch, {n}), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise SafetyLimitError(f"conductance network: {what} contain NaN or inf; nothing driven")
        peak = float(np.max(np.abs(a))) if a.size else 0.0
        if peak > limit:
            raise SafetyLimitError(f"conductance network: {what} reach {peak:.4g} {unit}, above the limit "
                                   f"{limit:.4g} {unit}; nothing driven")
        return a

    def inject_currents(self, amps: ArrayLike) -> None:
        """Drive the input pairs with a batch of current frames (batch, n_input_pairs), A."""
        a = self._check_drive(amps, len(self.topology.input_pairs), self.limits.max_current_a, "input currents", "A")
        self.sources.set_currents(a)

    @staticmethod
    def _read(port: PotentialProbePort, what: str) -> FloatArray:
        v = np.asarray(port.acquire(), dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise InstrumentError(f"conductance network: {what} probe returned NaN or inf")
        return v

    def measure_potentials(self) -> FloatArray:
        """Node potentials (batch, n_nodes) of the signal channel, V (ground = 0)."""
        return self._read(self.probe, "potential")

    def clamp_outputs(self, emf: ArrayLike, conductance: float = np.inf) -> None:
        """Connect sources of EMF (batch, n_output_pairs) V behind conductance (S; inf = ideal) across the outputs."""
        if self.clamp is None:
            raise ConfigError("conductance network: this bench has no output clamp (needed by EP and CL)")
        if not (conductance > 0):
            raise ConfigError(f"conductance network: clamp conductance must be > 0 S, got {conductance}")
        e = self._check_drive(emf, len(self.topology.output_pairs), self.limits.max_clamp_v, "clamp EMFs", "V")
        self.clamp.set_clamp(e, float(conductance))

    def release_outputs(self) -> None:
        """Disconnect the output clamp (open circuit)."""
        if self.clamp is not None:
            self.clamp.release()

    @property
    def has_feedback(self) -> bool:
        """True if the non-interfering feedback channel is fitted."""
        return self.feedback_sources is not None

    @property
    def has_clamp(self) -> bool:
        """True if the output clamp is fitted."""
        return self.clamp is not None

    def inject_feedback(self, amps: ArrayLike) -> None:
        """Drive the feedback channel at the output pairs, (batch, n_output_pairs) A (+ into c_j, - out of d_j)."""
        if self.feedback_sources is None:
            raise ConfigError("conductance network: this bench has no feedback (chemical) channel")
        a = self._check_drive(amps, len(self.topology.output_pairs), self.limits.max_feedback_current_a,
                              "feedback currents", "A")
        self.feedback_sources.set_currents(a)

    def measure_feedback(self) -> FloatArray:
        """Feedback-channel node potentials u (batch, n_nodes), V: L(w) u = E, independent of v."""
        if self.feedback_probe is None:
            raise ConfigError("conductance network: this bench has no feedback (chemical) channel")
        return self._read(self.feedback_probe, "feedback potential")

    def safe_state(self) -> None:
        """All sources to zero, clamp released (conductances are passive and stay as written)."""
        self.sources.set_currents(np.zeros((1, len(self.topology.input_pairs))))
        if self.feedback_sources is not None:
            self.feedback_sources.set_currents(np.zeros((1, len(self.topology.output_pairs))))
        if self.clamp is not None:
            self.clamp.release()


def desired_from_class_means(outputs_of_means: FloatArray, rule: Literal["class_mean", "one_hot"]) -> FloatArray:
    """Desired output drops (n_classes, n_output_pairs), V, from the drops measured for the class-mean inputs.

    class_mean: t_k = Delta v(x_bar_k) (the network's own response to the class-mean input);
    one_hot:    t_k = lo + (hi - lo) e_k on the network's present output scale (hi, lo: extremes of the drops).
    Same rules as `lightloop.simulators.flow_lattice.class_targets` (the physics reference).
    """
    o = np.asarray(outputs_of_means, dtype=np.float64)
    if rule == "class_mean":
        return o.copy()
    if rule == "one_hot":
        hi, lo = float(o.max()), float(o.min())
        return lo + (hi - lo) * np.eye(*o.shape)
    raise ConfigError(f"flow processor: target rule must be 'class_mean' or 'one_hot', got {rule!r}")
