"""Optical power meter (SCPI, Thorlabs PM100-like command set).

Wire grammar (ASCII lines terminated by ``\\n``; powers in W, wavelength in nm):

======================================  ============================================
command                                 reply
======================================  ============================================
``*IDN?``                               ``vendor,model,serial,firmware``
``*RST`` / ``*CLS``                     (none)
``SYST:ERR?``                           ``+0,"No error"`` or ``<code>,"<text>"``
``SENS:POW:UNIT W``                     (none; sent once at connect)
``MEAS:POW?``                           ``<W>``
``SENS:CORR:WAV <nm>`` / ``?``          ``<nm>``
``SENS:POW:RANG:AUTO ON|OFF`` / ``?``   ``1``/``0``
``SENS:POW:RANG <W>`` / ``?``           ``<W>`` (manual range upper bound)
``SENS:AVER:COUN <n>`` / ``?``          ``<n>`` (samples averaged per reading)
``SENS:CORR:COLL:ZERO``                 (none; dark-zero the sensor)
======================================  ============================================
"""

from __future__ import annotations

from typing import Any

from qcodes.parameters import Parameter
from qcodes.validators import Bool, Ints, Numbers

from lightloop.drivers._base import ScpiVisaInstrument, format_number

__all__ = ["OpticalPowerMeter"]


def _on_off(value: bool) -> str:
    return "ON" if value else "OFF"


class OpticalPowerMeter(ScpiVisaInstrument):
    """Single-sensor optical power meter; power in W, wavelength in nm."""

    family = "power meter"

    def __init__(
        self,
        name: str,
        address: str,
        wavelength_range: tuple[float, float] = (400.0, 1100.0),
        max_power: float = 0.5,
        **kwargs: Any,
    ) -> None:
        """Connect to ``address``; ``wavelength_range`` (nm) and ``max_power`` (W) are the sensor's ranges."""
        super().__init__(name, address, **kwargs)
        self.wavelength_range = (float(wavelength_range[0]), float(wavelength_range[1]))
        self.max_power = float(max_power)

        self.power: Parameter = self.add_parameter(
            "power",
            label="Optical power",
            unit="W",
            get_cmd="MEAS:POW?",
            get_parser=self.float_parser("MEAS:POW?"),
            set_cmd=False,
            docstring="Measured optical power in watts (one averaged reading).",
        )
        self.wavelength: Parameter = self.add_parameter(
            "wavelength",
            label="Correction wavelength",
            unit="nm",
            get_cmd="SENS:CORR:WAV?",
            get_parser=self.float_parser("SENS:CORR:WAV?"),
            set_cmd="SENS:CORR:WAV {}",
            set_parser=format_number,
            vals=Numbers(*self.wavelength_range),
            docstring="Wavelength in nm used for the sensor responsivity correction.",
        )
        self.auto_range: Parameter = self.add_parameter(
            "auto_range",
            label="Power auto-range",
            get_cmd="SENS:POW:RANG:AUTO?",
            get_parser=self.bool_parser("SENS:POW:RANG:AUTO?"),
            set_cmd="SENS:POW:RANG:AUTO {}",
            set_parser=_on_off,
            vals=Bool(),
            docstring="Automatic power ranging (True = on).",
        )
        self.power_range: Parameter = self.add_parameter(
            "power_range",
            label="Power range",
            unit="W",
            get_cmd="SENS:POW:RANG?",
            get_parser=self.float_parser("SENS:POW:RANG?"),
            set_cmd="SENS:POW:RANG {}",
            set_parser=format_number,
            vals=Numbers(0.0, self.max_power),
            docstring="Manual range upper bound in watts (used when auto_range is off).",
        )
        self.averaging: Parameter = self.add_parameter(
            "averaging",
            label="Averaging count",
            get_cmd="SENS:AVER:COUN?",
            get_parser=self.int_parser("SENS:AVER:COUN?"),
            set_cmd="SENS:AVER:COUN {}",
            vals=Ints(1, 10000),
            docstring="Number of samples averaged per reading (about 0.3 ms each).",
        )
        self._verify_identity()
        try:
            self.write("SENS:POW:UNIT W")
        except Exception:
            self.close()
            raise

    def zero(self) -> None:
        """Dark-zero the sensor (``SENS:CORR:COLL:ZERO``); block the beam first."""
        self.write("SENS:CORR:COLL:ZERO")
