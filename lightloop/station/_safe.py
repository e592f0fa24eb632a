"""Safe state per driver, without a bench: what `lightloop safe` does to each instrument of a config.

The in-run safe state is the station's sequence of role actions (laser off first, then amplifier sources,
heaters, displays). When no run is alive (a process killed with -9, a crashed host, a power cut of the
PC only), ``lightloop safe --config FILE`` connects to every instrument of the config and applies the
driver-level sequence below, in the same order of hazard: light first, then voltages, then heat.
Each action is verified by reading the output state back where the protocol allows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightloop.errors import InstrumentError

__all__ = ["SAFE_ORDER", "SAFE_ACTIONS", "safe_driver"]


def _laser(drv: Any) -> str:
    drv.output(False)
    drv.current(0.0)
    if bool(drv.output()):
        raise InstrumentError("laser output still reads ON after OUTP OFF")
    return "output off, current set-point 0 A"


def _awg(drv: Any) -> str:
    n = int(drv.n_channels)
    drv.output_off()                  # verified by its read-back in the same transaction
    drv.zero()                        # every pattern of the sequence 0, verified by the sequence's CRC-32
    on = [k + 1 for k, state in enumerate(drv.get_outputs()) if state]
    if on:
        raise InstrumentError(f"IQ channel(s) {on} still read output ON after OUTP OFF")
    return f"{n} IQ channel(s) output off, sequence memory zero"


def _temperature(drv: Any) -> str:
    drv.output(False)
    if bool(drv.output()):
        raise InstrumentError("heater output still reads ON after OUTP OFF")
    return "heater output off (the cell cools passively)"


def _source(drv: Any) -> str:
    drv.zero_all()
    drv.output_off()
    on = [k + 1 for k in range(int(drv.n_channels)) if bool(drv.channels[k].output.get())]
    if on:
        raise InstrumentError(f"channel(s) {on} still read output ON after OUTP OFF")
    return f"{int(drv.n_channels)} channel(s) at 0 V, outputs off"


def _heaters(drv: Any) -> str:
    drv.zero_all()
    volts = [float(v) for v in drv.get_voltages()]
    if any(abs(v) > 1e-6 for v in volts):
        raise InstrumentError(f"heater voltages read {volts} V after zeroing; expected 0 V")
    return f"{len(volts)} heater channel(s) at 0 V"


def _dmd(drv: Any) -> str:
    drv.stop()
    drv.blank()
    return "sequence stopped, every mirror off"


def _passive(drv: Any) -> str:
    return "passive (emits and drives nothing)"


#: driver -> action on a connected driver instance; returns what was done (raises if it did not verify)
SAFE_ACTIONS: dict[str, Callable[[Any], str]] = {
    "laser_controller": _laser,
    "awg": _awg,              # IQ modulator drive: outputs off, then zeros
    "scpi_source": _source,
    "qontrol_heater": _heaters,
    "temperature_controller": _temperature,
    "dmd": _dmd,
    "slm": _passive,          # a phase modulator: dark once the laser is off
    "digitizer": _passive,
    "power_meter": _passive,
}

#: hazard order: light, then high voltages, then heat, then the rest
SAFE_ORDER = ("laser_controller", "awg", "scpi_source", "qontrol_heater", "temperature_controller", "dmd", "slm",
              "digitizer", "power_meter")


def safe_driver(driver: str) -> Callable[[Any], str] | None:
    """The safe-state action of a driver family, or None when none is known (check that instrument by hand)."""
    return SAFE_ACTIONS.get(driver)
