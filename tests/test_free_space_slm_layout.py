"""Column-major SLM weights (issue 15, realistic twin): the F-ordered chain equals the row-major one it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from lightloop.hal.calibration_maps import GrayLevelLUT
from lightloop.simulators.weight_blocks import SLMPhysics, apply_fringing


def _weights(shape=(96, 300), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = np.clip(rng.normal(0, 0.2, shape), -1, 1).astype(np.float32)
    w.reshape(-1)[:8] = [0.0, -0.0, 1.0, -1.0, 1e-45, -1e-38, 0.5, -0.5]   # exact-fallback bins included
    return w


@pytest.mark.parametrize("lut", [GrayLevelLUT(), GrayLevelLUT.power_law(2 * np.pi * 255 / 256 * 1.04, 1.08)])
def test_checkerboard_grays_keep_a_column_major_layout_and_equal_the_row_major_ones(lut):
    w = _weights()
    gp_c, gm_c = lut.checkerboard_grays(w)
    gp_f, gm_f = lut.checkerboard_grays(np.asfortranarray(w))
    assert gp_f.flags.f_contiguous and not gp_f.flags.c_contiguous and gm_f.flags.f_contiguous
    np.testing.assert_array_equal(gp_f, gp_c)
    np.testing.assert_array_equal(gm_f, gm_c)


def _reference_field(phys: SLMPhysics, gp, gm):
    table = np.exp(1j * phys.phase_table()).astype(np.complex64)
    field = 0.5 * (table[np.asarray(gp)] + table[np.asarray(gm)])
    out = (1.0 - 2.0 * phys.fringing) * field
    if phys.fringing:
        out[:, 1:] += phys.fringing * field[:, :-1]      # row neighbours: along the input axis
        out[:, :-1] += phys.fringing * field[:, 1:]
    return out


@pytest.mark.parametrize("fringing", [0.0, 0.02])
def test_slm_block_field_of_column_major_grays_is_column_major_and_bitwise_the_reference(fringing):
    rng = np.random.default_rng(4)
    phys = SLMPhysics(2 * np.pi * 255 / 256 * 1.02, 1.05, fringing)
    gp = np.asfortranarray(rng.integers(0, 256, (37, 53)).astype(np.uint8))
    gm = np.asfortranarray(rng.integers(0, 256, (37, 53)).astype(np.uint8))
    field = phys.block_field(gp, gm)
    assert field.dtype == np.complex64 and field.flags.f_contiguous and not field.flags.c_contiguous
    np.testing.assert_array_equal(field, _reference_field(phys, gp, gm))
    np.testing.assert_array_equal(field, phys.block_field(np.ascontiguousarray(gp), np.ascontiguousarray(gm)))


def test_fringing_mixes_along_the_input_axis_in_either_layout():
    """A single lit block leaks into its left and right neighbours (same row), never into the rows above or below."""
    t = np.zeros((5, 7), np.complex64)
    t[2, 3] = 1 + 1j
    for layout in (t, np.asfortranarray(t)):
        out = apply_fringing(layout, 0.1)
        assert np.allclose(out[2, 2:5], [0.1 + 0.1j, 0.8 + 0.8j, 0.1 + 0.1j])
        assert np.count_nonzero(out) == 3


def _realistic(order: str, hidden=(64,), n_in=120):
    """One program / forward / backward of the realistic SLM twin with weights in the given memory layout."""
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.cli import default_config_path
    from lightloop.config import load_config

    cfg = load_config(default_config_path())
    proc = build_processor(cfg, n_in, 10, BuildOverrides(hidden=list(hidden), ideal=False))
    rng = np.random.default_rng(1)
    params = [np.asarray(p, order=order) for p in proc.init_parameters(rng, 0.1)]
    proc.program(params)
    x = rng.random((32, n_in), dtype=np.float32)
    taps = proc.forward(x)
    errs = proc.backward(taps.output - np.eye(10, dtype=np.float32)[rng.integers(0, 10, 32)])
    return proc, x, [np.asarray(t) for t in (*taps.pre, *taps.post[:-1], *errs[:-1])]


def test_realistic_hidden_slm_weights_are_column_major_and_the_real_first_product_matches_the_complex_one():
    proc, x, _ = _realistic("F")
    assert proc.parameter_orders() == ["F", "C"]
    w = proc.emulator.weights[0]
    assert w.dtype == np.complex64 and w.flags.f_contiguous and not w.flags.c_contiguous
    z = proc.emulator._forward().pre[0]
    np.testing.assert_array_equal(z, (x @ w.T.view(np.float32)).view(np.complex64))   # the (re, im) real product
    ref = x.astype(np.complex64) @ np.ascontiguousarray(w).T                           # the complex product
    bound = 4 * np.finfo(np.float32).eps * (np.abs(x) @ np.abs(w).T)                   # float32 rounding of the sums
    assert np.all(np.abs(z.real - ref.real) <= bound) and np.all(np.abs(z.imag - ref.imag) <= bound)


def test_realistic_step_in_column_major_equals_row_major_up_to_rare_adc_steps():
    """Same truth, same noise stream: readings equal except where float32 rounding of z moves a reading across an
    ADC step (at most one step, on well under 1 % of the readings)."""
    _, _, fast = _realistic("F", hidden=(64, 32))
    _, _, slow = _realistic("C", hidden=(64, 32))
    lsb = 2 * 10.0 / 2**14
    for f, s in zip(fast, slow):
        assert f.shape == s.shape
        differ = f != s
        assert differ.mean() < 0.01
        # a one-step flip seen through the detector map (gain ~1 V per field unit; errors are rescaled by the probe)
        assert np.abs(f - s).max() <= 10 * lsb


def test_speed_benchmark_times_every_realistic_part():
    """benchmarks/free_space_speed.py's per-part table (the realistic twin's limit) runs and names each part."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "free_space_speed.py"
    spec = importlib.util.spec_from_file_location("free_space_speed_bench", path)
    fs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fs)
    parts = fs.realistic_parts(fs.build([16], True), batch=8, steps=10, repeats=1, calls=2)
    assert sorted(parts) == sorted(f"{k}_seconds_per_epoch" for k in (
        "slm_gray_levels", "slm_twin_field", "optics_forward_backward", "homodyne_reads", "noise_draws_alone"))
    assert all(v > 0 for v in parts.values())
    assert fs.realistic_parts(fs.build([16], False), batch=8, steps=10) == {}   # ideal twin: no SLM parts
