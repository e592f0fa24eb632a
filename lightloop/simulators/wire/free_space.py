"""The free-space SA bench behind the wire: instrument twins on one FreeSpaceEmulator (shared with the in-process twin).

How the bench maps onto instruments (the contract the driver adapters in ``lightloop.station.adapters``
follow):

* input encoder / backward probe = an SLM *sequence panel* of ``sequence_length`` rows x n pixels,
  16 bit: row r is the pattern shown at trigger r, so one FRAME carries a whole batch. Pixel code c
  means the field (c - 2**15) / (2**15 - 1) * full_scale_field (saturation units) at the laser's
  operating power; unused rows hold the zero code. Both are lit by the laser controller: field scale
  sqrt(P / P_operating), dark when the output is off.
* weight layer l = an 8-bit phase SLM; layout 'pairs': row 2i holds g+ and row 2i+1 holds g- of weight
  row i; layout 'checkerboard': a k x k checkerboard block of (g+, g-) per weight. The amplifier after
  the 4f sum is a voltage-controlled amplifier on a SCPI source channel: gain = volts / volts_per_gain.
* vapor cell c = one temperature controller; its reading is the cell temperature of the emulator.
* homodyne arrays = digitiser channels: each CHAN is a whole array; ``ACQ:POIN`` is the number of
  patterns per acquisition, ``DIG`` acquires every listed channel (readings drawn in the listed
  order, so the noise stream matches the in-process twin), ``WAV:DATA?`` returns (points x detectors)
  int16 codes.
* optional power meter reading the laser power.

`free_space_endpoints` builds these endpoints from a validated lab config (duck-typed: this module
reads the config objects, it does not import the bench layer); `make_free_space_emulator` builds the
emulator exactly as the in-process twin does.

Fault rehearsal: `start_free_space_twin` arms the random faults of ``emulator.faults`` (or a given
:class:`FaultPlan`). Two environment knobs serve benchmarks that run training in a subprocess:
``LIGHTLOOP_FAULT_SEED`` replaces the configured fault seed, and ``LIGHTLOOP_WIRE_REPORT=FILE`` appends one
JSON line per twin when it stops (commands, violations, faults injected, the outputs' final state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.addresses import address_port
from lightloop.hal.frames import FIELD_BITS, decode_fields, decode_weight_frame, weight_panel_shape
from lightloop.simulators.free_space import (
    AnalogWeightTwin,
    FreeSpaceEmulator,
    HomodyneTwin,
    ProbeTwin,
    SLMWeightTwin,
    SourceTwin,
    VaporCellHeaterTwin,
    make_free_space_emulator,
)
from lightloop.simulators.wire._report import _limit, arm_and_start, fault_plan, laser_field_factor, twin_report
from lightloop.simulators.wire.digitizer import DigitizerTwin
from lightloop.simulators.wire.laser_controller import LaserControllerTwin
from lightloop.simulators.wire.power_meter import PowerMeterTwin
from lightloop.simulators.wire.scpi_source import ScpiSourceTwin
from lightloop.simulators.wire.server import Endpoint, FaultPlan, WireTwinServer
from lightloop.simulators.wire.slm import SLMTwin
from lightloop.simulators.wire.temperature_controller import TemperatureControllerTwin

__all__ = [
    "make_free_space_emulator",
    "FreeSpaceWireBench",
    "free_space_endpoints",
    "start_free_space_twin",
    "fault_plan",
    "twin_report",
]

# --- glue ----------------------------------------------------------------------------------------------
@dataclass
class _Tap:
    twin: HomodyneTwin
    arm: str  # 'forward' or 'backward'


class FreeSpaceWireBench:
    """Turns what the instrument twins receive into emulator writes, and digitiser DIGs into readings."""

    def __init__(self, emu: FreeSpaceEmulator, input_full_scale: float, probe_full_scale: float,
                 operating_current_a: float = 0.0, laser_threshold_a: float = 0.0, laser_slope_w_per_a: float = 1.0):
        self.emu = emu
        self.source, self.probe = SourceTwin(emu), ProbeTwin(emu)
        self.input_fs, self.probe_fs = float(input_full_scale), float(probe_full_scale)
        self.i_op, self.i_th, self.slope = float(operating_current_a), float(laser_threshold_a), float(laser_slope_w_per_a)
        self.laser: LaserControllerTwin | None = None
        self.controllers: list[TemperatureControllerTwin] = []
        self.taps: dict[str, dict[int, _Tap]] = {}
        self._input: NDArray[np.float32] | None = None
        self._probe: NDArray[np.float32] | None = None
        self._in_gen = self._probe_gen = 0
        self._pushed_in: tuple[int, int, float] | None = None
        self._pushed_probe: tuple[int, int, float] | None = None

    # sources -------------------------------------------------------------------------------------------
    def input_frame(self, frame: NDArray[np.integer[Any]]) -> None:
        """A new input sequence frame arrived."""
        self._input = decode_fields(frame, self.input_fs, FIELD_BITS)
        self._in_gen += 1

    def probe_frame(self, frame: NDArray[np.integer[Any]]) -> None:
        """A new probe sequence frame arrived."""
        self._probe = decode_fields(frame, self.probe_fs, FIELD_BITS)
        self._probe_gen += 1

    def laser_factor(self) -> float:
        """Field scale of the laser: sqrt(P / P_operating); 1 without a laser twin, 0 when dark."""
        return laser_field_factor(self.laser, self.i_op, self.i_th, self.slope)

    def _push(self, fields: NDArray[np.float32] | None, n: int, points: int, factor: float,
              write: Callable[[NDArray[np.float32]], None]) -> None:
        if fields is None:
            f = np.zeros((points, n), np.float32)
        else:
            f = fields[:points]
            if f.shape[0] < points:
                f = np.vstack([f, np.zeros((points - f.shape[0], n), np.float32)])
        if factor != 1.0:
            f = (f * np.float32(factor)).astype(np.float32)
        write(f)

    # weights and gains ------------------------------------------------------------------------------------
    def weight_frame(self, layer: int, layout: str, block_pixels: int) -> Callable[[NDArray[np.integer[Any]]], None]:
        """Callback decoding a weight SLM frame of one layer into its blocks."""
        twin = SLMWeightTwin(self.emu, layer)
        shape = self.emu.weights[layer].shape

        def on_frame(frame: NDArray[np.integer[Any]]) -> None:
            twin.write_blocks(*decode_weight_frame(frame, shape, layout, block_pixels))

        return on_frame

    def gain_channels(self, mapping: dict[int, tuple[int, float]]) -> Callable[[int, float], None]:
        """Callback for a source whose channel ch controls the amplifier of layer: {ch: (layer, volts_per_gain)}."""
        twins = {ch: (AnalogWeightTwin(self.emu, layer), vpg) for ch, (layer, vpg) in mapping.items()}

        def on_change(channel: int, volts: float) -> None:
            if channel in twins:
                twin, vpg = twins[channel]
                twin.set_amplifier_gain(volts / vpg)

        return on_change

    # detectors ----------------------------------------------------------------------------------------
    def add_tap(self, digitizer: str, channel: int, tap: str, layer: int) -> int:
        """Map a digitiser channel to a homodyne array; returns its detector count."""
        twin = HomodyneTwin(self.emu, tap, layer)
        self.taps.setdefault(digitizer, {})[channel] = _Tap(twin, "backward" if tap == "error" else "forward")
        return twin.n_channels

    def tick(self) -> None:
        """Advance every temperature controller's clock (their readings reach the emulator)."""
        for tc in self.controllers:
            tc.advance()

    def acquirer(self, digitizer: str) -> Callable[[list[int], int], dict[int, NDArray[np.floating[Any]]]]:
        """The DIG callback of one digitiser: push the displayed sequences, draw readings in channel order."""

        def acquire(channels: list[int], points: int) -> dict[int, NDArray[np.floating[Any]]]:
            taps = self.taps.get(digitizer, {})
            self.tick()
            factor = self.laser_factor()
            arms = {taps[c].arm for c in channels if c in taps}
            n_in, n_out = self.emu.layer_sizes[0], self.emu.layer_sizes[-1]
            key_in = (self._in_gen, points, factor)
            if arms and key_in != self._pushed_in:
                self._push(self._input, n_in, points, factor, self.source.write_fields)
                self._pushed_in = key_in
            key_probe = (self._probe_gen, points, factor)
            if "backward" in arms and key_probe != self._pushed_probe:
                self._push(self._probe, n_out, points, factor, self.probe.write_fields)
                self._pushed_probe = key_probe
            out: dict[int, NDArray[np.floating[Any]]] = {}
            for c in channels:
                tap = taps.get(c)
                out[c] = np.zeros((points, 1), np.float32) if tap is None else tap.twin.acquire()
            return out

        return acquire


# --- plan from a lab config ----------------------------------------------------------------------------
def free_space_endpoints(cfg: Any, sizes: tuple[int, ...], emu: FreeSpaceEmulator) -> tuple[list[Endpoint], dict[str, int], FreeSpaceWireBench]:
    """Endpoints for every instrument of `cfg` that has a driver (not 'twin'), their ports, and the glue."""
    instruments, roles, em = cfg.instruments, cfg.roles, cfg.emulator
    seq = int(getattr(em, "sequence_length", 1024))
    time_scale = float(getattr(em, "time_scale", 1000.0))
    src = roles.source
    glue = FreeSpaceWireBench(emu, roles.input.full_scale_field, roles.probe.full_scale_field,
                              src.operating_current, src.threshold_current, src.slope_efficiency)

    def served(name: str | None) -> bool:
        return name is not None and instruments[name].driver != "twin"

    def init(name: str, key: str, default: Any) -> Any:
        return instruments[name].hardware(key, default) if hasattr(instruments[name], "hardware") else default

    endpoints: dict[str, Endpoint] = {}
    n_in, n_out = sizes[0], sizes[-1]
    if served(roles.input.instrument):
        endpoints[roles.input.instrument] = SLMTwin(roles.input.instrument, seq, n_in, FIELD_BITS, glue.input_frame)
    if served(roles.probe.instrument):
        endpoints[roles.probe.instrument] = SLMTwin(roles.probe.instrument, seq, n_out, FIELD_BITS, glue.probe_frame)
    gains: dict[str, dict[int, tuple[int, float]]] = {}
    for layer, w in enumerate(roles.weights):
        shape = (sizes[layer + 1], sizes[layer])
        if served(w.instrument):
            rows, cols = weight_panel_shape(shape, w.layout, w.block_pixels)
            endpoints[w.instrument] = SLMTwin(w.instrument, rows, cols, 8,
                                              glue.weight_frame(layer, w.layout, w.block_pixels))
        if w.gain is not None and served(w.gain.instrument):
            gains.setdefault(w.gain.instrument, {})[w.gain.channel] = (layer, w.gain.volts_per_gain)
        elif w.gain is None and w.fixed_gain is not None:
            AnalogWeightTwin(emu, layer).set_amplifier_gain(w.fixed_gain)
    for name, mapping in gains.items():
        spec = instruments[name]
        ramp = _limit(spec, "voltage_ramp")
        endpoints[name] = ScpiSourceTwin(
            name, n_channels=int(init(name, "n_channels", 4)), v_max=float(init(name, "v_max", 20.0)),
            i_max=float(init(name, "i_max", 0.1)), on_change=glue.gain_channels(mapping),
            envelope=_limit(spec, "voltage"),
            max_step_envelope=None if ramp is None else ramp[1] * getattr(spec, "ramp_interval", 0.02))
    for cell, c in enumerate(roles.vapor_cells):
        if not served(c.instrument):
            continue
        spec = instruments[c.instrument]
        hw = init(c.instrument, "temperature_range", (273.15, 473.15))
        rate = _limit(spec, "ramp_rate")
        tc = TemperatureControllerTwin(
            c.instrument, ambient_k=float(emu.cell_temperature_k[cell]),
            on_temperature=VaporCellHeaterTwin(emu, cell).set_temperature,
            temperature_range=(float(hw[0]), float(hw[1])), max_ramp_rate=float(init(c.instrument, "max_ramp_rate", 20.0)),
            time_scale=time_scale, envelope=_limit(spec, "temperature"),
            max_ramp_envelope=None if rate is None else rate[1])
        glue.controllers.append(tc)
        endpoints[c.instrument] = tc
    if served(src.laser):
        spec = instruments[src.laser]
        cur, ramp = _limit(spec, "current"), _limit(spec, "current_ramp")
        laser = LaserControllerTwin(
            src.laser, src.threshold_current, src.slope_efficiency, float(init(src.laser, "i_max", 0.5)),
            max_current_envelope=None if cur is None else cur[1],
            max_step_envelope=None if ramp is None else ramp[1] * getattr(spec, "ramp_interval", 0.02))
        glue.laser = laser
        endpoints[src.laser] = laser
        if served(src.power_meter):
            endpoints[src.power_meter] = PowerMeterTwin(src.power_meter, laser.power)
    digitizers: dict[str, dict[int, int]] = {}
    for tap in ("pre", "post", "error"):
        for layer, ref in enumerate(getattr(roles.detectors, tap)):
            if served(ref.instrument):
                n = glue.add_tap(ref.instrument, ref.channel, tap, layer)
                digitizers.setdefault(ref.instrument, {})[ref.channel] = n
    for name, dets in digitizers.items():
        endpoints[name] = DigitizerTwin(name, int(init(name, "n_channels", 4)), glue.acquirer(name), dets)
    ports = {}
    for name in endpoints:
        spec = instruments[name]
        ports[name] = address_port(spec.driver, spec.address)[1]
    return list(endpoints.values()), ports, glue


def start_free_space_twin(cfg: Any, sizes: tuple[int, ...], emu: FreeSpaceEmulator,
                          faults: FaultPlan | None = None) -> WireTwinServer:
    """Build and start the loopback server for a free-space config (ports 0 = any free port), with the random
    faults of `faults` or else of ``emulator.faults``."""
    return arm_and_start(free_space_endpoints(cfg, sizes, emu), cfg, faults)
