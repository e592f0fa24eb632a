"""Twin-truth report: how far each calibration is from the twin's HIDDEN truth.

The report modules (this one: the free-space routines; `chip_report`: the integrated chip) are the
only calibration code that looks at a twin's truth, and only to grade results after the fact: they
find the emulator the bench builder attached (`proc.emulator`) with getattr and compare the HAL's
current maps against it. The routines and fits never see it; on a real bench there is no emulator
and the report is empty. Other benches' graders come from REPORT_MODULES (each module's GRADERS,
registered here with their tolerances) or from `register_grader`.

Identifiable vs degenerate quantities: the output layer's efficiency and the output/backward
detector gains are only known as products (no saturable absorber after the output layer), so
those detectors are graded on gain x output-layer efficiency.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from lightloop.calibration import chip_report
from lightloop.hal.processor import OpticalProcessor

__all__ = ["TOLERANCES", "TRUTH_GRADERS", "REPORT_MODULES", "register_grader", "twin_truth_report", "weight_fidelity"]

#: stated tolerances the tests and benchmarks check (max over channels / layers / cells)
TOLERANCES = {
    "slm_lut.lut_phase_rms_rad": 0.05,
    "lo_phase.max_abs_rad": 0.02,
    "dmd_fill.amplitude_max_abs": 0.01,
    "fringing.max_abs": 0.004,
    "homodyne.gain_max_rel": 0.01,
    "homodyne.offset_max_abs_field": 5e-4,
    "saturable_absorber.a0_max_rel": 0.03,
    "saturable_absorber.efficiency_max_rel": 0.01,
    "vapor_cell.a0_max_rel": 0.03,
    "vapor_cell.sigma_l_max_rel": 0.15,
    "vapor_cell.offset_max_abs_k": 2.0,
}


def _wrap(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2 * np.pi) - np.pi


def _taps(proc: Any) -> dict[str, tuple[Any, Any]]:
    emu = proc.emulator
    out = {}
    for name, group in (("pre", proc.pre_taps), ("post", proc.post_taps), ("error", proc.error_taps)):
        for i, d in enumerate(group):
            out[f"{name}{i}"] = (d, getattr(emu.truth, name)[i])
    return out


def _tau_true(emu: Any, layer: int) -> float:
    return float(emu.truth.efficiency[layer] * (1 + emu.truth.amplifier_gain_error[layer]))


def _slm(proc: Any) -> dict[str, Any]:
    emu = proc.emulator
    out: dict[str, Any] = {"layers": {}}
    worst = 0.0
    for m, block in enumerate(proc.weights):
        if not hasattr(block, "lut"):
            continue
        d = _wrap(block.lut.phase_rad - emu.truth.slm[m].phase_table())
        rms = float(np.sqrt(np.mean(d * d)))
        worst = max(worst, rms)
        out["layers"][str(m)] = {"lut_phase_rms_rad": rms, "lut_phase_max_abs_rad": float(np.abs(d).max())}
    out["lut_phase_rms_rad"] = worst
    return out


def _lo(proc: Any) -> dict[str, Any]:
    lo: dict[str, Any] = {}
    worst, resid = 0.0, 0.0
    for key, (det, phys) in _taps(proc).items():
        e = np.abs(_wrap(np.asarray(det.cal.lo_phase_rad) - phys.lo_phase_rad))
        lo[key] = {"max_abs_rad": float(e.max()), "rms_rad": float(np.sqrt(np.mean(e * e))),
                   "true_after_lock_max_abs_rad": float(np.abs(_wrap(phys.lo_phase_rad)).max())}
        worst = max(worst, float(e.max()))
        resid = max(resid, lo[key]["true_after_lock_max_abs_rad"])
    return {"taps": lo, "max_abs_rad": worst, "true_lo_phase_max_abs_rad": resid}


def _dmd(proc: Any) -> dict[str, Any]:
    emu = proc.emulator
    worst, layers = 0.0, {}
    for m, block in enumerate(proc.weights):
        if not hasattr(block, "fill_map"):
            continue
        t = emu.truth.dmd[m]
        n = t.block_pixels**2
        true = (np.arange(n + 1) / n) ** (1 + t.nonlinearity)
        e = float(np.abs(block.fill_map.amplitude - true).max())
        layers[str(m)] = {"amplitude_max_abs": e}
        worst = max(worst, e)
    return {"layers": layers, "amplitude_max_abs": worst}


def _fringing(proc: Any) -> dict[str, Any]:
    emu = proc.emulator
    dev = emu.truth.slm if hasattr(proc.weights[0], "lut") else emu.truth.dmd
    errs = [abs(b.fringing - dev[m].fringing) for m, b in enumerate(proc.weights)]
    return {"per_layer_abs": errs, "max_abs": float(max(errs)), "true": [d.fringing for d in dev],
            "calibrated": [b.fringing for b in proc.weights]}


def _homodyne(proc: Any) -> dict[str, Any]:
    emu = proc.emulator
    last = len(proc.weights) - 1
    conv = proc.weights[last].efficiency / _tau_true(emu, last)  # output-layer convention factor
    lo_known = hasattr(proc.weights[0], "lut")  # only complex (SLM) fields reveal the LO phase
    out: dict[str, Any] = {"taps": {}}
    gw, ow, ofw = 0.0, 0.0, 0.0
    for key, (det, phys) in _taps(proc).items():
        degenerate = key.startswith("error") or key == f"pre{last}"
        c = conv if degenerate else 1.0
        ge = np.abs(np.asarray(det.cal.gain_v) * c / phys.gain_v - 1)
        k_hal = np.asarray(det.cal.gain_v) * np.cos(det.cal.lo_phase_rad) * c
        ke = np.abs(k_hal / (phys.gain_v * np.cos(phys.lo_phase_rad)) - 1)
        oe = np.abs(np.asarray(det.cal.offset_v) - phys.offset_v)
        of = oe / phys.gain_v
        graded = ge if lo_known else ke
        what = ("gain" if lo_known else "gain x cos(LO phase)") + (" x output efficiency" if degenerate else "")
        out["taps"][key] = {"gain_max_rel": float(graded.max()), "true_gain_max_rel": float(ge.max()),
                            "effective_gain_max_rel": float(ke.max()), "offset_max_abs_v": float(oe.max()),
                            "offset_max_abs_field": float(of.max()), "graded_on": what}
        gw, ow, ofw = max(gw, float(graded.max())), max(ow, float(oe.max())), max(ofw, float(of.max()))
    out["gain_max_rel"], out["offset_max_abs_v"], out["offset_max_abs_field"] = gw, ow, ofw
    return out


def _absorber(proc: Any) -> dict[str, Any]:
    emu = proc.emulator
    cells, aw, ew = {}, 0.0, 0.0
    for i, sa in enumerate(proc.absorbers):
        true = emu.true_optical_depth(i)
        ae = abs(sa.optical_depth / true - 1)
        ee = abs(proc.weights[i].efficiency / _tau_true(emu, i) - 1)
        cells[str(i)] = {"a0_true": true, "a0_hal": sa.optical_depth, "a0_rel": ae, "efficiency_rel": ee}
        aw, ew = max(aw, ae), max(ew, ee)
    return {"cells": cells, "a0_max_rel": aw, "efficiency_max_rel": ew}


def _vapor(proc: Any, result: Any) -> dict[str, Any]:
    emu = proc.emulator
    cells, aw, sw, ow = {}, 0.0, 0.0, 0.0
    for i, sa in enumerate(proc.absorbers):
        phys = emu.truth.cells[i]
        off = float(emu.truth.thermometer_offset_k[i])
        if result is not None and "temperature_k" in result.arrays:
            t = np.asarray(result.arrays["temperature_k"][i])
            grid = np.linspace(t.min(), t.max(), 9)
        else:
            grid = np.array([sa.setpoint_k])
        rel = [abs(sa.map.optical_depth(float(x)) / phys.optical_depth(float(x) + off) - 1) for x in grid]
        se = abs(sa.map.sigma_l_m3 / phys.sigma_l_m3 - 1)
        oe = abs(sa.map.thermometer_offset_k - off)
        cells[str(i)] = {"a0_max_rel_over_range": float(max(rel)), "sigma_l_rel": se, "offset_abs_k": oe,
                         "range_k": [float(grid.min()), float(grid.max())]}
        aw, sw, ow = max(aw, float(max(rel))), max(sw, se), max(ow, oe)
    return {"cells": cells, "a0_max_rel": aw, "sigma_l_max_rel": sw, "offset_max_abs_k": ow}


def weight_fidelity(proc: OpticalProcessor, seed: int = 0) -> dict[str, float]:
    """Program random weights through the HAL; relative rms error of what the twin realises (per layer, worst)."""
    emu = getattr(proc, "emulator", None)
    if emu is None or not hasattr(proc, "weights") or not hasattr(getattr(emu, "truth", None), "efficiency"):
        return {}  # not a free-space twin
    rng = np.random.default_rng(seed)
    params = [rng.uniform(-0.8, 0.8, s).astype(np.float32) * w.max_weight
              for s, w in zip(proc.parameter_shapes(), proc.weights)]  # type: ignore[attr-defined]
    proc.program(params)
    last = len(params) - 1
    # the output layer's scale is a convention (degenerate with the output detectors): graded up to it
    conv = _tau_true(emu, last) / proc.weights[last].efficiency  # type: ignore[attr-defined]
    errs = []
    for i, (w, real) in enumerate(zip(params, emu.weights)):
        real = real / conv if i == last else real
        errs.append(float(np.sqrt(np.mean(np.abs(real - w) ** 2)) / np.sqrt(np.mean(w.astype(np.float64) ** 2))))
    return {"weight_rel_rms_max": max(errs), "weight_rel_rms": errs,
            "output_layer_scale_convention": float(conv)}


#: routine name -> grader(proc, result) -> {figure: value}; other benches' report modules register theirs
TRUTH_GRADERS: dict[str, Callable[[Any, Any], dict[str, Any]]] = {
    "slm_lut": lambda proc, r: _slm(proc), "lo_phase": lambda proc, r: _lo(proc),
    "dmd_fill": lambda proc, r: _dmd(proc), "fringing": lambda proc, r: _fringing(proc),
    "homodyne": lambda proc, r: _homodyne(proc), "saturable_absorber": lambda proc, r: _absorber(proc),
    "vapor_cell": _vapor,
}


def register_grader(routine: str, tolerances: dict[str, float] | None = None) -> Callable[[Any], Any]:
    """Decorator: grade a routine's result against a twin's truth (figures named in `tolerances` are checked)."""
    def deco(fn: Callable[[Any, Any], dict[str, Any]]) -> Callable[[Any, Any], dict[str, Any]]:
        TRUTH_GRADERS[routine] = fn
        for k, v in (tolerances or {}).items():
            TOLERANCES[f"{routine}.{k}"] = v
        return fn
    return deco


#: report modules of other benches, each with GRADERS = {routine: (grader, {figure: tolerance})}
REPORT_MODULES = (chip_report,)
for _module in REPORT_MODULES:
    for _routine, (_grader, _tolerances) in _module.GRADERS.items():
        register_grader(_routine, _tolerances)(_grader)


def twin_truth_report(proc: OpticalProcessor, outcomes: Sequence[Any] = ()) -> dict[str, Any]:
    """Per routine run, its error against the twin's hidden truth ({} on real hardware)."""
    if getattr(proc, "emulator", None) is None:
        return {}
    out: dict[str, Any] = {}
    for o in outcomes:
        name = o.routine if hasattr(o, "routine") else str(o)
        if name in TRUTH_GRADERS and getattr(o, "status", "ok") != "skipped":
            rep = TRUTH_GRADERS[name](proc, getattr(o, "result", None))
            rep["within_tolerance"] = {k.split(".", 1)[1]: bool(rep.get(k.split(".", 1)[1], 0.0) <= v)
                                       for k, v in TOLERANCES.items() if k.startswith(name + ".")}
            out[name] = rep
    out["weight_fidelity"] = weight_fidelity(proc)
    return out
