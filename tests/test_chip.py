"""Integrated chip: ideal processor = matrix math, adjoint = finite differences, voltage limits, configs,
measurements per step, training and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lightloop.bench import BuildOverrides, build_processor
from lightloop.config import load_config, parse_config
from lightloop.errors import ConfigError, SafetyLimitError
from lightloop.hal.chip import ChipProcessor
from lightloop.hal.phase_shifters import PhaseShifterBank, ThermoOpticCalibration
from lightloop.physics.mzi import eo_activation, eo_activation_slope, mesh_layout, mesh_matrix, thermal_crosstalk
from lightloop.training.datasets import load_dataset, one_hot
from lightloop.training.gradients import FiniteDifferenceGradient, make_gradient, mse_loss

CONFIG = "lab_configs/integrated_chip.yaml"


def raw_config(**proc) -> dict:
    raw = yaml.safe_load(open(CONFIG))
    for key, value in proc.items():
        target = raw["processor"]
        parts = key.split("__")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
    return raw


def make_chip(n_in=2, n_out=2, ideal=True, precision="double", noise=True, **proc) -> ChipProcessor:
    raw = raw_config(**proc)
    if not noise:
        raw["processor"]["chip"]["noise"] = {k: 0.0 for k in raw["processor"]["chip"]["noise"]}
        raw["processor"]["chip"]["variation"]["drift_rad_per_sqrt_s"] = 0.0
    cfg = parse_config(raw, "test.yaml")
    return build_processor(cfg, n_in, n_out, BuildOverrides(ideal=ideal, extra={"precision": precision}))


def batch(n_in=2, n_out=2, b=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (b, n_in)), one_hot(rng.integers(0, n_out, b), n_out)


def digital_forward(proc: ChipProcessor, params, x):
    """The same network in plain matrix math (ideal chip)."""
    emu = proc.emulator
    src = proc.source
    a = np.zeros((x.shape[0], src.n_ports))
    a[:, : x.shape[1]] = src.field_scale * (2 * x - 1)
    a[:, x.shape[1]: x.shape[1] + src.bias_ports] = src.bias_amplitude
    powers = []
    for l, (lay, ph) in enumerate(zip(proc.layers, params)):
        layout = mesh_layout(lay.n_ports)
        k = layout.n_mzi
        u = mesh_matrix(layout, ph[:k], ph[k:2 * k])
        xin = np.zeros((x.shape[0], lay.n_ports), complex)
        xin[:, : a.shape[1]] = a
        p = np.abs(xin @ u.T) ** 2
        if l < len(proc.layers) - 1:
            h = emu.design.hidden[l]
            powers.append(p[:, :h])
            m = proc.activations[l].model
            a = eo_activation(p[:, :h], m.detuning, m.k, m.t_min, m.supply)
        else:
            powers.append(proc.output_gain * p[:, : proc.n_out])
    return powers


def test_ideal_processor_equals_matrix_math():
    proc = make_chip(hidden=[5])
    params = proc.init_parameters(np.random.default_rng(1), 1.0)
    proc.program([p.astype(np.float64) for p in params])
    x, _ = batch()
    taps = proc.forward(x)
    ref = digital_forward(proc, [p.astype(np.float64) for p in params], x)
    np.testing.assert_allclose(taps.pre[0], ref[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(taps.output, ref[-1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(taps.post[0], eo_activation(ref[0], 0.0, 3.0, 0.0, 1.0), rtol=1e-10)
    assert proc.layer_sizes == (2, 5, 2)
    assert proc.info["mesh_ports"] == [5, 5]


def _fd_grads(proc, params, x, t, h=1e-5):
    def loss(ps):
        proc.program(ps)
        return mse_loss(proc.forward(x).output, t)

    out = []
    for l, p in enumerate(params):
        g = np.zeros_like(p)
        for j in range(p.size):
            plus = [q.copy() for q in params]
            minus = [q.copy() for q in params]
            plus[l][j] += h
            minus[l][j] -= h
            g[j] = (loss(plus) - loss(minus)) / (2 * h)
        out.append(g)
    proc.program(params)
    return out


@pytest.mark.parametrize("mesh", ["rectangular", "triangular"])
def test_adjoint_equals_finite_differences_ideal(mesh):
    proc = make_chip(mesh=mesh, hidden=[4])
    rng = np.random.default_rng(2)
    params = [rng.uniform(0, 2 * np.pi, s) for s in proc.parameter_shapes()]
    proc.program(params)
    x, t = batch(seed=3)
    res = make_gradient("adjoint")(proc, params, x, t)
    fd = _fd_grads(proc, params, x, t)
    ga, gf = np.concatenate(res.grads), np.concatenate(fd)
    assert np.linalg.norm(ga - gf) / np.linalg.norm(gf) < 1e-6
    assert res.loss == pytest.approx(mse_loss(proc.forward(x).output, t))


def test_adjoint_on_imperfect_chip_points_downhill():
    proc = make_chip(ideal=False, noise=False, hidden=[4])
    rng = np.random.default_rng(4)
    params = [rng.uniform(0, 2 * np.pi, s) for s in proc.parameter_shapes()]
    proc.program(params)
    x, t = batch(seed=5)
    res = make_gradient("adjoint")(proc, params, x, t)
    fd = _fd_grads(proc, params, x, t)
    ga, gf = np.concatenate(res.grads), np.concatenate(fd)
    assert ga @ gf / np.linalg.norm(ga) / np.linalg.norm(gf) > 0.95


def test_backward_errors_match_digital_backprop():
    proc = make_chip(hidden=[3])
    rng = np.random.default_rng(6)
    params = [rng.uniform(0, 2 * np.pi, s) for s in proc.parameter_shapes()]
    proc.program(params)
    x, t = batch(seed=7)
    taps = proc.forward(x)
    delta = taps.output - t
    errs = proc.backward(delta)
    # digital: e1 = dL/dp1 * B via the chain rule through mesh 2 and the activation slope
    lay2 = proc.layers[1]
    layout = mesh_layout(lay2.n_ports)
    k = layout.n_mzi
    u2 = mesh_matrix(layout, params[1][:k], params[1][k:])
    m = proc.activations[0].model
    a1 = eo_activation(taps.pre[0], m.detuning, m.k, m.t_min, m.supply)
    xin = np.zeros((x.shape[0], lay2.n_ports), complex)
    xin[:, :3] = a1
    z2 = xin @ u2.T
    e2 = np.zeros_like(z2.real)
    e2[:, :2] = delta
    dl_da = 2 * np.real((e2 * np.conj(z2)) @ u2)[:, :3]
    ref = dl_da * eo_activation_slope(taps.pre[0], m.detuning, m.k, m.t_min, m.supply)
    np.testing.assert_allclose(errs[0], ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(errs[-1], delta)


@pytest.mark.parametrize("hidden", [[4], [8], [16]])
def test_measurements_per_step_adjoint_vs_finite_difference(hidden):
    proc = make_chip(hidden=hidden, precision="single", ideal=False)
    params = proc.init_parameters(np.random.default_rng(0), 1.0)
    proc.program(params)
    x, t = batch()
    res = make_gradient("adjoint")(proc, params, x, t)
    n_layers = len(proc.layers)
    assert res.measurements == 7 * n_layers - 1                  # independent of the mesh size
    if hidden[0] <= 8:
        fd = FiniteDifferenceGradient(step=1e-2)(proc, params, x, t)
        n_params = sum(p.size for p in params)
        assert fd.measurements == 2 * n_params * n_layers + n_layers   # grows like N^2


def test_adjoint_refused_on_svd_layers():
    proc = make_chip(layer="svd", hidden=[3])
    assert "adjoint" not in proc.capabilities
    from lightloop.training.optimizers import make_optimizer
    from lightloop.training.trainer import Trainer, TrainSettings

    with pytest.raises(ConfigError, match="adjoint"):
        Trainer(proc, make_gradient("adjoint"), make_optimizer("adam", 0.01), TrainSettings(progress=False))


def test_svd_layer_chip_realises_programmed_matrix():
    from lightloop.physics.mzi import svd_decompose

    proc = make_chip(layer="svd", hidden=[3], n_in=2, n_out=2, svd_gain=3.0, encoder__bias_ports=1)
    n1 = proc.layers[0].n_ports
    rng = np.random.default_rng(8)
    w = rng.standard_normal((3, 3))
    w *= 2.5 / np.linalg.svd(w, compute_uv=False)[0]                  # needs the 3.0 amplifier, within it
    sp = svd_decompose(w, n=n1)
    sp_phases = sp.flat()
    # the layer's gain is fixed by the config (3.0): scale the attenuators to realise W exactly
    sp2 = svd_decompose(w / 3.0, n=n1)
    assert sp2.gain == 1.0
    params = [sp2.flat(), proc.layers[1].random_phases(rng)]
    proc.program(params)
    x, _ = batch(seed=9)
    taps = proc.forward(x)
    a0 = taps.extra["ports"]
    np.testing.assert_allclose(taps.pre[0], np.abs(a0 @ w.T) ** 2, rtol=1e-8, atol=1e-10)
    assert sp_phases.size == params[0].size


@settings(max_examples=40, deadline=None)
@given(scale=st.sampled_from([1.0, 10.0, 1e3, 1e6]), seed=st.integers(0, 10_000))
def test_phase_writes_never_exceed_voltage_limits(scale, seed):
    """Whatever the optimizer asks, the heater driver never sees more than v_max (clip policy)."""
    cal = ThermoOpticCalibration.nominal(12, 0.008, 1000.0, thermal_crosstalk(
        np.stack([np.arange(12.0), np.zeros(12)], 1), 0.1))
    seen = []

    class Port:
        n_channels = 12

        def set_voltages(self, v):
            seen.append(np.array(v))

        def get_voltages(self):
            return seen[-1]

    bank = PhaseShifterBank(Port(), cal, v_max=7.5)        # 2 pi needs 7.09 V
    rng = np.random.default_rng(seed)
    phases = rng.standard_normal(12) * scale
    bank.set_phases(phases)
    assert len(seen) == 1                                    # one batched write
    assert np.all(seen[-1] >= 0) and np.all(seen[-1] <= 7.5)
    # the calibrated model reproduces the request modulo 2 pi where nothing was clipped
    if bank.clipped_last == 0:
        got = cal.phase(seen[-1])
        np.testing.assert_allclose(np.angle(np.exp(1j * (got - phases))), 0, atol=1e-6)


def test_raw_voltage_write_beyond_limit_is_refused_and_nothing_written():
    proc = make_chip(ideal=False, hidden=[4], precision="single")
    bank = proc.layers[0].bank
    port = bank.port
    before = port.transactions
    v = np.full(bank.n_channels, 1.0)
    v[3] = bank.v_max[3] + 0.01
    with pytest.raises(SafetyLimitError, match="channel 3"):
        bank.set_voltages(v)
    v[3] = np.nan
    with pytest.raises(SafetyLimitError):
        bank.set_voltages(v)
    with pytest.raises(SafetyLimitError):
        bank.set_phases(np.full(bank.n_channels, np.inf))
    assert port.transactions == before


def test_training_with_adversarial_optimizer_stays_within_limits():
    proc = make_chip(ideal=False, hidden=[4], precision="single")
    rng = np.random.default_rng(0)
    for _ in range(30):
        proc.program([rng.standard_normal(s).astype(np.float32) * 1e4 for s in proc.parameter_shapes()])
    assert proc.emulator.max_heater_volts <= proc.layers[0].bank.v_max.max() + 1e-12


def test_phase_policy_wraps_and_compensates_crosstalk():
    """With truth = nominal (no variation) the chip's true phases equal the request modulo 2 pi."""
    raw = raw_config(hidden=[4])
    var = raw["processor"]["chip"]["variation"]
    for k in var:
        var[k] = 0.0
    raw["processor"]["loss_db_per_column"] = 0.0
    cfg = parse_config(raw, "t.yaml")
    proc = build_processor(cfg, 2, 2, BuildOverrides(extra={"precision": "double"}))
    rng = np.random.default_rng(3)
    params = [rng.uniform(-20, 20, s) for s in proc.parameter_shapes()]
    proc.program(params)
    for l, p in enumerate(params):
        true = proc.emulator.true_phases(l)
        np.testing.assert_allclose(np.angle(np.exp(1j * (true - p))), 0.0, atol=1e-9)
    proc.program([p + 2 * np.pi for p in params])
    np.testing.assert_allclose(np.angle(np.exp(1j * (proc.emulator.true_phases(0) - params[0]))), 0.0, atol=1e-9)


def test_chip_seed_draws_reproducible_and_distinct_chips():
    a = make_chip(ideal=False, precision="single", hidden=[4])
    b = make_chip(ideal=False, precision="single", hidden=[4])
    c = make_chip(ideal=False, precision="single", hidden=[4], chip__seed=2)
    ta, tb, tc = (p.emulator.truth.layers[0].heaters.phi0 for p in (a, b, c))
    np.testing.assert_array_equal(ta, tb)
    assert not np.allclose(ta, tc)
    assert a.summary_fields()["chip_seed"] == 1 and c.summary_fields()["chip_seed"] == 2


def test_drift_moves_true_phases():
    proc = make_chip(ideal=False, precision="double", hidden=[16], chip__variation__drift_rad_per_sqrt_s=0.01)
    params = proc.init_parameters(np.random.default_rng(0), 1.0)
    proc.program(params)
    before = proc.emulator.true_phases(0)
    proc.emulator.advance(100.0)
    moved = proc.emulator.true_phases(0) - before
    assert np.std(moved) == pytest.approx(0.01 * np.sqrt(100.0), rel=0.15)


@pytest.mark.parametrize("edit, match", [
    ({"phase_shifters": {"v_max": 13.0}}, "processor.phase_shifters.*widens"),
    ({"phase_shifters": {"v_max": 5.0}}, "reaches only"),
    ({"mesh": "hexagonal"}, "processor.mesh"),
    ({"bogus": 1}, "processor.bogus: unknown key"),
    ({"hidden": [0]}, "hidden"),
    ({"adjoint_field": 20.0}, "adjoint_field"),
])
def test_bad_configs_give_one_clear_line(tmp_path, edit, match):
    raw = yaml.safe_load(open(CONFIG))
    for k, v in edit.items():
        if isinstance(v, dict):
            raw["processor"][k].update(v)
        else:
            raw["processor"][k] = v
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=match) as info:
        cfg = load_config(path)
        build_processor(cfg, 2, 2)
    msg = str(info.value)
    assert "\n" not in msg and ("bad.yaml" in msg)


def test_training_circles_with_adjoint_quickly():
    from lightloop.training.optimizers import make_optimizer
    from lightloop.training.trainer import Trainer, TrainSettings

    data = load_dataset("circles")
    cfg = load_config(CONFIG)
    proc = build_processor(cfg, data.n_features, data.n_classes)
    trainer = Trainer(proc, make_gradient("adjoint"), make_optimizer("adam", 0.03),
                      TrainSettings(epochs=3, batch_size=32, progress=False))
    res = trainer.fit(data)
    assert res.test_accuracy > 0.9
    assert res.measurements_per_step == 13.0


def test_datasets_are_seeded_and_in_range():
    for name in ("circles", "moons"):
        a, b = load_dataset(name), load_dataset(name)
        np.testing.assert_array_equal(a.x_train, b.x_train)
        assert a.x_train.min() >= 0 and a.x_train.max() <= 1 and a.n_features == 2
        assert a.x_test.shape == (1000, 2) and set(np.unique(a.y_train)) == {0, 1}
        assert not np.array_equal(a.x_train[:1000], a.x_test)


def test_cli_json_summary(capsys, tmp_path):
    from lightloop.cli import main

    rc = main(["train", "--config", CONFIG, "--dataset", "moons", "--gradient", "adjoint", "--epochs", "1",
               "--json", "--no-progress", "--out", str(tmp_path / "run")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["chip_seed"] == 1 and summary["measurements_per_step"] == 13.0
    assert summary["dataset"] == "moons" and summary["gradient"] == "adjoint"
    for key in ("test_accuracy", "mean_epoch_seconds", "layer_sizes", "hidden"):
        assert key in summary
