"""Flow (resistor) network bench (Anisetti, Scellier & Schwarz 2022): config schema and builder (in-process twin).

The network is a perturbed n_side x n_side square lattice (`flow_lattice.perturbed_square_lattice`),
nearest-neighbour edges (d = 4), input pairs of random distinct nodes (one per feature), output
pairs on neighbouring nodes (one lattice edge each), a spare ground node -- all drawn from
`lattice.layout_seed`, so the hardware layout is fixed by the config. Initial conductances come from
the processor's init distribution and the TRAINING seed (the Trainer draws them).

Learning rate: alpha of the rule dw = -alpha u_xy v_xy is the training section's `lr` (use the SGD
optimizer): the flow gradient methods return grad = -dw/alpha. eta (feedback gain) and the EP/CL
nudge defaults live in `learning` here; gradient options override them.
"""

from __future__ import annotations

import math

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from lightloop.schema import BuildOverrides, LabConfig, Seed, StrictModel
from lightloop.units import Conductance, Voltage
from lightloop.errors import ConfigError
from lightloop.hal.flow_network import FlowProcessor
from lightloop.hal.flow_network_roles import (
    ConductanceInit,
    ConductanceLimits,
    ConductanceNetwork,
    NetworkTopology,
)

__all__ = ["Schema", "build", "LatticeSettings", "InitSettings", "LimitSettings", "LearningSettings", "TwinSettings"]


class LatticeSettings(StrictModel):
    """Perturbed square lattice and terminal layout (seeded)."""

    n_side: int = Field(12, ge=2, le=200, description="nodes per side (n_side^2 nodes)")
    jitter: float = Field(0.25, ge=0, lt=0.5, description="uniform position jitter, lattice units")
    connectivity: Literal["lattice", "knn"] = "lattice"
    k: int = Field(4, ge=1, le=12, description="neighbours per node for connectivity 'knn'")
    n_output_pairs: int | None = Field(None, ge=1, description="output pairs (default: one per class)")
    layout_seed: Seed = Field(2, description="seed of positions, input/output pairs and ground")


class InitSettings(StrictModel):
    """Initial conductance distribution (S): normal(mean, sd) truncated to [low, high] (ASS22)."""

    distribution: Literal["truncated_normal"] = "truncated_normal"
    mean: Conductance = Field(0.1, gt=0)
    sd: Conductance = Field(0.01, gt=0)
    low: Conductance = Field(0.01, gt=0)
    high: Conductance = Field(0.19, gt=0)

    @model_validator(mode="after")
    def _order(self) -> "InitSettings":
        if not self.low < self.mean < self.high:
            raise ValueError(f"low {self.low:g} < mean {self.mean:g} < high {self.high:g} fails; expected low < mean < high")
        return self


class LimitSettings(StrictModel):
    """Hardware limits: conductance box (S) and its policy, source currents (A), clamp EMF (V)."""

    w_min_s: Conductance = Field(1e-3, gt=0)
    w_max_s: Conductance = Field(1.0, gt=0)
    on_violation: Literal["clip", "error"] = Field("clip", description="conductances outside the box: clip or refuse")
    max_current_a: float = Field(10.0, gt=0, description="input current sources")
    max_feedback_current_a: float = Field(10.0, gt=0, description="feedback (chemical) sources")
    max_clamp_v: Voltage = Field(100.0, gt=0, description="output clamp / nudge sources")

    @model_validator(mode="after")
    def _order(self) -> "LimitSettings":
        if self.w_min_s >= self.w_max_s:
            raise ValueError(f"w_min_s {self.w_min_s:g} S >= w_max_s {self.w_max_s:g} S; expected w_min_s < w_max_s")
        return self


class LearningSettings(StrictModel):
    """Defaults of the flow learning rules (gradient options override): feedback gain eta, EP beta / CL nudge."""

    eta: float = Field(1.0, gt=0, description="feedback currents E = -eta (drops - desired), A/V")
    nudge: float = Field(1e-2, gt=0, le=1, description="EP beta (S) and CL nudge (fraction)")


class TwinSettings(StrictModel):
    """In-process twin: hidden truth and noise seeds; ideal switches every imperfection off."""

    truth_seed: Seed = 7
    noise_seed: Seed = 0
    ideal: bool = False
    programming_error: float = Field(0.01, ge=0, le=0.2, description="relative sd of the per-edge conductance gain")
    probe_noise_v: Voltage = Field(1e-4, ge=0, description="sd of each signal potential record, V")
    feedback_noise_v: Voltage = Field(1e-4, ge=0, description="sd of each feedback potential record, V")


class Schema(StrictModel):
    """processor section of a flow-network bench config."""

    kind: Literal["flow_network"]
    lattice: LatticeSettings = LatticeSettings()
    init: InitSettings = InitSettings()
    limits: LimitSettings = LimitSettings()
    feature_scale_a: float = Field(5.0, gt=0, description="input current per unit feature: x in [0,1] -> [0, 5] A")
    target_rule: Literal["class_mean", "one_hot"] = Field(
        "class_mean", description="desired drops per class, recomputed each epoch from the class-mean inputs")
    learning: LearningSettings = LearningSettings()
    twin: TwinSettings = TwinSettings()


def build(cfg: LabConfig, n_inputs: int, n_outputs: int, ov: BuildOverrides) -> FlowProcessor:
    """FlowProcessor on the in-process twin: n_inputs input pairs, n_outputs classes."""
    from lightloop.simulators.flow_lattice import choose_terminals, perturbed_square_lattice, plot_network
    from lightloop.simulators.flow_network import FlowNetwork
    from lightloop.simulators.flow_twin import (
        ConductanceTwin,
        FlowEmulator,
        FlowTruth,
        OutputClampTwin,
        PairCurrentTwin,
        PotentialProbeTwin,
    )

    p: Schema = cfg.processor
    if ov.extra:
        raise ConfigError(f"{cfg.source}: options {sorted(ov.extra)} do not apply to a flow_network bench; expected none")
    if ov.hidden is not None:
        raise ConfigError("--hidden: a flow network has no hidden layers; expected no --hidden (its size is processor.lattice.n_side)")
    if ov.optical_depth is not None:
        raise ConfigError("--optical-depth: a flow network has no saturable absorber; expected no --optical-depth")
    ideal = p.twin.ideal if ov.ideal is None else ov.ideal
    lat = p.lattice
    n_out_pairs = lat.n_output_pairs or n_outputs
    n_nodes = lat.n_side ** 2
    if 2 * (n_inputs + n_out_pairs) + 1 > n_nodes:
        raise ConfigError(f"{cfg.source}: processor.lattice.n_side: {n_nodes} nodes cannot host {n_inputs} input and "
                          f"{n_out_pairs} output pairs plus a ground node; expected n_side >= "
                          f"{math.isqrt(2 * (n_inputs + n_out_pairs)) + 1}")
    rng = np.random.default_rng(lat.layout_seed)
    pos, edges = perturbed_square_lattice(lat.n_side, rng, lat.jitter, lat.connectivity, lat.k)
    inp, out, ground = choose_terminals(edges, len(pos), rng, n_inputs, n_out_pairs)
    topo = NetworkTopology(len(pos), edges, inp, out, ground, pos)

    truth = (FlowTruth.ideal(len(edges)) if ideal else
             FlowTruth.draw(len(edges), p.twin.truth_seed, programming_error=p.twin.programming_error,
                            probe_noise_v=p.twin.probe_noise_v, feedback_noise_v=p.twin.feedback_noise_v))
    # the true network: as fabricated at the nominal mean; the HAL (not the twin) enforces the limits
    true_net = FlowNetwork(len(pos), edges, np.full(len(edges), p.init.mean) * truth.programming_gain, ground=ground,
                           w_min=1e-12, w_max=np.inf, positions=pos)
    emu = FlowEmulator(true_net, inp, out, truth, seed=p.twin.noise_seed)
    lim = p.limits
    limits = ConductanceLimits(lim.w_min_s, lim.w_max_s, lim.on_violation, lim.max_current_a,
                               lim.max_feedback_current_a, lim.max_clamp_v)
    network = ConductanceNetwork(
        topo, ConductanceTwin(emu), PairCurrentTwin(emu, "signal"), PotentialProbeTwin(emu, "signal"), limits,
        clamp=OutputClampTwin(emu), feedback_sources=PairCurrentTwin(emu, "feedback"),
        feedback_probe=PotentialProbeTwin(emu, "feedback"))
    init = ConductanceInit(p.init.mean, p.init.sd, p.init.low, p.init.high)
    proc = FlowProcessor(network, n_outputs, feature_scale=p.feature_scale_a, init=init, target_rule=p.target_rule,
                         learning_defaults={"eta": p.learning.eta, "nudge": p.learning.nudge},
                         plotter=plot_network, stateful=[emu])
    proc.emulator = emu  # the twin, for truth reports; training never touches it
    proc.bench_name = cfg.bench
    return proc
