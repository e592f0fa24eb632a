"""Calibration routines of the free-space SA bench (Guo et al. 2021), acting only through the HAL.

Routines (in `calibrate all` order; later ones use what earlier ones put into the HAL):

  slm_lut            per SLM weight block: gray level -> phase LUT (joint fit with every channel's
                     LO phase, kept as a diagnostic)
  lo_phase           every homodyne channel's LO phase, from a short phase sweep through the
                     calibrated LUT (only complex fields reveal it); where the LO path has a phase
                     actuator, the array is locked (its mean LO phase set to zero)
  dmd_fill           per DMD weight block: mirror count -> amplitude map
  fringing           per weight block: row-neighbour field leak f (pre-compensated by the HAL)
  homodyne           every detector channel: offset (dark frames), gain (absolute, in saturation-
                     field units, from the vapor cell's saturation curve; backward taps with the
                     cells cold and transparent)
  saturable_absorber per vapor cell: transmission against input power gives a0 and the saturation
                     level (field per unit drive: the weight block's efficiency)
  vapor_cell         per vapor cell: temperature sweep -> (sigma*L, thermometer offset) map

Test patterns use exact device states where physics gives them (SLM gray 0/0 is a field of exactly
1; DMD all-on and all-off are exact). Light is routed to one layer at a time through single lit
rows (forward) or columns (backward) of the other layers, so every measured field stays inside
the detectors' range. Many frames (a power sweep) go into one acquisition, and every channel of
a detector array is fitted in parallel: the number of acquisitions does not grow with channels.

Degeneracy: the output layer has no saturable absorber after it, so its weight efficiency and
the output (and backward) detector gains are only known as products; by convention the output
layer keeps its nominal efficiency and the detectors absorb the product, which is what training
needs (readings consistent with the programmed weights).

Modules: one per routine (slm_lut, lo_phase, dmd_fill, fringing, homodyne, saturable_absorber,
vapor_cell); shared helpers in _light (light path, showing fields, reading taps), _thermal (cell
set-points), _saturation (saturation sweeps and fits), _plots and _routine (the routines' base class).
None of them reads a twin's truth: grading lives in lightloop.calibration.report.
"""

# the routines register on import, in the order of the list above
from lightloop.calibration.free_space._light import LIT_ROWS as LIT_ROWS
from lightloop.calibration.free_space._light import V_COLD as V_COLD
from lightloop.calibration.free_space._light import V_HOT as V_HOT
from lightloop.calibration.free_space._light import device_kind, taps
from lightloop.calibration.free_space.slm_lut import SLMLutRoutine
from lightloop.calibration.free_space.lo_phase import LOPhaseRoutine as LOPhaseRoutine
from lightloop.calibration.free_space.dmd_fill import DMDFillRoutine
from lightloop.calibration.free_space.fringing import FringingRoutine
from lightloop.calibration.free_space.homodyne import HomodyneRoutine
from lightloop.calibration.free_space.saturable_absorber import SaturableAbsorberRoutine
from lightloop.calibration.free_space.vapor_cell import VaporCellRoutine

__all__ = [
    "SLMLutRoutine",
    "DMDFillRoutine",
    "FringingRoutine",
    "HomodyneRoutine",
    "SaturableAbsorberRoutine",
    "VaporCellRoutine",
    "taps",
    "device_kind",
]
