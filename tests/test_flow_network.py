"""Physics of the flow (resistor) network and its three learning rules (ASS22, SHRL21, SB17)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightloop.errors import ConfigError, DatasetError
from lightloop.simulators import flow_lattice as fl
from lightloop.simulators.flow_network import (
    FlowNetwork,
    chemical_signaling_update,
    coupled_learning_update,
    cost,
    equilibrium_propagation_update,
    input_currents,
    loss_gradient,
    loss_gradient_fd,
    pair_operator,
    pressure_drops,
)


def random_graph(rng: np.random.Generator, n: int, n_extra: int) -> np.ndarray:
    """Connected random graph: a random spanning tree plus n_extra distinct extra edges."""
    order = rng.permutation(n)
    edges = {tuple(sorted((int(order[i]), int(order[rng.integers(i)])))) for i in range(1, n)}
    while len(edges) < n - 1 + n_extra:
        a, b = rng.choice(n, 2, replace=False)
        edges.add((int(min(a, b)), int(max(a, b))))
    return np.array(sorted(edges), dtype=np.int64)


def random_problem(seed: int, n: int = 14, n_extra: int = 18, batch: int = 5, ground: int | None = None):
    """Random network with 2 input pairs, 2 output pairs, a batch of inputs and targets (float64)."""
    rng = np.random.default_rng(seed)
    edges = random_graph(rng, n, n_extra)
    w = rng.uniform(0.3, 3.0, len(edges))
    nodes = rng.permutation(n)
    inp, out = nodes[:4].reshape(2, 2), nodes[4:8].reshape(2, 2)
    g = int(nodes[8]) if ground is None else ground
    net = FlowNetwork(n, edges, w, ground=g)
    I = input_currents(rng.uniform(0.0, 5.0, (batch, 2)), inp, n)
    t = rng.normal(size=(batch, 2))
    return net, I, out, t


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Relative error |a - b| / |b|."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# -- solves -----------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 30), extra=st.integers(0, 40),
       batch=st.integers(1, 6))
def test_solve_satisfies_kirchhoff(seed: int, n: int, extra: int, batch: int) -> None:
    rng = np.random.default_rng(seed)
    extra = min(extra, n * (n - 1) // 2 - (n - 1))
    edges = random_graph(rng, n, extra)
    ground = int(rng.integers(n))
    net = FlowNetwork(n, edges, rng.uniform(0.01, 10.0, len(edges)), ground=ground)
    I = rng.normal(size=(batch, n))
    I -= I.mean(axis=1, keepdims=True)  # balanced injections
    v = net.solve(I)
    assert v.shape == (batch, n) and v.dtype == np.float64
    np.testing.assert_allclose(v @ net.laplacian(), I, atol=1e-9 * (1 + np.abs(I).max()))
    np.testing.assert_array_equal(v[:, ground], 0.0)
    # current conservation edge by edge: net outflow of edge flows equals the injection
    out_flow = net.edge_flows(v) @ np.asarray(net.incidence.todense())
    np.testing.assert_allclose(out_flow, I, atol=1e-9 * (1 + np.abs(I).max()))


def test_unbalanced_current_drains_to_ground_and_batch_is_rowwise() -> None:
    net, I, _, _ = random_problem(3)
    rng = np.random.default_rng(0)
    J = rng.normal(size=(4, net.n_nodes))  # not balanced
    v = net.solve(J)
    resid = v @ net.laplacian() - J
    others = np.arange(net.n_nodes) != net.ground
    np.testing.assert_allclose(resid[:, others], 0.0, atol=1e-10)
    np.testing.assert_allclose(resid[:, net.ground], -J.sum(axis=1), atol=1e-10)
    rows = np.vstack([net.solve(J[i]) for i in range(len(J))])
    np.testing.assert_allclose(v, rows, rtol=0, atol=1e-12)


def test_ground_choice_does_not_change_drops() -> None:
    net, I, out, _ = random_problem(5)
    other = FlowNetwork(net.n_nodes, net.edges, net.conductances, ground=(net.ground + 1) % net.n_nodes)
    np.testing.assert_allclose(net.edge_drops(net.solve(I)), other.edge_drops(other.solve(I)), atol=1e-12)


def test_pairs_and_inputs() -> None:
    P = pair_operator([[0, 2], [3, 1]], 4)
    np.testing.assert_array_equal(P, [[1, 0, -1, 0], [0, -1, 0, 1]])
    I = input_currents([[2.0, 3.0]], [[0, 2], [3, 1]], 4)
    np.testing.assert_array_equal(I, [[2.0, -3.0, -2.0, 3.0]])
    np.testing.assert_array_equal(pressure_drops([[1.0, 2.0, 4.0, 8.0]], [[0, 2], [3, 1]]), [[-3.0, 6.0]])
    with pytest.raises(ConfigError):
        pair_operator([[1, 1]], 4)
    with pytest.raises(ConfigError):
        input_currents([[1.0]], [[0, 2], [3, 1]], 4)


def test_clamped_and_nudged_states() -> None:
    net, I, out, t = random_problem(11)
    c = np.random.default_rng(1).normal(size=(len(I), 2))
    vc = net.solve_clamped(I, out, c)
    np.testing.assert_allclose(pressure_drops(vc, out), c, atol=1e-10)
    terminals = np.isin(np.arange(net.n_nodes), np.r_[out.ravel(), net.ground])
    np.testing.assert_allclose((vc @ net.laplacian() - I)[:, ~terminals], 0.0, atol=1e-10)
    beta = 0.7
    vb = net.solve_nudged(I, out, t, beta)
    P = pair_operator(out, net.n_nodes)
    lhs = vb @ (net.laplacian() + beta * P.T @ P)
    resid = lhs - (I + beta * t @ P)
    np.testing.assert_allclose(np.delete(resid, net.ground, axis=1), 0.0, atol=1e-10)


def test_disconnected_graph_is_rejected() -> None:
    with pytest.raises(ConfigError, match="Laplacian"):
        FlowNetwork(4, [[0, 1], [2, 3]], [1.0, 1.0], ground=0)


# -- learning rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_chemical_signaling_is_exact_gradient_descent(seed: int) -> None:
    net, I, out, t = random_problem(seed)
    if seed == 4:  # ground on an output node must not matter
        net = FlowNetwork(net.n_nodes, net.edges, net.conductances, ground=int(out[0, 1]))
    alpha, eta = 0.37, 1.9
    g_fd = loss_gradient_fd(net, I, out, t)
    dw = chemical_signaling_update(net, I, out, t, alpha=alpha, eta=eta)
    assert dw.shape == (net.n_edges,)
    assert rel(dw, -alpha * eta * g_fd) < 1e-6
    assert rel(loss_gradient(net, I, out, t), g_fd) < 1e-6


def test_chemical_step_decreases_cost() -> None:
    net, I, out, t = random_problem(21)
    c0 = cost(net.solve(I), out, t).mean()
    g = loss_gradient(net, I, out, t)
    net.apply_update(chemical_signaling_update(net, I, out, t, alpha=1e-2 / np.linalg.norm(g)))
    assert cost(net.solve(I), out, t).mean() < c0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equilibrium_propagation_converges_linearly(seed: int) -> None:
    net, I, out, t = random_problem(seed)
    ref = chemical_signaling_update(net, I, out, t, alpha=0.5, eta=2.0)
    errs = [rel(equilibrium_propagation_update(net, I, out, t, b, alpha=0.5, eta=2.0), ref)
            for b in (1e-2, 1e-3, 1e-4)]
    assert errs[-1] < 1e-2
    for big, small in zip(errs, errs[1:]):
        assert 5.0 < big / small < 20.0  # error ~ beta
    sym = [rel(equilibrium_propagation_update(net, I, out, t, b, alpha=0.5, eta=2.0, symmetric=True), ref)
           for b in (1e-2, 1e-3)]
    assert 50.0 < sym[0] / sym[1] < 200.0  # centred estimate: error ~ beta^2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coupled_learning_converges_linearly_to_pressure_feedback(seed: int) -> None:
    net, I, out, t = random_problem(seed)
    ref = chemical_signaling_update(net, I, out, t, alpha=0.5, eta=2.0, feedback="pressure")
    errs = [rel(coupled_learning_update(net, I, out, t, e, alpha=0.5, eta=2.0), ref)
            for e in (1e-2, 1e-3, 1e-4)]
    assert errs[-1] < 1e-2
    for big, small in zip(errs, errs[1:]):
        assert 5.0 < big / small < 20.0


def test_coupled_learning_matches_chemical_signaling_when_transfer_is_identity() -> None:
    # One output pair: G is a scalar, so CL -> chemical / G. Rescaling makes them coincide.
    net, I, out, t = random_problem(7)
    out1, t1 = out[:1], t[:, :1]
    G = net.transfer_resistance(out1)[0, 0]
    ref = chemical_signaling_update(net, I, out1, t1, alpha=1.0, eta=1.0)
    errs = [rel(G * coupled_learning_update(net, I, out1, t1, e), ref) for e in (1e-2, 1e-3, 1e-4)]
    assert errs[-1] < 1e-3 and 5.0 < errs[0] / errs[1] < 20.0


def test_update_rule_arguments_are_validated() -> None:
    net, I, out, t = random_problem(0)
    with pytest.raises(ConfigError):
        equilibrium_propagation_update(net, I, out, t, beta=0.0)
    with pytest.raises(ConfigError):
        coupled_learning_update(net, I, out, t, nudge=1.5)
    with pytest.raises(ConfigError):
        chemical_signaling_update(net, I, out, t, feedback="voltage")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        chemical_signaling_update(net, I, out, t[:, :1])


# -- conductance limits -----------------------------------------------------------------------
def test_conductance_clipping_policy() -> None:
    net = FlowNetwork(3, [[0, 1], [1, 2], [0, 2]], [0.5, 0.5, 0.5], w_min=0.1, w_max=1.0)
    n = net.apply_update(np.array([-1.0, 0.2, 2.0]))
    assert n == 2
    np.testing.assert_array_equal(net.conductances, [0.1, 0.7, 1.0])
    v = net.solve(input_currents([[1.0]], [[0, 2]], 3))  # factor refreshed after the update
    np.testing.assert_allclose(v @ net.laplacian(), input_currents([[1.0]], [[0, 2]], 3), atol=1e-12)
    with pytest.raises(ConfigError):  # direct writes outside the box are errors, not clipped
        net.conductances = [0.05, 0.5, 0.5]
    with pytest.raises(ConfigError):
        net.apply_update(np.array([np.nan, 0.0, 0.0]))
    np.testing.assert_array_equal(net.conductances, [0.1, 0.7, 1.0])
    with pytest.raises(ConfigError):
        FlowNetwork(2, [[0, 1]], [1.0], w_min=0.0)


# -- lattice and Iris protocol ----------------------------------------------------------------
def test_perturbed_lattice_and_initialisation_are_seeded() -> None:
    pos, edges = fl.perturbed_square_lattice(12, np.random.default_rng(0))
    assert pos.shape == (144, 2) and edges.shape == (264, 2)
    deg = np.bincount(edges.ravel(), minlength=144).reshape(12, 12)
    assert np.all(deg[1:-1, 1:-1] == 4)
    grid = np.stack(np.divmod(np.arange(144), 12)[::-1], axis=1)
    assert 0 < np.abs(pos - grid).max() <= 0.25
    pos2, _ = fl.perturbed_square_lattice(12, np.random.default_rng(0))
    np.testing.assert_array_equal(pos, pos2)
    w = fl.truncated_normal_conductances(5000, np.random.default_rng(1))
    assert w.min() >= 0.01 and w.max() <= 0.19
    assert abs(w.mean() - 0.1) < 1e-3 and abs(w.std() - 0.01) < 1e-3
    inp, out, g = fl.choose_terminals(edges, 144, np.random.default_rng(2))
    used = np.r_[inp.ravel(), out.ravel()]
    assert inp.shape == (4, 2) and out.shape == (3, 2) and len(set(used.tolist())) == 14
    assert g not in used
    es = {tuple(e) for e in np.sort(edges, axis=1).tolist()}
    assert all(tuple(sorted(p)) in es for p in out.tolist())
    _, knn = fl.perturbed_square_lattice(6, np.random.default_rng(0), connectivity="knn")
    assert np.bincount(knn.ravel()).min() >= 4


def test_iris_protocol_short_run_learns() -> None:
    # seed 1 starts at 0.80 training accuracy; five epochs of chemical signalling must lift it.
    base = fl.run_iris_protocol(seed=1, epochs=0)
    run = fl.run_iris_protocol(seed=1, epochs=5, alpha=1e-2)
    assert base["train_accuracy"] < 0.85
    assert run["train_accuracy"] >= 0.93 and run["test_accuracy"] >= 0.85
    rel_cost = [r["train_cost"] / np.mean(r["artifacts"]["targets"] ** 2) for r in (base, run)]
    assert rel_cost[1] < rel_cost[0] / 2.0
    assert run["n_nodes"] == 144 and run["n_edges"] == 264


def test_plot_network_writes_png(tmp_path) -> None:
    pos, edges = fl.perturbed_square_lattice(4, np.random.default_rng(0))
    dw = np.linspace(-1.0, 1.0, len(edges))
    path = fl.plot_network(pos, edges, dw, tmp_path / "sub" / "net.png", [[0, 5]], [[10, 11]])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_iris_loader_reports_bad_file(tmp_path) -> None:
    X, y = fl.load_iris()
    assert X.shape == (150, 4) and np.bincount(y).tolist() == [50, 50, 50]
    bad = tmp_path / "iris.csv"
    bad.write_text("150,4,a,b,c\n1,2,3\n")
    with pytest.raises(DatasetError, match="iris.csv"):
        fl.load_iris(bad)
    with pytest.raises(DatasetError, match="missing.csv"):
        fl.load_iris(tmp_path / "missing.csv")
