"""IQ arbitrary-waveform generator port adapter: a block of IQ channels as the chip's field source / injector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError, InstrumentError, SafetyLimitError
from lightloop.hal.frames import encode_iq
from lightloop.hal.safety import Range
from lightloop.station._clock import BenchClock
from lightloop.station._link import Link

__all__ = ["AWGFieldBlock"]


class AWGFieldBlock:
    """FieldInjectionPort and ForwardLightPort on a block of IQ channels of an AWG (complex fields, one per channel).

    A field of full_scale_field in a quadrature is code 32767 at the channel's full-scale amplitude (V). Every
    write_fields is ONE verified upload of the whole batch (``SEQ:DATA (@..),#<block>;SEQ:DATA:CRC? (@..)``),
    whatever the batch size and the channel count; an unchanged batch on the same connection epoch is not sent
    again. After every reconnect (the AWG may have rebooted: memory cleared, outputs off) the amplitudes, the
    external trigger, the last sequence and the output state are re-established before anything else. Every upload
    sets the amplitudes again in its own line and reads them back (an amplitude turned up behind the HAL's back
    never drives a new sequence).
    """

    def __init__(self, link: Link, channels: Sequence[int], full_scale_field: float, max_field: float,
                 amplitude: float, amplitude_limit: Range | None = None, role: str = "IQ source",
                 clock: BenchClock | None = None) -> None:
        drv = link.driver
        self.clock = clock
        self.link, self.role = link, role
        self.channels = [int(c) for c in channels]
        n_hw = int(drv.n_channels)
        if not self.channels or len(set(self.channels)) != len(self.channels) \
                or not all(1 <= c <= n_hw for c in self.channels):
            raise ConfigError(f"{role} AWG {link.name!r}: channels {self.channels}; expected distinct channels in "
                              f"1..{n_hw}")
        if not (np.isfinite(full_scale_field) and full_scale_field > 0 and np.isfinite(max_field) and max_field > 0):
            raise ConfigError(f"{role} AWG {link.name!r}: full_scale_field {full_scale_field} and max_field "
                              f"{max_field}; expected finite fields > 0")
        limit = amplitude_limit or Range(0.0, float(drv.v_max), "V", "amplitude")
        what = f"{role} AWG {link.name!r} amplitude"
        self.amplitude = limit.check(amplitude, what)          # before anything is written
        if not self.amplitude > 0:
            raise SafetyLimitError(f"{what}: {self.amplitude:g} V; expected a full-scale amplitude > 0 V; nothing written")
        self.n_channels = len(self.channels)
        self.full_scale, self.max_field = float(full_scale_field), float(max_field)
        self.max_points = int(drv.max_points)
        self._codes: NDArray[np.int16] | None = None      # the sequence the AWG should hold
        self._sent: tuple[int, bytes] | None = None        # (link epoch, codes) last uploaded on that connection
        self._enabled = False
        link.run("set-up", self._restore)
        link.on_connect(self._restore)

    @property
    def identity(self) -> str:
        """Identity of the AWG and its channel block."""
        return f"{self.link.identity}/CH{','.join(map(str, self.channels))}"

    # --- transactions -----------------------------------------------------------------------------------
    def _set_amplitudes(self, drv: Any) -> None:
        got = drv.set_amplitudes([self.amplitude] * self.n_channels, self.channels)
        self.link.tick()
        bad = [c for c, v in zip(self.channels, got) if abs(v - self.amplitude) > 1e-6 * self.amplitude + 1e-9]
        if bad:
            raise InstrumentError(f"{self.role} AWG {self.link.name!r}: channel(s) {bad} read amplitudes {got} V "
                                  f"after setting {self.amplitude:g} V; expected the set amplitude")

    def _upload(self, drv: Any, codes: NDArray[np.int16]) -> None:
        # one line: the amplitudes (set again, so a front-panel change never drives the new sequence), the sequence,
        # its CRC-32 (checked by the driver) and the amplitudes read back
        drv.upload(codes, self.channels, amplitudes=[self.amplitude] * self.n_channels)
        self.link.tick()
        got = list(drv.last_amplitudes)
        bad = [c for c, v in zip(self.channels, got) if abs(v - self.amplitude) > 1e-6 * self.amplitude + 1e-9]
        if bad or len(got) != self.n_channels:
            raise InstrumentError(f"{self.role} AWG {self.link.name!r}: channel(s) {bad} read amplitudes {got} V "
                                  f"after the upload set {self.amplitude:g} V; expected the set amplitude")
        self._sent = (self.link.epoch, codes.tobytes())

    def _outputs(self, drv: Any, on: bool) -> None:
        drv.set_outputs(on, self.channels)        # verified by the read-back in the same line
        self.link.tick()

    def _restore(self, drv: Any) -> None:
        """(Re)connect: amplitudes, external trigger, the last sequence, then the outputs as the HAL left them."""
        self._sent = None
        self._set_amplitudes(drv)
        drv.arm()
        self.link.tick()
        if self._codes is not None:
            self._upload(drv, self._codes)
        self._outputs(drv, self._enabled)

    # --- ports ------------------------------------------------------------------------------------------
    def write_fields(self, fields: NDArray[np.complexfloating[Any, Any]] | None) -> None:
        """Upload a batch (batch, n) of complex fields as one IQ sequence (None: every pattern zero, dark)."""
        name = f"{self.role} AWG {self.link.name!r}"
        if fields is None:
            points = 1 if self._codes is None else len(self._codes)
            codes = np.zeros((points, self.n_channels, 2), np.int16)
        else:
            f = np.asarray(fields)
            if f.ndim != 2 or f.shape[1] != self.n_channels or f.shape[0] < 1:
                raise ValueError(f"{name}: expected fields of shape (batch, {self.n_channels}), got {f.shape}")
            if f.shape[0] > self.max_points:
                raise ConfigError(f"{name}: a batch of {f.shape[0]} patterns exceeds the {self.max_points}-point "
                                  f"sequence memory; expected batch <= {self.max_points} (lower the batch size)")
            peak = float(np.max(np.abs(f)))
            if not np.isfinite(peak):
                raise SafetyLimitError(f"{name}: fields contain NaN or inf; nothing written")
            if peak > self.max_field * (1 + 1e-6):
                raise SafetyLimitError(f"{name}: peak field {peak:.6g} exceeds max_field {self.max_field:.6g}; "
                                       "nothing written")
            codes = encode_iq(f, self.full_scale, name)       # a quadrature beyond full scale: SafetyLimitError
        self.link.ensure_alive()                               # a reboot behind our back: re-set-up first
        self._codes = codes
        if fields is not None and self.clock is not None:
            self.clock.displayed(len(codes))                   # the digitiser records this many patterns
        if self._sent == (self.link.epoch, codes.tobytes()):
            return
        self.link.run("SEQ:DATA", lambda drv: self._upload(drv, codes))

    def set_enabled(self, on: bool) -> None:
        """Switch the block's IQ outputs on or off (read back in the same transaction)."""
        self.link.ensure_alive()
        self._enabled = bool(on)
        self.link.run("OUTP", lambda drv: self._outputs(drv, bool(on)))

    def dark(self) -> None:
        """Safe state: outputs off, then every pattern of the sequence zero."""
        self._enabled = False
        points = 1 if self._codes is None else len(self._codes)
        zeros = np.zeros((points, self.n_channels, 2), np.int16)
        self._codes = zeros

        def op(drv: Any) -> None:
            self._outputs(drv, False)
            self._upload(drv, zeros)

        self.link.run("OUTP OFF", op)

    safe_state = dark
