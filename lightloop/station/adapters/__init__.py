"""Port adapters: the HAL's device ports on the QCoDeS drivers, one file per driver (named after it).

Each adapter calls its driver only through a :class:`lightloop.station.Link` (counted, timed, reconnecting).

| driver (``lightloop.drivers``) | adapter | HAL port it serves |
|---|---|---|
| ``slm`` | :class:`~.slm.SLMFieldSource`, :class:`~.slm.SLMWeightBlocks` | FieldSourcePort, SLMBlockPort |
| ``dmd`` | :class:`~.dmd.DMDWeightBlocks` | DMDBlockPort |
| ``digitizer`` | :class:`~.digitizer.DigitizerArrays` -> ``DigitizerDetector`` | DetectorPort |
| ``temperature_controller`` | :class:`~.temperature_controller.TemperatureControllerDevice` | hal.safety TemperatureDevice |
| ``laser_controller`` | :class:`~.laser_controller.LaserControllerDevice` | hal.safety LaserDevice |
| ``power_meter`` | :class:`~.power_meter.PowerMeterDevice` | laser power read-back |
| ``scpi_source`` | :class:`~.scpi_source.ScpiSourceDevice` | hal.safety VoltageDevice (amplifier gains) |
| ``qontrol_heater`` | :class:`~.qontrol_heater.QontrolHeaterDevice` | hal.safety VoltageDevice, HeaterPort |
| (shared) | `_bank.LinkedVoltageDevice` (epoch, reconnect hook, batched read-back), `_output.OutputDevice` | |
| ``awg`` | :class:`~.awg.AWGFieldBlock` | ForwardLightPort, FieldInjectionPort (the chip's IQ field sources) |
"""
