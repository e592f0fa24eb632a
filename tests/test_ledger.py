"""Energy and latency ledger (issue 16 part 2): energies and latencies equal hand computations on tiny networks."""

from __future__ import annotations


import numpy as np
import pytest
import yaml

from lightloop.bench import BuildOverrides, build_processor
from lightloop.config import parse_config
from lightloop.errors import ConfigError
from lightloop.ledger import LIGHT_M_S, PLANCK_J_S, LedgerSettings, attach_ledger, digital_flops
from lightloop.records.ledger import ledger_figure, load_ledger
from lightloop.training.datasets import Dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings

#: deliberately unusual figures so a wrong formula cannot agree by accident
SETTINGS = dict(power_per_unit_w=2e-3, frame_rate_hz=1000.0, modulator_settle_s=3e-4, weight_frame_rate_hz=50.0,
                weight_settle_s=7e-3, heater_time_constant_s=2e-5, heater_settle_time_constants=4.0,
                digitizer_record_length=10, digitizer_transfer_s_per_sample=1e-7, digitizer_overhead_s=2e-4,
                host_compute_s=5e-3, host_power_w=30.0, pj_per_flop=1.5, modulator_power_w=4.0,
                weight_device_power_w=3.0, detector_power_w=7.0, flow_frame_rate_hz=250.0, conductance_settle_s=2e-3)


def _raw(path: str, ledger: bool = False) -> dict:
    raw = yaml.safe_load(open(path))
    raw["processor"]["hidden"] = [2]
    if ledger:
        raw["ledger"] = dict(SETTINGS)
    return raw


def free_space(ledger: bool = False):
    cfg = parse_config(_raw("lightloop/lab_configs/free_space_sa.yaml", ledger), "t.yaml")
    return build_processor(cfg, 2, 2, BuildOverrides(ideal=True))


def chip():
    cfg = parse_config(_raw("lightloop/lab_configs/integrated_chip.yaml"), "t.yaml")
    return build_processor(cfg, 2, 2, BuildOverrides(ideal=True, extra={"precision": "double"}))


def test_free_space_2_2_2_energies_counts_and_latency_equal_hand_computation():
    p = free_space()
    p.error_readout = "single"                  # one probe display: the error tap's reading is recoverable
    led = attach_ledger(p, LedgerSettings(**SETTINGS))
    rng = np.random.default_rng(3)
    p.program(p.init_parameters(rng, 0.5))
    b = 3
    x = rng.uniform(0.2, 1.0, (b, 2)).astype(np.float32)
    taps = p.forward(x)
    delta = (taps.output - 0.5).astype(np.float32)
    errs = p.backward(delta)
    led.close_step({"global_step": 1})
    r = led.last_step

    P, t = 2e-3, 1 / 1000.0                      # W per unit |E|^2, s per frame (one sample per frame)
    s_in = float(np.sum((x.astype(np.float64) * float(p.encoder.field_scale)) ** 2))
    scale = p.probe.probe_field / float(np.max(np.abs(delta)))
    s_probe = float(np.sum((delta.astype(np.float64) * scale) ** 2))
    exposures = 2                                # forward (pre[0], pre[1], post[0] read together); probe on
    assert r["exposures"] == exposures
    # the pump (input light) stays on during the probe exposure of pump-probe: charged for both exposures
    assert r["optical_j"]["input"] == pytest.approx(P * t * s_in * exposures, rel=1e-6)
    assert r["optical_j"]["probe"] == pytest.approx(P * t * s_probe, rel=1e-6)
    assert r["optical_j"]["pre[0]"] == pytest.approx(P * t * np.sum(taps.pre[0].astype(np.float64) ** 2), rel=1e-6)
    assert r["optical_j"]["pre[1]"] == pytest.approx(P * t * np.sum(taps.pre[1].astype(np.float64) ** 2), rel=1e-6)
    assert r["optical_j"]["post[0]"] == pytest.approx(P * t * np.sum(taps.post[0].astype(np.float64) ** 2), rel=1e-6)
    err_field = errs[0].astype(np.float64) * scale        # backward() divides the reading by the probe scale
    assert r["optical_j"]["error[0]"] == pytest.approx(P * t * np.sum(err_field ** 2), rel=1e-5)
    assert r["acquisitions"] == {"pre[0]": 1, "pre[1]": 1, "post[0]": 1, "error[0]": 1}
    assert r["adc_samples"] == 4 * 10 * 2 * b    # reads x record length x channels x batch
    assert r["frames"] == {"weights": 2, "input": b, "probe": b}
    assert r["heater_j"] == []
    assert r["digital_flops"] == 6 * b * (2 * 2 + 2 * 2) == digital_flops((2, 2, 2), b)
    assert r["digital_j"] == pytest.approx(6 * b * 8 * 1.5e-12)
    optics = exposures * b * t
    transfer = 4 * (2e-4 + 10 * 2 * b * 1e-7)
    electronics = 2 * 3e-4 + (1 / 50.0 + 7e-3) + transfer
    total = optics + electronics + 5e-3
    assert r["latency_s"]["optics"] == pytest.approx(optics)
    assert r["latency_s"]["electronics"] == pytest.approx(electronics)
    assert r["latency_s"]["total"] == pytest.approx(total)
    assert r["latency_s"]["program"] == pytest.approx(1 / 50.0 + 7e-3)
    assert r["latency_s"]["acquire"] == pytest.approx(optics + 2 * 3e-4)
    assert r["latency_s"]["transfer"] == pytest.approx(transfer)
    # electronics in the loop: modulator W x (exposure + settling), weight SLM W x the step, detectors W x
    # (exposure + transfer)
    assert r["electronics_j"] == pytest.approx({"modulator": 4.0 * (optics + 2 * 3e-4), "weight_device": 3.0 * total,
                                                "detectors": 7.0 * (optics + transfer)})
    # host: 30 W x the measured wall time outside the HAL's device calls (program, display, acquire: all timed)
    g = r["measured_groups_s"]
    assert all(g[k] > 0 for k in ("program", "display", "acquire"))
    assert r["measured_s"] > 0 and 0 < g["host"] < r["measured_s"]
    assert g["host"] == pytest.approx(r["measured_s"] - g["program"] - g["display"] - g["acquire"])
    assert r["host_j"] == pytest.approx(30.0 * g["host"])
    sm = led.summary()
    photon = PLANCK_J_S * LIGHT_M_S / 780.241e-9
    assert sm["photons"]["input"] == pytest.approx(r["optical_j"]["input"] / photon)
    assert sm["energy_j"]["optical_sources"] == pytest.approx(r["optical_j"]["input"] + r["optical_j"]["probe"])
    assert sm["energy_per_sample_j"]["optics"] == pytest.approx(sm["energy_j"]["optical_sources"] / b)
    assert sm["optical"]["forward_tap"]["per_layer_j"]["1"] == pytest.approx(r["optical_j"]["pre[1]"])


def test_differential_readout_and_repeated_reads_are_new_exposures():
    p = free_space()
    p.error_readout, p.error_averages = "differential", 2
    led = attach_ledger(p, LedgerSettings(**SETTINGS))
    rng = np.random.default_rng(0)
    p.program(p.init_parameters(rng, 0.5))
    x = rng.uniform(0.2, 1.0, (2, 2)).astype(np.float32)
    taps = p.forward(x)
    p.backward((taps.output - 0.5).astype(np.float32))
    led.close_step({})
    r = led.last_step
    # forward 1; +delta: 2 averaged reads of one array = 2 exposures; -delta: 2 more
    assert r["exposures"] == 5
    assert r["acquisitions"]["error[0]"] == 4
    assert r["frames"]["probe"] == 4
    s_in = float(np.sum((x.astype(np.float64) * float(p.encoder.field_scale)) ** 2))
    assert r["optical_j"]["input"] == pytest.approx(2e-3 * 1e-3 * s_in * 5, rel=1e-6)


def test_two_port_chip_forward_and_heater_energy_equal_hand_computation():
    p = chip()
    led = attach_ledger(p, LedgerSettings(**SETTINGS))
    rng = np.random.default_rng(1)
    p.program(p.init_parameters(rng, 1.0))
    b = 4
    x = rng.uniform(0, 1, (b, 2))
    taps = p.forward(x)
    led.close_step({"global_step": 1})
    r = led.last_step
    P, t = 2e-3, 1e-3
    ports = taps.extra["ports"]
    assert r["exposures"] == 1
    assert r["optical_j"]["input"] == pytest.approx(P * t * np.sum(np.abs(ports) ** 2), rel=1e-9)
    assert r["optical_j"]["activation[0]"] == pytest.approx(P * t * np.sum(taps.pre[0]), rel=1e-9)
    assert r["optical_j"]["output"] == pytest.approx(P * t * np.sum(taps.pre[-1]) / p.output_gain, rel=1e-9)
    assert r["frames"] == {"input": b}
    model = 1 * 3e-4 + 4 * 2e-5 + 2 * (2e-4 + 10 * 2 * b * 1e-7)
    assert r["latency_s"]["electronics"] == pytest.approx(model)
    total = b * t + model + 5e-3
    assert r["latency_s"]["total"] == pytest.approx(total)
    watts = [float(np.sum(np.asarray(l.bank.written_volts) ** 2 / l.bank.cal.resistance_ohm)) for l in p.layers]
    assert sum(watts) > 0
    assert r["heater_j"] == pytest.approx([w * total for w in watts])
    assert r["electronics_j"] == pytest.approx({"modulator": 4.0 * (b * t + 3e-4), "weight_device": 3.0 * total,
                                                "detectors": 7.0 * (b * t + 2 * (2e-4 + 10 * 2 * b * 1e-7)),
                                                "heaters": sum(watts) * total})
    sm = led.summary()
    assert sm["energy_j"]["electronics_in_loop"] == pytest.approx(sum(r["electronics_j"].values()))
    assert sm["energy_per_sample_j"]["electronics_in_loop"] == pytest.approx(sum(r["electronics_j"].values()) / b)


def test_chip_adjoint_step_charges_injectors_and_counts_every_read():
    p = chip()
    led = attach_ledger(p, LedgerSettings(**SETTINGS))
    rng = np.random.default_rng(2)
    p.program(p.init_parameters(rng, 1.0))
    taps = p.forward(rng.uniform(0, 1, (3, 2)))
    p.measure_phase_gradients(taps.output - 0.5)
    led.close_step({})
    r = led.last_step
    assert p.measurements == sum(r["acquisitions"].values())   # the ledger sees every acquisition the HAL counts
    assert all(r["optical_j"][f"{k}[{l}]"] > 0 for k in ("injector", "adjoint") for l in (0, 1))
    assert r["acquisitions"]["monitor[0]"] == 3                # forward, adjoint and sum exposures
    full = r["optical_j"]["monitor[1]"]
    p2 = chip()
    led2 = attach_ledger(p2, LedgerSettings(**SETTINGS, monitor_tap_fraction=0.01))
    rng2 = np.random.default_rng(2)                          # the same draws as above
    p2.program(p2.init_parameters(rng2, 1.0))
    taps = p2.forward(rng2.uniform(0, 1, (3, 2)))
    p2.measure_phase_gradients(taps.output - 0.5)
    led2.close_step({})
    assert led2.last_step["optical_j"]["monitor[1]"] == pytest.approx(0.01 * full, rel=1e-9)   # ideal: same readings


def test_trainer_writes_ledger_json_with_one_record_per_step(tmp_path):
    p = free_space(ledger=True)
    assert p.ledger is not None
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (10, 2)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    data = Dataset("tiny", x[:6], y[:6], x[6:], y[6:], 2)
    tr = Trainer(p, make_gradient("pump_probe"), make_optimizer("adam", 0.01),
                 TrainSettings(epochs=1, batch_size=4, progress=False, plot=False), out_dir=tmp_path / "run")
    tr.fit(data)
    doc = load_ledger(tmp_path / "run")
    assert len(doc["steps"]) == 2 and [s["batch"] for s in doc["steps"]] == [4, 2]
    sm = doc["summary"]
    assert sm["samples"] == 6
    assert sm["energy_j"]["optical_sources"] == pytest.approx(
        sum(v["total_j"] for k, v in sm["optical"].items() if k in ("input", "backward_probe")))
    assert sm["outside_steps"]["acquisitions"] > 0            # the test evaluation is not charged to a step
    assert doc["settings"]["frame_rate_hz"] == 1000.0
    st = doc["steps"][0]
    assert sum(st["model_groups_s"].values()) == pytest.approx(st["model_s"])
    assert sum(st["measured_groups_s"].values()) == pytest.approx(st["measured_s"])
    assert st["host_j"] == pytest.approx(30.0 * st["measured_groups_s"]["host"])
    assert sm["energy_j"]["electronics_in_loop"] == pytest.approx(sum(s["electronics_j"] for s in doc["steps"]))
    fig = ledger_figure(sm)
    fig.savefig(tmp_path / "ledger.png")
    assert len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "  modulator" in labels and "  detectors" in labels      # the electronics split per device
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert {"measured: program", "measured: acquire", "measured: host", "transfer"} <= set(legend)


def test_ledger_section_errors_are_one_line_naming_file_and_field():
    raw = _raw("lightloop/lab_configs/free_space_sa.yaml", ledger=True)
    raw["ledger"]["frame_rate_hz"] = -1
    with pytest.raises(ConfigError, match=r"^t\.yaml: ledger\.frame_rate_hz: .*greater than 0") as exc:
        parse_config(raw, "t.yaml")
    assert "\n" not in str(exc.value)
    raw["ledger"] = {"frame_rate": 5}
    with pytest.raises(ConfigError, match=r"t\.yaml: ledger\.frame_rate: unknown key \(did you mean 'frame_rate_hz'"):
        parse_config(raw, "t.yaml")


def test_detach_leaves_the_roles_as_they_were():
    p = free_space()
    before = {k for k in vars(p.encoder)}
    led = attach_ledger(p)
    assert "display" in vars(p.encoder)
    led.detach()
    assert set(vars(p.encoder)) == before
    assert led.close_step not in p.step_hooks and led._activity not in p.activity_hooks


def test_missing_ledger_file_is_a_one_line_run_folder_error(tmp_path):
    from lightloop.errors import RunFolderError
    with pytest.raises(RunFolderError, match="ledger.json: ledger: no ledger file"):
        load_ledger(tmp_path)
