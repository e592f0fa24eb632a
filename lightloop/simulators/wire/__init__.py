"""Wire-level twin: a loopback (127.0.0.1) server answering each instrument's own protocol from the emulator.

One module per instrument, named after the driver module it twins (``lightloop.drivers.<driver>``):

``temperature_controller``  twins ``drivers.temperature_controller`` (SCPI): ``TemperatureControllerTwin``
``laser_controller``        twins ``drivers.laser_controller`` (SCPI): ``LaserControllerTwin``
``power_meter``             twins ``drivers.power_meter`` (SCPI): ``PowerMeterTwin``
``scpi_source``             twins ``drivers.scpi_source`` (SCPI): ``ScpiSourceTwin``
``digitizer``               twins ``drivers.digitizer`` (SCPI, IEEE 488.2 blocks): ``DigitizerTwin``
``slm``                     twins ``drivers.slm`` (TCP frame protocol): ``SLMTwin``
``qontrol_heater``          twins ``drivers.qontrol_heater`` (ASCII lines on a serial URL): ``QontrolTwin``
``awg``                     twins ``drivers.awg`` (SCPI, IEEE 488.2 sequence uploads): ``AWGTwin``
``dmd``                     twins ``drivers.dmd`` (in-process stand-in for the vendor SDK, since ctypes cannot
                            load a Python "library"): ``LoopbackALP``, ``dmd_weight_sink``

Shared pieces:

``server``     the selectors-based TCP server, command log, fault injection
``_scpi``      the SCPI line machinery (``ScpiDevice``, line sessions, ``ieee_block``) of the SCPI twins
``free_space`` the free-space SA bench behind those protocols (one FreeSpaceEmulator)
``integrated_chip`` the integrated chip behind those protocols (one ChipEmulator)
``_report``    fault plan of a config, the twin's end-of-run report (bench-independent)
"""

from lightloop.simulators.wire.server import LOOPBACK, WireLog, WireRecord, WireTwinServer

__all__ = ["LOOPBACK", "WireLog", "WireRecord", "WireTwinServer"]
