"""Gradient method physics_aware: forward on the processor, backward through its calibrated model (issue 16, part 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.cli import default_config_path
from lightloop.config import load_config
from lightloop.errors import ConfigError
from lightloop.training.gradients import gradient_names, make_gradient


def _batch(rng, n_in, n_out, b=4):
    x = rng.uniform(0.0, 1.0, (b, n_in)).astype(np.float32)
    return x, np.eye(n_out, dtype=np.float32)[rng.integers(0, n_out, b)]


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_registered_and_listed():
    """The CLI's --gradient choices include physics_aware (registry via GRADIENT_PLUGINS)."""
    assert "physics_aware" in gradient_names()
    assert make_gradient("physics_aware").name == "physics_aware"


def test_ideal_free_space_equals_exact_and_finite_differences(make_bench, rng):
    """Model == bench (ideal twin): equals `exact` bit for bit and central differences of the measured loss to 1 %."""
    proc = make_bench((6, 5, 3))
    params = proc.init_parameters(rng, 0.3)
    assert all(np.abs(p).max() < 1.0 for p in params)        # nothing clipped: the model weights are the parameters
    x, t = _batch(rng, 6, 3)
    proc.program(params)
    pa = make_gradient("physics_aware")
    pa.check(proc)
    r = pa(proc, params, x, t)
    ex = make_gradient("exact")(proc, params, x, t)
    assert r.measurements == 3                                # forward taps only: 2 pre + 1 post acquisitions
    assert r.loss == pytest.approx(ex.loss)
    for g, e in zip(r.grads, ex.grads):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-9)
    fd = make_gradient("finite_difference", step=3e-3)(proc, params, x, t)
    for g, f in zip(r.grads, fd.grads):
        assert _rel(g, f) < 1e-2


def test_clipped_weight_has_the_model_gradient_zero(make_bench, rng):
    """A weight beyond max_weight is realised clipped: physics_aware and finite differences give 0, `exact` does not."""
    proc = make_bench((6, 5, 3))
    params = proc.init_parameters(rng, 0.3)
    params[1][1, 2] = 1.5                                     # bounds are +-1: the device realises 1.0
    x, t = _batch(rng, 6, 3)
    proc.program(params)
    r = make_gradient("physics_aware")(proc, params, x, t)
    ex = make_gradient("exact")(proc, params, x, t)
    fd = make_gradient("finite_difference", step=3e-3)(proc, params, x, t)
    assert r.grads[1][1, 2] == 0.0 and abs(fd.grads[1][1, 2]) < 1e-6
    assert abs(ex.grads[1][1, 2]) > 1e-4                       # the exact method's gradient there is not the bench's
    for g, f in zip(r.grads, fd.grads):
        assert _rel(g, f) < 1e-2


def test_miscalibrated_slope_scales_hidden_gradient(make_bench, rng, monkeypatch):
    """A model slope 1.5x the truth: hidden-layer gradient 1.5x the true one, output layer (forward-measured) unchanged."""
    proc = make_bench((6, 5, 3))
    params = proc.init_parameters(rng, 0.3)
    x, t = _batch(rng, 6, 3)
    proc.program(params)
    true = make_gradient("physics_aware")(proc, params, x, t)
    sa = proc.absorbers[0]
    calibrated = sa.slope_model
    monkeypatch.setattr(sa, "slope_model", lambda e: 1.5 * calibrated(e))
    mis = make_gradient("physics_aware")(proc, params, x, t)
    np.testing.assert_allclose(mis.grads[1], true.grads[1], rtol=1e-6)
    np.testing.assert_allclose(mis.grads[0], 1.5 * true.grads[0], rtol=1e-5, atol=1e-9)
    assert _rel(mis.grads[0], true.grads[0]) > 0.3


def test_digital_bias_and_sigmoid_output_equal_backprop_and_fd(rng):
    """Digital MLP (bias column, sigmoid output): equals its exact backward pass and central differences."""
    cfg = load_config(default_config_path().parent / "digital_mlp.yaml")
    proc = build_processor(cfg, 5, 3, BuildOverrides(hidden=[4]))
    params = [p.astype(np.float64) for p in proc.init_parameters(rng, 0.5)]
    x, t = _batch(rng, 5, 3)
    proc.program(params)
    r = make_gradient("physics_aware")(proc, params, x, t)
    pp = make_gradient("pump_probe")(proc, params, x, t)
    for g, e in zip(r.grads, pp.grads):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)
    fd = make_gradient("finite_difference", step=1e-2)(proc, params, x, t)
    for g, f in zip(r.grads, fd.grads):
        assert _rel(g, f) < 1e-2
    assert r.measurements == 1                                # one forward, no backward acquisition


def test_processor_without_model_is_one_line_config_error(make_bench):
    """No nonlinearity model, or parameters that are not weight matrices -> one-line ConfigError naming what is missing."""
    proc = make_bench((6, 5, 3))

    def no_model(layer, pre):
        raise NotImplementedError("no model")

    proc.activation_slope = no_model
    with pytest.raises(ConfigError, match="activation_slope") as e:
        make_gradient("physics_aware").check(proc)
    assert "\n" not in str(e.value) and "FreeSpaceProcessor" in str(e.value)

    proc2 = make_bench((6, 5, 3))
    proc2.parameter_shapes = lambda: [(5, 6, 2), (3, 5)]      # e.g. phases of a mesh, not a weight matrix
    with pytest.raises(ConfigError, match=r"parameter 0 has shape \(5, 6, 2\); expected a weight matrix \(5, 6\)"):
        make_gradient("physics_aware").check(proc2)


def test_cli_trains_one_epoch_on_default_free_space(tmp_path, capsys):
    """`lightloop train --gradient physics_aware` runs one epoch on the default config and learns above chance."""
    from lightloop.cli import main

    out = tmp_path / "run"
    assert main(["train", "--gradient", "physics_aware", "--epochs", "1", "--hidden", "8", "--no-progress",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gradient"] == "physics_aware" and summary["measurements_per_step"] == 3.0
    assert summary["test_accuracy"] > 0.3                     # 10 classes: chance is 0.1
    # the model's prediction error is reported without refinement too (realistic twin: the model is not the bench)
    pe = summary["prediction_error"]
    assert 1e-3 < pe["last"] < 1.0 and pe["first"] == pe["mean"] == pe["last"]
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert len(rec["prediction_error_layers"]) == 2 and "model_refits" not in rec
