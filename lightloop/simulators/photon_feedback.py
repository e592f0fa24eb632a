"""Twin of the photon-limited feedback channel (biophoton paper, Zarkeshian et al., Sci. Rep. 12, 20720 (2022)).

Per channel and gate (one gate = one training sample):
  signal   an emitter triggered with polarisation s in {+1 (H), -1 (V)} fires with probability q
           (Bernoulli(q): one photon or none);
  noise    a background photon arrives with probability n_p, polarisation uniformly H or V;
  readout  each photon passes the polarising beam splitter and is detected with probability eta;
           its polarisation is misread with probability p_pol (the two-state bit's readout error);
  darks    each of the two click detectors (H, V) fires spontaneously with probability p_dark.
A click detector reports at most one click per gate (no photon-number resolution).

The HIDDEN truth (per-channel eta, p_pol and p_dark, drawn around nominal values) is never read by
the HAL, which knows only its calibration. Every draw comes from one seeded numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["PhotonChannelTruth", "PhotonFeedbackEmulator", "PhotonCountingTwin", "channel_clicks"]


@dataclass
class PhotonChannelTruth:
    """Hidden detector truth, per channel: detection efficiency, polarisation readout error, dark-count probability."""

    detection_efficiency: NDArray[np.float64]
    polarisation_error: NDArray[np.float64]
    dark_count_probability: NDArray[np.float64]

    @classmethod
    def draw(cls, n_channels: int, seed: int, *, detection_efficiency: float = 1.0,
             polarisation_error: float = 0.0, dark_count_probability: float = 0.0,
             spread: float = 0.0) -> "PhotonChannelTruth":
        """Per-channel truth scattered by a relative `spread` (0: every channel exactly nominal)."""
        rng = np.random.default_rng(seed)

        def scatter(nominal: float, hi: float) -> NDArray[np.float64]:
            v = nominal * (1.0 + spread * rng.standard_normal(n_channels)) if spread else np.full(n_channels, nominal)
            return np.clip(v, 0.0, hi)

        return cls(scatter(detection_efficiency, 1.0), scatter(polarisation_error, 0.5),
                   scatter(dark_count_probability, 1.0))

    @classmethod
    def ideal(cls, n_channels: int) -> "PhotonChannelTruth":
        """Perfect detectors: eta = 1, no polarisation error, no dark counts."""
        return cls(np.ones(n_channels), np.zeros(n_channels), np.zeros(n_channels))


def channel_clicks(codes: NDArray[np.int8], q: float, n_p: float, truth: PhotonChannelTruth,
                   rng: np.random.Generator) -> NDArray[np.uint8]:
    """Click record (gates, channels, 2) for polarisation codes (gates, channels) in {-1, 0, +1}."""
    shape = codes.shape
    eta, p_pol, p_dark = truth.detection_efficiency, truth.polarisation_error, truth.dark_count_probability
    h = np.zeros(shape, bool)
    v = np.zeros(shape, bool)
    if q > 0:
        fired = (codes != 0) & (rng.random(shape) < q)                 # Bernoulli(q) emission
        if fired.any():
            b, c = np.nonzero(fired)
            det = rng.random(b.size) < eta[c]                          # detection efficiency
            b, c = b[det], c[det]
            pol = codes[b, c] * np.where(rng.random(b.size) < p_pol[c], -1, 1)  # polarisation readout error
            h[b[pol > 0], c[pol > 0]] = True
            v[b[pol < 0], c[pol < 0]] = True
    if n_p > 0:
        noise = rng.random(shape) < n_p                                # background photons (Eqs. 13-14)
        if noise.any():
            b, c = np.nonzero(noise)
            det = rng.random(b.size) < eta[c]
            b, c = b[det], c[det]
            to_h = rng.random(b.size) < 0.5                            # random polarisation
            h[b[to_h], c[to_h]] = True
            v[b[~to_h], c[~to_h]] = True
    if np.any(p_dark > 0):
        h |= rng.random(shape) < p_dark
        v |= rng.random(shape) < p_dark
    return np.stack([h, v], axis=-1).astype(np.uint8)


class PhotonFeedbackEmulator:
    """The backward photon channel of one bench: emitter gate probability, background lamp, detectors."""

    def __init__(self, n_channels: int, truth: PhotonChannelTruth | None = None, seed: int = 0):
        self.n_channels = int(n_channels)
        self.truth = truth or PhotonChannelTruth.ideal(self.n_channels)
        if self.truth.detection_efficiency.shape != (self.n_channels,):
            raise ValueError("photon feedback emulator: truth does not match the channel count")
        self.rng = np.random.default_rng(seed)
        self.q = 0.0
        self.n_p = 0.0
        self._clicks: NDArray[np.uint8] = np.zeros((0, self.n_channels, 2), np.uint8)

    def gate(self, codes: NDArray[np.int8]) -> None:
        """Run one gate per row of polarisation codes and latch the detectors' clicks."""
        if codes.ndim != 2 or codes.shape[1] != self.n_channels:
            raise ValueError(f"photon feedback emulator: expected codes of shape (gates, {self.n_channels}), "
                             f"got {codes.shape}")
        self._clicks = channel_clicks(codes, self.q, self.n_p, self.truth, self.rng)

    def read(self) -> NDArray[np.uint8]:
        """Clicks of the last gate batch."""
        return self._clicks

    def snapshot(self) -> dict[str, Any]:
        """Noise generator state."""
        return {"rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore the noise generator state."""
        self.rng.bit_generator.state = state["rng"]


class PhotonCountingTwin:
    """PhotonCountingPort on the emulator: gated emitters, background lamp, PBS + two click detectors per channel."""

    def __init__(self, emu: PhotonFeedbackEmulator):
        self.emu = emu
        self.n_channels = emu.n_channels

    def set_emission_probability(self, p: float) -> None:
        """Emitter firing probability per gate."""
        self.emu.q = float(p)

    def set_background_probability(self, p: float) -> None:
        """Background lamp photon probability per channel per gate."""
        self.emu.n_p = float(p)

    def send(self, codes: NDArray[np.int8]) -> None:
        """Trigger the emitters with polarisation codes (gates, channels)."""
        self.emu.gate(codes)

    def acquire(self) -> NDArray[np.uint8]:
        """Click record (gates, channels, 2) of the last send."""
        return self.emu.read()

    def snapshot(self) -> dict[str, Any]:
        """Emulator noise state."""
        return self.emu.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        """Restore emulator noise state."""
        self.emu.restore(state)
