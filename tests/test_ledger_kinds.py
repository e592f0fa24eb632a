"""Energy and latency ledger on the flow-network and digital benches: hand computations on tiny networks."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from lightloop.bench import BuildOverrides, build_processor
from lightloop.config import parse_config
from lightloop.ledger import LedgerSettings, attach_ledger
from lightloop.training.datasets import Dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings

from test_ledger import SETTINGS


def flow(n_side: int = 4):
    raw = yaml.safe_load(open("lightloop/lab_configs/flow_network.yaml"))
    raw["processor"]["lattice"]["n_side"] = n_side
    return build_processor(parse_config(raw, "t.yaml"), 2, 2, BuildOverrides(ideal=True))


def digital(hidden: int = 3):
    raw = yaml.safe_load(open("lightloop/lab_configs/digital_mlp.yaml"))
    raw["processor"]["hidden"] = [hidden]
    return build_processor(parse_config(raw, "t.yaml"), 2, 2, BuildOverrides())


def test_flow_network_chemical_step_joule_energy_counts_and_latency_equal_hand_computation():
    p = flow()
    led = attach_ledger(p, LedgerSettings(**SETTINGS))
    rng = np.random.default_rng(0)
    p.program(p.init_parameters(rng, 1.0))
    p.set_desired(np.array([[0.1, -0.1], [-0.1, 0.1]]))
    b = 3
    x = rng.uniform(0, 1, (b, 2))
    taps = p.forward(x)
    E = 0.5 * taps.extra["drops"]
    u = p.feedback(E)
    led.close_step({"global_step": 1})
    r = led.last_step
    t = 1 / 250.0                                   # flow_frame_rate_hz: one drive frame per sample
    w, topo = p.network.conductances, p.topology
    v = taps.extra["potentials"]
    joule = float(np.sum(w * topo.edge_drops(v) ** 2))          # sum_b sum_e w_e dv^2 (W)
    # Tellegen: the network's Joule power equals what the input current sources deliver, sum_b sum_p I_p dv_p
    ip, op = topo.input_pairs, topo.output_pairs
    delivered = float(np.sum(p.input_currents(x) * (v[:, ip[:, 0]] - v[:, ip[:, 1]])))
    assert joule == pytest.approx(delivered, rel=1e-9)
    assert r["optical_j"]["signal"] == pytest.approx(t * joule, rel=1e-12)
    fb = float(np.sum(E * (u[:, op[:, 0]] - u[:, op[:, 1]])))
    assert r["optical_j"]["feedback"] == pytest.approx(t * fb, rel=1e-9)
    assert r["exposures"] == 2 and r["acquisitions"] == {"signal": 1, "feedback": 1}
    assert r["frames"] == {"input": b, "feedback": b}
    n = topo.n_nodes
    assert r["adc_samples"] == 2 * 10 * n * b
    transfer = 2 * (2e-4 + 10 * n * b * 1e-7)
    optics = 2 * b * t
    lat = r["latency_s"]
    assert lat["optics"] == pytest.approx(optics) and lat["program"] == pytest.approx(2e-3)
    assert lat["acquire"] == pytest.approx(optics + 2 * 3e-4) and lat["transfer"] == pytest.approx(transfer)
    total = optics + 2 * 3e-4 + 2e-3 + transfer + 5e-3
    assert lat["total"] == pytest.approx(total)
    assert r["electronics_j"] == pytest.approx({"modulator": 4.0 * (optics + 6e-4), "weight_device": 3.0 * total,
                                                "detectors": 7.0 * (optics + transfer)})
    sm = led.summary()
    assert sm["kind"] == "flow_network"
    assert sm["energy_per_sample_j"]["optics"] == pytest.approx(t * (joule + fb) / b)
    assert sm["optical"]["backward_probe"]["per_role_j"] == {"feedback": pytest.approx(t * fb)}


def test_flow_network_coupled_learning_clamp_is_charged_by_the_network_joule_heat():
    p = flow()
    led = attach_ledger(p, LedgerSettings(**SETTINGS))
    rng = np.random.default_rng(1)
    p.program(p.init_parameters(rng, 1.0))
    p.set_desired(np.array([[0.1, -0.1], [-0.1, 0.1]]))
    x = rng.uniform(0, 1, (2, 2))
    taps = p.forward(x)
    vc = p.clamped(x, taps.extra["drops"] + 0.1)
    led.close_step({})
    r = led.last_step
    w, topo = p.network.conductances, p.topology
    heat = sum(float(np.sum(w * topo.edge_drops(v) ** 2)) for v in (taps.extra["potentials"], vc))
    assert r["optical_j"] == {"signal": pytest.approx(heat / 250.0, rel=1e-9)}
    assert r["frames"] == {"input": 4, "clamp": 2} and r["exposures"] == 2


def test_digital_bench_is_flops_times_pj_and_host_time_only():
    p = digital(3)
    led = attach_ledger(p, LedgerSettings(**SETTINGS))
    rng = np.random.default_rng(0)
    params = p.init_parameters(rng, 0.5)
    p.program(params)
    b = 5
    taps = p.forward(rng.uniform(0, 1, (b, 2)).astype(np.float32))
    p.backward((taps.output - 0.5).astype(np.float32))
    led.close_step({"global_step": 1})
    r = led.last_step
    flops = 6 * b * ((2 + 1) * 3 + (3 + 1) * 2)            # weights and biases: 3x3 + 2x4
    assert r["digital_flops"] == flops and r["digital_j"] == pytest.approx(flops * 1.5e-12)
    assert r["optical_j"] == {} and r["electronics_j"] == {} and r["heater_j"] == []
    assert r["acquisitions"] == {} and r["adc_samples"] == 0 and r["frames"] == {}
    assert r["latency_s"] == {"optics": 0.0, "electronics": 0.0, "host": 5e-3, "total": 5e-3, "program": 0.0,
                              "acquire": 0.0, "transfer": 0.0}
    assert r["measured_groups_s"]["host"] == r["measured_s"] > 0     # no device calls: the whole step is host
    assert r["host_j"] == pytest.approx(30.0 * r["measured_s"])
    sm = led.summary()
    assert sm["energy_per_sample_j"]["optics"] == 0 and sm["energy_per_sample_j"]["electronics_in_loop"] == 0
    assert sm["energy_per_sample_j"]["digital_equivalent"] == pytest.approx(flops * 1.5e-12 / b)


def test_trainer_on_the_flow_network_writes_one_ledger_record_per_sample_step(tmp_path):
    p = flow()
    led = attach_ledger(p, LedgerSettings(**SETTINGS))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 2))
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    data = Dataset("tiny", x[:5], y[:5], x[5:], y[5:], 2)
    tr = Trainer(p, make_gradient("chemical_signaling"), make_optimizer("sgd", 0.003),
                 TrainSettings(epochs=1, batch_size=1, progress=False, plot=False), out_dir=tmp_path / "run")
    tr.fit(data)
    assert len(led.steps) == 5 and all(s["acquisitions"] == {"signal": 1, "feedback": 1} for s in led.steps)
    assert (tmp_path / "run" / "ledger.json").is_file()
    assert led.summary()["outside_steps"]["acquisitions"] > 0     # prepare_epoch and the test evaluation
