"""Twin-truth graders of the chip routines: heater phi0 (rad), R P_pi, crosstalk, couplers (rad), mesh fidelity.

A report module: it reads the twin's hidden truth (`proc.emulator`) only to grade results after the fact.
lightloop.calibration.report finds it (REPORT_MODULES) and registers GRADERS with their tolerances.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.mesh_model import gauge_fidelity, input_gauge_phi_shift
from lightloop.physics.mzi import mesh_layout

__all__ = ["GRADERS"]

TWO_PI = 2 * np.pi

#: routine -> (grader(proc, result) -> {figure: value}, {figure: stated tolerance}), in registration order
GRADERS: dict[str, tuple[Callable[[Any, Any], dict[str, Any]], dict[str, float]]] = {}


def _grades(routine: str, tolerances: dict[str, float]) -> Callable[[Any], Any]:
    """Decorator: list a grader of `routine` and the tolerances of its figures in GRADERS."""
    def deco(fn: Callable[[Any, Any], dict[str, Any]]) -> Callable[[Any, Any], dict[str, Any]]:
        GRADERS[routine] = (fn, dict(tolerances))
        return fn
    return deco


def _wrap(x: NDArray) -> NDArray:
    """Angles (rad) wrapped to [-pi, pi)."""
    return (x + np.pi) % TWO_PI - np.pi


def _expected_phi0(proc: Any, li: int) -> tuple[NDArray, NDArray]:
    """True phi0 in the calibration's gauge (phi shifters injector-referenced) and the graded-channel mask."""
    emu = proc.emulator
    lay = proc.layers[li]
    lt = emu.truth.layers[li]
    h = lt.heaters
    exp = (h.phi0 + h.drift).copy()
    layout = mesh_layout(lay.n_ports, lay.mesh)
    k = layout.n_mzi
    shift, _ = input_gauge_phi_shift(layout, np.angle(lt.injector))
    exp[k: 2 * k] += shift
    graded = np.zeros(exp.size, bool)
    graded[: 2 * k] = True              # a screen's offsets are receiver-referenced: not graded
    return exp, graded


@_grades("phase_shifters", {"phi0_max_abs_rad": 0.02, "p_pi_r_max_rel": 0.01,
                            "xt_significant_max_rel": 0.10, "alpha_max_abs_rad": 0.005})
def _grade_phase_shifters(proc: Any, result: Any) -> dict[str, Any]:
    """HAL phi0 (gauge-fixed), R P_pi, crosstalk and coupler errors vs the twin's hidden truth (twins only)."""
    emu = getattr(proc, "emulator", None)
    if emu is None:
        return {}
    worst = {"phi0": 0.0, "p": 0.0, "xt": 0.0, "alpha": 0.0}
    layers = {}
    for li, lay in enumerate(proc.layers):
        h = emu.truth.layers[li].heaters
        sel = np.zeros(lay.bank.n_channels, bool)
        if result is not None and f"channels_{li}" in result.arrays:
            sel[np.asarray(result.arrays[f"channels_{li}"]).astype(np.intp)] = True
        if not sel.any():
            continue
        exp, graded = _expected_phi0(proc, li)
        sel &= graded
        e_phi = np.abs(_wrap(lay.bank.cal.phi0 - exp))[sel]
        e_raw = np.abs(_wrap(lay.bank.cal.phi0 - (h.phi0 + h.drift)))[sel]
        prod_hal = lay.bank.cal.p_pi_w * lay.bank.cal.resistance_ohm
        e_p = np.abs(prod_hal / (h.p_pi_w * h.resistance_ohm) - 1)[sel]
        rep = {"phi0_max_abs_rad": float(e_phi.max()), "phi0_rms_rad": float(np.sqrt(np.mean(e_phi ** 2))),
               "phi0_ungauged_max_abs_rad": float(e_raw.max()), "p_pi_r_max_rel": float(e_p.max()),
               "channels": int(sel.sum())}
        worst["phi0"], worst["p"] = max(worst["phi0"], rep["phi0_max_abs_rad"]), max(worst["p"], rep["p_pi_r_max_rel"])
        if result is not None and f"xt_vals_{li}" in result.arrays:
            c = h.crosstalk.tocsr()
            rel = []
            for i, j, v in zip(result.arrays[f"xt_rows_{li}"].astype(int), result.arrays[f"xt_cols_{li}"].astype(int),
                               result.arrays[f"xt_vals_{li}"]):
                t = float(c[i, j])
                if abs(t) >= 0.01:
                    rel.append(abs(v / (t * h.resistance_ohm[i] / h.resistance_ohm[j]) - 1))
            if rel:
                rep["xt_significant"], rep["xt_significant_max_rel"] = len(rel), float(max(rel))
                worst["xt"] = max(worst["xt"], float(max(rel)))
        if lay.couplers is not None and li < len(emu.truth.layers):
            me = emu.truth.layers[li].mesh_errors[0]
            e_a = float(max(np.abs(lay.couplers[0] - me.alpha1).max(), np.abs(lay.couplers[1] - me.alpha2).max()))
            rep["alpha_max_abs_rad"] = e_a
            rep["alpha_true_sd_rad"] = float(np.std(np.concatenate([me.alpha1, me.alpha2])))
            worst["alpha"] = max(worst["alpha"], e_a)
        layers[str(li)] = rep
    return {"layers": layers, "phi0_max_abs_rad": worst["phi0"], "p_pi_r_max_rel": worst["p"],
            "xt_significant_max_rel": worst["xt"], "alpha_max_abs_rad": worst["alpha"],
            "gauge": "phi offsets injector-referenced (truth shifted by the injectors' phases pushed through the mesh)"}


@_grades("crosstalk", {"significant_max_rel": 0.10})
def _grade_crosstalk(proc: Any, result: Any) -> dict[str, Any]:
    """Measured coefficients vs the twin's hidden C (effective C_ij R_i / R_j, and raw C_ij); significant:
    |C_ij| >= 0.01."""
    emu = getattr(proc, "emulator", None)
    if emu is None or result is None:
        return {}
    worst, worst_raw, n_sig, layers = 0.0, 0.0, 0, {}
    for li, lay in enumerate(proc.layers):
        if f"xt_vals_{li}" not in result.arrays:
            continue
        h = emu.truth.layers[li].heaters
        c = h.crosstalk.tocsr()
        rel, raw = [], []
        for i, j, v in zip(result.arrays[f"xt_rows_{li}"], result.arrays[f"xt_cols_{li}"], result.arrays[f"xt_vals_{li}"]):
            i, j = int(i), int(j)
            t = float(c[i, j])
            if abs(t) < 0.01:
                continue
            eff = t * h.resistance_ohm[i] / h.resistance_ohm[j]
            rel.append(abs(v / eff - 1))
            raw.append(abs(v / t - 1))
        if rel:
            layers[str(li)] = {"significant": len(rel), "max_rel": float(max(rel)), "raw_max_rel": float(max(raw))}
            worst, worst_raw, n_sig = max(worst, max(rel)), max(worst_raw, max(raw)), n_sig + len(rel)
    return {"layers": layers, "significant_max_rel": worst, "raw_c_max_rel": worst_raw, "significant": n_sig}


@_grades("mesh", {"true_fidelity_min_shortfall": 0.01})
def _grade_mesh(proc: Any, result: Any) -> dict[str, Any]:
    """Fidelity of the twin's TRUE layer matrix (the last model-programmed target, output phases free;
    nominal-loss scaled and unit-normalised) next to the receiver-measured one (twins only). The truth sees
    the layer from its physical inputs, so the injectors' phase errors (the calibration's reference) count."""
    emu = getattr(proc, "emulator", None)
    if emu is None or result is None:
        return {}
    layers, worst = {}, 0.0
    for li, lay in enumerate(proc.layers):
        if f"target_re_{li}" not in result.arrays:
            continue
        u_t = result.arrays[f"target_re_{li}"] + 1j * result.arrays[f"target_im_{li}"]
        u = np.asarray(emu.layers[li].matrix(), np.complex128) * np.sqrt(float(lay.detector_gain))
        f_true = gauge_fidelity(u_t, u, bool(lay.screen))
        f_unit = gauge_fidelity(u_t, u, bool(lay.screen), unit=True)
        f_meas = float(result.arrays[f"fidelity_unit_{li}"][-1, 2])
        layers[str(li)] = {"true_fidelity": f_true, "true_fidelity_unit": f_unit, "measured_fidelity_unit": f_meas}
        worst = max(worst, 1.0 - f_unit)
    return {"layers": layers, "true_fidelity_min_shortfall": worst}


def oracle_calibration(proc: Any, li: int) -> None:
    """UPPER BOUND ONLY (benchmarks, never a routine): the twin's hidden heaters (phi0 in the calibration's
    gauge, P_pi, R, crosstalk) and couplers (rad) as layer li's HAL calibration - what a perfect calibration gives."""
    from lightloop.hal.phase_shifters import ThermoOpticCalibration

    lay, lt = proc.layers[li], proc.emulator.truth.layers[li]
    phi0, _ = _expected_phi0(proc, li)
    h = lt.heaters
    lay.bank.cal = ThermoOpticCalibration(phi0, h.p_pi_w, h.resistance_ohm, h.crosstalk)
    lay.couplers = np.stack([lt.mesh_errors[0].alpha1, lt.mesh_errors[0].alpha2]).astype(np.float64)


def _cplx(result: Any, key: str) -> NDArray:
    """Complex gains stored as (2, n) [re, im]."""
    a = result.arrays[key]
    return a[0] + 1j * a[1]


@_grades("readout", {"gradient_factor_max_dev": 0.02, "hidden_factor_max_dev": 0.05})
def _grade_readout(proc: Any, result: Any) -> dict[str, Any]:
    """Gauge-free products the adjoint gradient uses, calibrated / true (twins only; 1 is exact):
    gradient factor mu_t tau_j conj(sigma_k) of tap t, input j, output k (tap gain, time-reversed injection,
    adjoint source incl. the photodiode power gain) and the hidden-error factor (g_in, sigma, slope gain)."""
    emu = getattr(proc, "emulator", None)
    if emu is None or result is None or "g_out_0" not in result.arrays:
        return {}
    tr = emu.truth
    layers, worst_g, worst_h = {}, 0.0, 0.0
    for li, lay in enumerate(proc.layers):
        lt = tr.layers[li]
        g_out, g_in = _cplx(result, f"g_out_{li}"), _cplx(result, f"g_in_{li}")
        t_inj, t_adj = _cplx(result, f"t_inj_{li}"), _cplx(result, f"t_adj_{li}")
        last = li == len(proc.layers) - 1
        pd = tr.output_gain if last else tr.activations[li].pd_gain
        nk = pd.size
        h_true = emu.detector_gain[li] * pd
        h_est = result.arrays[f"power_gain_{li}"][:nk]
        sigma = (lt.adjoint_source / t_adj)[:nk] * (h_est / h_true) * np.conj(lt.out_receiver / g_out)[:nk]
        tau = (lt.injector / t_inj) * np.conj(lt.in_receiver / g_in)
        mu = lt.monitor_gain / result.arrays[f"tap_gain_{li}"]
        f = mu[:, None, None] * tau[None, :, None] * np.conj(sigma)[None, None, :]
        rep = {"gradient_factor_max_dev": float(np.abs(f - 1).max()),
               "tap_gain_rel_err_max": float(np.abs(1 / mu - 1).max()),
               "receiver_gain_spread_true": float(np.std(np.abs(lt.out_receiver)))}
        worst_g = max(worst_g, rep["gradient_factor_max_dev"])
        if li > 0 and f"slope_gain_{li - 1}" in result.arrays:
            hn = proc.activations[li - 1].n_channels
            slope = tr.activations[li - 1].slope_gain / result.arrays[f"slope_gain_{li - 1}"]
            rho = (lt.in_receiver / g_in)[:hn, None] * sigma[None, :] / slope[:, None]
            rep["hidden_factor_max_dev"] = float(np.abs(rho - 1).max())
            worst_h = max(worst_h, rep["hidden_factor_max_dev"])
        if f"loss_eta_{li}" in result.arrays:   # per-waveguide loss, column means removed (a gauge), dB
            te = -20 * np.log10(lt.mesh_errors[0].eta)
            fe = -20 * np.log10(result.arrays[f"loss_eta_{li}"])
            te, fe = te - te.mean(1, keepdims=True), fe - fe.mean(1, keepdims=True)
            rep["loss_spread_db_true"], rep["loss_spread_db_fit"] = float(te.std()), float(fe.std())
            rep["loss_error_db_rms"] = float((fe - te).std())
            rep["loss_correlation"] = float(np.corrcoef(te.ravel(), fe.ravel())[0, 1]) if te.std() > 0 else 1.0
        layers[str(li)] = rep
    return {"layers": layers, "gradient_factor_max_dev": worst_g, "hidden_factor_max_dev": worst_h,
            "note": "1 = exact; tap gains fitted with the loss-aware model (loss_*: per-waveguide loss, column-centred)"}


@_grades("activation", {"detuning_max_abs": 0.02, "k_max_rel": 0.01, "supply_gauge_spread": 0.01,
                        "slope_factor_max_dev": 0.01})
def _grade_activation(proc: Any, result: Any) -> dict[str, Any]:
    """Ring models vs the twin's truth (twins only): detuning (linewidths) and k errors, the spread over neurons of
    fitted / true supply (one receiver gauge per layer) and the slope factor (true slope readout / calibrated slope
    gain) / (calibrated model slope / true slope) - 1 = exact."""
    emu = getattr(proc, "emulator", None)
    if emu is None or result is None or "k_0" not in result.arrays:
        return {}
    layers, worst = {}, {"detuning_max_abs": 0.0, "k_max_rel": 0.0, "supply_gauge_spread": 0.0,
                         "slope_factor_max_dev": 0.0}
    for ai in range(len(proc.activations)):
        if f"k_{ai}" not in result.arrays:
            continue
        t = emu.truth.activations[ai]
        d_true = t.detuning_offset + emu.design.ring_detuning_per_volt * emu.ring_bias_v[ai]
        d_fit = np.asarray(result.meta["activations"][str(ai)]["detuning"], np.float64)
        k, sup = result.arrays[f"k_{ai}"], result.arrays[f"supply_{ai}"]
        ratio = sup / t.supply
        slope = (t.slope_gain / result.arrays[f"slope_gain_{ai}"]) * np.sqrt(t.supply / sup)
        rep = {"detuning_max_abs": float(np.max(np.abs(d_fit - d_true))), "k_max_rel": float(np.max(np.abs(k / t.k - 1))),
               "supply_gauge": float(np.mean(ratio)), "supply_gauge_spread": float(np.std(ratio) / np.mean(ratio)),
               "slope_factor_max_dev": float(np.max(np.abs(slope - 1)))}
        layers[str(ai)] = rep
        worst = {key: max(v, rep[key]) for key, v in worst.items()}
    return {"layers": layers, **worst, "note": "supply in the receivers' gauge: only its spread over neurons is graded"}
