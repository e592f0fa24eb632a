"""The integrated chip behind the wire: instrument twins on one ChipEmulator (shared with the in-process twin).

How the chip maps onto instruments (the contract the station adapters in ``lightloop.station`` follow):

* laser = a laser controller; field factor f = sqrt(P / P_operating) (exactly 1 at the operating point, 0 dark),
  P_operating from the P-I model of ``roles.source``. Optional power meter reading the laser power.
* IQ modulators = blocks of channels of an IQ AWG (``roles.encoder``, ``roles.injectors[l]``,
  ``roles.adjoint_sources[l]``): channel first_channel + k drives port k, a field is
  volts / amplitude x full_scale_field (= code / 32767 x full_scale_field at the role's amplitude), the
  batch is the stored sequence's length. The encoder's STORED sequence (x f) is the chip's input batch and its
  outputs gate the forward light; an injector or adjoint source injects its OUTPUT (zero where off; all zero or
  f = 0 is dark).
* phase shifters = blocks of heater channels (Qontrol from 0, SCPI source from 1), one block per mesh layer. A
  layer's voltages reach the emulator lazily, right before the next acquisition: one ``set_heater_volts`` per
  changed layer, in layer order (one bank write, one clock/drift step, as in process).
* activation biases = blocks of heater or source channels; a change reaches ``set_ring_bias`` at once.
* detectors = digitiser channels, each an array, read in the order ``DIG`` lists them: output photodiodes
  (points, n_out), tap monitors (1, taps: one integrated value per tap over the batch), coherent receivers at a
  layer's outputs / inputs (points, 2n: I and Q interleaved), activation photodiodes and slopes (points, h); every
  value x the channel's volts_per_unit; batch rows beyond the emulator's batch are zeros.

`chip_endpoints` builds these endpoints from a validated lab config (duck-typed: this module reads the config
objects, it does not import the bench layer); ``lightloop.simulators.chip_build.make_chip_emulator`` builds the
emulator exactly as the in-process twin does. Faults and ``LIGHTLOOP_WIRE_REPORT`` as in
``lightloop.simulators.wire.free_space``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.addresses import address_port
from lightloop.errors import ConfigError
from lightloop.hal.frames import IQ_CODE_MAX, decode_iq
from lightloop.simulators.chip import ChipEmulator
from lightloop.simulators.wire._report import _limit, arm_and_start, fault_plan, laser_field_factor, twin_report
from lightloop.simulators.wire.awg import AWGTwin
from lightloop.simulators.wire.digitizer import DigitizerTwin
from lightloop.simulators.wire.laser_controller import LaserControllerTwin
from lightloop.simulators.wire.power_meter import PowerMeterTwin
from lightloop.simulators.wire.qontrol_heater import QontrolTwin
from lightloop.simulators.wire.scpi_source import ScpiSourceTwin
from lightloop.simulators.wire.server import Endpoint, FaultPlan, WireTwinServer

__all__ = ["ChipWireBench", "chip_endpoints", "fault_plan", "start_chip_twin", "twin_report"]

_READS = ("outputs", "monitors", "output_receivers", "input_receivers", "activation_power", "activation_slope")


@dataclass(frozen=True)
class _IQBlock:
    """One IQ role on an AWG: 'encoder' | 'injector' | 'adjoint', its layer, 1-based channels, field scale (V)."""

    kind: str
    layer: int
    instrument: str
    channels: tuple[int, ...]
    full_scale_field: float
    amplitude: float


@dataclass(frozen=True)
class _Bank:
    """One block of heater/source channels (driver numbering): 'phase' (a mesh layer) or 'bias' (a hidden layer)."""

    kind: str
    layer: int
    instrument: str
    channels: tuple[int, ...]


@dataclass(frozen=True)
class _Detector:
    """One digitiser channel: which array it reads, of which layer, with its front-end gain (V per unit)."""

    kind: str
    layer: int
    volts_per_unit: float


class ChipWireBench:
    """Turns what the chip's instrument twins receive into ChipEmulator writes, and digitiser DIGs into readings."""

    def __init__(self, emu: ChipEmulator, operating_current_a: float = 0.0, laser_threshold_a: float = 0.0,
                 laser_slope_w_per_a: float = 1.0) -> None:
        self.emu = emu
        self.i_op, self.i_th = float(operating_current_a), float(laser_threshold_a)
        self.slope = float(laser_slope_w_per_a)
        self.laser: LaserControllerTwin | None = None
        self.awgs: dict[str, AWGTwin] = {}
        self.heaters: dict[str, QontrolTwin | ScpiSourceTwin] = {}
        self.blocks: list[_IQBlock] = []
        self.banks: list[_Bank] = []
        self.detectors: dict[str, dict[int, _Detector]] = {}

    # light ---------------------------------------------------------------------------------------------
    def laser_factor(self) -> float:
        """Field scale of the laser: sqrt(P / P_operating); 1 without a laser twin, 0 when dark."""
        return laser_field_factor(self.laser, self.i_op, self.i_th, self.slope)

    def on_laser(self) -> None:
        """The laser changed: every IQ block's light changes with it."""
        if self.laser is not None:
            for b in self.blocks:
                self._push(b)

    def awg_callback(self, name: str) -> Callable[[list[int], NDArray[np.complex128]], None]:
        """``on_sequence`` of AWG `name`: re-push every block that owns one of the changed channels."""

        def on_sequence(channels: list[int], volts: NDArray[np.complex128]) -> None:
            changed = set(channels)
            for b in self.blocks:
                if b.instrument == name and changed.intersection(b.channels):
                    self._push(b)

        return on_sequence

    def block_fields(self, b: _IQBlock, stored: bool = False) -> NDArray[np.complex128]:
        """Fields (points, n) a block emits at the operating laser power: its stored sequence, or its output."""
        twin = self.awgs[b.instrument]
        idx = [c - 1 for c in b.channels]
        volts = decode_iq(twin.sequence(b.channels), twin.amplitude[idx])
        if not stored:
            volts = volts * twin.outputs[idx][None, :]
        return volts * (b.full_scale_field / b.amplitude)

    def _push(self, b: _IQBlock) -> None:
        if b.instrument not in self.awgs:
            return
        f, emu = self.laser_factor(), self.emu
        if b.kind == "encoder":
            fields = self.block_fields(b, stored=True)
            if len(fields):
                emu.set_inputs((fields * f).astype(emu.cdtype))
            twin = self.awgs[b.instrument]
            emu.set_forward_light(bool(f > 0 and twin.outputs[[c - 1 for c in b.channels]].any()))
            return
        fields = self.block_fields(b)
        light = None if f == 0 or not np.any(fields) else (fields * f).astype(emu.cdtype)
        (emu.set_injection if b.kind == "injector" else emu.set_adjoint)(b.layer, light)

    # heaters and biases --------------------------------------------------------------------------------
    def bank_volts(self, b: _Bank) -> NDArray[np.float64]:
        """Voltages (V) at the outputs of a bank's channels, in the bank's channel order."""
        twin = self.heaters[b.instrument]
        if isinstance(twin, QontrolTwin):
            return twin.volts[list(b.channels)].astype(np.float64)
        return np.array([twin.output_volts(c - 1) for c in b.channels], np.float64)

    def heater_callback(self, name: str) -> Callable[..., None]:
        """``on_change`` of heater/source `name`: ring biases follow at once; phase shifters wait for the next DIG."""

        def on_change(*_: Any) -> None:
            if name in self.heaters:
                self._push_biases(name)

        return on_change

    def _push_biases(self, name: str) -> None:
        for b in self.banks:
            if b.kind == "bias" and b.instrument == name:
                v = self.bank_volts(b)
                if not np.array_equal(v, self.emu.ring_bias_v[b.layer]):
                    self.emu.set_ring_bias(b.layer, v)

    def sync_heaters(self) -> None:
        """Write every phase-shifter layer whose served voltages differ from the emulator's: one write per layer."""
        for b in sorted((b for b in self.banks if b.kind == "phase"), key=lambda b: b.layer):
            v = self.bank_volts(b)
            if not np.array_equal(v, self.emu.volts[b.layer]):
                self.emu.set_heater_volts(b.layer, v)

    # detectors -----------------------------------------------------------------------------------------
    def add_detector(self, digitizer: str, channel: int, kind: str, layer: int, volts_per_unit: float) -> int:
        """Map a digitiser channel to a detector array; returns its values per point (per exposure for monitors)."""
        emu = self.emu
        self.detectors.setdefault(digitizer, {})[channel] = _Detector(kind, layer, float(volts_per_unit))
        if kind == "outputs":
            return emu.design.n_out
        if kind == "monitors":
            return emu.layers[layer].n_shifters
        if kind.endswith("receivers"):
            return 2 * emu.layers[layer].n
        return emu.design.hidden[layer]

    def read(self, d: _Detector, points: int) -> NDArray[np.float64]:
        """One detector array's reading in volts: (points, values), or (1, taps) for a tap monitor."""
        emu = self.emu
        if d.kind == "monitors":
            return np.asarray(emu.read_taps(d.layer), np.float64)[None, :] * d.volts_per_unit
        if d.kind == "outputs":
            v = np.asarray(emu.read_output_power(), np.float64)
        elif d.kind == "activation_power":
            v = np.asarray(emu.read_activation_power(d.layer), np.float64)
        elif d.kind == "activation_slope":
            v = np.asarray(emu.read_activation_slope(d.layer), np.float64)
        else:
            z = emu.read_output_fields(d.layer) if d.kind == "output_receivers" else emu.read_input_fields(d.layer)
            z = np.asarray(z)
            v = np.stack([z.real, z.imag], axis=-1).reshape(z.shape[0], 2 * z.shape[1]).astype(np.float64)
        out = np.zeros((points, v.shape[1]), np.float64)
        rows = min(points, v.shape[0])
        out[:rows] = v[:rows]
        return out * d.volts_per_unit

    def acquirer(self, digitizer: str) -> Callable[[list[int], int], dict[int, NDArray[np.floating[Any]]]]:
        """The DIG callback of one digitiser: apply pending heater writes, then read in the listed channel order."""

        def acquire(channels: list[int], points: int) -> dict[int, NDArray[np.floating[Any]]]:
            self.sync_heaters()
            dets = self.detectors.get(digitizer, {})
            out: dict[int, NDArray[np.floating[Any]]] = {}
            for c in channels:
                d = dets.get(c)
                out[c] = np.zeros((points, 1), np.float32) if d is None else self.read(d, points)
            return out

        return acquire

    def sync(self) -> None:
        """Bring the emulator to what the served instruments hold now (light, biases; heaters at the next DIG)."""
        for b in self.blocks:
            self._push(b)
        for name in self.heaters:
            self._push_biases(name)


# --- plan from a lab config ----------------------------------------------------------------------------
def _check_sizes(cfg: Any, sizes: tuple[int, ...], emu: ChipEmulator) -> None:
    """One-line ConfigError when a served role's channel count does not fit the emulator's mesh."""
    roles, src = cfg.roles, getattr(cfg, "source", "<config>")
    if (emu.design.n_in, *emu.design.hidden, emu.design.n_out) != tuple(sizes):
        raise ConfigError(f"{src}: emulator.layer_sizes: {list(sizes)}; expected the chip emulator's sizes "
                          f"{[emu.design.n_in, *emu.design.hidden, emu.design.n_out]}")
    want: list[tuple[str, Any, int | None]] = [("roles.encoder", roles.encoder, emu.layers[0].n)]
    for key, items, size in (("injectors", roles.injectors, lambda l: emu.layers[l].n),
                             ("adjoint_sources", roles.adjoint_sources, lambda l: emu.layers[l].n),
                             ("phase_shifters", roles.phase_shifters, lambda l: emu.layers[l].n_shifters),
                             ("activation_bias", roles.activation_bias, lambda l: emu.design.hidden[l])):
        n = emu.n_layers if key != "activation_bias" else len(emu.design.hidden)
        for l, role in enumerate(items):
            want.append((f"roles.{key}[{l}]", role, size(l) if l < n else None))
    for where, role, size in want:
        if size is None:
            raise ConfigError(f"{src}: {where}: no such layer in a network of sizes {list(sizes)}; expected at most "
                              f"{where.split('[')[0]} entries for the mesh's layers")
        if role.count != size:
            raise ConfigError(f"{src}: {where}.count: {role.count}; expected {size} channels for layer sizes "
                              f"{list(sizes)}")


def chip_endpoints(cfg: Any, sizes: tuple[int, ...],
                   emu: ChipEmulator) -> tuple[list[Endpoint], dict[str, int], ChipWireBench]:
    """Endpoints for every instrument of `cfg` that has a driver (not 'twin'), their ports, and the glue."""
    instruments, roles, p = cfg.instruments, cfg.roles, cfg.processor
    _check_sizes(cfg, sizes, emu)
    src = roles.source
    glue = ChipWireBench(emu, src.operating_current, src.threshold_current, src.slope_efficiency)

    def served(name: str | None) -> bool:
        return name is not None and instruments[name].driver != "twin"

    def init(name: str, key: str, default: Any) -> Any:
        return instruments[name].hardware(key, default) if hasattr(instruments[name], "hardware") else default

    def ramp_step(name: str) -> float | None:
        ramp = _limit(instruments[name], "voltage_ramp")
        return None if ramp is None else ramp[1] * getattr(instruments[name], "ramp_interval", 0.02)

    endpoints: dict[str, Endpoint] = {}
    # IQ blocks ------------------------------------------------------------------------------------------
    enc = roles.encoder
    iq = [("encoder", 0, enc, max(p.encoder.field_scale, p.encoder.bias_amplitude))]
    iq += [("injector", l, r, p.max_injection_field) for l, r in enumerate(roles.injectors)]
    iq += [("adjoint", l, r, p.max_injection_field) for l, r in enumerate(roles.adjoint_sources)]
    code_env: dict[str, float] = {}
    for kind, layer, r, peak in iq:
        if not served(r.instrument):
            continue
        chans = tuple(range(r.first_channel, r.first_channel + r.count))
        glue.blocks.append(_IQBlock(kind, layer, r.instrument, chans, float(r.full_scale_field), float(r.amplitude)))
        code_env[r.instrument] = max(code_env.get(r.instrument, 0.0), peak / r.full_scale_field * IQ_CODE_MAX)
    for name, env in code_env.items():
        amp = _limit(instruments[name], "amplitude")
        endpoints[name] = AWGTwin(
            name, n_channels=int(init(name, "n_channels", 4)), v_max=float(init(name, "v_max", 1.0)),
            max_points=int(init(name, "max_points", 4096)), on_sequence=glue.awg_callback(name),
            envelope=None if amp is None else amp[1], code_envelope=env)
    # heater banks and biases ----------------------------------------------------------------------------
    for kind, items in (("phase", roles.phase_shifters), ("bias", roles.activation_bias)):
        for layer, r in enumerate(items):
            if served(r.instrument):
                chans = tuple(range(r.first_channel, r.first_channel + r.count))
                glue.banks.append(_Bank(kind, layer, r.instrument, chans))
    for name in dict.fromkeys(b.instrument for b in glue.banks):
        spec = instruments[name]
        if spec.driver == "qontrol_heater":
            needed = max(max(b.channels) for b in glue.banks if b.instrument == name) + 1
            endpoints[name] = QontrolTwin(
                name, int(init(name, "n_channels", needed)), resistance_ohm=p.phase_shifters.resistance_ohm,
                vmax=float(init(name, "v_hw_max", 12.0)), imax_ma=1e3 * float(init(name, "i_hw_max", 0.024)),
                on_change=glue.heater_callback(name), envelope=_limit(spec, "voltage"),
                max_step_envelope=ramp_step(name))
        else:
            endpoints[name] = ScpiSourceTwin(
                name, n_channels=int(init(name, "n_channels", 4)), v_max=float(init(name, "v_max", 20.0)),
                i_max=float(init(name, "i_max", 0.1)), on_change=glue.heater_callback(name),
                envelope=_limit(spec, "voltage"), max_step_envelope=ramp_step(name))
    # laser ----------------------------------------------------------------------------------------------
    if served(src.laser):
        spec = instruments[src.laser]
        cur, ramp = _limit(spec, "current"), _limit(spec, "current_ramp")
        laser = LaserControllerTwin(
            src.laser, src.threshold_current, src.slope_efficiency, float(init(src.laser, "i_max", 0.5)),
            on_change=glue.on_laser, max_current_envelope=None if cur is None else cur[1],
            max_step_envelope=None if ramp is None else ramp[1] * getattr(spec, "ramp_interval", 0.02))
        endpoints[src.laser] = laser
        if served(src.power_meter):
            endpoints[src.power_meter] = PowerMeterTwin(src.power_meter, laser.power)
    # detectors ------------------------------------------------------------------------------------------
    digitizers: dict[str, dict[int, int]] = {}
    for kind in _READS:
        refs = getattr(roles.detectors, kind)
        for layer, ref in enumerate([refs] if kind == "outputs" else refs):
            if served(ref.instrument):
                n = glue.add_detector(ref.instrument, ref.channel, kind, layer, getattr(ref, "volts_per_unit", 1.0))
                digitizers.setdefault(ref.instrument, {})[ref.channel] = n
    for name, dets in digitizers.items():
        endpoints[name] = DigitizerTwin(name, int(init(name, "n_channels", 4)), glue.acquirer(name), dets)
    # register the twins (their construction-time callbacks ran before), then mirror their state ---------
    glue.awgs = {n: ep for n, ep in endpoints.items() if isinstance(ep, AWGTwin)}
    glue.heaters = {n: ep for n, ep in endpoints.items() if isinstance(ep, (QontrolTwin, ScpiSourceTwin))}
    if served(src.laser):
        glue.laser = endpoints[src.laser]  # type: ignore[assignment]
    glue.sync()
    ports = {name: address_port(instruments[name].driver, instruments[name].address)[1] for name in endpoints}
    return list(endpoints.values()), ports, glue


def start_chip_twin(cfg: Any, sizes: tuple[int, ...], emu: ChipEmulator,
                    faults: FaultPlan | None = None) -> WireTwinServer:
    """Build and start the loopback server for an integrated_chip config (ports 0 = any free port), with the random
    faults of `faults` or else of ``emulator.faults``."""
    return arm_and_start(chip_endpoints(cfg, sizes, emu), cfg, faults)
