"""The integrated chip's ports on instruments: each role's port built from its station entry (docs/architecture.md).

The bench builder (``lightloop.benches.integrated_chip``) asks this class for the port of every role whose
instrument has a driver and wraps each in the same HAL role as the in-process twin's port:

==========================  ==============================================  ===================================
HAL role                    port here                                       instrument (driver family)
==========================  ==============================================  ===================================
laser                       SafeLaser (ramped current, P-I power limit)     laser_controller (+ power_meter)
ForwardSource               AWGFieldBlock (IQ block + output gate)          awg
FieldInjector (x2 / layer)  AWGFieldBlock (outputs on, zero sequence idle)  awg
PhaseShifterBank            VoltageBlock of a SafeVoltageBank               qontrol_heater or scpi_source
EOActivation                ActivationReadout: bias VoltageBlock + arrays   scpi_source/qontrol + digitizer
MeshMonitor                 TapArray (integrated over the batch exposure)   digitizer
CoherentReceiver (x2)       FieldArray (I/Q interleaved)                    digitizer
PowerDetector               PowerArray                                      digitizer
==========================  ==============================================  ===================================

Connections open on first use; every output gets its safe-state action on the station in the order the ports
are made (laser first, then the IQ sources, heaters and biases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError
from lightloop.hal.safety import Range, SafeVoltageBank
from lightloop.station._instruments import InstrumentSpec
from lightloop.station._ports import RolePorts, ramp_policy
from lightloop.station._roles import ChipChannelRef, ChipRoles, HeaterBankRole, IQBlockRole
from lightloop.station._station import Station
from lightloop.station.adapters.awg import AWGFieldBlock
from lightloop.station.adapters.chip_detectors import ChipDigitizer, FieldArray, PowerArray, TapArray
from lightloop.station.adapters.qontrol_heater import QontrolHeaterDevice
from lightloop.station.adapters.scpi_source import ScpiSourceDevice

__all__ = ["ChipStation", "VoltageBlock", "ActivationReadout"]


class VoltageBlock:
    """HeaterPort on a contiguous block of a SafeVoltageBank's channels (V; one ramped, verified write per call)."""

    def __init__(self, bank: SafeVoltageBank, first: int, count: int, name: str) -> None:
        if first < 0 or first + count > bank.n_channels:
            raise ConfigError(f"{name}: channels {first}..{first + count - 1} outside the {bank.n_channels} channels "
                              f"of {bank.name!r}; expected a block inside the instrument")
        self.bank, self.first, self.n_channels, self.name = bank, int(first), int(count), name

    def set_voltages(self, voltages: Sequence[float] | NDArray[np.float64]) -> None:
        """Every channel of the block (V)."""
        v = np.asarray(voltages, np.float64).reshape(-1)
        if v.size != self.n_channels:
            raise ValueError(f"{self.name}: expected {self.n_channels} voltages, got {v.size}")
        self.bank.set_channels({self.first + k: float(x) for k, x in enumerate(v)})

    def get_voltages(self) -> NDArray[np.float64]:
        """Set-points read back (V)."""
        return self.bank.get_voltages()[self.first: self.first + self.n_channels].copy()


class ActivationReadout:
    """ActivationPort: ring biases on a voltage block, photodiode and slope-output arrays on digitiser channels."""

    def __init__(self, bias: VoltageBlock, power: PowerArray, slope: PowerArray) -> None:
        if not bias.n_channels == power.n_channels == slope.n_channels:
            raise ConfigError(f"{bias.name}: {bias.n_channels} biases for {power.n_channels} photodiodes and "
                              f"{slope.n_channels} slope outputs; expected one of each per neuron")
        self.bias, self.power, self.slope = bias, power, slope
        self.n_channels = bias.n_channels

    def set_bias_voltages(self, volts: NDArray[np.float64]) -> None:
        """Ring bias voltages (V)."""
        self.bias.set_voltages(volts)

    def acquire_power(self) -> NDArray[np.float32]:
        """Photodiode readings (batch, n)."""
        return self.power.acquire()

    def acquire_slope(self) -> NDArray[np.float32]:
        """Slope-output readings (batch, n)."""
        return self.slope.acquire()


class ChipStation(RolePorts):
    """Ports of an integrated chip's driver-served roles, connected through one Station."""

    def __init__(self, station: Station, instruments: dict[str, InstrumentSpec], roles: ChipRoles,
                 addresses: dict[str, str] | None = None) -> None:
        super().__init__(station, instruments, roles.source, addresses)
        self.roles = roles
        self._banks: dict[str, SafeVoltageBank] = {}
        self._digitizers: dict[str, ChipDigitizer] = {}

    # --- IQ sources -------------------------------------------------------------------------------------
    def iq_block(self, role: IQBlockRole, label: str, max_field: float, gate: bool = False) -> AWGFieldBlock:
        """ForwardLightPort (gate=True: outputs switched by the HAL) or FieldInjectionPort (outputs on, zero idle)."""
        spec = self.instruments[role.instrument]
        port = AWGFieldBlock(self.link(role.instrument), range(role.first_channel, role.first_channel + role.count),
                             role.full_scale_field, max_field, role.amplitude, spec.limit("amplitude"), label,
                             self.clock)
        self.station.add_safe_action(f"{label} IQ block {port.identity!r} dark", port.dark)
        port.write_fields(None)
        if not gate:
            port.set_enabled(True)
        return port

    # --- voltage banks -----------------------------------------------------------------------------------
    def _bank(self, name: str) -> SafeVoltageBank:
        """The heater driver or source `name` as one ramped bank (an SCPI source's block channels closed at 0 V)."""
        if name not in self._banks:
            spec = self.instruments[name]
            lim = spec.limit("voltage") or Range(-math.inf, math.inf, "V")
            if spec.driver == "qontrol_heater":
                dev = QontrolHeaterDevice(self.link(name), lim, spec.limit("current"))
                bank = SafeVoltageBank(dev, lim, ramp_policy(spec, "voltage_ramp"))
                self.station.add_safe_action(f"heaters {name!r} to 0 V", bank.safe_state)
            else:
                src = ScpiSourceDevice(self.link(name))
                bank = SafeVoltageBank(src, lim, ramp_policy(spec, "voltage_ramp"))
                blocks = [b for b in (*self.roles.phase_shifters, *self.roles.activation_bias) if b.instrument == name]
                chans = sorted({b.first_channel - 1 + k for b in blocks for k in range(b.count)})
                ilim = spec.limit("current")
                src.enable(chans, None if ilim is None else ilim.high)
                self.station.add_safe_action(f"source {name!r} to 0 V, outputs off", src.disable)
            self._banks[name] = bank
        return self._banks[name]

    def voltage_block(self, role: HeaterBankRole, label: str) -> VoltageBlock:
        """HeaterPort of one block of heater (or bias) channels, in the role's channel order."""
        first = role.first_channel - (1 if self.instruments[role.instrument].driver == "scpi_source" else 0)
        return VoltageBlock(self._bank(role.instrument), first, role.count, f"{self.station.source}: {label}")

    # --- detectors ---------------------------------------------------------------------------------------
    def _digitizer(self, name: str) -> ChipDigitizer:
        if name not in self._digitizers:
            self._digitizers[name] = ChipDigitizer(self.link(name), self.clock)
        return self._digitizers[name]

    def powers(self, ref: ChipChannelRef, n: int) -> PowerArray:
        """PhotodiodePort of n detectors on one digitiser channel."""
        return PowerArray(self._digitizer(ref.instrument), ref.channel, n, ref.volts_per_unit)

    def fields(self, ref: ChipChannelRef, n: int) -> FieldArray:
        """CoherentReceiverPort of n IQ receivers on one digitiser channel."""
        return FieldArray(self._digitizer(ref.instrument), ref.channel, n, ref.volts_per_unit)

    def taps(self, ref: ChipChannelRef, n_taps: int) -> TapArray:
        """TapMonitorPort of one mesh layer's n_taps monitors on one digitiser channel."""
        return TapArray(self._digitizer(ref.instrument), ref.channel, n_taps, ref.volts_per_unit)

    def activation(self, layer: int, n: int) -> ActivationReadout:
        """ActivationPort of hidden layer `layer` (n neurons)."""
        det = self.roles.detectors
        bias = self.voltage_block(self.roles.activation_bias[layer], f"roles.activation_bias[{layer}]")
        return ActivationReadout(bias, self.powers(det.activation_power[layer], n),
                                 self.powers(det.activation_slope[layer], n))
