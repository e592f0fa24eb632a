"""Ring-activation calibration of the integrated chip (lightloop.calibration.chip_activation, routine `activation`).

Known ring parameters (resonance offsets across the crossing, k, supply, slope-readout gain) are injected into an
otherwise ideal twin with detector noise on; the routine, acting only through the HAL, must recover them (graded
here against the twin's hidden truth, the only place that reads it) and the calibrated slope_model must match a
fresh slope-output measurement. A realistic chip (every fabrication spread on) calibrated in `all` order passes
the same slope comparison, and without heater / readout calibration the routine refuses its own fit.
Stated tolerances (noise 1e-3): detuning 0.01 linewidths, k / supply / slope gain 1 %, measured vs model slope
2 % of the rms slope on held-out random inputs. Whole file ~4 s.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from lightloop.bench import BuildOverrides, build_processor
from lightloop.calibration.base import RunContext, routines_for
from lightloop.calibration.chip_activation import activation_options
from lightloop.calibration.runner import calibrate
from lightloop.calibration.store import CalibrationStore, load_into_processor
from lightloop.config import parse_config
from lightloop.errors import CalibrationError, ConfigError
from lightloop.hal.chip_roles import EOActivationModel
from lightloop.physics.mzi import eo_activation, eo_activation_slope

from conftest import REPO

CONFIG = REPO / "lightloop" / "lab_configs" / "integrated_chip.yaml"
#: injected rings (4 neurons): resonance crossed inside the sweep (d < 0) and not (d > 0)
D = np.array([-0.40, -0.12, 0.05, 0.30])
K = np.array([2.6, 3.3, 3.0, 3.7])
S = np.array([0.92, 1.06, 1.0, 0.97])
SLOPE_GAIN = np.array([1.05, 0.96, 1.0, 1.02])


def _chip(ideal: bool, seed: int = 3):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["processor"]["hidden"] = [4]
    raw["processor"]["chip"]["ideal"] = ideal
    cfg = parse_config(raw, str(CONFIG))
    return build_processor(cfg, 2, 2, BuildOverrides(extra={"chip_seed": seed, "precision": "double"}))


def _injected():
    proc = _chip(ideal=True)
    emu = proc.emulator                     # test only: inject the truth the routine must find through the HAL
    emu.var = dataclasses.replace(emu.var, pd_noise=1e-3, slope_noise=1e-3, receiver_noise=1e-3)
    t = emu.truth.activations[0]
    t.detuning_offset, t.k, t.supply, t.slope_gain = D.copy(), K.copy(), S.copy(), SLOPE_GAIN.copy()
    return proc


def _slope_error(proc, seed: int = 5) -> float:
    """rms(measured slope - slope_model(measured p)) / rms(measured slope) over random inputs at Haar meshes."""
    rng = np.random.default_rng(seed)
    num = den = 0.0
    for _ in range(3):
        proc.program(proc.init_parameters(rng, 1.0))
        t = proc.forward(rng.uniform(0, 1, (64, proc.source.n_features)))
        s = np.asarray(proc.activations[0].acquire_slope(), np.float64)
        m = proc.activations[0].slope_model(np.asarray(t.pre[0], np.float64))
        num, den = num + np.sum((s - m) ** 2), den + np.sum(s ** 2)
    return float(np.sqrt(num / den))


@pytest.fixture(scope="module")
def injected():
    proc = _injected()
    before = _slope_error(proc)
    out = calibrate(proc, ["activation"], RunContext(seed=1))
    return {"proc": proc, "outcome": out[0], "before": before, "after": _slope_error(proc)}


def test_activation_recovers_the_injected_ring_parameters(injected):
    o, m = injected["outcome"], injected["proc"].activations[0].model
    assert o.status == "ok", o.reason
    assert np.max(np.abs(np.asarray(m.detuning) + m.detuning_offset - D)) < 0.01      # linewidths
    assert np.max(np.abs(m.k / K - 1)) < 0.01
    assert np.max(np.abs(m.supply / S - 1)) < 0.01      # ideal receivers: the receiver gauge is 1
    assert np.max(np.abs(m.slope_gain_v / SLOPE_GAIN - 1)) < 0.01
    meta = o.result.meta["activations"]["0"]
    assert meta["holdout_rms_rel_slope"] < 0.02 and meta["holdout_rms_rel_activation"] < 0.02
    assert o.result.counts.acquisitions == 3 * 4 + 2     # 4 batches x (p, slope, receivers) + 2 range probes


def test_calibrated_slope_model_matches_the_measured_slope(injected):
    assert injected["before"] > 0.1          # nominal rings: the slope model is far off
    assert injected["after"] < 0.02          # stated tolerance: 2 % of the rms slope, held-out inputs
    # transfer_model: the next layer's inputs are the activations; the model now predicts them too
    proc = injected["proc"]
    p = np.linspace(0, 3, 50)[:, None]
    truth = eo_activation(p, D, K, 0.0, S)
    assert np.max(np.abs(proc.activations[0].transfer_model(p) - truth)) < 0.01


def test_the_record_round_trips_through_the_store(injected, tmp_path):
    store = CalibrationStore(tmp_path)
    fresh = _chip(ideal=True)
    res = injected["outcome"].result
    routine = next(r for r in routines_for(fresh) if r.name == "activation")
    store.save(res, "twin", routine.layout(fresh))
    load_into_processor(fresh, store, "twin")
    p = np.linspace(0, 2, 9)[:, None]
    want = injected["proc"].activations[0]
    np.testing.assert_allclose(fresh.activations[0].slope_model(p), want.slope_model(p), rtol=1e-12)
    np.testing.assert_allclose(fresh.activations[0].model.slope_gain_v, want.model.slope_gain_v, rtol=1e-12)


def test_on_a_realistic_chip_after_readout_the_slope_model_matches_the_bench():
    proc = _chip(ideal=False)
    names = [r.name for r in routines_for(proc)]
    assert names.index("readout") < names.index("activation")      # `all` order: receivers first
    pre = calibrate(proc, ["phase_shifters", "crosstalk", "readout"], RunContext(seed=0))
    assert all(o.status == "ok" for o in pre)
    before = _slope_error(proc)
    out = calibrate(proc, ["activation"], RunContext(seed=0))
    assert out[0].status == "ok", out[0].reason
    after = _slope_error(proc)
    assert before > 0.1 and after < 0.02
    tr = proc.emulator.truth.activations[0]       # grading only
    m = proc.activations[0].model
    assert np.max(np.abs(np.asarray(m.detuning) + m.detuning_offset - tr.detuning_offset)) < 0.01
    assert np.max(np.abs(m.k / tr.k - 1)) < 0.01
    ratio = m.supply / tr.supply                  # one receiver gauge per layer: equal ratios across neurons
    assert np.std(ratio) / np.mean(ratio) < 0.005


def test_without_heater_and_readout_calibration_the_fit_is_refused():
    proc = _chip(ideal=False)
    nominal = proc.activations[0].model.k
    out = calibrate(proc, ["activation"], RunContext(seed=0))
    assert out[0].status == "failed"
    assert "residual" in out[0].reason and "readout" in out[0].reason
    assert proc.activations[0].model.k == nominal        # a failed result is not applied


def test_scalar_models_still_work_and_per_neuron_parameters_broadcast():
    p = np.linspace(0, 2, 7, dtype=np.float32)[:, None].repeat(3, 1)
    m = EOActivationModel(k=3.0, supply=1.0, detuning=0.2)
    assert m.transfer(p).dtype == np.float32
    np.testing.assert_allclose(m.slope(p), eo_activation_slope(p, 0.2, 3.0, 0.0, 1.0), rtol=1e-6)
    m2 = EOActivationModel(k=np.array([2.0, 3.0, 4.0]), supply=np.array([1.0, 0.9, 1.1]), detuning=0.1,
                           detuning_offset=np.array([-0.1, 0.0, 0.1]))
    np.testing.assert_allclose(m2.transfer(p)[:, 2], eo_activation(p[:, 2], 0.2, 4.0, 0.0, 1.1), rtol=1e-6)
    proc = _chip(ideal=True)
    act = proc.activations[0]
    act.set_detuning(0.5)
    assert act.model.detuning == 0.5 and isinstance(act.model.detuning, float)
    act.set_detuning(np.array([0.1, 0.2, 0.3, 0.4]))
    np.testing.assert_array_equal(act.model.detuning, [0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("kwargs, field", [
    ({"k": np.ones(3)}, "k: expected a scalar or 4 values"),
    ({"supply": -1.0}, "supply: expected finite values > 0, got -1.0"),
    ({"detuning_offset": np.array([0.0, np.nan, 0.0, 0.0])}, "detuning_offset: expected finite values, got nan"),
    ({"slope_gain_v": 0.0}, "slope_gain_v: expected finite values != 0, got 0.0"),
])
def test_bad_calibration_values_are_one_line_errors_and_change_nothing(kwargs, field):
    act = _chip(ideal=True).activations[0]
    args = {"k": 3.0, "supply": 1.0, "detuning_offset": 0.0, "slope_gain_v": 1.0, **kwargs}
    with pytest.raises(ConfigError) as e:
        act.set_calibration(**args)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("layer 0 activations: ") and field in msg
    assert act.model.k == 3.0 and act.model.supply == 1.0


@pytest.mark.parametrize("options, text", [
    ({"activation_batch": 4}, "activation_batch: expected an integer in [8, 100000], got 4"),
    ({"activation_settings": 2.5}, "activation_settings: expected an integer"),
    ({"activation_p_max": -1.0}, "activation_p_max: expected a number in [1e-06, 1e+06], got -1.0"),
    ({"activation_fit_threshold": "x"}, "activation_fit_threshold: expected a number"),
])
def test_bad_options_are_one_line_errors(options, text):
    with pytest.raises(CalibrationError) as e:
        activation_options(RunContext(options=options))
    assert "\n" not in str(e.value) and text in str(e.value)


def test_not_applicable_where_there_is_no_ring_activation():
    from types import SimpleNamespace

    from lightloop.calibration.base import get_routine

    r = get_routine("activation")
    assert "not an integrated chip" in r.applicable(SimpleNamespace())
    assert "no hidden layer" in r.applicable(SimpleNamespace(activations=[], layers=[object()]))
