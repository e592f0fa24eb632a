"""The free-space bench through the HAL: ideal mode equals explicit matrix math; gradients; twins' statistics."""

import numpy as np
import pytest

from lightloop.errors import ConfigError, SafetyLimitError
from lightloop.physics.saturable_absorber import sa_forward, sa_transmission
from lightloop.training.datasets import one_hot
from lightloop.training.gradients import make_gradient
from lightloop.training.losses import SoftmaxCrossEntropyLoss


def _weights(proc, rng, scale=0.3):
    """Initial weights kept inside the realisable range (|W| < 0.9 max_weight, away from the clip)."""
    return [np.clip(w, -0.9, 0.9) for w in proc.init_parameters(rng, scale)]


def test_ideal_forward_and_backward_equal_matrix_math(make_bench, rng):
    a0 = 7.0
    proc = make_bench((12, 9, 7, 5), a0=a0)
    w = _weights(proc, rng)
    proc.program(w)
    x = rng.random((6, 12)).astype(np.float32)
    taps = proc.forward(x)
    w64 = [p.astype(np.float64) for p in w]
    z1 = x @ w64[0].T
    a1 = sa_forward(z1, a0)
    z2 = a1 @ w64[1].T
    a2 = sa_forward(z2, a0)
    z3 = a2 @ w64[2].T
    for got, want in [(taps.pre[0], z1), (taps.post[0], a1), (taps.pre[1], z2), (taps.post[1], a2), (taps.output, z3)]:
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    delta = rng.normal(size=(6, 5)).astype(np.float32)
    errs = proc.backward(delta)
    d2 = (delta @ w64[2]) * sa_transmission(z2, a0)
    d1 = (d2 @ w64[1]) * sa_transmission(z1, a0)
    np.testing.assert_allclose(errs[1], d2, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(errs[0], d1, rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(errs[2], delta)
    k = 2 if proc.error_readout == "differential" else 1
    assert proc.measurements == 3 + 2 + 2 * k  # 3 pre taps, 2 post taps, 2 error taps (x2: +-delta probes)


def test_optical_depth_reaches_the_twin(make_bench):
    proc = make_bench((4, 3, 2), a0=12.5)
    assert proc.emulator.true_optical_depth(0) == pytest.approx(12.5, rel=1e-6)
    assert proc.absorbers[0].optical_depth == pytest.approx(12.5, rel=1e-6)


def _loss(proc, w, x, t):
    proc.program(w)
    d = proc.forward(x).output.astype(np.float64) - t
    return 0.5 * np.sum(d * d) / x.shape[0]


@pytest.mark.parametrize("a0", [0.5, 10.0])
def test_exact_gradient_matches_finite_differences_of_the_loss(make_bench, rng, a0):
    proc = make_bench((6, 5, 4, 3), a0=a0)
    w = _weights(proc, rng, 0.6)
    x = rng.random((8, 6)).astype(np.float32) * 2
    t = one_hot(rng.integers(0, 3, 8), 3)
    proc.program(w)
    g = make_gradient("exact")(proc, w, x, t).grads
    h = 1e-2
    for layer in range(3):
        fd = np.zeros_like(w[layer], dtype=np.float64)
        for idx in np.ndindex(w[layer].shape):
            wp = [p.copy() for p in w]
            wm = [p.copy() for p in w]
            wp[layer][idx] += h
            wm[layer][idx] -= h
            fd[idx] = (_loss(proc, wp, x, t) - _loss(proc, wm, x, t)) / (2 * h)
        np.testing.assert_allclose(g[layer], fd, rtol=2e-3, atol=2e-5 * np.abs(fd).max())


def test_exact_gradient_with_cross_entropy_matches_finite_differences(make_bench, rng):
    proc = make_bench((5, 4, 3), a0=5.0)
    w = _weights(proc, rng, 0.6)
    x = rng.random((7, 5)).astype(np.float32) * 2
    t = one_hot(rng.integers(0, 3, 7), 3)
    m = make_gradient("exact")
    m.loss = SoftmaxCrossEntropyLoss()
    proc.program(w)
    g = m(proc, w, x, t).grads
    h = 1e-2

    def loss(wv):
        proc.program(wv)
        return m.loss.value(proc.forward(x).output.astype(np.float64), t)

    for layer in range(2):
        for idx in list(np.ndindex(w[layer].shape))[:10]:
            wp = [p.copy() for p in w]
            wm = [p.copy() for p in w]
            wp[layer][idx] += h
            wm[layer][idx] -= h
            assert g[layer][idx] == pytest.approx((loss(wp) - loss(wm)) / (2 * h), rel=5e-3, abs=1e-5)


def test_generic_finite_difference_method_agrees_with_exact(make_bench, rng):
    proc = make_bench((4, 3, 2), a0=3.0)
    w = _weights(proc, rng, 0.6)
    x = rng.random((5, 4)).astype(np.float32) * 2
    t = one_hot(rng.integers(0, 2, 5), 2)
    proc.program(w)
    ge = make_gradient("exact")(proc, w, x, t).grads
    res = make_gradient("finite_difference", step=1e-2)(proc, w, x, t)
    for a, b in zip(ge, res.grads):
        np.testing.assert_allclose(b, a, rtol=5e-3, atol=1e-4)
    assert res.measurements == 3 * (2 * 18 + 1)  # 18 weights, +-step each, plus the final pass (3 taps each)


@pytest.mark.parametrize("a0", [1.0, 10.0, 30.0])
def test_pump_probe_gradient_points_along_the_exact_gradient(make_bench, rng, a0):
    proc = make_bench((30, 20, 5), a0=a0)
    w = _weights(proc, rng, 0.4)
    x = rng.random((64, 30)).astype(np.float32)
    t = one_hot(rng.integers(0, 5, 64), 5)
    proc.program(w)
    ge = make_gradient("exact")(proc, w, x, t).grads
    gp = make_gradient("pump_probe")(proc, w, x, t).grads
    np.testing.assert_allclose(gp[-1], ge[-1], rtol=1e-5, atol=1e-7)  # output layer is exact
    cos = float(ge[0].ravel() @ gp[0].ravel() / np.linalg.norm(ge[0]) / np.linalg.norm(gp[0]))
    assert cos > 0.95
    # the probe sees T(E) <= g'(E): the hidden-layer gradient is never larger
    assert np.linalg.norm(gp[0]) <= np.linalg.norm(ge[0]) * (1 + 1e-6)


def test_slm_quantisation_is_bounded_by_the_lut_step(make_bench, rng):
    from lightloop.simulators.free_space import Imperfections

    proc = make_bench((16, 8, 4), ideal=False, a0=1.0)
    # keep only 8-bit quantisation: ideal LUT and optics in the hidden truth
    t = proc.emulator.truth
    for s in t.slm:
        s.gamma, s.phase_max_rad, s.fringing = 1.0, 2 * np.pi * 255 / 256, 0.0
    t.efficiency[:] = 0.5
    t.amplifier_gain_error[:] = 0.0
    w = [rng.uniform(-1, 1, shape).astype(np.float32) for shape in proc.parameter_shapes()]
    proc.program(w)
    for layer in range(2):
        realised = proc.emulator.weights[layer]
        assert np.abs(np.imag(realised)).max() < 1e-6 if np.iscomplexobj(realised) else True
        err = np.abs(np.real(realised) - w[layer])
        # phases on a 2 pi / 256 grid: amplitude error of cos(alpha) at most ~ sin(alpha) * pi / 256 (+ sign wrap)
        assert err.max() < 2 * np.pi / 256, err.max()
        assert err.mean() > 1e-4  # quantisation is really there
    assert isinstance(Imperfections(), Imperfections)


def test_dmd_levels_are_multiples_of_one_over_k_squared(make_bench, rng):
    proc = make_bench((6, 4, 3), ideal=False, a0=1.0, weights={"device": "dmd", "max_weight": 1.0,
                                                               "efficiency": 0.5, "dmd_block_pixels": 8})
    t = proc.emulator.truth
    for d in t.dmd:
        d.nonlinearity, d.fringing = 0.0, 0.0
    t.efficiency[:] = 0.5
    t.amplifier_gain_error[:] = 0.0
    w = [rng.uniform(-1, 1, shape).astype(np.float32) for shape in proc.parameter_shapes()]
    proc.program(w)
    levels = proc.emulator.weights[0] * 64
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-4)
    assert np.abs(proc.emulator.weights[0] - w[0]).max() <= 0.5 / 64 + 1e-6


def test_homodyne_noise_and_adc_statistics(rng):
    from lightloop.simulators.homodyne import HomodynePhysics

    n = 4
    det = HomodynePhysics(gain_v=np.full(n, 2.0), lo_phase_rad=np.zeros(n), offset_v=np.zeros(n),
                          shot_noise=0.01, electronic_noise_v=0.005, adc_bits=None)
    e = np.full((200000, n), 0.3)
    v = det.read(e, np.random.default_rng(0))
    assert v.mean() == pytest.approx(0.6, abs=2e-4)
    assert v.std() == pytest.approx(np.hypot(2 * 0.01, 0.005), rel=0.01)
    adc = HomodynePhysics(gain_v=np.ones(n), lo_phase_rad=np.full(n, 0.3), offset_v=np.full(n, 0.01),
                          adc_bits=8, full_scale_v=1.0)
    v = adc.read(np.linspace(-2, 2, 4000).reshape(-1, n), np.random.default_rng(0))
    lsb = 2.0 / 256
    np.testing.assert_allclose(v / lsb, np.rint(v / lsb), atol=1e-4)
    assert v.max() <= 1.0 - lsb + 1e-6 and v.min() >= -1.0
    # LO phase error theta scales a real field by cos(theta)
    one = HomodynePhysics(gain_v=np.ones(1), lo_phase_rad=np.array([0.3]), offset_v=np.zeros(1))
    assert one.read(np.array([[1.0]]), np.random.default_rng(0))[0, 0] == pytest.approx(np.cos(0.3), rel=1e-6)


def test_realistic_twin_is_seeded_and_noisy(make_bench, rng):
    x = rng.random((16, 12)).astype(np.float32)
    outs = []
    for _ in range(2):
        proc = make_bench((12, 8, 5), ideal=False)
        proc.program(proc.init_parameters(np.random.default_rng(3), 0.3))
        outs.append((proc.forward(x).output, proc.forward(x).output))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])  # same seeds, same draws
    assert np.any(outs[0][0] != outs[0][1])  # fresh noise on every acquisition


def test_vapor_cell_limits_are_checked_before_writing(make_bench):
    proc = make_bench((4, 3, 2), a0=5.0)
    sa = proc.absorbers[0]
    before = proc.emulator.cell_temperature_k[0]
    with pytest.raises(SafetyLimitError, match="outside limits"):
        sa.set_temperature(500.0)
    assert proc.emulator.cell_temperature_k[0] == before
    with pytest.raises(ConfigError, match="optical depth must be >= 0"):
        sa.set_optical_depth(-1.0)
    sa.set_optical_depth(1e6)  # unreachable: clamps to the hottest allowed set-point
    assert proc.emulator.cell_temperature_k[0] == pytest.approx(sa.limits.t_max_k)


def test_close_leaves_the_bench_safe(make_bench, rng):
    proc = make_bench((4, 3, 2), a0=20.0)
    proc.program(proc.init_parameters(rng, 0.3))
    proc.forward(rng.random((3, 4)).astype(np.float32))
    proc.close()
    assert proc.emulator.cell_temperature_k[0] == pytest.approx(proc.absorbers[0].limits.t_min_k)
    assert not np.any(proc.emulator.inputs)


def test_bad_shapes_and_nan_inputs_are_rejected(make_bench):
    proc = make_bench((4, 3, 2))
    with pytest.raises(ValueError, match="expected a batch of shape"):
        proc.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        proc.forward(np.full((2, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="expected shape"):
        proc.program([np.zeros((2, 2), np.float32), np.zeros((2, 3), np.float32)])


@pytest.mark.parametrize("lut_seed", [None, 0, 1])
def test_gray_level_lookup_table_equals_reference_rule(lut_seed):
    """The binned SLM gray-level lookup returns exactly the interpolate-and-round rule, boundaries included."""
    from lightloop.hal.calibration_maps import GrayLevelLUT

    rng = np.random.default_rng(5)
    if lut_seed is None:
        lut = GrayLevelLUT()
    else:
        r = np.random.default_rng(lut_seed)
        lut = GrayLevelLUT(np.sort(r.choice(np.linspace(0, 2 * np.pi * r.uniform(0.8, 1.1), 4000), 256, replace=False)))
    mid = 0.5 * (lut.phase_rad[1:] + lut.phase_rad[:-1])
    wrap_mid = 0.5 * (lut.phase_rad[-1] + 2 * np.pi)
    p = np.concatenate([rng.uniform(-20, 20, 20000), lut.phase_rad, -lut.phase_rad, mid, -mid, mid + 2 * np.pi,
                        np.nextafter(mid, 0), np.nextafter(mid, 9), [wrap_mid, np.nextafter(wrap_mid, 0), 0.0, 2 * np.pi]])
    np.testing.assert_array_equal(lut.gray_for_phase(p), lut._exact_gray(p))


def test_error_averaging_cuts_backward_detector_noise_as_one_over_sqrt_n(make_bench, rng):
    """error_averages: n backward acquisitions per tap; noise std falls ~1/sqrt(n), ideal results unchanged."""
    x = rng.random((64, 12)).astype(np.float32)
    d = rng.standard_normal((64, 5)).astype(np.float32)
    ideal = make_bench((12, 8, 5), ideal=True, a0=3.0)
    w = _weights(ideal, rng)
    ideal.program(w)
    ideal.forward(x)
    ref = ideal.backward(d)[0]
    ideal.error_averages = 4
    np.testing.assert_allclose(ideal.backward(d)[0], ref, rtol=1e-6, atol=1e-7)
    spread = {}
    for n in (1, 16):
        proc = make_bench((12, 8, 5), ideal=False, a0=3.0, error_averages=n, error_readout="single")
        proc.program(w)
        proc.forward(x)
        before = proc.measurements
        reps = np.stack([proc.backward(d)[0] for _ in range(6)])
        assert proc.measurements - before == 6 * n  # one error tap, n acquisitions each
        spread[n] = reps.std(axis=0, ddof=1).mean()
    assert 2.5 < spread[1] / spread[16] < 6.0, spread  # sqrt(16) = 4


def test_differential_error_readout_cancels_error_detector_offsets(make_bench, rng):
    """Probing +delta and -delta removes the error taps' offsets, which a single probe leaves in delta(l)."""
    x = rng.random((32, 12)).astype(np.float32)
    d = (0.5 * rng.standard_normal((32, 5))).astype(np.float32)
    w = _weights(make_bench((12, 8, 5)), rng)
    shift = {}
    for mode in ("single", "differential"):
        out = []
        for zero_offsets in (False, True):  # two twins alike but for the error detectors' hidden offsets
            proc = make_bench((12, 8, 5), ideal=False, a0=3.0, error_readout=mode)
            if zero_offsets:
                for h in proc.emulator.truth.error:
                    h.offset_v = np.zeros_like(h.offset_v)
            proc.program(w)
            proc.forward(x)
            before = proc.measurements
            out.append(proc.backward(d)[0])
            assert proc.measurements - before == (2 if mode == "differential" else 1)
        shift[mode] = np.abs((out[0] - out[1]).mean(axis=0)).mean()  # per neuron, over the batch (ADC rounding averages out)
    assert shift["single"] > 1e-4, shift            # the offsets do reach a single readout
    assert shift["differential"] < 0.2 * shift["single"], shift
