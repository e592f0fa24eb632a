"""The ledger's declared models: LedgerSettings (timing, device powers, pJ/FLOP), FLOP counts, latency and electronics.

Every default below is a *declared parameter*, not a measurement; its source is in the field's comment and
``DEFAULT_SOURCES`` (status "datasheet": a device data sheet or device paper; "ledger default": an order-of-magnitude
figure of a typical lab instrument, no single source confirmed). benchmarks/ledger_projection.py prints them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import Field

from lightloop.schema import StrictModel

__all__ = ["LedgerSettings", "digital_flops", "Tally", "latency_model", "electronics_j", "PLANCK_J_S", "LIGHT_M_S",
           "DEFAULT_SOURCES", "WAVELENGTH_M", "KINDS", "kind_of"]

PLANCK_J_S = 6.62607015e-34
LIGHT_M_S = 299_792_458.0
#: default wavelengths (m): Rb D2 line of the free-space vapor-cell bench; telecom C band of the chip
WAVELENGTH_M = {"free_space": 780.241e-9, "integrated_chip": 1.55e-6, "flow_network": 1.55e-6, "digital": 1.55e-6}
KINDS = ("free_space", "integrated_chip", "flow_network", "digital")

#: where each default comes from; checked with the `search` tool (TI E2E, PMC, Photonics (MDPI), Optics Express pages)
DLP = ("TI DLP7000 (TI E2E thread 462931: the data sheet's >32 kHz binary rate uses phased reset; global reset is "
       "30.7 us load + ~13 us settle = 43 us per pattern, ~23 kHz); 22.7 kHz = one binary pattern per 44 us")
LC_SLM = ("LCoS SLM speed is limited to the video rate of its driver (Oton et al., 'Dynamic calibration for improving "
          "the speed of a parallel-aligned LCoS display', OSA 2009: 32 Hz for full 2 pi steps, ~130 Hz for small "
          "ones); 60 Hz assumed (Holoeye PLUTO-2 class; its data sheet not checked)")
LC_SETTLE = ("'Speeding up liquid crystal SLMs using overdrive with phase change reduction', Opt. Express 21, 1779 "
             "(2013): ~1 ms LC transitions with overdrive, up to tenfold faster than usual driving (~10 ms)")
HEATER_TAU = ("ledger default 10 us x 5; measured metal thermo-optic shifters rise in 1.15 us / decay in 2.18 us "
              "(Photonics 9, 447 (2022)); Harris et al., Opt. Express 22, 10487 (2014) (2.4 us) not re-checked")
HOROWITZ = ("Horowitz, ISSCC 2014 (45 nm, 0.9 V): FP32 multiply 3.7 pJ + add 0.9 pJ per multiply-accumulate "
            "(confirmed in the table of PMC8934428) = 2.3 pJ/FLOP, arithmetic only")
DEFAULT_SOURCES: dict[str, tuple[str, str]] = {
    "frame_rate_hz": ("datasheet", DLP),
    "weight_frame_rate_hz": ("datasheet", LC_SLM),
    "weight_settle_s": ("datasheet", LC_SETTLE),
    "heater_time_constant_s": ("ledger default", HEATER_TAU),
    "pj_per_flop": ("datasheet", HOROWITZ),
    "modulator_power_w": ("ledger default", "DMD chipset + controller board ~10 W (order of magnitude of an "
                          "evaluation module's supply; no figure confirmed)"),
    "weight_device_power_w": ("ledger default", "SLM driver electronics / heater driver bank ~5 W (no figure "
                              "confirmed)"),
    "detector_power_w": ("ledger default", "photodiode amplifiers + digitiser card ~20 W (typical PCIe/PXIe "
                         "digitiser; no figure confirmed)"),
    "host_power_w": ("ledger default", "a desktop CPU package at 65 W (a common desktop processor's rated base "
                     "power; not measured on this host)"),
    "flow_frame_rate_hz": ("ledger default", "source-measure / DAQ drive-and-read at ~1 kHz per frame"),
    "conductance_settle_s": ("ledger default", "digital potentiometer / transistor-gate write settling ~1 ms"),
    "digitizer_record_length": ("ledger default", "1000 ADC samples per channel per frame (no seed paper gives it)"),
    "digitizer_transfer_s_per_sample": ("ledger default", "1 ns per sample (~1 GS/s host transfer)"),
    "digitizer_overhead_s": ("ledger default", "100 us arm + trigger + fetch per read"),
    "host_compute_s": ("ledger default", "1 ms declared host work per step (the ledger also measures it)"),
    "power_per_unit_w": ("ledger default", "1 mW per unit |field|^2 (saturation / reference power unknown to us)"),
}


class LedgerSettings(StrictModel):
    """Top-level `ledger:` section: the declared instrument timing model and energy figures (SI units)."""

    power_per_unit_w: float = Field(1e-3, gt=0, le=10, description="optical power (W) per unit |field|^2 of the "
                                    "HAL's field units (free space: saturation power; chip: reference power)")
    wavelength_m: float | None = Field(None, gt=1e-7, lt=1e-4, description="for photon counts; None: 780.241 nm "
                                       "(Rb D2) on free space, 1550 nm on the chip")
    # input / probe modulator: one sample per frame; a DMD's binary-pattern rate (DLP7000 global reset: ~44 us)
    frame_rate_hz: float = Field(22_700.0, gt=0, description="input/probe modulator frames (samples) per second")
    modulator_settle_s: float = Field(0.0, ge=0, le=10, description="settling per display of a new batch (s)")
    # weight device: a liquid-crystal phase SLM at video rate (60 Hz frame, ~10 ms LC response; DEFAULT_SOURCES)
    weight_frame_rate_hz: float = Field(60.0, gt=0, description="weight SLM/DMD frames per second")
    weight_settle_s: float = Field(0.01, ge=0, le=10, description="weight device settling per program (s)")
    # thermo-optic heaters: rise times of 1-3 us (Photonics 9, 447 (2022)); 10 us, settled after 5 of them
    heater_time_constant_s: float = Field(1e-5, gt=0, le=10, description="heater thermal time constant (s)")
    heater_settle_time_constants: float = Field(5.0, ge=0, le=100, description="constants waited per program")
    # the chip's calibrated monitor intensity is the waveguide's; its photodiode gets the designed tap ratio of it
    monitor_tap_fraction: float = Field(1.0, gt=0, le=1, description="share of the waveguide power a tap monitor "
                                        "absorbs (e.g. 0.01 for 1 % taps); 1: the full reading")
    digitizer_record_length: int = Field(1000, ge=1, le=10**9, description="ADC samples per channel per frame")
    digitizer_transfer_s_per_sample: float = Field(1e-9, ge=0, le=1, description="transfer time per ADC sample (s)")
    digitizer_overhead_s: float = Field(1e-4, ge=0, le=10, description="arm + trigger + fetch overhead per read (s)")
    host_compute_s: float = Field(1e-3, ge=0, le=1e3, description="declared host compute per step (s): error, "
                                  "update (the latency model's host time)")
    # electrical power of the electronics in the loop and of the host (W); 0 switches a term off
    modulator_power_w: float = Field(10.0, ge=0, le=1e4, description="input/probe modulator electronics (W), "
                                     "charged while it shows frames (flow network: its current sources)")
    weight_device_power_w: float = Field(5.0, ge=0, le=1e4, description="weight SLM/DMD electronics (W), "
                                         "charged over the whole step (chip: heater drivers; flow: conductance bank)")
    detector_power_w: float = Field(20.0, ge=0, le=1e4, description="detectors + digitiser (W), charged over "
                                    "exposure and transfer time")
    host_power_w: float = Field(65.0, ge=0, le=1e4, description="host power (W) charged over the MEASURED host "
                                "compute time of each step (wall time outside the HAL's device calls)")
    # flow (resistor) network: drive-and-read frames and conductance writes
    flow_frame_rate_hz: float = Field(1000.0, gt=0, description="flow network drive/read frames per second")
    conductance_settle_s: float = Field(1e-3, ge=0, le=10, description="flow network settling per conductance write")
    # Horowitz, ISSCC 2014 (45 nm): FP32 multiply 3.7 pJ + add 0.9 pJ per multiply-accumulate = 2 FLOPs
    # -> 2.3 pJ/FLOP, arithmetic only (memory access, often 10-100x more, excluded)
    pj_per_flop: float = Field(2.3, ge=0, le=1e6, description="energy of one FLOP of electronic backprop (pJ)")


def digital_flops(layer_sizes: tuple[int, ...] | list[int], batch: int) -> int:
    """FLOPs of one electronic backprop step of a dense network: 6 B sum_l n_l n_(l+1)."""
    return int(6 * batch * sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:])))


class Tally:
    """What accumulates between two step boundaries (counts, energies in J, measured device-call seconds)."""

    def __init__(self) -> None:
        self.energy_j: dict[str, float] = defaultdict(float)
        self.acquisitions: dict[str, int] = defaultdict(int)
        self.adc_samples = 0
        self.frames: dict[str, int] = defaultdict(int)
        self.displays = 0
        self.exposures = 0
        self.exposed_samples = 0
        self.transfer_s = 0.0
        self.programs = 0
        self.device_s: dict[str, float] = defaultdict(float)   # measured wall time inside HAL device calls

    def add(self, other: "Tally") -> None:
        """Add another tally into this one."""
        for mine, theirs in ((self.energy_j, other.energy_j), (self.acquisitions, other.acquisitions),
                             (self.frames, other.frames), (self.device_s, other.device_s)):
            for k, v in theirs.items():
                mine[k] += v
        for name in ("adc_samples", "displays", "exposures", "exposed_samples", "transfer_s", "programs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def latency_model(kind: str, s: LedgerSettings, t: Tally, frame_s: float) -> dict[str, float]:
    """Model seconds of the tallied work: groups program / acquire / transfer / host and optics / electronics / host.

    acquire = exposed samples x frame period (optics) + modulator settling per display; program = weight frame +
    settle (free space), heater constants (chip), conductance settle (flow); transfer = digitiser overhead + samples;
    host = host_compute_s. A digital bench has host time only.
    """
    if kind == "digital":
        return {"optics": 0.0, "electronics": 0.0, "host": s.host_compute_s, "total": s.host_compute_s,
                "program": 0.0, "acquire": 0.0, "transfer": 0.0}
    per_program = {"free_space": 1.0 / s.weight_frame_rate_hz + s.weight_settle_s,
                   "integrated_chip": s.heater_time_constant_s * s.heater_settle_time_constants,
                   "flow_network": s.conductance_settle_s}[kind]
    optics = t.exposed_samples * frame_s
    settle = t.displays * s.modulator_settle_s
    program = t.programs * per_program
    electronics = settle + program + t.transfer_s
    return {"optics": optics, "electronics": electronics, "host": s.host_compute_s,
            "total": optics + electronics + s.host_compute_s,
            "program": program, "acquire": optics + settle, "transfer": t.transfer_s}


def electronics_j(kind: str, s: LedgerSettings, lat: dict[str, float], heater_w: float) -> dict[str, float]:
    """Electrical energy (J) of the electronics in the loop over one step's model time, per device.

    modulator: power x (exposure + settling) time it shows frames; weight device: power x the whole step (it holds
    its frame throughout); detectors: power x (exposure + transfer); heaters: sum V^2/R x the whole step.
    """
    if kind == "digital":
        return {}
    out = {"modulator": s.modulator_power_w * lat["acquire"],
           "weight_device": s.weight_device_power_w * lat["total"],
           "detectors": s.detector_power_w * (lat["optics"] + lat["transfer"])}
    if kind == "integrated_chip":
        out["heaters"] = heater_w * lat["total"]
    return out


def kind_of(proc: Any) -> str | None:
    """The ledger's bench kind of a processor, from the roles it has; None if unknown."""
    if all(hasattr(proc, a) for a in ("encoder", "probe", "pre_taps", "error_taps")):
        return "free_space"
    if all(hasattr(proc, a) for a in ("source", "layers", "activations", "output")):
        return "integrated_chip"
    if all(hasattr(proc, a) for a in ("network", "topology", "feature_scale")):
        return "flow_network"
    if type(proc).__name__ == "DigitalProcessor":
        return "digital"
    return None
