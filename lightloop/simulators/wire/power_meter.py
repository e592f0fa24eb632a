"""Wire twin of ``lightloop.drivers.power_meter``: an optical power meter (SCPI)."""

from __future__ import annotations

from collections.abc import Callable

from lightloop.simulators.wire._scpi import ScpiDevice, _fmt, _parse_bool

__all__ = ["PowerMeterTwin"]


class PowerMeterTwin(ScpiDevice):
    """Optical power meter reading `power()` (W) of a light source, optionally through a tap fraction."""

    idn = "lightloop,WIRE-TWIN-PM,0,1.0"

    def __init__(self, name: str, power: Callable[[], float], fraction: float = 1.0) -> None:
        super().__init__(name)
        self._power, self.fraction = power, float(fraction)
        self.reboot()
        self.prop("SENS:POW:UNIT", set=lambda a: None)
        self.prop("MEAS:POW", get=lambda: _fmt(self.fraction * self._power()))
        self.prop("SENS:CORR:WAV", get=lambda: _fmt(self.wavelength), set=lambda a: setattr(self, "wavelength", float(a)))
        self.prop("SENS:POW:RANG:AUTO", get=lambda: "1" if self.auto else "0",
                  set=lambda a: setattr(self, "auto", _parse_bool(a)))
        self.prop("SENS:POW:RANG", get=lambda: _fmt(self.range), set=lambda a: setattr(self, "range", float(a)))
        self.prop("SENS:AVER:COUN", get=lambda: str(self.averaging), set=lambda a: setattr(self, "averaging", int(a)))
        self.pattern(r"SENS:CORR:COLL:ZERO", lambda m: None)

    def reboot(self) -> None:
        """Power cycle: default wavelength (nm), auto range, range (W) and averaging; empty error queue."""
        self.wavelength, self.auto, self.range, self.averaging = 780.0, True, 0.01, 1
        self.errors.clear()
