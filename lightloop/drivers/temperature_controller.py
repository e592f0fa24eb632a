"""Temperature controller for a resistive (vapor-cell) heater with setpoint ramping (SCPI).

Wire grammar (ASCII lines terminated by ``\\n``; temperatures in K, ramp rate in K/min):

=========================================  ================================================
command                                    reply
=========================================  ================================================
``*IDN?``                                  ``vendor,model,serial,firmware``
``*RST`` / ``*CLS``                        (none)
``SYST:ERR?``                              ``+0,"No error"`` or ``<code>,"<text>"``
``UNIT:TEMP K``                            (none; sent once at connect)
``SOUR:TEMP <K>`` / ``SOUR:TEMP?``         setpoint (the ramp target)
``SOUR:TEMP:LIM <K>`` / ``SOUR:TEMP:LIM?`` hardware over-temperature limit; bounds setpoint
``SOUR:TEMP:RAMP:RATE <K/min>`` / ``?``    setpoint ramp rate
``SOUR:TEMP:RAMP:STAT ON|OFF`` / ``?``     ramp enable; query replies ``1``/``0``
``OUTP ON|OFF`` / ``OUTP?``                heater output; query replies ``1``/``0``
``MEAS:TEMP?``                             measured sensor temperature (K)
``MEAS:POW?``                              heater power (W)
=========================================  ================================================

Compound commands (``a;b?``, one reply line, replies joined by ``;``) make a verified write or a state
read one transaction: ``SOUR:TEMP <K>;SOUR:TEMP?`` (write + read-back) and
``MEAS:TEMP?;OUTP?;SOUR:TEMP:RAMP:STAT?;SOUR:TEMP:RAMP:RATE?;SOUR:TEMP?`` (state).
"""

from __future__ import annotations

from typing import Any

from qcodes.parameters import Parameter
from qcodes.validators import Bool, Numbers

from lightloop.drivers._base import ScpiVisaInstrument, format_number

__all__ = ["TemperatureController"]


def _on_off(value: bool) -> str:
    return "ON" if value else "OFF"


def _remember(param: Parameter, value: float) -> None:
    """Cache a read-back; one outside the validator (moved by hand) only invalidates the cache."""
    try:
        param.cache.set(value)
    except ValueError:
        param.cache.invalidate()


class TemperatureController(ScpiVisaInstrument):
    """Heater temperature controller; temperatures in K, ramp rate in K/min, heater power in W."""

    family = "temperature controller"

    def __init__(
        self,
        name: str,
        address: str,
        temperature_range: tuple[float, float] = (273.15, 473.15),
        max_ramp_rate: float = 20.0,
        **kwargs: Any,
    ) -> None:
        """Connect to ``address``; ``temperature_range`` (K) and ``max_ramp_rate`` (K/min) are hardware ranges."""
        super().__init__(name, address, **kwargs)
        self.temperature_range = (float(temperature_range[0]), float(temperature_range[1]))
        self.max_ramp_rate = float(max_ramp_rate)

        self.temperature_limit: Parameter = self.add_parameter(
            "temperature_limit",
            label="Over-temperature limit",
            unit="K",
            get_cmd="SOUR:TEMP:LIM?",
            get_parser=self.float_parser("SOUR:TEMP:LIM?"),
            set_cmd=self._set_limit,
            vals=Numbers(*self.temperature_range),
            docstring="Controller over-temperature cut-off in kelvin; also bounds `setpoint`.",
        )
        self.setpoint: Parameter = self.add_parameter(
            "setpoint",
            label="Temperature setpoint",
            unit="K",
            get_cmd="SOUR:TEMP?",
            get_parser=self.float_parser("SOUR:TEMP?"),
            set_cmd="SOUR:TEMP {}",
            set_parser=format_number,
            vals=Numbers(*self.temperature_range),
            docstring="Temperature setpoint in kelvin (approached at ramp_rate when ramp is on).",
        )
        self.ramp_rate: Parameter = self.add_parameter(
            "ramp_rate",
            label="Setpoint ramp rate",
            unit="K/min",
            get_cmd="SOUR:TEMP:RAMP:RATE?",
            get_parser=self.float_parser("SOUR:TEMP:RAMP:RATE?"),
            set_cmd="SOUR:TEMP:RAMP:RATE {}",
            set_parser=format_number,
            vals=Numbers(0.0, self.max_ramp_rate),
            docstring="Setpoint ramp rate in kelvin per minute.",
        )
        self.ramp_enabled: Parameter = self.add_parameter(
            "ramp_enabled",
            label="Setpoint ramp enabled",
            get_cmd="SOUR:TEMP:RAMP:STAT?",
            get_parser=self.bool_parser("SOUR:TEMP:RAMP:STAT?"),
            set_cmd="SOUR:TEMP:RAMP:STAT {}",
            set_parser=_on_off,
            vals=Bool(),
            docstring="True: setpoint changes ramp at ramp_rate; False: step.",
        )
        self.output: Parameter = self.add_parameter(
            "output",
            label="Heater output",
            get_cmd="OUTP?",
            get_parser=self.bool_parser("OUTP?"),
            set_cmd="OUTP {}",
            set_parser=_on_off,
            vals=Bool(),
            docstring="Heater output / control loop state (True = heating).",
        )
        self.temperature: Parameter = self.add_parameter(
            "temperature",
            label="Measured temperature",
            unit="K",
            get_cmd="MEAS:TEMP?",
            get_parser=self.float_parser("MEAS:TEMP?"),
            set_cmd=False,
            docstring="Measured sensor temperature in kelvin.",
        )
        self.heater_power: Parameter = self.add_parameter(
            "heater_power",
            label="Heater power",
            unit="W",
            get_cmd="MEAS:POW?",
            get_parser=self.float_parser("MEAS:POW?"),
            set_cmd=False,
            docstring="Electrical heater power in watts.",
        )
        self._verify_identity()
        try:
            self.write("UNIT:TEMP K")
            self._bound_setpoint(self.temperature_limit.get())
        except Exception:
            self.close()
            raise

    def _bound_setpoint(self, limit: float) -> None:
        low, high = self.temperature_range
        self.setpoint.vals = Numbers(low, max(low, min(high, float(limit))))

    def _set_limit(self, limit: float) -> None:
        self.write(f"SOUR:TEMP:LIM {format_number(limit)}")
        self._bound_setpoint(limit)

    def output_off(self) -> None:
        """Switch the heater output off (``OUTP OFF``)."""
        self.output.set(False)

    def set_setpoint_verified(self, kelvin: float) -> float:
        """Write the set-point (K) and read it back in ONE transaction (``SOUR:TEMP x;SOUR:TEMP?``); returns the read-back."""
        self.setpoint.validate(kelvin)
        cmd = f"SOUR:TEMP {format_number(kelvin)};SOUR:TEMP?"
        value = self.float_parser(cmd)(self.ask(cmd))
        _remember(self.setpoint, value)
        return value

    def read_state(self) -> dict[str, float | bool]:
        """Reading (K), output, ramp on, ramp rate (K/min) and set-point (K) in ONE compound query."""
        cmd = "MEAS:TEMP?;OUTP?;SOUR:TEMP:RAMP:STAT?;SOUR:TEMP:RAMP:RATE?;SOUR:TEMP?"
        reply = self.ask(cmd)
        parts = reply.strip().split(";")
        if len(parts) != 5:
            raise self._garbage(cmd, reply, "5 replies separated by ';'")
        num, flag = self.float_parser(cmd), self.bool_parser(cmd)
        return {"temperature": num(parts[0]), "output": flag(parts[1]), "ramp_on": flag(parts[2]),
                "ramp_rate": num(parts[3]), "setpoint": num(parts[4])}
