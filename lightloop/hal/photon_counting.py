"""Photon-limited feedback channel: a photon-counting detector array with a polarisation bit per photon.

Physics (biophoton paper: Zarkeshian, Kergan, Ghobadi, Nicola & Simon, Sci. Rep. 12, 20720 (2022),
arXiv:2203.11135; our reading of its Eqs. 11-14, see `lightloop.training.stochastic`): after each
forward pass every backward channel (one per neuron that needs a teaching signal) carries a photon
with probability q; a photon carries one bit, the sign of the error, encoded in a two-state degree of
freedom (polarisation H = +1, V = -1, read by a polarising beam splitter and two click detectors);
noise photons arrive on a fraction n_p of the channels with a random polarisation; the detectors add
dark counts and misread the polarisation with a small probability.

The role speaks physical units (probabilities per gate, efficiencies); its port speaks the device's:
per-gate emitter probability, background-lamp probability, polarisation codes and click records.

How training reaches the channel (the layer rule: training imports hal, never simulators): an
OpticalProcessor MAY carry an attribute `feedback_channel` holding a `PhotonCountingArray` with one
channel per neuron of every non-input layer (layer 1 first, output last). The bench that builds the
processor attaches it (twin or real detectors); `feedback_channel_of(processor)` returns it or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError, InstrumentError, SafetyLimitError

__all__ = [
    "PhotonCountingPort",
    "PhotonCountingLimits",
    "PhotonCountingCalibration",
    "PhotonCountingArray",
    "feedback_channel_of",
]


@runtime_checkable
class PhotonCountingPort(Protocol):
    """Gated single-photon emitters (one per channel) + background lamp + PBS and two click detectors per channel.

    Device units: `set_emission_probability` is the emitter's firing probability per gate (the gate
    attenuator setting); `set_background_probability` the background lamp's photon probability per
    channel per gate; `send` takes polarisation codes (+1 = H, -1 = V, 0 = emitter not triggered) of
    shape (gates, channels); `acquire` returns the clicks of the last `send`, uint8 (gates, channels, 2)
    with [..., 0] the H detector and [..., 1] the V detector.
    """

    n_channels: int

    def set_emission_probability(self, p: float) -> None: ...

    def set_background_probability(self, p: float) -> None: ...

    def send(self, codes: NDArray[np.int8]) -> None: ...

    def acquire(self) -> NDArray[np.uint8]: ...


@dataclass
class PhotonCountingLimits:
    """What the channel may be asked to do: emitter probability q and background probability n_p per gate."""

    max_emission_probability: float = 1.0
    max_background_probability: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_emission_probability", "max_background_probability"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"photon-counting limits: {name} must be in [0, 1], got {v}")


@dataclass
class PhotonCountingCalibration:
    """Measured detector figures (what calibration found; the twin's truth stays hidden).

    detection_efficiency: probability that a photon reaching the PBS gives a click;
    dark_count_probability: false clicks per detector per gate;
    polarisation_error: probability that a photon's polarisation is read as the other state.
    """

    detection_efficiency: float = 1.0
    dark_count_probability: float = 0.0
    polarisation_error: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.detection_efficiency <= 1.0:
            raise ConfigError(f"photon-counting calibration: detection_efficiency must be in (0, 1], "
                              f"got {self.detection_efficiency}")
        if not 0.0 <= self.dark_count_probability < 1.0:
            raise ConfigError(f"photon-counting calibration: dark_count_probability must be in [0, 1), "
                              f"got {self.dark_count_probability}")
        if not 0.0 <= self.polarisation_error < 0.5:
            raise ConfigError(f"photon-counting calibration: polarisation_error must be in [0, 0.5), "
                              f"got {self.polarisation_error}")


class PhotonCountingArray:
    """Photon-limited backward channel array: sends one sign bit per photon, returns the decoded net bit.

    `transmit(values, ...)` is one gate per sample: channel c of sample b emits (with probability q)
    a photon whose polarisation is sign(values[b, c]); the decoded bit is clicks_H - clicks_V in
    {-1, 0, +1} (both detectors clicking is ambiguous and reads 0).
    """

    def __init__(self, port: PhotonCountingPort, calibration: PhotonCountingCalibration | None = None,
                 limits: PhotonCountingLimits | None = None):
        self.port = port
        self.cal = calibration or PhotonCountingCalibration()
        self.limits = limits or PhotonCountingLimits()
        self._q = self._q_set = 0.0
        self._n_p = self._n_p_set = 0.0
        self.gates = 0            # samples (gates) sent so far
        self.triggered = 0        # channel-gates asked to emit (sign != 0)
        self.clicks = 0           # detector clicks recorded (signal + noise + dark)
        self.set_emission_probability(1.0 if self.limits.max_emission_probability >= 1.0
                                      else self.limits.max_emission_probability)
        self.set_background_probability(0.0)

    @property
    def n_channels(self) -> int:
        """Number of channels (detector pairs)."""
        return int(self.port.n_channels)

    # --- settings ------------------------------------------------------------------------------
    def set_emission_probability(self, q: float) -> None:
        """Probability q that a triggered channel emits its photon in one gate (checked against the limits)."""
        if not (np.isfinite(q) and 0.0 <= q <= 1.0):
            raise ConfigError(f"photon-counting array: emission probability q must be in [0, 1], got {q}")
        if q > self.limits.max_emission_probability:
            raise SafetyLimitError(f"photon-counting array: emission probability {q} above the limit "
                                   f"{self.limits.max_emission_probability}; nothing written")
        self.port.set_emission_probability(float(q))
        self._q = self._q_set = float(q)

    def set_background_probability(self, n_p: float) -> None:
        """Background (noise) photon probability n_p per channel per gate, random polarisation."""
        if not (np.isfinite(n_p) and 0.0 <= n_p <= 1.0):
            raise ConfigError(f"photon-counting array: background probability n_p must be in [0, 1], got {n_p}")
        if n_p > self.limits.max_background_probability:
            raise SafetyLimitError(f"photon-counting array: background probability {n_p} above the limit "
                                   f"{self.limits.max_background_probability}; nothing written")
        self.port.set_background_probability(float(n_p))
        self._n_p = self._n_p_set = float(n_p)

    @property
    def emission_probability(self) -> float:
        """Current q."""
        return self._q

    @property
    def background_probability(self) -> float:
        """Current n_p."""
        return self._n_p

    def expected_bit_gain(self) -> float:
        """Calibrated mean decoded bit per unit sign: q * eta * (1 - 2 p_pol) (noise and darks average to 0)."""
        return self._q * self.cal.detection_efficiency * (1.0 - 2.0 * self.cal.polarisation_error)

    # --- acquisition ---------------------------------------------------------------------------
    def send_bits(self, signs: NDArray) -> NDArray[np.int8]:
        """One gate per row: emit sign(signs) as polarisation (0: no emission); return the decoded net bits."""
        if signs.ndim != 2 or signs.shape[1] != self.n_channels:
            raise ValueError(f"photon-counting array: expected (gates, {self.n_channels}) signs, got {signs.shape}")
        codes = np.sign(signs).astype(np.int8)
        self.port.send(codes)
        clicks = self.port.acquire()
        if clicks.shape != (*codes.shape, 2):
            raise InstrumentError(f"photon-counting array: detector returned shape {clicks.shape}, "
                                  f"expected {(*codes.shape, 2)}")
        self.gates += codes.shape[0]
        self.triggered += int(np.count_nonzero(codes))
        h, v = clicks[..., 0].astype(np.int8), clicks[..., 1].astype(np.int8)
        self.clicks += int(h.sum(dtype=np.int64) + v.sum(dtype=np.int64))
        return h - v

    def transmit(self, values: NDArray, *, one_bit: bool = True, bit_value: float = 1.0) -> NDArray[np.float32]:
        """Send values (gates, channels) through the channel; return what the receiving neurons read.

        one_bit: received = bit_value * (clicks_H - clicks_V)  (the photon carries only the sign);
        otherwise received = |values| * (clicks_H - clicks_V)  (an information-unlimited photon: it
        gates the analog value and its polarisation carries the sign, so a noise photon delivers
        the channel's magnitude with a random sign).
        """
        bits = self.send_bits(values)
        if one_bit:
            return bits.astype(np.float32) * np.float32(bit_value)
        return (np.abs(values) * bits).astype(np.float32, copy=False)

    def summary_fields(self) -> dict[str, Any]:
        """Photon statistics for a run summary (q and n_p as last set for operation)."""
        g = max(self.gates, 1)
        return {"feedback_q": self._q_set, "feedback_noise_rate": self._n_p_set,
                "feedback_clicks_per_gate": self.clicks / g,
                "feedback_channels": self.n_channels}

    def snapshot(self) -> dict[str, Any]:
        """Port state (a twin's random generator) and counters for exact resume."""
        snap = getattr(self.port, "snapshot", None)
        return {"port": snap() if snap else {}, "gates": self.gates, "triggered": self.triggered,
                "clicks": self.clicks}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore `snapshot` state."""
        rest = getattr(self.port, "restore", None)
        if rest and state.get("port"):
            rest(state["port"])
        self.gates = int(state.get("gates", 0))
        self.triggered = int(state.get("triggered", 0))
        self.clicks = int(state.get("clicks", 0))

    def safe_state(self) -> None:
        """Emitters and background lamp off."""
        self.port.set_emission_probability(0.0)
        self.port.set_background_probability(0.0)
        self._q = 0.0
        self._n_p = 0.0


def feedback_channel_of(processor: Any) -> PhotonCountingArray | None:
    """The processor's photon-counting feedback channel, or None if its bench attached none."""
    fc = getattr(processor, "feedback_channel", None)
    return fc if isinstance(fc, PhotonCountingArray) else None
