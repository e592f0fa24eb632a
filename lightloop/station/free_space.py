"""The free-space SA bench's ports on instruments: each role's port built from its station entry (docs/architecture.md).

The bench builder (``lightloop.benches.free_space``) asks this class for the port of every role whose
instrument has a driver, and wraps each in the same HAL role as the in-process twin's port. Connections
open on first use; every output gets its safe-state action on the station in the order the ports are
made (laser first, then displays, amplifier sources, heaters).
"""

from __future__ import annotations

import math

from lightloop.errors import ConfigError
from lightloop.hal.safety import LinearLaserModel, RampPolicy, Range, SafeLaser, SafeTemperatureControl, SafeVoltageBank
from lightloop.station._clock import BenchClock
from lightloop.station._instruments import DEFAULT_RAMPS, InstrumentSpec
from lightloop.station._link import Link
from lightloop.station._roles import CellRole, ChannelRef, DisplayRole, FreeSpaceRoles, WeightRole
from lightloop.station._station import Station
from lightloop.station.adapters._gain import GainControl
from lightloop.station.adapters.digitizer import DigitizerArrays, DigitizerDetector
from lightloop.station.adapters.dmd import DMDWeightBlocks
from lightloop.station.adapters.laser_controller import LaserControllerDevice
from lightloop.station.adapters.power_meter import PowerMeterDevice
from lightloop.station.adapters.scpi_source import ScpiSourceDevice
from lightloop.station.adapters.slm import SLMFieldSource, SLMWeightBlocks
from lightloop.station.adapters.temperature_controller import TemperatureControllerDevice

__all__ = ["FreeSpaceStation", "ramp_policy"]


def ramp_policy(spec: InstrumentSpec, key: str) -> RampPolicy:
    """Software ramp of one output from the instrument's rate limit (V/s, A/s): configured (> 0, checked when the
    config loads) or the driver's conservative default (`DEFAULT_RAMPS`); never unramped."""
    r = spec.limit(key)
    rate = r.high if r is not None else DEFAULT_RAMPS.get(spec.driver, {}).get(key, math.nan)
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"instruments ({spec.driver}): limits.{key} is {rate}; expected a ramp rate > 0")
    return RampPolicy(rate, spec.ramp_interval)


class FreeSpaceStation:
    """Ports of a free-space bench's driver-served roles, connected through one Station."""

    def __init__(self, station: Station, instruments: dict[str, InstrumentSpec], roles: FreeSpaceRoles,
                 addresses: dict[str, str] | None = None) -> None:
        self.station, self.instruments, self.roles = station, instruments, roles
        self.addresses = addresses or {}
        self.clock = BenchClock()
        self._banks: dict[str, SafeVoltageBank] = {}
        self._digitizers: dict[str, DigitizerArrays] = {}

    def link(self, name: str) -> Link:
        """The instrument's link, connecting on first use (at the wire twin's address when one serves it)."""
        if name not in self.station.links:
            spec = self.instruments[name]
            self.station.connect(name, spec, self.addresses.get(name, spec.address or ""))
        return self.station.links[name]

    def laser(self) -> SafeLaser:
        """The light source: ramped current within the current and power limits (optional power meter read-back)."""
        s = self.roles.source
        spec = self.instruments[s.laser]
        cur = spec.limit("current") or Range(0.0, math.inf, "A", "current")
        dev = LaserControllerDevice(self.link(s.laser), cur, self.clock)
        pm = None
        if s.power_meter and self.instruments[s.power_meter].driver != "twin":
            pm = PowerMeterDevice(self.link(s.power_meter))
        power = spec.limit("power")
        laser = SafeLaser(dev, dev.current_limit, LinearLaserModel(s.threshold_current, s.slope_efficiency),
                          power.high if power else math.inf, ramp_policy(spec, "current_ramp"),
                          read_power=pm.read_power if pm else None)
        self.station.add_safe_action(f"laser {s.laser!r} off", laser.safe_state)
        return laser

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
