"""Error-budget paths of the flow-network and digital benches (`lightloop check`).

Flow network: the calibrated model is the HAL's netlist with the conductances (S) it believes are realised (the
written ones through the processor's calibrated conductance map, `proc.model.realised`, where it has one): node
potentials solve L(w) v = I (v[ground] = 0); the feedback channel L(w) u = E; the output clamp (a Thevenin
source of EMF e behind conductance g across the output pairs) (L + g P^T P) v = I + g P^T e.
Digital: the processor is its own model (numpy arithmetic); its paths are exact by construction and the check
only verifies the arithmetic (forward products, sigmoid, backward products).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.check_stats import PathResult, repeat_passes
from lightloop.check_stats import private_copy as _a
from lightloop.check_stats import rms as _rms

__all__ = ["flow_paths", "digital_paths", "pair_operator", "flow_model"]


def pair_operator(pairs: NDArray, n_nodes: int) -> NDArray[np.float64]:
    """P (k, n_nodes): +1 at the first node of each pair, -1 at the second (drops = v @ P.T, currents = x @ P)."""
    p = np.zeros((len(pairs), n_nodes))
    idx = np.arange(len(pairs))
    p[idx, np.asarray(pairs)[:, 0]] = 1.0
    p[idx, np.asarray(pairs)[:, 1]] = -1.0
    return p


def flow_model(topology: Any, w: NDArray, currents: NDArray, extra: NDArray | None = None) -> NDArray:
    """Model node potentials (batch, n_nodes), V: (L(w) + extra) v = currents (A), v[ground] = 0."""
    n, e = topology.n_nodes, np.asarray(topology.edges)
    lap = np.zeros((n, n))
    np.add.at(lap, (e[:, 0], e[:, 0]), w)
    np.add.at(lap, (e[:, 1], e[:, 1]), w)
    np.add.at(lap, (e[:, 0], e[:, 1]), -w)
    np.add.at(lap, (e[:, 1], e[:, 0]), -w)
    if extra is not None:
        lap = lap + extra
    free = np.flatnonzero(np.arange(n) != topology.ground)
    v = np.zeros((currents.shape[0], n))
    v[:, free] = np.linalg.solve(lap[np.ix_(free, free)], currents[:, free].T).T
    return v


def flow_paths(proc: Any, n: int, rng: np.random.Generator) -> tuple[list[PathResult], list[str]]:
    """Signal potentials and output drops, the feedback channel, the output clamp and both probes' dark readings."""
    net, topo = proc.network, proc.topology
    proc.program(proc.init_parameters(rng, 1.0))
    w = net.conductances   # what the HAL wrote (after its limit policy), through its conductance map if it has one
    cal = getattr(proc, "model", None)
    if cal is not None and hasattr(cal, "realised"):
        w = cal.realised(w)
    p_in = pair_operator(topo.input_pairs, topo.n_nodes)
    p_out = pair_operator(topo.output_pairs, topo.n_nodes)
    x = rng.uniform(0.0, 1.0, (n, len(topo.input_pairs)))
    v1, v2 = _a(proc.measure(x)), _a(proc.measure(x))
    model = flow_model(topo, w, proc.input_currents(x) @ p_in)
    unit = "potential (V)"
    out = [PathResult("network.potentials", "real", unit, v1, model, v2),
           PathResult("output.drops", "real", "drop (V)", topo.output_drops(v1), topo.output_drops(model),
                      topo.output_drops(v2))]
    sig_v = _rms(model)
    notes: list[str] = []
    sig_u = 0.0
    if net.has_feedback:
        e = rng.normal(size=(n, len(topo.output_pairs)))
        e *= min(1.0, 0.5 * net.limits.max_feedback_current_a) / max(float(np.abs(e).max()), 1e-30)
        net.inject_feedback(e)
        u1, u2 = _a(net.measure_feedback()), _a(net.measure_feedback())
        model_u = flow_model(topo, w, e @ p_out)
        out.append(PathResult("feedback.potentials", "real", unit, u1, model_u, u2))
        sig_u = _rms(model_u)
        net.inject_feedback(np.zeros((n, len(topo.output_pairs))))   # dark frames of the same batch
    else:
        notes.append("flow network: no feedback channel fitted; feedback path not checked")
    if net.has_clamp:   # a nudge as strong as a typical edge, EMFs on the scale of the free output drops
        g = float(np.median(w))
        drops = topo.output_drops(model)
        emf = rng.normal(size=drops.shape) * max(_rms(drops), 1e-12)
        emf = np.clip(emf, -0.9 * net.limits.max_clamp_v, 0.9 * net.limits.max_clamp_v)
        net.inject_currents(proc.input_currents(x))
        net.clamp_outputs(emf, conductance=g)
        try:
            c1, c2 = _a(net.measure_potentials()), _a(net.measure_potentials())
        finally:
            net.release_outputs()
        model_c = flow_model(topo, w, proc.input_currents(x) @ p_in + g * emf @ p_out, g * p_out.T @ p_out)
        out.append(PathResult("clamp.nudged", "real", unit, c1, model_c, c2))
    else:
        notes.append("flow network: no output clamp fitted; clamp path not checked")
    # dark: every source at zero; both probes should read zero potentials
    net.inject_currents(np.zeros((n, len(topo.input_pairs))))
    out.append(PathResult("detector.probe.dark", "dark", unit, _a(net.measure_potentials()), np.zeros(0),
                          ref_rms=sig_v))
    if net.has_feedback:
        out.append(PathResult("detector.feedback_probe.dark", "dark", unit, _a(net.measure_feedback()),
                              np.zeros(0), ref_rms=sig_u))
    return out, notes


def _sigmoid(z: NDArray) -> NDArray:
    """Logistic function (float64, overflow-free)."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def digital_paths(proc: Any, n: int, rng: np.random.Generator) -> tuple[list[PathResult], list[str]]:
    """Forward product per layer, sigmoid per hidden layer (and output), backward product per hidden layer."""
    sizes = proc.layer_sizes
    ws = [np.asarray(w, np.float32) for w in proc.init_parameters(rng, 1.0 / math.sqrt(max(sizes[0], 1)))]
    proc.program(ws)
    x = rng.uniform(0.0, 1.0, (n, sizes[0])).astype(np.float32)
    delta = rng.normal(0.0, 1.0, (n, sizes[-1])).astype(np.float32)
    (pre, post, _, errs), (pre2, post2, _, errs2) = repeat_passes(proc, x, delta)
    out: list[PathResult] = []
    a = np.concatenate([x, np.ones((n, 1), np.float32)], 1).astype(np.float64)
    output_sigmoid = getattr(proc, "output_activation", "sigmoid") == "sigmoid"
    hs = []
    for l, w in enumerate(ws):
        z = a @ w.T.astype(np.float64)
        out.append(PathResult(f"layer{l}.forward", "real", "pre-activation", pre[l], z, pre2[l]))
        last = l == len(ws) - 1
        if not last or output_sigmoid:
            h = _sigmoid(pre[l].astype(np.float64))
            name = "output.activation" if last else f"layer{l}.nonlinearity"
            got, got2 = (post[l], post2[l]) if last else (post[l][:, :-1], post2[l][:, :-1])
            out.append(PathResult(name, "real", "activation", got, h, got2))
        if not last:
            hs.append(_sigmoid(pre[l].astype(np.float64)))
            a = np.concatenate([post[l][:, :-1].astype(np.float64), np.ones((n, 1))], 1)
    y = post[-1].astype(np.float64)
    d = delta * (y * (1.0 - y)) if output_sigmoid else delta.astype(np.float64)
    model_errs = [d]
    for l in range(len(ws) - 1, 0, -1):
        d = (d @ ws[l][:, :-1].astype(np.float64)) * hs[l - 1] * (1.0 - hs[l - 1])
        model_errs.append(d)
    model_errs.reverse()
    for l in range(len(ws)):
        name = "output.error" if l == len(ws) - 1 else f"layer{l}.backward"
        out.append(PathResult(name, "real", "error per unit output error", errs[l], model_errs[l], errs2[l]))
    notes = ["digital bench: numpy arithmetic, its own model - every path is exact by construction (the check only "
             "verifies the arithmetic); it has no detectors, so no dark paths"]
    if getattr(proc, "feedback_channel", None) is not None:
        notes.append("digital bench: the photon-counting feedback channel is not checked")
    return out, notes
