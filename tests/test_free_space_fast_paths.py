"""Free-space fast paths (issue 15) against their slow reference forms, on random inputs and lookup-table edges."""

from __future__ import annotations

import numpy as np
import pytest

from lightloop.hal.calibration_maps import _PAIR_SHIFT, GrayLevelLUT
from lightloop.simulators.homodyne import HomodynePhysics
from lightloop.simulators.weight_blocks import SLMPhysics, apply_fringing
from lightloop.training.gradients import _outer_grads
from lightloop.training.optimizers import Adam

LUTS = {
    "nominal": GrayLevelLUT(),
    "steep": GrayLevelLUT.power_law(2 * np.pi * 255 / 256 * 1.04, 1.08),
    "shallow": GrayLevelLUT.power_law(2 * np.pi * 255 / 256 * 0.95, 0.92),
}


def reference_grays(lut: GrayLevelLUT, passive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The encoding as first written: phases s +- arccos|w|, s = pi for w < 0, each through gray_for_phase."""
    alpha = np.arccos(np.abs(passive))
    s = np.where(passive < 0, np.pi, 0.0)
    return lut.gray_for_phase(s + alpha), lut.gray_for_phase(s - alpha)


@pytest.mark.parametrize("name", sorted(LUTS))
def test_checkerboard_lookup_equals_reference_on_random_and_special_amplitudes(name):
    lut = LUTS[name]
    rng = np.random.default_rng(3)
    special = [0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 1e-38, -1e-38, 2.0**-20, 0.5, -0.5, np.nextafter(1, 0)]
    w = np.concatenate([rng.normal(0, 0.1, 200_000), rng.uniform(-1, 1, 200_000), special]).astype(np.float32)
    w = np.clip(w, -1, 1).astype(np.float32).reshape(-1, 1)
    fast = lut.checkerboard_grays(w)
    slow = reference_grays(lut, w)
    assert fast[0].dtype == np.uint8 and fast[0].shape == w.shape
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


@pytest.mark.parametrize("name", sorted(LUTS))
def test_checkerboard_lookup_exact_for_every_float_near_each_decision_boundary(name):
    """Every float32 in each flagged (exact-fallback) bin and in the two bins either side of it."""
    lut = LUTS[name]
    lut.checkerboard_grays(np.zeros((1, 1), np.float32))
    table = lut._pair_table
    top = int(np.float32(1.0).view(np.uint32)) >> _PAIR_SHIFT
    neg = 1 << (31 - _PAIR_SHIFT)
    flagged = np.flatnonzero(table > 0xFFFF)
    flagged = flagged[(flagged <= top) | ((flagged >= neg) & (flagged <= neg + top))]
    assert 0 < flagged.size < 0.01 * 2 * top   # the fallback exists and stays rare
    bins = np.unique(np.concatenate([flagged + d for d in (-2, -1, 0, 1, 2)]))
    bits = (bins[:, None].astype(np.uint32) << _PAIR_SHIFT) | np.arange(1 << _PAIR_SHIFT, dtype=np.uint32)[::7]
    w = bits.reshape(-1).view(np.float32)
    w = w[np.abs(w) <= 1]
    fast, slow = lut.checkerboard_grays(w), reference_grays(lut, w)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


def test_checkerboard_lookup_uses_the_exact_rule_for_edge_bins_and_non_float32(monkeypatch):
    lut = GrayLevelLUT()
    calls = []
    exact = lut._checkerboard_exact
    monkeypatch.setattr(lut, "_checkerboard_exact", lambda p: calls.append(p.size) or exact(p))
    assert np.array_equal(lut.checkerboard_grays(np.array([[0.3]], np.float32))[0], reference_grays(lut, np.float32([[0.3]]))[0])
    assert calls[-1] < 1_000_000                               # the table build asks the exact rule too
    calls.clear()
    lut.checkerboard_grays(np.array([-0.0, 1.0], np.float32))   # -0.0 shares a bin with negative denormals: exact
    assert calls and calls[0] == 2
    calls.clear()
    w64 = np.array([[0.25, -0.7]])
    out = lut.checkerboard_grays(w64)
    assert calls == [2] and np.array_equal(out[0], reference_grays(lut, w64)[0])


def reference_block_field(phys: SLMPhysics, gp, gm):
    table = np.exp(1j * phys.phase_table()).astype(np.complex64)
    field = 0.5 * (table[gp] + table[gm])
    if phys.fringing == 0.0:
        return field
    out = (1.0 - 2.0 * phys.fringing) * field
    out[:, 1:] += phys.fringing * field[:, :-1]
    out[:, :-1] += phys.fringing * field[:, 1:]
    return out


@pytest.mark.parametrize("fringing", [0.0, 0.02])
def test_slm_pair_table_and_fringing_equal_the_reference(fringing):
    rng = np.random.default_rng(5)
    phys = SLMPhysics(2 * np.pi * 255 / 256 * 1.02, 1.05, fringing)
    gp = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    gm = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    fast = phys.block_field(gp, gm)
    assert fast.dtype == np.complex64
    np.testing.assert_array_equal(fast, reference_block_field(phys, gp, gm))
    phys.gamma = 0.9                                           # a changed truth rebuilds the pair table
    np.testing.assert_array_equal(phys.block_field(gp, gm), reference_block_field(phys, gp, gm))
    ints = gp.astype(np.int64)                                 # other index types take the reference path
    np.testing.assert_array_equal(phys.block_field(ints, gm), reference_block_field(phys, ints, gm))


def test_fringing_on_real_fields_unchanged():
    rng = np.random.default_rng(6)
    t = rng.uniform(-1, 1, (8, 9)).astype(np.float32)
    ref = (1.0 - 2 * 0.03) * t
    ref[:, 1:] += 0.03 * t[:, :-1]
    ref[:, :-1] += 0.03 * t[:, 1:]
    np.testing.assert_array_equal(apply_fringing(t, 0.03), ref)


def reference_read(h: HomodynePhysics, e, rng):
    quad = (e * h._phasor).real if np.iscomplexobj(e) else e * h._phasor.real
    if h.shot_noise:
        quad = quad + h.shot_noise * rng.standard_normal(quad.shape)
    v = h.gain_v * quad + h.offset_v
    if h.electronic_noise_v:
        v = v + h.electronic_noise_v * rng.standard_normal(v.shape)
    if h.adc_bits is not None:
        lsb = 2.0 * h.full_scale_v / 2**h.adc_bits
        v = np.clip(np.round(v / lsb) * lsb, -h.full_scale_v, h.full_scale_v - lsb)
    return v.astype(np.float32)


@pytest.mark.parametrize("adc_bits, shot, elec, cplx", [(14, 2e-3, 1e-3, True), (14, 2e-3, 1e-3, False),
                                                         (None, 2e-3, 0.0, True), (8, 0.0, 0.0, False)])
def test_homodyne_in_place_readout_equals_the_textbook_form(adc_bits, shot, elec, cplx):
    rng = np.random.default_rng(7)
    n = 33
    h = HomodynePhysics(10 * (1 + 0.03 * rng.standard_normal(n)), 0.05 * rng.standard_normal(n),
                        1e-3 * rng.standard_normal(n), shot, elec, adc_bits, 10.0)
    e = rng.normal(0, 0.6, (17, n)).astype(np.float32)
    e[0, :3] = [5.0, -5.0, 0.0]                              # beyond full scale: the ADC clips
    if cplx:
        e = (e + 1j * rng.normal(0, 0.1, e.shape)).astype(np.complex64)
    fast = h.read(e, np.random.default_rng(11))
    np.testing.assert_array_equal(fast, reference_read(h, e, np.random.default_rng(11)))


def test_adam_with_work_arrays_is_bitwise_the_textbook_update():
    rng = np.random.default_rng(9)
    shapes = [(20, 30), (4, 20)]
    p_fast = [rng.normal(0, 0.1, s).astype(np.float32) for s in shapes]
    p_ref = [p.copy() for p in p_fast]
    opt = Adam(1e-3)
    m = [np.zeros_like(p) for p in p_ref]
    v = [np.zeros_like(p) for p in p_ref]
    for t in range(1, 8):
        grads = [rng.normal(0, 1e-2, s).astype(np.float32) for s in shapes]
        opt.step(p_fast, grads)
        b1, b2 = np.float32(0.9), np.float32(0.999)
        step = np.float32(1e-3 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t))
        eps = np.float32(1e-8 * np.sqrt(1 - 0.999**t))
        for p, g, mm, vv in zip(p_ref, grads, m, v):
            mm *= b1
            mm += (1 - b1) * g
            vv *= b2
            vv += (1 - b2) * (g * g)
            p -= step * mm / (np.sqrt(vv) + eps)
    for a, b in zip(p_fast, p_ref):
        np.testing.assert_array_equal(a, b)


def test_outer_gradients_scaled_in_place_equal_the_product_times_inverse_batch():
    from lightloop.hal.processor import ForwardTaps

    rng = np.random.default_rng(10)
    x = rng.random((8, 6), dtype=np.float32)
    post = [rng.random((8, 5), dtype=np.float32)]
    taps = ForwardTaps(inputs=x, pre=[post[0], rng.random((8, 3), dtype=np.float32)], post=post + [None])
    deltas = [rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)]
    grads = _outer_grads(taps, deltas)
    b = np.float32(1 / 8)
    np.testing.assert_array_equal(grads[0], (deltas[0].T @ x) * b)
    np.testing.assert_array_equal(grads[1], (deltas[1].T @ post[0]) * b)


def test_realistic_twin_step_matches_the_slow_paths(monkeypatch):
    """One program / forward / backward of the realistic SLM twin: fast paths vs every slow form at once, bitwise."""
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.cli import default_config_path
    from lightloop.config import load_config

    def run():
        cfg = load_config(default_config_path())
        proc = build_processor(cfg, 20, 4, BuildOverrides(hidden=[12], ideal=False))
        rng = np.random.default_rng(1)
        params = proc.init_parameters(rng, 0.3)
        proc.program(params)
        taps = proc.forward(rng.random((9, 20), dtype=np.float32))
        errs = proc.backward(taps.output - np.eye(4, dtype=np.float32)[rng.integers(0, 4, 9)])
        return [np.asarray(t) for t in (*taps.pre, *taps.post[:-1], *errs)], proc

    fast, proc = run()
    assert np.iscomplexobj(proc.emulator.weights[0]) and proc.weights[0].lut is not None
    monkeypatch.setattr(GrayLevelLUT, "checkerboard_grays", lambda self, p: reference_grays(self, p))
    monkeypatch.setattr(SLMPhysics, "block_field", reference_block_field)
    monkeypatch.setattr(HomodynePhysics, "read", lambda self, e, rng: reference_read(self, e, rng))
    slow, _ = run()
    for f, s in zip(fast, slow):
        np.testing.assert_array_equal(f, s)     # bitwise: noise stream, ADC steps and gray levels all unchanged


# --- the ideal path (issue 15 row 1-2): parameter layout, finite checks, clip, in-place transmission -------------------
def _ideal_proc(hidden=(128,), n_in=784, n_out=10):
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.cli import default_config_path
    from lightloop.config import load_config

    cfg = load_config(default_config_path())
    cfg.processor.error_readout = "single"
    return build_processor(cfg, n_in, n_out, BuildOverrides(hidden=list(hidden), ideal=True, optical_depth=10.0))


def test_ideal_hidden_layers_are_column_major_and_train_like_row_major():
    """F-ordered hidden weights (NN forward product) give the row-major results to float32 rounding, and the
    gradients and Adam work arrays follow each parameter's layout (no strided elementwise passes)."""
    from lightloop.training.gradients import make_gradient

    proc = _ideal_proc((128, 64))
    params = proc.init_parameters(np.random.default_rng(0), 0.1)
    assert [p.flags.f_contiguous and not p.flags.c_contiguous for p in params] == [True, True, False]
    assert proc.parameter_orders() == ["F", "F", "C"]
    rng = np.random.default_rng(1)
    x = rng.random((64, 784), dtype=np.float32)
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)]
    method = make_gradient("pump_probe")
    runs = []
    for layout in (params, [np.ascontiguousarray(p) for p in params]):
        ps = [p.copy(order="K") for p in layout]
        opt, losses = Adam(1e-3), []
        for _ in range(3):
            proc.program(ps)
            res = method(proc, ps, x, t)
            assert [g.flags.f_contiguous for g in res.grads] == [p.flags.f_contiguous for p in ps]
            opt.step(ps, res.grads)
            losses.append(res.loss)
        assert all(s.flags.f_contiguous == p.flags.f_contiguous for p in ps for s in opt._scratch(p))
        runs.append((losses, ps))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_outer_gradients_in_the_parameter_layout_equal_the_row_major_products():
    from lightloop.hal.processor import ForwardTaps

    rng = np.random.default_rng(12)
    x = rng.random((64, 300), dtype=np.float32)
    post = rng.random((64, 96), dtype=np.float32)
    taps = ForwardTaps(inputs=x, pre=[post, rng.random((64, 10), dtype=np.float32)], post=[post, None])
    deltas = [rng.normal(size=(64, 96)).astype(np.float32), rng.normal(size=(64, 10)).astype(np.float32)]
    like = [np.zeros((96, 300), np.float32, order="F"), np.zeros((10, 96), np.float32)]
    fast, ref = _outer_grads(taps, deltas, like), _outer_grads(taps, deltas)
    assert fast[0].flags.f_contiguous and not fast[0].flags.c_contiguous and fast[1].flags.c_contiguous
    for f, r in zip(fast, ref):
        np.testing.assert_allclose(f, r, rtol=1e-6, atol=1e-7)   # the same sums (bitwise with OpenBLAS here)


def test_adam_on_column_major_parameters_is_bitwise_the_textbook_update():
    rng = np.random.default_rng(13)
    p_fast = [np.asfortranarray(rng.normal(0, 0.1, (30, 20)).astype(np.float32)), rng.normal(0, .1, (4, 30)).astype(np.float32)]
    p_ref = [np.ascontiguousarray(p) for p in p_fast]
    fast, ref = Adam(1e-3), Adam(1e-3)
    for _ in range(5):
        grads = [rng.normal(0, 1e-2, p.shape).astype(np.float32) for p in p_ref]
        fast.step(p_fast, [np.asfortranarray(grads[0]), grads[1]])
        ref.step(p_ref, grads)
    for a, b in zip(p_fast, p_ref):
        np.testing.assert_array_equal(a, b)
    assert p_fast[0].flags.f_contiguous and fast.m[0].flags.f_contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.int32, np.uint8])
def test_all_finite_is_exactly_isfinite_all(dtype):
    from lightloop.hal.free_space_roles import all_finite

    rng = np.random.default_rng(14)
    base = rng.normal(0, 1, (40, 30))
    cases = [base, base * 1e30, base[:, ::3], np.zeros((0, 5)), np.zeros((3, 4))]
    if np.dtype(dtype).kind in "fc":
        big = np.full((8, 8), np.finfo(dtype).max / 2)          # finite values whose dot product overflows
        cases.append(big)
        for bad in (np.nan, np.inf, -np.inf):
            c = base.copy()
            c[7, 11] = bad
            cases += [c, c[:, ::2]]
    for c in cases:
        a = np.asarray(c).astype(dtype) if np.dtype(dtype).kind in "fc" else np.clip(c, 0, 100).astype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            assert all_finite(a) == bool(np.isfinite(a).all()), (dtype, a.shape)


def test_ideal_twin_transmission_in_place_equals_the_physics_form():
    from lightloop.physics.saturable_absorber import sa_transmission
    from lightloop.simulators.free_space import _transmission

    rng = np.random.default_rng(15)
    z = rng.normal(0, 3, (64, 128)).astype(np.float32)
    z[0, :6] = [0.0, -0.0, 1e-30, 3e19, -np.inf, np.nan]
    for a0 in (10.0, 0.009, 0.0, 3.3):
        with np.errstate(over="ignore", invalid="ignore"):
            np.testing.assert_array_equal(_transmission(z, a0), sa_transmission(z, a0))
    ref64 = sa_transmission(z[1:], np.float64(10.0))                   # a numpy a0 promotes: the reference decides
    assert _transmission(z[1:], np.float64(10.0)).dtype == ref64.dtype == np.float64
    zc = (z[1:] + 1j * z[1:]).astype(np.complex64)
    np.testing.assert_array_equal(_transmission(zc, 10.0), sa_transmission(zc, 10.0))


def test_trainer_clip_in_place_equals_np_clip_and_skips_in_range_arrays():
    from lightloop.training.trainer import clip_in_place

    rng = np.random.default_rng(16)
    for a in (rng.normal(0, 0.3, (50, 40)), rng.normal(0, 3, (50, 40)), np.array([[np.nan, 2.0, -0.0, -5.0]]),
              np.zeros((0, 3))):
        a = np.asfortranarray(a.astype(np.float32))
        ref = np.clip(a, -1.0, 1.0)
        clip_in_place(a, -1.0, 1.0)
        np.testing.assert_array_equal(a, ref)
        assert np.array_equal(np.signbit(a), np.signbit(ref))


def test_ideal_write_still_clips_a_fresh_frame_and_reads_still_refuse_nan():
    from lightloop.errors import InstrumentError

    proc = _ideal_proc((16,), n_in=20, n_out=4)
    w = proc.init_parameters(np.random.default_rng(0), 0.1)
    w[0][0, 0], w[0][1, 1] = 5.0, -7.0
    proc.program(w)
    frame = proc.emulator.weights[0]
    assert frame is not w[0] and frame.max() <= 1.0 and frame.min() >= -1.0 and w[0][0, 0] == 5.0
    with pytest.raises(ValueError, match="NaN or inf"):
        proc.encoder.display(np.full((2, 20), np.nan, np.float32))
    proc.forward(np.ones((2, 20), np.float32))
    proc.emulator._fwd.pre[0][0, 0] = np.inf                 # a reading with inf: refused before use
    with pytest.raises(InstrumentError, match="NaN or inf"):
        proc.pre_taps[0].acquire()


def test_trainer_records_the_cpu_seconds_of_each_epoch():
    from lightloop.training.datasets import Dataset
    from lightloop.training.gradients import make_gradient
    from lightloop.training.trainer import Trainer, TrainSettings

    rng = np.random.default_rng(17)
    data = Dataset("t", rng.random((64, 20), dtype=np.float32), rng.integers(0, 4, 64),
                   rng.random((8, 20), dtype=np.float32), rng.integers(0, 4, 8), 4)
    res = Trainer(_ideal_proc((16,), n_in=20, n_out=4), make_gradient("pump_probe"), Adam(1e-3),
                  TrainSettings(epochs=1, batch_size=16, progress=False)).fit(data)
    assert 0 < res.history[0]["epoch_cpu_seconds"] < 60
