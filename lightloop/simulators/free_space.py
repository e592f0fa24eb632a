"""Emulator of the free-space SA bench (Guo et al. 2021) and its device twins.

One FreeSpaceEmulator holds the light path and a HIDDEN ground truth (SLM LUT, fringing, slit
efficiency, amplifier gains, vapor-cell sigma*L and thermometer offsets, homodyne gains, LO
phases, offsets and noise). Twins (ports) write settings into it and acquire from it; the HAL
never reads the truth. Forward (pump) and backward (probe) passes are computed lazily when a
detector acquires, vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.physics.saturable_absorber import sa_transmission
from lightloop.physics.vapor_cell import VaporCellPhysics
from lightloop.simulators.homodyne import HomodynePhysics
from lightloop.simulators.weight_blocks import DMDPhysics, SLMPhysics

__all__ = ["Imperfections", "Drift", "FreeSpaceTruth", "FreeSpaceEmulator"]


@dataclass
class Imperfections:
    """Magnitudes of the realistic imperfections (all zero / None in ideal mode)."""

    slm_gamma_sd: float = 0.05
    slm_phase_max_sd: float = 0.02
    fringing: float = 0.02
    dmd_nonlinearity: float = 0.03
    efficiency_sd: float = 0.03
    amplifier_gain_sd: float = 0.02
    sigma_l_sd: float = 0.05
    thermometer_offset_sd_k: float = 0.5
    homodyne_gain_sd: float = 0.03
    lo_phase_sd_rad: float = 0.05
    homodyne_offset_sd_v: float = 1e-3
    shot_noise: float = 2e-3
    electronic_noise_v: float = 1e-3
    adc_bits: int | None = 14
    full_scale_v: float = 10.0

    @classmethod
    def none(cls) -> "Imperfections":
        """Ideal mode: every imperfection off."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None)


@dataclass
class Drift:
    """Slow drift of the hidden truth as seeded random walks in simulated time (all zero: no drift).

    The twin's clock advances by frame_period_s for every pattern (input or probe frame) shown.
    Each homodyne channel's LO phase (free-space path-length drift: a walk common to the array's LO
    path plus an independent one per channel) and each vapor cell's true temperature relative to
    its thermometer walk with the given diffusion rates.
    """

    lo_phase_rad_per_sqrt_s: float = 0.0
    cell_temperature_k_per_sqrt_s: float = 0.0
    frame_period_s: float = 1e-3
    seed: int = 0
    lo_phase_common_rad_per_sqrt_s: float = 0.0

    @property
    def active(self) -> bool:
        """True when anything drifts."""
        return (self.lo_phase_rad_per_sqrt_s > 0 or self.cell_temperature_k_per_sqrt_s > 0
                or self.lo_phase_common_rad_per_sqrt_s > 0)


@dataclass
class FreeSpaceTruth:
    """Hidden ground truth of one bench, drawn from a seeded process model."""

    slm: list[SLMPhysics]
    dmd: list[DMDPhysics]
    efficiency: NDArray[np.float64]
    amplifier_gain_error: NDArray[np.float64]
    cells: list[VaporCellPhysics]
    thermometer_offset_k: NDArray[np.float64]
    pre: list[HomodynePhysics]
    post: list[HomodynePhysics]
    error: list[HomodynePhysics]

    @classmethod
    def draw(cls, layer_sizes: tuple[int, ...], seed: int, imp: Imperfections, *,
             nominal_efficiency: float = 0.5, nominal_sigma_l_m3: float = 1.3e-17,
             dmd_block_pixels: int = 16, error_gain_v: float = 10.0) -> "FreeSpaceTruth":
        """Draw a bench's truth for layer sizes (input first) from a seeded generator."""
        rng = np.random.default_rng(seed)
        n_layers = len(layer_sizes) - 1
        slm = [SLMPhysics(phase_max_rad=2 * np.pi * 255 / 256 * (1 + imp.slm_phase_max_sd * rng.standard_normal()),
                          gamma=1 + imp.slm_gamma_sd * rng.standard_normal(), fringing=imp.fringing)
               for _ in range(n_layers)]
        dmd = [DMDPhysics(dmd_block_pixels, nonlinearity=imp.dmd_nonlinearity, fringing=imp.fringing)
               for _ in range(n_layers)]
        eff = nominal_efficiency * (1 + imp.efficiency_sd * rng.standard_normal(n_layers))
        amp = imp.amplifier_gain_sd * rng.standard_normal(n_layers)
        cells = [VaporCellPhysics(nominal_sigma_l_m3 * (1 + imp.sigma_l_sd * rng.standard_normal()))
                 for _ in range(n_layers - 1)]
        t_off = imp.thermometer_offset_sd_k * rng.standard_normal(n_layers - 1)

        def det(n: int, gain: float) -> HomodynePhysics:
            return HomodynePhysics(
                gain_v=gain * (1 + imp.homodyne_gain_sd * rng.standard_normal(n)),
                lo_phase_rad=imp.lo_phase_sd_rad * rng.standard_normal(n),
                offset_v=imp.homodyne_offset_sd_v * rng.standard_normal(n),
                shot_noise=imp.shot_noise, electronic_noise_v=imp.electronic_noise_v,
                adc_bits=imp.adc_bits, full_scale_v=imp.full_scale_v)

        pre = [det(n, 1.0) for n in layer_sizes[1:]]
        post = [det(n, 1.0) for n in layer_sizes[1:-1]]
        err = [det(n, error_gain_v if imp.adc_bits or imp.electronic_noise_v else 1.0) for n in layer_sizes[1:-1]]
        return cls(slm, dmd, eff, amp, cells, t_off, pre, post, err)


@dataclass
class _Pass:
    gen: int = -1
    pre: list[NDArray] = field(default_factory=list)
    post: list[NDArray] = field(default_factory=list)
    trans: list[NDArray] = field(default_factory=list)


class FreeSpaceEmulator:
    """Light path of the bench: input -> [W(l), vapor cell] ... -> W(L) -> output, and back."""

    def __init__(self, layer_sizes: tuple[int, ...], truth: FreeSpaceTruth, seed: int = 0,
                 ambient_k: float = 293.15, drift: Drift | None = None, serial: str = "twin"):
        self.layer_sizes = tuple(layer_sizes)
        self.truth = truth
        self.serial = serial
        self.rng = np.random.default_rng(seed)
        self.drift = drift or Drift()
        self.drift_rng = np.random.default_rng([self.drift.seed, 0x0D21F7])
        self.clock_s = 0.0
        n_layers = len(layer_sizes) - 1
        self.weights: list[NDArray] = [np.zeros((layer_sizes[i + 1], layer_sizes[i]), np.float32) for i in range(n_layers)]
        self.gain = np.ones(n_layers)
        self.cell_temperature_k = np.full(n_layers - 1, ambient_k)
        self._a0 = [c.optical_depth(t + o) for c, t, o in zip(truth.cells, self.cell_temperature_k, truth.thermometer_offset_k)]
        self.inputs: NDArray = np.zeros((1, layer_sizes[0]), np.float32)
        self.probe: NDArray = np.zeros((1, layer_sizes[-1]), np.float32)
        self._gen = 0
        self._probe_gen = 0
        self._fwd = _Pass()
        self._bwd = _Pass()

    # --- writes (from ports) ------------------------------------------------------------
    def set_inputs(self, fields: NDArray) -> None:
        """Forward source fields (batch, n_in)."""
        if self.drift.active:
            self.advance(fields.shape[0] * self.drift.frame_period_s)
        self.inputs = fields
        self._gen += 1

    def set_probe(self, fields: NDArray) -> None:
        """Backward probe fields injected at the output (batch, n_out)."""
        if self.drift.active:
            self.advance(fields.shape[0] * self.drift.frame_period_s)
        self.probe = fields
        self._probe_gen += 1

    def advance(self, seconds: float) -> None:
        """Advance the twin's clock; the drifting parts of the truth take one random-walk step."""
        if seconds <= 0:
            return
        self.clock_s += seconds
        d, rng = self.drift, self.drift_rng
        if d.lo_phase_rad_per_sqrt_s > 0 or d.lo_phase_common_rad_per_sqrt_s > 0:
            step = d.lo_phase_rad_per_sqrt_s * np.sqrt(seconds)
            common = d.lo_phase_common_rad_per_sqrt_s * np.sqrt(seconds)
            for det in (*self.truth.pre, *self.truth.post, *self.truth.error):
                det.lo_phase_rad = (det.lo_phase_rad + step * rng.standard_normal(det.lo_phase_rad.shape)
                                    + common * rng.standard_normal())
                det.__post_init__()
        if d.cell_temperature_k_per_sqrt_s > 0 and len(self.truth.cells):
            step = d.cell_temperature_k_per_sqrt_s * np.sqrt(seconds)
            self.truth.thermometer_offset_k = self.truth.thermometer_offset_k + step * rng.standard_normal(
                len(self.truth.cells))
            for i, c in enumerate(self.truth.cells):
                self._a0[i] = c.optical_depth(self.cell_temperature_k[i] + self.truth.thermometer_offset_k[i])
        self._gen += 1

    def set_weight_field(self, layer: int, passive_field: NDArray) -> None:
        """Passive block transmissions of one layer; the 4f slit and amplifier scale them."""
        scale = self.gain[layer] * (1 + self.truth.amplifier_gain_error[layer]) * self.truth.efficiency[layer]
        # the port hands over a fresh array each write, so unit scale needs no copy
        if scale == 1.0:
            w = passive_field
        elif passive_field.dtype == np.complex64 and passive_field.flags.c_contiguous:
            # a real factor scales (re, im) alike: the same products on the float32 view, no complex temporaries
            w = (passive_field.view(np.float32) * np.float32(scale)).view(np.complex64)
        elif passive_field.dtype == np.complex64 and passive_field.ndim == 2 and passive_field.T.flags.c_contiguous:
            w = (passive_field.T.view(np.float32) * np.float32(scale)).view(np.complex64).T   # column-major alike
        else:
            w = passive_field * np.float32(scale)
        if w.dtype.kind == "c" and not _has_imag(w):
            w = w.real
        want = np.complex64 if w.dtype.kind == "c" else np.float32
        self.weights[layer] = w if w.dtype == want else w.astype(want)
        self._gen += 1

    def set_amplifier_gain(self, layer: int, gain: float) -> None:
        """Amplifier gain after the 4f summation of one layer."""
        self.gain[layer] = gain
        self._gen += 1

    def set_cell_temperature(self, cell: int, kelvin: float) -> None:
        """Vapor-cell temperature (K); the true a0 follows the Rb vapour density."""
        self.cell_temperature_k[cell] = kelvin
        c = self.truth.cells[cell]
        self._a0[cell] = c.optical_depth(kelvin + self.truth.thermometer_offset_k[cell])
        self._gen += 1

    def true_optical_depth(self, cell: int) -> float:
        """Hidden true a0 of a cell (for twin-truth reports and tests, never for the HAL)."""
        return self._a0[cell]

    # --- physics --------------------------------------------------------------------------
    def _forward(self) -> _Pass:
        if self._fwd.gen == self._gen:
            return self._fwd
        a = self.inputs
        pre, post, trans = [], [], []
        n_layers = len(self.weights)
        for i, w in enumerate(self.weights):
            if a.dtype == np.float32 and w.dtype == np.complex64 and w.ndim == 2 and w.T.flags.c_contiguous:
                # real inputs, column-major complex field: one real product on the (in, 2 out) float32 view of W.T
                # (half the flops of the complex one; equal to it within float32 rounding, the kernels sum differently)
                z = (a @ w.T.view(np.float32)).view(np.complex64)
            else:
                z = a @ w.T   # complex weights: one complex product
            pre.append(z)
            if i < n_layers - 1:
                t = _transmission(z, self._a0[i])  # the pump-saturated T(z) the probe will see
                a = z * t
                trans.append(t)
                post.append(a)
        self._fwd = _Pass(self._gen, pre, post, trans)
        return self._fwd

    def _backward(self) -> _Pass:
        key = (self._gen << 20) + self._probe_gen
        if self._bwd.gen == key:
            return self._bwd
        fwd = self._forward()
        d = self.probe
        if d.shape[0] != fwd.pre[0].shape[0]:
            raise RuntimeError("emulator: probe batch does not match the pump batch of the last forward pass")
        errs: list[NDArray] = [None] * (len(self.weights) - 1)  # type: ignore[list-item]
        for i in range(len(self.weights) - 1, 0, -1):
            d = (d @ self.weights[i]) * fwd.trans[i - 1]
            errs[i - 1] = d
        self._bwd = _Pass(key, errs, [])
        return self._bwd

    def read_pre(self, layer: int) -> NDArray:
        """Field z(layer+1) at the pre-absorber tap (or output)."""
        return self._forward().pre[layer]

    def read_post(self, layer: int) -> NDArray:
        """Field a(layer+1) after vapor cell `layer`."""
        return self._forward().post[layer]

    def read_error(self, layer: int) -> NDArray:
        """Backward probe field delta(layer+1) after vapor cell `layer`."""
        return self._backward().pre[layer]

    def snapshot(self) -> dict[str, Any]:
        """Noise generator state (and, when drifting, the drift state)."""
        state: dict[str, Any] = {"rng": self.rng.bit_generator.state}
        if self.drift.active:
            state["drift"] = {
                "rng": self.drift_rng.bit_generator.state, "clock_s": self.clock_s,
                "thermometer_offset_k": self.truth.thermometer_offset_k.tolist(),
                "lo_phase_rad": [d.lo_phase_rad.tolist() for d in (*self.truth.pre, *self.truth.post, *self.truth.error)],
            }
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Restore the noise generator state (and the drift state)."""
        self.rng.bit_generator.state = state["rng"]
        drift = state.get("drift")
        if drift:
            self.drift_rng.bit_generator.state = drift["rng"]
            self.clock_s = float(drift["clock_s"])
            self.truth.thermometer_offset_k = np.asarray(drift["thermometer_offset_k"], dtype=np.float64)
            for det, lo in zip((*self.truth.pre, *self.truth.post, *self.truth.error), drift["lo_phase_rad"]):
                det.lo_phase_rad = np.asarray(lo, dtype=np.float64)
                det.__post_init__()
            for i in range(len(self.truth.cells)):
                self.set_cell_temperature(i, float(self.cell_temperature_k[i]))


def _transmission(z: NDArray, a0: float) -> NDArray:
    """sa_transmission(z, a0), for real float32 z and a Python float a0 in one work array (the same operations)."""
    if z.dtype != np.float32 or type(a0) is not float:   # a numpy a0 would promote the reference to float64
        return sa_transmission(z, a0)
    t = np.multiply(z, z)
    t += 1.0
    np.divide(-0.5 * a0, t, out=t)
    return np.exp(t, out=t)


def _has_imag(w: NDArray) -> bool:
    """True when any element has a nonzero imaginary part (the first row is asked first: it nearly always does)."""
    return bool(w.ndim and w.shape[0] and w[0].imag.any()) or bool(w.imag.any())


# --- device ports implemented on the emulator ---------------------------------------------
class SourceTwin:
    """Forward source (SLM/DMD input display + laser) on the emulator."""

    def __init__(self, emu: FreeSpaceEmulator):
        self.emu = emu

    @property
    def identity(self) -> str:
        """Twin identity (maker, model, serial)."""
        return f"lightloop,source-twin,{self.emu.serial}"

    def write_fields(self, fields: NDArray[np.float32]) -> None:
        """Display field patterns (batch, n_in)."""
        self.emu.set_inputs(fields)


class ProbeTwin:
    """Backward probe source at the output plane."""

    def __init__(self, emu: FreeSpaceEmulator):
        self.emu = emu

    @property
    def identity(self) -> str:
        """Twin identity (maker, model, serial)."""
        return f"lightloop,probe-twin,{self.emu.serial}"

    def write_fields(self, fields: NDArray[np.float32]) -> None:
        """Inject probe fields (batch, n_out)."""
        self.emu.set_probe(fields)


class AnalogWeightTwin:
    """Ideal analog amplitude modulator for one layer."""

    def __init__(self, emu: FreeSpaceEmulator, layer: int):
        self.emu, self.layer = emu, layer

    @property
    def identity(self) -> str:
        """Twin identity (maker, model, serial/layer)."""
        kind = type(self).__name__.replace("WeightTwin", "").lower()
        return f"lightloop,{kind}-twin,{self.emu.serial}/layer{self.layer}"

    def set_amplifier_gain(self, gain: float) -> None:
        """Amplifier gain after the 4f sum."""
        self.emu.set_amplifier_gain(self.layer, gain)

    def write_amplitudes(self, amplitudes: NDArray[np.float32]) -> None:
        """Passive transmissions in [-1, 1]."""
        self.emu.set_weight_field(self.layer, amplitudes)


class SLMWeightTwin(AnalogWeightTwin):
    """Phase SLM showing checkerboard blocks for one layer (true LUT and fringing hidden)."""

    def write_blocks(self, gray_plus: NDArray[np.uint8], gray_minus: NDArray[np.uint8]) -> None:
        """Display gray-level pairs (out, in)."""
        self.emu.set_weight_field(self.layer, self.emu.truth.slm[self.layer].block_field(gray_plus, gray_minus))


class DMDWeightTwin(AnalogWeightTwin):
    """DMD showing differential binary block pairs for one layer."""

    @property
    def block_pixels(self) -> int:
        """Mirrors per block side k."""
        return self.emu.truth.dmd[self.layer].block_pixels

    def write_blocks(self, on_plus: NDArray[np.uint16], on_minus: NDArray[np.uint16]) -> None:
        """Display on-mirror counts of the + and - blocks (out, in)."""
        self.emu.set_weight_field(self.layer, self.emu.truth.dmd[self.layer].block_field(on_plus, on_minus))


class VaporCellHeaterTwin:
    """Temperature controller of one vapor cell (reads back its set-point)."""

    def __init__(self, emu: FreeSpaceEmulator, cell: int):
        self.emu, self.cell = emu, cell

    @property
    def identity(self) -> str:
        """Twin identity (maker, model, serial/cell)."""
        return f"lightloop,heater-twin,{self.emu.serial}/cell{self.cell}"

    def set_temperature(self, kelvin: float) -> None:
        """Set-point (K); the twin settles instantly."""
        self.emu.set_cell_temperature(self.cell, kelvin)

    def read_temperature(self) -> float:
        """Controller reading (K)."""
        return float(self.emu.cell_temperature_k[self.cell])


class HomodyneTwin:
    """Homodyne array on one tap: 'pre', 'post' or 'error' of a layer."""

    def __init__(self, emu: FreeSpaceEmulator, tap: str, layer: int):
        self.emu, self.tap, self.layer = emu, tap, layer
        self.physics: HomodynePhysics = getattr(emu.truth, tap)[layer]
        self._read = {"pre": emu.read_pre, "post": emu.read_post, "error": emu.read_error}[tap]
        self.n_channels = self.physics.gain_v.size

    @property
    def identity(self) -> str:
        """Twin identity (maker, model, serial/tap)."""
        return f"lightloop,homodyne-twin,{self.emu.serial}/{self.tap}{self.layer}"

    def set_lo_phase_shift(self, rad: float) -> None:
        """LO path actuator (piezo): add a common phase shift (rad) to every channel's LO."""
        shift = getattr(self.physics, "_lo_shift", 0.0)
        self.physics.lo_phase_rad = self.physics.lo_phase_rad + (float(rad) - shift)
        self.physics._lo_shift = float(rad)  # type: ignore[attr-defined]
        self.physics.__post_init__()

    def acquire(self) -> NDArray[np.float32]:
        """Detector volts (batch, channels)."""
        return self.physics.read(self._read(self.layer), self.emu.rng)


# --- building from a config section --------------------------------------------------------------------------------------------
def make_free_space_emulator(p: Any, sizes: tuple[int, ...], ideal: bool) -> FreeSpaceEmulator:
    """The emulator of a free_space processor section, drawn exactly as the in-process twin draws it."""
    if ideal:
        imp = Imperfections.none()
    else:
        imp = Imperfections(shot_noise=p.twin.shot_noise, electronic_noise_v=p.twin.electronic_noise_v,
                            adc_bits=p.twin.adc_bits)
    truth = FreeSpaceTruth.draw(sizes, p.twin.truth_seed, imp, nominal_efficiency=p.weights.efficiency,
                                nominal_sigma_l_m3=p.vapor_cell.sigma_l_m3,
                                dmd_block_pixels=p.weights.dmd_block_pixels,
                                error_gain_v=p.error_detector_gain_v)
    kwargs: dict[str, Any] = {}
    dr = getattr(p.twin, "drift", None)
    if dr is not None:  # the twin's slow drift (lightloop.simulators.free_space.Drift), off in ideal mode
        extra = [dr.lo_phase_common_rad_per_sqrt_s] if hasattr(dr, "lo_phase_common_rad_per_sqrt_s") else []
        kwargs["drift"] = None if ideal else Drift(dr.lo_phase_rad_per_sqrt_s, dr.cell_temperature_k_per_sqrt_s,
                                                   dr.frame_period_s, dr.seed, *extra)
        kwargs["serial"] = f"T{p.twin.truth_seed}{'-ideal' if ideal else ''}"
    return FreeSpaceEmulator(sizes, truth, seed=p.twin.noise_seed, **kwargs)
