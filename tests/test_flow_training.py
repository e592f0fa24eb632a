"""Flow-network integration (issue 6): ConductanceNetwork role, twin, FlowProcessor, the three learning rules, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.config import load_config
from lightloop.errors import ConfigError, InstrumentError, LightloopError, SafetyLimitError
from lightloop.hal.flow_network import FlowProcessor
from lightloop.hal.flow_network_roles import (
    ConductanceLimits,
    ConductanceNetwork,
    NetworkTopology,
    desired_from_class_means,
)
from lightloop.hal.ports import ConductancePort, PairClampPort, PairCurrentPort, PotentialProbePort
from lightloop.simulators.flow_network import (
    chemical_signaling_update,
    cost,
    input_currents,
    loss_gradient_fd,
)
from lightloop.simulators.flow_twin import (
    ConductanceTwin,
    OutputClampTwin,
    PairCurrentTwin,
    PotentialProbeTwin,
)
from lightloop.training.datasets import load_dataset, one_hot
from lightloop.training.flow_learning import FlowCost
from lightloop.training.gradients import make_gradient
from lightloop.training.losses import SoftmaxCrossEntropyLoss
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "lab_configs" / "flow_network.yaml"


def small_bench(n_side: int = 5, ideal: bool = True, n_in: int = 2, n_cls: int = 2, layout_seed: int = 0,
                **proc) -> FlowProcessor:
    """A small lattice flow bench from the shipped config (ideal twin unless told)."""
    cfg = load_config(CONFIG)
    cfg.processor.lattice.n_side = n_side
    cfg.processor.lattice.layout_seed = layout_seed
    for k, v in proc.items():
        setattr(cfg.processor, k, v)
    return build_processor(cfg, n_in, n_cls, BuildOverrides(ideal=ideal))


def programmed(proc: FlowProcessor, seed: int = 0) -> list[np.ndarray]:
    params = proc.init_parameters(np.random.default_rng(seed), 0.1)
    # spread the conductances so the test network is far from uniform
    params[0] = (params[0] * np.random.default_rng(seed + 1).uniform(0.5, 2.0, params[0].shape)).astype(np.float32)
    proc.program(params)
    return params


# --- config, build, contract -------------------------------------------------------------------
def test_config_builds_the_iris_lattice() -> None:
    cfg = load_config(CONFIG)
    assert cfg.processor.kind == "flow_network" and cfg.training.optimizer == "sgd"
    proc = build_processor(cfg, 4, 3)
    t = proc.topology
    assert (t.n_nodes, t.n_edges) == (144, 264)  # 12 x 12, nearest neighbours
    assert proc.layer_sizes == (4, 3) and proc.parameter_shapes() == [(264,)]
    assert proc.capabilities >= {"chemical_signaling", "equilibrium_propagation", "coupled_learning"}
    # outputs are neighbouring nodes (an edge each); terminals are distinct; ground is no terminal
    edges = {tuple(sorted(e)) for e in t.edges.tolist()}
    assert all(tuple(sorted(p)) in edges for p in t.output_pairs.tolist())
    used = np.concatenate([t.input_pairs.ravel(), t.output_pairs.ravel()])
    assert len(set(used.tolist())) == used.size and t.ground not in used
    w = proc.init_parameters(np.random.default_rng(0), 0.1)[0]
    assert w.dtype == np.float32 and 0.01 <= w.min() and w.max() <= 0.19 and abs(w.mean() - 0.1) < 0.003
    emu = proc.emulator  # the twin ports implement the role's port protocols
    assert isinstance(ConductanceTwin(emu), ConductancePort) and isinstance(OutputClampTwin(emu), PairClampPort)
    assert isinstance(PairCurrentTwin(emu), PairCurrentPort) and isinstance(PotentialProbeTwin(emu), PotentialProbePort)


def test_config_errors_are_one_line(tmp_path) -> None:
    text = CONFIG.read_text().replace("n_side: 12", "n_side: 1")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"processor\.lattice\.n_side"):
        load_config(bad)
    cfg = load_config(CONFIG)
    with pytest.raises(ConfigError, match="--hidden"):
        build_processor(cfg, 4, 3, BuildOverrides(hidden=[8]))
    cfg.processor.lattice.n_side = 3
    with pytest.raises(ConfigError, match="cannot host"):
        build_processor(cfg, 4, 3)


# --- the role's limits ---------------------------------------------------------------------------
class _Recorder:
    """Port stand-in that records what reached it."""

    def __init__(self, n_edges=0, n_pairs=0, n_nodes=0, reading=None):
        self.n_edges, self.n_pairs, self.n_nodes = n_edges, n_pairs, n_nodes
        self.calls: list[tuple] = []
        self.reading = reading

    def write_conductances(self, w):
        self.calls.append(("w", w.copy()))

    def set_currents(self, a):
        self.calls.append(("i", a.copy()))

    def set_clamp(self, emf, g):
        self.calls.append(("clamp", emf.copy(), g))

    def release(self):
        self.calls.append(("release",))

    def acquire(self):
        return self.reading


def _role(on_violation="clip", reading=None):
    topo = NetworkTopology(4, [[0, 1], [1, 2], [2, 3], [3, 0]], [[0, 2]], [[1, 3]], ground=0)
    ports = dict(conductances=_Recorder(n_edges=4), sources=_Recorder(n_pairs=1),
                 probe=_Recorder(n_nodes=4, reading=reading))
    lim = ConductanceLimits(w_min=np.array([0.01, 0.01, 0.01, 0.05]), w_max=0.5, on_violation=on_violation,
                            max_current_a=2.0, max_feedback_current_a=1.0, max_clamp_v=3.0)
    clamp, fb_src, fb_probe = _Recorder(n_pairs=1), _Recorder(n_pairs=1), _Recorder(n_nodes=4, reading=reading)
    net = ConductanceNetwork(topo, limits=lim, clamp=clamp, feedback_sources=fb_src, feedback_probe=fb_probe,
                             **ports)
    return net, ports, clamp, fb_src


def test_conductance_limits_clip_or_refuse_before_writing() -> None:
    net, ports, _, _ = _role("clip")
    assert net.write_conductances([0.1, 0.6, 0.001, 0.02]) == 3          # per-edge box: edge 3 has w_min 0.05
    np.testing.assert_allclose(ports["conductances"].calls[-1][1], [0.1, 0.5, 0.01, 0.05])
    assert net.clipped == 3 and net.writes == 1
    with pytest.raises(SafetyLimitError, match="NaN"):
        net.write_conductances([0.1, np.nan, 0.1, 0.1])
    strict, ports, _, _ = _role("error")
    with pytest.raises(SafetyLimitError, match="edge 3.*nothing written"):
        strict.write_conductances([0.1, 0.1, 0.1, 0.02])
    assert ports["conductances"].calls == [] and strict.conductances is None
    with pytest.raises(ConfigError):
        ConductanceLimits(w_min=0.0)


def test_drive_limits_are_refused_and_probe_faults_raise() -> None:
    net, ports, clamp, fb = _role(reading=np.array([[0.0, np.nan, 1.0, 2.0]]))
    with pytest.raises(SafetyLimitError, match="input currents reach 2.5 A"):
        net.inject_currents([[2.5]])
    with pytest.raises(SafetyLimitError, match="feedback currents"):
        net.inject_feedback([[-1.5]])
    with pytest.raises(SafetyLimitError, match="clamp EMFs"):
        net.clamp_outputs([[4.0]], 0.1)
    assert ports["sources"].calls == [] and fb.calls == [] and clamp.calls == []
    net.inject_currents([[1.0]])
    with pytest.raises(InstrumentError, match="NaN"):
        net.measure_potentials()
    net.clamp_outputs([[1.0]])
    net.safe_state()
    assert ports["sources"].calls[-1][1].tolist() == [[0.0]] and fb.calls[-1][1].tolist() == [[0.0]]
    assert clamp.calls[-1] == ("release",)


# --- the twin ------------------------------------------------------------------------------------
def test_twin_channels_do_not_interfere_and_follow_kirchhoff() -> None:
    proc = small_bench()
    programmed(proc)
    emu, net = proc.emulator, proc.network
    x = np.random.default_rng(3).uniform(0, 1, (4, 2))
    v0 = proc.measure(x)
    net.inject_feedback(np.random.default_rng(4).normal(size=(4, 2)))
    u = net.measure_feedback()
    np.testing.assert_array_equal(proc.measure(x), v0)                   # the chemical leaves v alone
    E = input_currents(emu._feedback, proc.topology.output_pairs, proc.topology.n_nodes)
    L = emu.net.laplacian()
    free = np.arange(proc.topology.n_nodes) != proc.topology.ground
    np.testing.assert_allclose((u @ L)[:, free], E[:, free], atol=1e-10)
    np.testing.assert_allclose(v0, emu.net.solve(input_currents(5 * x, proc.topology.input_pairs, emu.net.n_nodes)))
    # nudged / clamped solves: beta -> inf approaches the clamp, clamp holds the drops
    t = np.random.default_rng(5).normal(size=(4, 2))
    vc = proc.clamped(x, t)
    np.testing.assert_allclose(proc.topology.output_drops(vc), t, atol=1e-9)
    vb = proc.nudged(x, t, 1e6)
    np.testing.assert_allclose(proc.topology.output_drops(vb), t, atol=1e-3)
    np.testing.assert_array_equal(proc.measure(x), v0)                   # the clamp was released


def test_twin_truth_is_hidden_seeded_and_restorable() -> None:
    real = small_bench(ideal=False)
    params = programmed(real)
    true_w = real.emulator.true_conductances()
    assert not np.allclose(true_w, params[0], rtol=1e-4)                 # programming error exists ...
    np.testing.assert_allclose(true_w, params[0], rtol=0.06)             # ... and is ~1 %
    x = np.full((2, 2), 0.5)
    state = real.snapshot()
    a = real.measure(x)
    b = real.measure(x)
    assert not np.array_equal(a, b)                                      # probe noise
    real.restore(state)
    np.testing.assert_array_equal(real.measure(x), a)                    # seeded, restorable
    again = small_bench(ideal=False)
    programmed(again)
    np.testing.assert_array_equal(again.measure(x), a)


# --- processor semantics -------------------------------------------------------------------------
def test_scores_classify_by_nearest_desired_and_flow_cost_is_the_loss() -> None:
    proc = small_bench()
    programmed(proc)
    with pytest.raises(LightloopError, match="prepare_epoch"):
        proc.forward(np.zeros((1, 2)))
    x = np.random.default_rng(0).uniform(0, 1, (20, 2))
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    proc.prepare_epoch(x, y)
    T = proc.desired
    means = np.stack([x[y == k].mean(0) for k in range(2)])
    np.testing.assert_allclose(T, proc.topology.output_drops(proc.measure(means)))
    taps = proc.forward(x)
    drops = taps.extra["drops"]
    d2 = ((drops[:, None, :] - T[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(taps.output.argmax(1), d2.argmin(1))
    c = cost(taps.extra["potentials"], proc.topology.output_pairs, T[y]).mean()
    assert FlowCost().value(taps.output, one_hot(y, 2)) == pytest.approx(c, rel=1e-12)
    oh = desired_from_class_means(np.array([[1.0, 3.0], [2.0, -1.0]]), "one_hot")
    np.testing.assert_allclose(oh, [[3.0, -1.0], [-1.0, 3.0]])


def test_feedback_over_the_current_limit_is_scaled_exactly() -> None:
    proc = small_bench()
    programmed(proc)
    E = np.array([[30.0, -5.0], [0.1, 0.2]])                             # first frame above the 10 A limit
    u = proc.feedback(E)
    ref = proc.emulator.net.solve(input_currents(E, proc.topology.output_pairs, proc.topology.n_nodes))
    np.testing.assert_allclose(u, ref, rtol=1e-10, atol=1e-12)
    assert proc.feedback_rescaled == 1


# --- learning rules ------------------------------------------------------------------------------
def _batch(proc: FlowProcessor, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (6, 2))
    y = np.array([0, 1, 0, 1, 1, 0])
    proc.prepare_epoch(x, y)
    proc.set_desired(proc.desired + rng.normal(0, 0.3, proc.desired.shape))  # a cost far from zero
    return x, y, one_hot(y, 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_chemical_signaling_equals_finite_difference_gradient(seed: int) -> None:
    proc = small_bench()
    params = programmed(proc, seed)
    x, y, tb = _batch(proc, seed)
    eta = 0.7
    res = make_gradient("chemical_signaling", eta=eta)(proc, params, x, tb)
    net = proc.emulator.net
    I = input_currents(5 * x, proc.topology.input_pairs, net.n_nodes)
    fd = loss_gradient_fd(net, I, proc.topology.output_pairs, proc.desired[y])
    g = res.grads[0].astype(np.float64)
    assert np.linalg.norm(g - eta * fd) / np.linalg.norm(eta * fd) < 1e-5
    assert res.measurements == 2
    assert res.loss == pytest.approx(cost(proc.measure(x), proc.topology.output_pairs, proc.desired[y]).mean())


def test_ep_and_cl_converge_linearly_as_the_nudge_vanishes() -> None:
    proc = small_bench()
    params = programmed(proc, 3)
    x, y, tb = _batch(proc, 3)
    net, out = proc.emulator.net, proc.topology.output_pairs
    I = input_currents(5 * x, proc.topology.input_pairs, net.n_nodes)
    chem = make_gradient("chemical_signaling")(proc, params, x, tb).grads[0].astype(np.float64)
    # CL's limit is the pressure-feedback variant (flow_network docstring); dw = -alpha * grad with alpha = 1
    press = -chemical_signaling_update(net, I, out, proc.desired[y], 1.0, 1.0, feedback="pressure")
    errs = {"equilibrium_propagation": [], "coupled_learning": []}
    for nudge in (4e-2, 1e-2):
        for name, ref in (("equilibrium_propagation", chem), ("coupled_learning", press)):
            g = make_gradient(name, nudge=nudge)(proc, params, x, tb).grads[0].astype(np.float64)
            errs[name].append(np.linalg.norm(g - ref) / np.linalg.norm(ref))
    for name, (e1, e2) in errs.items():
        assert e2 < 0.05, name
        assert 2.5 < e1 / e2 < 6.0, (name, e1, e2)                         # O(nudge)


def test_gradient_options_and_requirements() -> None:
    assert make_gradient("equilibrium_propagation", beta=0.02).beta == 0.02
    assert make_gradient("equilibrium_propagation", nudge=0.03).beta == 0.03
    assert make_gradient("coupled_learning", beta=0.5).nudge == 0.5
    with pytest.raises(ConfigError, match="nudge"):
        make_gradient("coupled_learning", nudge=2.0)
    with pytest.raises(ConfigError, match="eta"):
        make_gradient("chemical_signaling", eta=-1)
    with pytest.raises(TypeError):
        make_gradient("chemical_signaling", nudge=0.1)
    m = make_gradient("chemical_signaling")
    with pytest.raises(ConfigError, match="flow cost"):
        m.loss = SoftmaxCrossEntropyLoss()

    class NotFlow:
        capabilities = frozenset({"exact"})

    with pytest.raises(ConfigError, match="not available"):
        m.check(NotFlow())  # type: ignore[arg-type]
    # bench defaults fill options that were not given
    proc = small_bench()
    proc.learning_defaults = {"eta": 2.0, "nudge": 0.05}
    params = programmed(proc)
    x, _, tb = _batch(proc)
    g2 = make_gradient("chemical_signaling")(proc, params, x, tb).grads[0]
    g1 = make_gradient("chemical_signaling", eta=1.0)(proc, params, x, tb).grads[0]
    np.testing.assert_allclose(g2, 2 * g1, rtol=1e-5)


# --- end to end ----------------------------------------------------------------------------------
def test_trainer_refreshes_targets_learns_and_writes_the_png(tmp_path) -> None:
    data = load_dataset("iris")
    proc = small_bench(n_side=8, ideal=False, n_in=4, n_cls=3)
    calls = []
    orig = proc.prepare_epoch
    proc.prepare_epoch = lambda x, y: (calls.append(x.shape), orig(x, y))  # type: ignore[method-assign]
    trainer = Trainer(proc, make_gradient("chemical_signaling"), make_optimizer("sgd", 3e-3),
                      TrainSettings(epochs=6, batch_size=1, seed=0, progress=False), out_dir=tmp_path)
    res = trainer.fit(data)
    assert calls == [data.x_train.shape] * 6
    assert res.history[-1]["train_loss"] < 0.5 * res.history[0]["train_loss"]
    assert res.test_accuracy >= 0.85 and res.history[-1]["train_accuracy"] > res.history[0]["train_accuracy"]
    png = tmp_path / "flow_network.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    s = proc.summary_fields()
    assert s["network_png"] == str(png) and s["mean_abs_dw_s"] > 0 and len(s["desired_drops_v"]) == 3
    # resume: the initial conductances survive in the checkpoint (the PNG shows the whole run's dw)
    w0 = proc.snapshot()["w_initial"]
    proc2 = small_bench(n_side=8, ideal=False, n_in=4, n_cls=3)
    Trainer(proc2, make_gradient("chemical_signaling"), make_optimizer("sgd", 3e-3),
            TrainSettings(epochs=7, batch_size=1, seed=0, progress=False), out_dir=tmp_path).fit(data, resume=True)
    np.testing.assert_array_equal(proc2.snapshot()["w_initial"], w0)


def test_cli_json_summary(tmp_path, capsys) -> None:
    from lightloop.cli import main

    cfg = tmp_path / "flow.yaml"
    cfg.write_text(CONFIG.read_text().replace("n_side: 12", "n_side: 7"))
    for gradient in ("chemical_signaling", "coupled_learning"):
        code = main(["train", "--config", str(cfg), "--dataset", "iris", "--gradient", gradient, "--epochs", "2",
                     "--out", str(tmp_path / gradient), "--json"])
        assert code == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["gradient"] == gradient and summary["layer_sizes"] == [4, 3]
        assert summary["measurements_per_step"] == 2.0 and summary["n_edges"] == 84
        assert Path(summary["network_png"]).is_file()
    code = main(["train", "--config", str(cfg), "--dataset", "iris", "--gradient", "pump_probe", "--epochs", "1",
                 "--out", str(tmp_path / "pp")])
    assert code == 2 and "not available on FlowProcessor" in capsys.readouterr().err
