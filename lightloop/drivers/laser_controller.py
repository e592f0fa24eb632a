"""Laser diode current + TEC controller (SCPI, Thorlabs ITC4000/LDC-like command set).

Wire grammar (ASCII lines terminated by ``\\n``; currents in A, temperatures in K,
numbers formatted like ``0.05``/``298.15``):

==================================  =====================================================
command                             reply
==================================  =====================================================
``*IDN?``                           ``vendor,model,serial,firmware``
``*RST`` / ``*CLS``                 (none)
``SYST:ERR?``                       ``+0,"No error"`` or ``<code>,"<text>"``
``UNIT:TEMP K``                     (none; sent once at connect)
``SOUR:CURR <A>`` / ``SOUR:CURR?``  laser current setpoint
``SOUR:CURR:LIM <A>`` / ``?``       laser current limit (hardware protection)
``OUTP ON|OFF`` / ``OUTP?``         laser output; query replies ``1``/``0``
``MEAS:CURR?`` / ``MEAS:VOLT?``     measured laser current (A) / diode voltage (V)
``SOUR2:TEMP <K>`` / ``SOUR2:TEMP?``  TEC temperature setpoint
``OUTP2 ON|OFF`` / ``OUTP2?``       TEC output; query replies ``1``/``0``
``MEAS:TEMP?``                      measured TEC temperature (K)
==================================  =====================================================

Verified write in one transaction (compound command, one reply line): ``SOUR:CURR <A>;SOUR:CURR?``.
"""

from __future__ import annotations

from typing import Any

from qcodes.parameters import Parameter
from qcodes.validators import Bool, Numbers

from lightloop.drivers._base import ScpiVisaInstrument, format_number

__all__ = ["LaserDiodeController"]


def _on_off(value: bool) -> str:
    return "ON" if value else "OFF"


def _remember(param: Parameter, value: float) -> None:
    """Cache a read-back; one outside the validator (moved by hand) only invalidates the cache."""
    try:
        param.cache.set(value)
    except ValueError:
        param.cache.invalidate()


class LaserDiodeController(ScpiVisaInstrument):
    """Laser diode current source with TEC; currents in A, temperatures in K."""

    family = "laser controller"

    def __init__(
        self,
        name: str,
        address: str,
        i_max: float = 0.5,
        tec_range: tuple[float, float] = (278.15, 318.15),
        **kwargs: Any,
    ) -> None:
        """Connect to ``address``; ``i_max`` A is the hardware current range, ``tec_range`` the TEC range in K."""
        super().__init__(name, address, **kwargs)
        self.i_max = float(i_max)
        self.tec_range = (float(tec_range[0]), float(tec_range[1]))

        self.current_limit: Parameter = self.add_parameter(
            "current_limit",
            label="Laser current limit",
            unit="A",
            get_cmd="SOUR:CURR:LIM?",
            get_parser=self.float_parser("SOUR:CURR:LIM?"),
            set_cmd=self._set_current_limit,
            vals=Numbers(0.0, self.i_max),
            docstring="Hardware laser current limit in amperes; also bounds `current`.",
        )
        self.current: Parameter = self.add_parameter(
            "current",
            label="Laser current setpoint",
            unit="A",
            get_cmd="SOUR:CURR?",
            get_parser=self.float_parser("SOUR:CURR?"),
            set_cmd="SOUR:CURR {}",
            set_parser=format_number,
            vals=Numbers(0.0, self.i_max),
            docstring="Laser drive current setpoint in amperes (0..current_limit).",
        )
        self.output: Parameter = self.add_parameter(
            "output",
            label="Laser output",
            get_cmd="OUTP?",
            get_parser=self.bool_parser("OUTP?"),
            set_cmd="OUTP {}",
            set_parser=_on_off,
            vals=Bool(),
            docstring="Laser output state (True = emitting).",
        )
        self.measured_current: Parameter = self.add_parameter(
            "measured_current",
            label="Measured laser current",
            unit="A",
            get_cmd="MEAS:CURR?",
            get_parser=self.float_parser("MEAS:CURR?"),
            set_cmd=False,
            docstring="Measured laser current in amperes.",
        )
        self.measured_voltage: Parameter = self.add_parameter(
            "measured_voltage",
            label="Measured diode voltage",
            unit="V",
            get_cmd="MEAS:VOLT?",
            get_parser=self.float_parser("MEAS:VOLT?"),
            set_cmd=False,
            docstring="Measured laser diode forward voltage in volts.",
        )
        self.tec_setpoint: Parameter = self.add_parameter(
            "tec_setpoint",
            label="TEC temperature setpoint",
            unit="K",
            get_cmd="SOUR2:TEMP?",
            get_parser=self.float_parser("SOUR2:TEMP?"),
            set_cmd="SOUR2:TEMP {}",
            set_parser=format_number,
            vals=Numbers(*self.tec_range),
            docstring="TEC temperature setpoint in kelvin.",
        )
        self.tec_output: Parameter = self.add_parameter(
            "tec_output",
            label="TEC output",
            get_cmd="OUTP2?",
            get_parser=self.bool_parser("OUTP2?"),
            set_cmd="OUTP2 {}",
            set_parser=_on_off,
            vals=Bool(),
            docstring="TEC control loop state (True = regulating).",
        )
        self.temperature: Parameter = self.add_parameter(
            "temperature",
            label="Measured TEC temperature",
            unit="K",
            get_cmd="MEAS:TEMP?",
            get_parser=self.float_parser("MEAS:TEMP?"),
            set_cmd=False,
            docstring="Measured laser mount temperature in kelvin.",
        )
        self._verify_identity()
        try:
            self.write("UNIT:TEMP K")
            self._bound_current(self.current_limit.get())
        except Exception:
            self.close()
            raise

    def _bound_current(self, limit: float) -> None:
        self.current.vals = Numbers(0.0, min(self.i_max, float(limit)))

    def _set_current_limit(self, limit: float) -> None:
        self.write(f"SOUR:CURR:LIM {format_number(limit)}")
        self._bound_current(limit)

    def set_current_verified(self, amps: float) -> float:
        """Write the current set-point (A) and read it back in ONE transaction (``SOUR:CURR x;SOUR:CURR?``)."""
        self.current.validate(amps)
        cmd = f"SOUR:CURR {format_number(amps)};SOUR:CURR?"
        value = self.float_parser(cmd)(self.ask(cmd))
        _remember(self.current, value)
        return value

    def output_off(self) -> None:
        """Switch the laser output off (``OUTP OFF``); the TEC keeps regulating."""
        self.output.set(False)

    def tec_off(self) -> None:
        """Switch the TEC control loop off (``OUTP2 OFF``)."""
        self.tec_output.set(False)
