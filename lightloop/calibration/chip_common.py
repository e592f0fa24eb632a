"""Shared helpers of the chip calibration routines (lightloop.calibration.chip, chip_crosstalk): the known optical
state, the HAL's layer model, the designed crosstalk pattern, the phase_shifters options and channel report."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import CalibrationResult, Routine, RunContext
from lightloop.calibration.mesh_model import MeshModel
from lightloop.physics.mzi import mesh_layout

TWO_PI = 2 * np.pi


def _is_chip(proc: Any) -> str | None:
    layers = getattr(proc, "layers", None)
    if not layers or not all(hasattr(l, "bank") and hasattr(l, "monitor") and hasattr(l, "injector") for l in layers):
        return "not an integrated chip processor (needs mesh layers with heater banks, tap monitors, injectors)"
    if any(getattr(l, "kind", "") != "unitary" for l in layers):
        return "phase_shifters supports 'unitary' mesh layers only"
    return None



class HeaterBankRoutine(Routine):
    """A chip routine over every layer's heater bank: the instruments and layout its records carry."""

    def instruments(self, proc: Any) -> dict[str, str]:
        """The heater bank of every layer."""
        return {f"layer{i}.bank": l.bank.name for i, l in enumerate(proc.layers)}

    def layout(self, proc: Any) -> dict[str, Any]:
        """Ports, mesh kind and heater channels of every layer."""
        return {"ports": [int(l.n_ports) for l in proc.layers], "mesh": [l.mesh for l in proc.layers],
                "channels": [int(l.bank.n_channels) for l in proc.layers]}


def _all_sources_dark(proc: Any) -> None:
    """The known optical state every routine starts from, whatever ran before (a forward pass of any batch,
    an interrupted gradient): forward gate closed, input modulators at a zero pattern (no batch left on
    them), every injector and adjoint source dark - written unconditionally, not from the roles' flags."""
    src = proc.source
    src.port.set_enabled(False)
    src.enabled = False
    src.port.write_fields(np.zeros((1, src.n_ports), src.cdtype))
    for lay in proc.layers:
        for inj in (lay.injector, lay.adjoint_source):
            inj.port.write_fields(None)
            inj.active = False


def _theta_background(st: Any, p_max: NDArray, k: int) -> NDArray:
    """Heater powers (W) putting every theta heater at pi/2 by the estimate st (crosstalk included), phi at 0."""
    p = np.zeros(st.phi0.size)
    for _ in range(6):
        other = (st.drive(p[None])[0] - p)[:k]
        p[:k] = np.mod(np.pi / 2 - st.phi0[:k] - other / st.p_pi[:k], TWO_PI) * st.p_pi[:k]
    return np.minimum(p, 0.95 * p_max)


def layer_model(lay: Any) -> MeshModel:
    """The HAL's model of a unitary layer: calibrated couplers if present, else ideal; nominal loss."""
    eta_total = float(lay.detector_gain) ** -0.5
    lay_out = mesh_layout(lay.n_ports, lay.mesh)
    eta = eta_total ** (1.0 / max(lay_out.n_columns, 1))
    m = MeshModel.nominal(lay.n_ports, lay.mesh, eta, bool(lay.screen))
    if getattr(lay, "couplers", None) is not None:
        m.alpha1, m.alpha2 = np.asarray(lay.couplers[0], np.float64), np.asarray(lay.couplers[1], np.float64)
    return m


def _xt_pattern(cal: Any) -> tuple[NDArray, NDArray, NDArray]:
    """Off-diagonal entries (rows, cols, values) of the bank's designed crosstalk matrix."""
    if cal.crosstalk is None:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
    from scipy import sparse

    c = sparse.coo_matrix(cal.crosstalk)
    off = c.row != c.col
    return c.row[off].astype(np.intp), c.col[off].astype(np.intp), c.data[off].astype(np.float64)


#: what the phase_shifters fit can and cannot determine (recorded with every result)
GAUGE = ("phi offsets referenced to the layer injectors' phases; output phases absorbed by the receivers (free "
         "without a screen); theta offsets, R P_pi, crosstalk, couplers invariant")


def _ps_options(ctx: RunContext) -> tuple[int, float, float, float]:
    """(sweep steps, fit-residual threshold, max phi0 sd (rad), max relative crosstalk sd) of phase_shifters."""
    o = ctx.options
    return (int(o.get("ps_steps", 8)), float(o.get("ps_fit_threshold", 0.02)), float(o.get("ps_sigma_max_rad", 0.01)),
            float(o.get("xt_rel_sigma_max", 0.08)))   # the crosstalk sd is flagged (reported), not failed


def channel_report(res: CalibrationResult, li: int, phi0: NDArray, p_pi: NDArray, sigma_phi0: NDArray,
                   sigma_p_pi_rel: NDArray, grp_of: NDArray, q: NDArray, threshold: float, sigma_max: float,
                   how: str = "") -> dict[str, dict[str, Any]]:
    """Per-heater fit record {channel: phi0 (rad), P_pi (W/rad), uncertainties, group residual, ok}; a channel whose
    residual or phi0 uncertainty is above its limit fails the result."""
    per = {}
    for ch in range(len(phi0)):
        ok = bool(q[ch] <= threshold and sigma_phi0[ch] <= sigma_max)
        per[str(ch)] = {"phi0": float(phi0[ch]), "p_pi_w": float(p_pi[ch]), "sigma_phi0_rad": float(sigma_phi0[ch]),
                        "sigma_p_pi_rel": float(sigma_p_pi_rel[ch]), "group": int(grp_of[ch]),
                        "group_rms_over_rms": float(q[ch]), "ok": ok}
        if not ok:
            res.fail(f"layer {li} channel {ch}: residual {q[ch]:.3g} of the field rms (threshold {threshold}) or phi0 "
                     f"uncertainty {sigma_phi0[ch]:.3g} rad (max {sigma_max}){how}")
    return per



def _wrap(x: NDArray) -> NDArray:
    """Angles (rad) wrapped to [-pi, pi)."""
    return (x + np.pi) % TWO_PI - np.pi

