"""benchmarks/ledger_projection.py: every output labelled a projection, every device figure sourced, counts as derived."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lightloop.ledger import LIGHT_M_S, PLANCK_J_S, digital_flops

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("ledger_projection_bench", REPO / "benchmarks" / "ledger_projection.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def out():
    return _bench().main(["--steps", "1", "--only", "guo_784_128_128_10_slm", "pai_4port_3layer",
                          "zarkeshian_784_500_10"])


def test_every_system_is_labelled_projection_and_every_figure_has_status_and_source(out):
    assert out["label"] == "projection"
    for name, rec in out["systems"].items():
        assert rec["label"] == "projection", name
        for key, f in rec["device_figures"].items():
            assert f["status"] in ("published", "datasheet", "ledger default", "repo nominal"), (name, key)
            assert len(f["source"]) > 10, (name, key)


def test_free_space_counts_and_latency_follow_the_pump_probe_step(out):
    r = out["systems"]["guo_784_128_128_10_slm"]
    assert r["network"] == [784, 128, 128, 10]
    ps = r["per_step"]
    n_layers = 3
    # forward: a pre tap per layer, a post tap per hidden layer; differential probe: 2 error reads per hidden layer
    assert ps["acquisitions"] == n_layers + (n_layers - 1) + 2 * (n_layers - 1)
    assert ps["exposures"] == 3 and ps["frames"] == {"input": 64, "probe": 128, "weights": n_layers}
    assert ps["digital_flops"] == digital_flops([784, 128, 128, 10], 64)
    t = r["time_per_step_s"]
    assert t["optics"] == pytest.approx(3 * 64 / 22_700.0)
    channels = (128 + 128 + 10) + (128 + 128) + 2 * (128 + 128)     # pre, post, error (x2) taps
    transfer = 9 * 1e-4 + 1000 * channels * 64 * 1e-9
    assert t["electronics"] == pytest.approx(1 / 60.0 + 0.01 + transfer)
    assert r["device_figures"]["wavelength_m"]["status"] == "published"
    assert r["device_figures"]["power_per_unit_w"]["status"] == "ledger default"
    assert r["device_figures"]["weight_settle_s"]["status"] == "datasheet"
    assert r["device_figures"]["host_power_w"]["status"] == "ledger default"   # from DEFAULT_SOURCES


def test_chip_adjoint_step_counts_and_heater_energy(out):
    r = out["systems"]["pai_4port_3layer"]
    assert r["network"] == [2, 4, 4, 2]
    assert r["per_step"]["acquisitions"] == 7 * 3 - 1              # README: adjoint reads 7L - 1 per step
    assert r["heater_power_w"] > 0
    e = r["energy_per_sample_j"]["electronics_in_loop"]
    dev = r["electronics_per_sample_j"]
    assert e == pytest.approx(sum(dev.values()), rel=1e-12)
    t = r["time_per_step_s"]
    assert dev["heaters"] == pytest.approx(r["heater_power_w"] * t["total"] / r["batch"], rel=1e-9)
    # ledger default powers: modulator 10 W x (exposure + settle), heater drivers 5 W x step, detectors 20 W
    assert dev["modulator"] == pytest.approx(10.0 * t["acquire"] / r["batch"], rel=1e-9)
    assert dev["weight_device"] == pytest.approx(5.0 * t["total"] / r["batch"], rel=1e-9)
    assert dev["detectors"] == pytest.approx(20.0 * (t["optics"] + t["transfer"]) / r["batch"], rel=1e-9)
    assert r["energy_per_sample_j"]["host"] == pytest.approx(65.0 * 1e-3 / r["batch"])


def test_photon_limited_energy_is_photons_times_h_nu(out):
    r = out["systems"]["zarkeshian_784_500_10"]
    h_nu = PLANCK_J_S * LIGHT_M_S / 780.241e-9
    assert r["feedback_energy_per_sample_j"]["0.01"] == pytest.approx(0.01 * 510 * h_nu)
    assert r["digital_flops_per_sample"] == 6 * (784 * 500 + 500 * 10)
    assert r["device_figures"]["wavelength_m"]["status"] == "ledger default"
