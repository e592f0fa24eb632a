"""In-process twin of a conductance (flow / resistor) network bench, on the physics of `flow_network`.

One FlowEmulator holds the true network (a FlowNetwork), the drives and the HIDDEN truth; the port
twins below implement the ports of `lightloop.hal.flow_network` on it, so a conductance write
changes what every probe reads (both channels share the one Laplacian L(w)).

Hidden truth (never read by the HAL; `FlowTruth.draw` seeded by truth_seed):
  * programming error: the conductance an edge really takes is w_true = w_written * gain_e with a
    fixed per-edge gain_e = 1 + programming_error * N(0, 1) (fabrication / transistor mismatch);
  * probe noise: independent Gaussian noise (V, sd) on every node-potential record, separately for
    the signal probes and the feedback-channel probes, drawn from the seeded noise generator.
`FlowTruth.ideal` switches both off (exact conductances, noiseless probes).

Channels: the signal v solves L(w_true) v = I (+ the output clamp, when connected: Thevenin sources
of EMF t behind conductance g across the output pairs -- g finite is the EP nudge, `solve_nudged`
with beta = g; g = inf holds the drops, `solve_clamped`); the feedback ("chemical") channel solves
L(w_true) u = E with E injected at the output pairs. The two never interfere (ASS22): the clamp is a
pressure source and does not act on the feedback channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError, InstrumentError
from lightloop.simulators.flow_network import FlowNetwork, input_currents

__all__ = ["FlowTruth", "FlowEmulator", "ConductanceTwin", "PairCurrentTwin", "PotentialProbeTwin", "OutputClampTwin"]

FloatArray = NDArray[np.float64]


@dataclass
class FlowTruth:
    """Hidden truth: per-edge programming gain (n_edges,), probe noise sd of the signal and feedback probes (V)."""

    programming_gain: FloatArray
    probe_noise_v: float = 0.0
    feedback_noise_v: float = 0.0

    @classmethod
    def draw(cls, n_edges: int, seed: int, *, programming_error: float = 0.0, probe_noise_v: float = 0.0,
             feedback_noise_v: float = 0.0) -> "FlowTruth":
        """Seeded draw: gain_e = 1 + programming_error * N(0, 1), clipped to [0.5, 1.5]."""
        if programming_error < 0 or probe_noise_v < 0 or feedback_noise_v < 0:
            raise ConfigError("flow twin: programming_error and probe noise must be >= 0")
        rng = np.random.default_rng(seed)
        gain = np.clip(1.0 + programming_error * rng.standard_normal(n_edges), 0.5, 1.5)
        return cls(gain, float(probe_noise_v), float(feedback_noise_v))

    @classmethod
    def ideal(cls, n_edges: int) -> "FlowTruth":
        """Exact conductances, noiseless probes."""
        return cls(np.ones(n_edges))


class FlowEmulator:
    """The bench: true network, drive frames of both channels, output clamp, seeded probe noise."""

    def __init__(self, network: FlowNetwork, input_pairs: NDArray, output_pairs: NDArray,
                 truth: FlowTruth | None = None, seed: int = 0):
        self.net = network
        self.input_pairs = np.asarray(input_pairs, np.int64)
        self.output_pairs = np.asarray(output_pairs, np.int64)
        self.truth = truth or FlowTruth.ideal(network.n_edges)
        if self.truth.programming_gain.shape != (network.n_edges,):
            raise ConfigError("flow twin: truth does not match the number of edges")
        self.rng = np.random.default_rng(seed)
        self._drive = np.zeros((1, len(self.input_pairs)))
        self._feedback = np.zeros((1, len(self.output_pairs)))
        self._clamp: tuple[FloatArray, float] | None = None

    # -- device actions --------------------------------------------------------------------------
    def program(self, w_written: FloatArray) -> None:
        """Conductances take w_written * gain (hidden programming error)."""
        w = np.asarray(w_written, np.float64) * self.truth.programming_gain
        if np.any(w <= 0) or not np.all(np.isfinite(w)):
            raise InstrumentError("flow twin: a conductance was programmed to a non-positive value")
        self.net.conductances = w

    def drive(self, amps: FloatArray) -> None:
        """Input-pair current frames (batch, n_input_pairs), A."""
        self._drive = np.atleast_2d(np.asarray(amps, np.float64)).copy()

    def drive_feedback(self, amps: FloatArray) -> None:
        """Feedback-channel current frames at the output pairs (batch, n_output_pairs), A."""
        self._feedback = np.atleast_2d(np.asarray(amps, np.float64)).copy()

    def set_clamp(self, emf: FloatArray, conductance: float) -> None:
        """Connect Thevenin sources (EMF (batch, n_out) V, series conductance S; inf = ideal) across the outputs."""
        self._clamp = (np.atleast_2d(np.asarray(emf, np.float64)).copy(), float(conductance))

    def release_clamp(self) -> None:
        """Open-circuit the output clamp."""
        self._clamp = None

    # -- physics ---------------------------------------------------------------------------------
    def _noise(self, shape: tuple[int, ...], sd: float) -> FloatArray:
        if sd <= 0:
            return np.zeros(shape)
        noise = sd * self.rng.standard_normal(shape)
        noise[:, self.net.ground] = 0.0  # potentials are referred to the ground node
        return noise

    def potentials(self) -> FloatArray:
        """True signal potentials (batch, n_nodes) + probe noise, V."""
        I = input_currents(self._drive, self.input_pairs, self.net.n_nodes)
        if self._clamp is None:
            v = self.net.solve(I)
        else:
            emf, g = self._clamp
            if emf.shape[0] not in (1, I.shape[0]):
                raise InstrumentError(f"flow twin: clamp has {emf.shape[0]} frames, the sources {I.shape[0]}")
            if np.isinf(g):
                v = self.net.solve_clamped(I, self.output_pairs, emf)
            else:
                v = self.net.solve_nudged(I, self.output_pairs, emf, g)
        return v + self._noise(v.shape, self.truth.probe_noise_v)

    def feedback_potentials(self) -> FloatArray:
        """True feedback-channel potentials u (batch, n_nodes) + probe noise, V: L(w) u = E."""
        E = input_currents(self._feedback, self.output_pairs, self.net.n_nodes)
        u = self.net.solve(E)
        return u + self._noise(u.shape, self.truth.feedback_noise_v)

    def true_conductances(self) -> FloatArray:
        """The conductances the edges really have (S) -- truth, for reports and tests only."""
        return self.net.conductances

    def snapshot(self) -> dict[str, Any]:
        """Noise generator state."""
        return {"rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore the noise generator state."""
        self.rng.bit_generator.state = state["rng"]


class ConductanceTwin:
    """ConductancePort on the emulator."""

    def __init__(self, emu: FlowEmulator):
        self.emu = emu
        self.n_edges = emu.net.n_edges

    def write_conductances(self, siemens: FloatArray) -> None:
        """Program every edge (S)."""
        self.emu.program(siemens)


class PairCurrentTwin:
    """PairCurrentPort on the emulator: channel 'signal' (input pairs) or 'feedback' (output pairs)."""

    def __init__(self, emu: FlowEmulator, channel: str = "signal"):
        if channel not in ("signal", "feedback"):
            raise ConfigError(f"flow twin: channel must be 'signal' or 'feedback', got {channel!r}")
        self.emu, self.channel = emu, channel
        self.n_pairs = len(emu.input_pairs if channel == "signal" else emu.output_pairs)

    def set_currents(self, amps: FloatArray) -> None:
        """Current frames (batch, n_pairs), A."""
        (self.emu.drive if self.channel == "signal" else self.emu.drive_feedback)(amps)


class PotentialProbeTwin:
    """PotentialProbePort on the emulator: channel 'signal' (v) or 'feedback' (u)."""

    def __init__(self, emu: FlowEmulator, channel: str = "signal"):
        if channel not in ("signal", "feedback"):
            raise ConfigError(f"flow twin: channel must be 'signal' or 'feedback', got {channel!r}")
        self.emu, self.channel = emu, channel
        self.n_nodes = emu.net.n_nodes

    def acquire(self) -> FloatArray:
        """Node potentials (batch, n_nodes), V."""
        return self.emu.potentials() if self.channel == "signal" else self.emu.feedback_potentials()


class OutputClampTwin:
    """PairClampPort on the emulator (Thevenin sources across the output pairs)."""

    def __init__(self, emu: FlowEmulator):
        self.emu = emu
        self.n_pairs = len(emu.output_pairs)

    def set_clamp(self, emf: FloatArray, conductance: float) -> None:
        """EMF (batch, n_pairs) V behind conductance (S, inf = ideal source)."""
        self.emu.set_clamp(emf, conductance)

    def release(self) -> None:
        """Open circuit."""
        self.emu.release_clamp()
