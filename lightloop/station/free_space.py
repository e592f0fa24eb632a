"""The free-space SA bench's ports on instruments: each role's port built from its station entry (docs/architecture.md).

The bench builder (``lightloop.benches.free_space``) asks this class for the port of every role whose
instrument has a driver, and wraps each in the same HAL role as the in-process twin's port. Connections
open on first use; every output gets its safe-state action on the station in the order the ports are
made (laser first, then displays, amplifier sources, heaters).
"""

from __future__ import annotations

import math

from lightloop.errors import ConfigError
from lightloop.hal.safety import Range, SafeTemperatureControl, SafeVoltageBank
from lightloop.station._ports import RolePorts, ramp_policy
from lightloop.station._instruments import InstrumentSpec
from lightloop.station._roles import CellRole, ChannelRef, DisplayRole, FreeSpaceRoles, WeightRole
from lightloop.station._station import Station
from lightloop.station.adapters._gain import GainControl
from lightloop.station.adapters.digitizer import DigitizerArrays, DigitizerDetector
from lightloop.station.adapters.dmd import DMDWeightBlocks
from lightloop.station.adapters.scpi_source import ScpiSourceDevice
from lightloop.station.adapters.slm import SLMFieldSource, SLMWeightBlocks
from lightloop.station.adapters.temperature_controller import TemperatureControllerDevice

__all__ = ["FreeSpaceStation", "ramp_policy"]


class FreeSpaceStation(RolePorts):
    """Ports of a free-space bench's driver-served roles, connected through one Station."""

    def __init__(self, station: Station, instruments: dict[str, InstrumentSpec], roles: FreeSpaceRoles,
                 addresses: dict[str, str] | None = None) -> None:
        super().__init__(station, instruments, roles.source, addresses)
        self.roles = roles
        self._banks: dict[str, SafeVoltageBank] = {}
        self._digitizers: dict[str, DigitizerArrays] = {}

    def display(self, role: DisplayRole, n: int, label: str) -> SLMFieldSource:
        """FieldSourcePort of the input encoder or backward probe: an SLM sequence panel of n pixels."""
        port = SLMFieldSource(self.link(role.instrument), self.clock, n, role.full_scale_field, label)
        self.station.add_safe_action(f"{label} SLM {role.instrument!r} dark", port.dark)
        return port

    def _bank(self, name: str) -> SafeVoltageBank:
        """The amplifier-control source `name` (enabled channels at 0 V, compliance lowered) as a ramped bank."""
        if name not in self._banks:
            spec = self.instruments[name]
            dev = ScpiSourceDevice(self.link(name))
            self._banks[name] = SafeVoltageBank(dev, spec.limit("voltage") or Range(-math.inf, math.inf, "V"),
                                                ramp_policy(spec, "voltage_ramp"))
            chans = sorted({w.gain.channel - 1 for w in self.roles.weights if w.gain and w.gain.instrument == name})
            ilim = spec.limit("current")
            dev.enable(chans, None if ilim is None else ilim.high)
            self.station.add_safe_action(f"source {name!r} to 0 V, outputs off", dev.disable)
        return self._banks[name]

    def weights(self, role: WeightRole, shape: tuple[int, int]) -> SLMWeightBlocks | DMDWeightBlocks:
        """Weight-block port (SLM or DMD) of one layer, with its amplifier gain control (out, in) = shape."""
        gain = None
        if role.gain is not None:
            gain = GainControl(self._bank(role.gain.instrument), role.gain.channel - 1, role.gain.volts_per_gain)
        lk = self.link(role.instrument)
        if self.instruments[role.instrument].driver == "slm":
            return SLMWeightBlocks(lk, self.clock, shape, role.layout, role.block_pixels, gain, role.fixed_gain)
        return DMDWeightBlocks(lk, self.clock, shape, role.block_pixels, gain, role.fixed_gain)

    def vapor_cell(self, index: int, role: CellRole, t_lo: float, t_hi: float) -> tuple[SafeTemperatureControl, float, float]:
        """Temperature port of one vapor cell and the usable range (K): the processor's narrowed by the instrument's."""
        spec = self.instruments[role.instrument]
        lim = spec.limit("temperature") or Range(t_lo, t_hi, "K")
        dev = TemperatureControllerDevice(self.link(role.instrument), lim, spec.limit("ramp_rate").high, self.clock)
        t_lo, t_hi = max(t_lo, dev.limits.low), min(t_hi, dev.limits.high)
        if t_lo >= t_hi:
            raise ConfigError(f"{self.station.source}: roles.vapor_cells[{index}]: processor.vapor_cell range and the "
                              f"limits of {role.instrument!r} leave no temperature; expected overlapping ranges")
        port = SafeTemperatureControl(dev, Range(t_lo, t_hi, "K", f"{role.instrument}: temperature"),
                                      dev.max_ramp, role.settle_tolerance, role.settle_timeout, role.poll_interval)
        self.station.add_safe_action(f"heater {role.instrument!r} off", port.safe_state)
        return port, t_lo, t_hi

    def detector(self, tap: str, ref: ChannelRef, n: int) -> DigitizerDetector:
        """DetectorPort of one homodyne array (n detectors) on a digitiser channel; error taps on the backward arm."""
        if ref.instrument not in self._digitizers:
            self._digitizers[ref.instrument] = DigitizerArrays(self.link(ref.instrument), self.clock)
        return self._digitizers[ref.instrument].port(ref.channel, n, "backward" if tap == "error" else "forward")
