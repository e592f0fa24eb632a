"""What every bench's station wiring shares: connect-on-first-use links, the laser, software ramp policies."""

from __future__ import annotations

import math

from lightloop.errors import ConfigError
from lightloop.hal.safety import LinearLaserModel, RampPolicy, Range, SafeLaser
from lightloop.station._clock import BenchClock
from lightloop.station._instruments import DEFAULT_RAMPS, InstrumentSpec
from lightloop.station._link import Link
from lightloop.station._roles import LaserRole
from lightloop.station._station import Station
from lightloop.station.adapters.laser_controller import LaserControllerDevice
from lightloop.station.adapters.power_meter import PowerMeterDevice

__all__ = ["RolePorts", "ramp_policy"]


def ramp_policy(spec: InstrumentSpec, key: str) -> RampPolicy:
    """Software ramp of one output from the instrument's rate limit (V/s, A/s): configured (> 0, checked when the
    config loads) or the driver's conservative default (`DEFAULT_RAMPS`); never unramped."""
    r = spec.limit(key)
    rate = r.high if r is not None else DEFAULT_RAMPS.get(spec.driver, {}).get(key, math.nan)
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"instruments ({spec.driver}): limits.{key} is {rate}; expected a ramp rate > 0")
    return RampPolicy(rate, spec.ramp_interval)


class RolePorts:
    """Base of a bench's station wiring: one Station, the instrument specs, the light source, one BenchClock."""

    def __init__(self, station: Station, instruments: dict[str, InstrumentSpec], source: LaserRole,
                 addresses: dict[str, str] | None = None) -> None:
        self.station, self.instruments, self.source = station, instruments, source
        self.addresses = addresses or {}
        self.clock = BenchClock()

    def link(self, name: str) -> Link:
        """The instrument's link, connecting on first use (at the wire twin's address when one serves it)."""
        if name not in self.station.links:
            spec = self.instruments[name]
            self.station.connect(name, spec, self.addresses.get(name, spec.address or ""))
        return self.station.links[name]

    def laser(self) -> SafeLaser:
        """The light source: ramped current within the current and power limits (optional power meter read-back)."""
        s = self.source
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

