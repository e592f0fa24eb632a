"""Pure physics equations shared by every layer (no devices, no state, no I/O).

The HAL needs the same equations as the twins for its device models (calibration maps and the
digital reference gradient); keeping them here lets both import them without the HAL importing
the simulators.
"""
