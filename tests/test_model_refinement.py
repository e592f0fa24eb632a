"""Twin refinement of physics_aware's model and its prediction error (issue 16, part 1).

The model never reads the twin's truth; these tests do (to inject a drift and to grade the fit)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lightloop.bench import BuildOverrides, build_processor
from lightloop.cli import default_config_path
from lightloop.config import load_config
from lightloop.errors import ConfigError
from lightloop.hal.processor import ForwardTaps, OpticalProcessor
from lightloop.physics.saturable_absorber import sa_forward, sa_slope
from lightloop.training.datasets import Dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.model_refinement import fit_row_gains, fit_slope_scale, relative_rms
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings


def _batch(rng, n_in, n_out, b=16):
    x = rng.uniform(0.0, 1.0, (b, n_in)).astype(np.float32)
    return x, np.eye(n_out, dtype=np.float32)[rng.integers(0, n_out, b)]


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_row_gain_fit_recovers_known_gains_and_offsets_exactly():
    """Noise-free z = g u + c: ridge 0 gives g, c to 1e-10; the default ridge biases g by < 1e-3 (g - 1); a row the
    data never excites keeps g = 1 and c = its mean."""
    rng = np.random.default_rng(0)
    u = rng.normal(0, 1, (300, 6))
    g = np.array([0.7, 1.0, 1.3, 0.95, 2.0, 1.05])
    c = np.array([0.1, -0.2, 0.0, 0.05, 0.3, -0.01])
    gh, ch = fit_row_gains(u, g * u + c, ridge=0.0)
    np.testing.assert_allclose(gh, g, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ch, c, rtol=0, atol=1e-10)
    gr, _ = fit_row_gains(u, g * u + c)
    assert np.all(np.abs(gr - g) <= 1.1e-3 * np.abs(g - 1) * 3 + 1e-12)
    assert np.any(gr != g) or np.all(g == 1)                    # the ridge does act
    u[:, 2] = 0.0                                              # row 2 not excited
    z = g * u + c + np.where(np.arange(6) == 2, rng.normal(0, 0.1, (300, 1)), 0.0)
    gh, ch = fit_row_gains(u, z, ridge=1e-3)
    assert gh[2] == pytest.approx(1.0) and ch[2] == pytest.approx(z[:, 2].mean())
    np.testing.assert_allclose(gh[[0, 1, 3, 4, 5]], g[[0, 1, 3, 4, 5]], rtol=3e-3)


def test_slope_scale_fit_recovers_a_scaled_absorber():
    """a = 1.3 g_SA(z) + c_j (a0 = 10): the scale of the integrated slope model is 1.3 to 1e-4; the model itself: 1."""
    rng = np.random.default_rng(1)
    z = rng.uniform(-3, 3, (400, 5))
    c = rng.normal(0, 0.05, 5)
    s, ch = fit_slope_scale(z, 1.3 * sa_forward(z, 10.0) + c, lambda e: sa_slope(e, 10.0), ridge=0.0)
    assert s == pytest.approx(1.3, rel=1e-4)
    np.testing.assert_allclose(ch, c, atol=1e-3)
    s1, _ = fit_slope_scale(z, sa_forward(z, 10.0), lambda e: sa_slope(e, 10.0))
    assert s1 == pytest.approx(1.0, abs=1e-4)
    s2, _ = fit_slope_scale(z, sa_forward(z, 14.0), lambda e: sa_slope(e, 10.0))
    assert abs(s2 - 1.0) > 0.1                                 # a wrong a0 is seen


def test_relative_rms_per_layer_and_pooled():
    """sqrt(sum e^2 / sum z^2) per layer and over the layers together."""
    per, tot = relative_rms([np.array([[1.0, 1.0]]), np.array([[0.0]])], [np.array([[1.0, 2.0]]), np.array([[2.0]])])
    assert per == pytest.approx([np.sqrt(1 / 5), 1.0]) and tot == pytest.approx(np.sqrt(5 / 9))


def test_drift_is_recovered_and_the_refined_gradient_is_the_benchs(make_bench):
    """Ideal twin, weight efficiencies drifted x0.7 (layer 0) and x1.25 (layer 1) through the twin: refits recover
    both gains on every row (graded on the truth), the prediction error drops from ~0.2 to < 1e-3, and the refined
    gradient matches central differences of the twin's loss to 1 % where the unrefined one is > 10 % off."""
    proc = make_bench((8, 6, 4))
    rng = np.random.default_rng(3)
    params = proc.init_parameters(rng, 0.3)
    proc.emulator.truth.efficiency[0] *= 0.7                   # the drift: the twin's truth, never the model's view
    proc.emulator.truth.efficiency[1] *= 1.25
    refined = make_gradient("physics_aware", refine_every=2, refine_window=4)
    refined.check(proc)
    for _ in range(4):
        x, t = _batch(rng, 8, 4)
        proc.program(params)
        r = refined(proc, params, x, t)
        assert r.measurements == 3                             # refinement adds no acquisition
    m = refined.epoch_metrics()
    assert m["prediction_error_first_step"] > 0.1 and m["prediction_error_last_step"] < 1e-3
    assert m["model_refits"] == 2 and len(m["prediction_error_layers"]) == 2
    ref = refined._refiner
    np.testing.assert_allclose(ref.gains[0], 0.7, rtol=2e-3)
    np.testing.assert_allclose(ref.gains[1], 1.25, rtol=2e-3)
    assert ref.slope_scales[0] == pytest.approx(1.0, abs=2e-3)   # the absorber did not drift
    x, t = _batch(rng, 8, 4)
    proc.program(params)
    fd = make_gradient("finite_difference", step=3e-3)(proc, params, x, t)
    proc.program(params)
    good = refined(proc, params, x, t)
    proc.program(params)
    plain = make_gradient("physics_aware")(proc, params, x, t)
    for g, f, p in zip(good.grads, fd.grads, plain.grads):
        assert _rel(g, f) < 1e-2, _rel(g, f)
        assert _rel(p, f) > 0.1, _rel(p, f)


def test_on_demand_refine_and_digital_model_is_exact(rng):
    """refine(processor, params, x): one forward, fit figures; on the digital MLP (model == bench, bias column) the
    gains are 1, the prediction error ~0 and the refined gradient still equals the exact backward pass."""
    cfg = load_config(default_config_path().parent / "digital_mlp.yaml")
    proc = build_processor(cfg, 5, 3, BuildOverrides(hidden=[4]))
    params = proc.init_parameters(rng, 0.5)
    pa = make_gradient("physics_aware")
    x, t = _batch(rng, 5, 3)
    before = proc.measurements
    fig = pa.refine(proc, params, x)
    assert proc.measurements - before == 1
    assert fig["gain_mean_0"] == pytest.approx(1.0, abs=1e-4) and fig["gain_mean_1"] == pytest.approx(1.0, abs=1e-4)
    assert fig["slope_scale_0"] == pytest.approx(1.0, abs=1e-3)
    proc.program(params)
    r = pa(proc, params, x, t)
    assert pa.epoch_metrics()["prediction_error"] < 1e-5
    assert len(pa._refiner.history) == 2                        # after an on-demand refine, steps are kept
    pp = make_gradient("pump_probe")(proc, params, x, t)
    for g, e in zip(r.grads, pp.grads):
        np.testing.assert_allclose(g, e, rtol=2e-3, atol=1e-6)
    with pytest.raises(ConfigError, match="x given without params"):
        pa.refine(proc, None, x)


@pytest.mark.parametrize("option, value", [("refine_every", -1), ("refine_every", "often"), ("refine_every", True),
                                           ("refine_every", 2.5), ("refine_window", 0), ("refine_slope", "maybe")])
def test_bad_options_are_one_line_config_errors(option, value):
    """Bad refine_* values -> one line naming the option and what was expected."""
    with pytest.raises(ConfigError, match=f"{option}: expected") as e:
        make_gradient("physics_aware", **{option: value})
    assert "\n" not in str(e.value)


def test_bad_option_in_config_and_cli(tmp_path, capsys):
    """training.gradient_options and --gradient-option reach the same check (CLI: exit 2, one line)."""
    from lightloop.cli import main

    text = default_config_path().read_text().replace("gradient: pump_probe", "gradient: physics_aware\n"
                                                     "  gradient_options: {refine_window: -3}")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match="training.gradient_options: physics_aware: gradient option refine_window"):
        load_config(cfg)
    assert main(["train", "--gradient", "physics_aware", "--gradient-option", "refine_every=-2", "--epochs", "1",
                 "--no-progress", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightloop: error:") and "refine_every" in err and "\n" not in err


class _OwnModel(OpticalProcessor):
    """A 2 -> 2 linear 'bench' whose own model has a gain it refits (stands in for the chip / flow processors)."""

    def __init__(self):
        self.true_gain, self.model_gain, self.calls = 0.5, 1.0, []

    layer_sizes = (2, 2)

    def parameter_shapes(self):
        return [(2, 3)]                  # not a weight matrix of (2, 2): brings its own model

    def parameter_bounds(self):
        return [(-1.0, 1.0)]

    def init_parameters(self, rng, scale):
        return [np.zeros((2, 3), np.float32)]

    def program(self, params):
        pass

    def forward(self, x):
        self._count()
        z = self.true_gain * x
        return ForwardTaps(inputs=x, pre=[z], post=[z])

    def model_gradients(self, taps, delta_out):
        return [np.zeros((2, 3), np.float32)]

    def model_prediction(self, taps):
        return [self.model_gain * taps.inputs]

    def refine_model(self, history):
        self.calls.append(len(history))
        x = np.concatenate([t.inputs for t in history])
        z = np.concatenate([t.pre[0] for t in history])
        self.model_gain = float(np.sum(x * z) / np.sum(x * x))
        return {"gain": self.model_gain, "note": "not a number"}


class _NoRefine(_OwnModel):
    refine_model = OpticalProcessor.refine_model


def test_own_model_processor_refits_through_refine_model(rng):
    """A processor with its own model: refine_model(window) every refine_every steps, prediction error from
    model_prediction drops after the refit; refine_every > 0 without refine_model -> ConfigError."""
    proc = _OwnModel()
    pa = make_gradient("physics_aware", refine_every=3, refine_window=2)
    pa.check(proc)
    for _ in range(6):
        x = rng.uniform(0, 1, (4, 2)).astype(np.float32)
        pa(proc, proc.init_parameters(rng, 0.1), x, np.zeros((4, 2), np.float32))
    assert proc.calls == [2, 2] and proc.model_gain == pytest.approx(0.5)
    m = pa.epoch_metrics()
    assert m["prediction_error_first_step"] == pytest.approx(1.0) and m["prediction_error_last_step"] < 1e-6
    assert m["model_refits"] == 2 and m["model_fit"] == {"gain": pytest.approx(0.5)}
    with pytest.raises(ConfigError, match="refine_every=3: _NoRefine has no refine_model; expected refine_every 0"):
        make_gradient("physics_aware", refine_every=3).check(_NoRefine())
    make_gradient("physics_aware").check(_NoRefine())          # without refinement it is fine


def _small_digits(rng, n=192):
    x = rng.uniform(0, 1, (n, 8)).astype(np.float32)
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype(np.int64) + 2 * (x[:, 0] > 0.5)
    return Dataset("toy", x[: n * 3 // 4], y[: n * 3 // 4], x[n * 3 // 4:], y[n * 3 // 4:], 4)


def test_trainer_reports_prediction_error_and_refinement_tracks_a_mid_run_drift(make_bench, tmp_path):
    """A drift injected mid-run (hook on step 10): metrics.jsonl carries the prediction error per epoch, the summary
    first / last / mean; with refine_every the last epoch's error falls back to the noise floor, without it stays."""
    data = _small_digits(np.random.default_rng(0))
    last = {}
    for refine in (0, 4):
        proc = make_bench((8, 6, 4))

        def drift(info, proc=proc):
            if info["global_step"] == 10:
                proc.emulator.truth.efficiency[0] *= 0.7       # the twin drifts; the model is not told

        tr = Trainer(proc, make_gradient("physics_aware", refine_every=refine, refine_window=3),
                     make_optimizer("adam", 0.01), TrainSettings(epochs=3, batch_size=16, progress=False, plot=True),
                     out_dir=tmp_path / f"r{refine}", hooks=[drift])
        res = tr.fit(data)
        recs = [json.loads(ln) for ln in (tmp_path / f"r{refine}" / "metrics.jsonl").read_text().splitlines()]
        assert [len(r["prediction_error_layers"]) for r in recs] == [2, 2, 2]
        s = res.summary()["prediction_error"]
        assert s["first"] == recs[0]["prediction_error"] and s["last"] == recs[-1]["prediction_error"]
        json.dumps(res.summary())
        last[refine] = recs[-1]["prediction_error_last_step"]
        assert ("model_refits" in recs[0]) == bool(refine)
    assert last[0] > 0.2 and last[4] < 1e-3
