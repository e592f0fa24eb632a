"""Mesh programming on the integrated chip through the HAL: target unitaries from the calibrated model, and
self-configuration by sequential nulling; fidelity measured on the coherent receivers.

Fidelity F = |tr(U_t^H U)| / N of the matrix measured through the HAL: the injector lights the N unit
vectors as one batch, the output coherent receivers read U (one acquisition), scaled by the layer's
nominal loss (sqrt of its detector gain). Without an output phase screen the output phases are a free
gauge (detection is power-only), so F is maximised over them: F = sum_i |<row_i U_t, row_i U>| / N.
Scaled by the NOMINAL loss, F carries the receivers' and injectors' gain errors and the loss spread
(a few %, either sign, so F can exceed 1); F_unit divides by ||U||_F / sqrt(N) instead and is <= 1 -
the figure the routine's threshold (0.99) checks.

From the model (program_from_model): lightloop.calibration.mesh_program.program_unitary on the calibrated
model (fitted coupler errors): the error-corrected decomposition (each imperfect MZI solved exactly, best
achievable where its couplers cannot reach the target) and a global L-BFGS polish, seconds at N = 64;
written through the bank (calibrated phi0, P_pi and crosstalk compensation).

Sequential nulling (self_configure): the injector sends the N columns of U_t^H as one batch, so the
receivers read W = U U_t^H, which is diagonal (up to phases) exactly when U = D U_t. Each MZI in mesh order
(input columns first) has its theta, then its phi, set to null the measured off-diagonal power
sum_{i != j} |W_ij|^2: that power is a sinusoid of one phase (U is affine in e^{i phase}), so three probes
(0, 2 pi/3, 4 pi/3) give its minimum exactly; a few passes over the mesh converge. It needs no model of
the couplers (it nulls what the receivers see), only the calibrated phase steps. Miller's per-MZI nulling
on a single tapped port is not used: in the rectangular mesh the taps sit on the top arms only, so a
bottom-arm drop port of an inner MZI has no detector (Hamerly et al. 2022 work around it with extra
calibration steps); nulling on the receivers works for both mesh kinds. It costs 3 acquisitions per phase
per pass (N = 64, 2 passes: 48 384 per target, ~6 min on the in-process twin), so the routine runs it only up
to N = mesh_self_configure_max_n (default 16; the option raises it) and records it as skipped above.

Options (RunContext.options): mesh_targets (2), mesh_passes (2), mesh_min_fidelity (0.99),
mesh_self_configure_max_n (16), mesh_program_iters (1000, L-BFGS iterations of the model programming).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.calibration.base import CalibrationResult, Counts, Routine, RunContext, register_routine
from lightloop.calibration.chip import _all_sources_dark, _is_chip, layer_model
from lightloop.calibration.mesh_model import gauge_fidelity
from lightloop.calibration.mesh_program import program_unitary
from lightloop.physics.mzi import decompose, random_unitary

__all__ = ["MeshRoutine", "measure_unitary", "program_from_model", "ideal_phases", "self_configure",
           "layer_fidelity"]

TWO_PI = 2 * np.pi


def measure_unitary(lay: Any) -> NDArray[np.complex128]:
    """U (N, N) through the HAL: unit vectors injected as one batch, coherent receivers, nominal-loss scaled."""
    n = lay.n_ports
    lay.injector.inject(np.eye(n, dtype=np.complex64))
    y = np.asarray(lay.out_receiver.acquire(), np.complex128)
    lay.injector.off()
    return y.T * np.sqrt(float(lay.detector_gain))


def layer_fidelity(lay: Any, u_target: NDArray) -> tuple[float, float]:
    """Gauge-fixed fidelity of what the layer realises now (one acquisition): (nominal-loss scaled,
    unit-normalised by the measured ||U||_F / sqrt(N))."""
    u = measure_unitary(lay)
    s = bool(lay.screen)
    return gauge_fidelity(u_target, u, s), gauge_fidelity(u_target, u, s, unit=True)


def ideal_phases(lay: Any, u_target: NDArray) -> NDArray[np.float64]:
    """Phases (rad) of the ideal decomposition (no coupler errors), channel order."""
    d = decompose(u_target, lay.mesh)
    return np.concatenate([d.theta, d.phi] + ([d.out_phase] if lay.screen else []))


def program_from_model(lay: Any, u_target: NDArray, max_iter: int = 1000) -> tuple[NDArray[np.float64], float]:
    """Write the phases (rad) that realise U_target on the calibrated model (mesh_program.program_unitary);
    returns (phases, model fidelity F_unit)."""
    phases, f_model = program_unitary(layer_model(lay), u_target, max_iter=max_iter)
    lay.bank.set_phases(phases)
    return phases, f_model


def _offdiag_power(lay: Any, probe: NDArray) -> float:
    """Measured sum_{i != j} |(U U_t^H)_ij|^2 with the columns of U_t^H injected as one batch."""
    y = np.asarray(lay.out_receiver.acquire(), np.complex128)      # y[j, i] = (U U_t^H)_ij
    p = np.abs(y) ** 2
    return float(p.sum() - np.trace(p))


def self_configure(lay: Any, u_target: NDArray, start: NDArray, passes: int = 2) -> tuple[NDArray, int]:
    """Sequential nulling (module docstring) from start phases; returns (phases written, acquisitions)."""
    layout = layer_model(lay).layout
    k = layout.n_mzi
    phases = np.asarray(start, np.float64).copy()
    probe = np.conj(np.asarray(u_target, np.complex128)).astype(np.complex64)   # row j = (U_t^H e_j)^T
    lay.injector.inject(probe)
    deltas = np.array([0.0, TWO_PI / 3, 2 * TWO_PI / 3])
    acq = 0
    for _ in range(passes):
        for j in range(k):                       # flat order = column by column from the input
            for ch in (j, k + j):
                base = phases[ch]
                c = np.empty(3)
                for t, d in enumerate(deltas):
                    phases[ch] = base + d
                    lay.bank.set_phases(phases)
                    c[t] = _offdiag_power(lay, probe)
                    acq += 1
                b_cos, b_sin = (2 / 3) * np.sum(c * np.cos(deltas)), (2 / 3) * np.sum(c * np.sin(deltas))
                phases[ch] = np.mod(base + np.arctan2(-b_sin, -b_cos), TWO_PI)
    lay.bank.set_phases(phases)
    lay.injector.off()
    return phases, acq


def _plot_fidelity(fu: NDArray, modes: list[str], li: int) -> Any:
    """PNG drawer: 1 - F_unit per programming mode and target (log scale)."""
    def draw(fig: Any) -> None:
        ax = fig.subplots(1, 1)
        for t in range(fu.shape[0]):
            ax.semilogy(np.arange(len(modes)), np.maximum(1 - fu[t], 1e-6), "o-", label=f"target {t}")
        ax.set_xticks(np.arange(len(modes)), [m.replace("_", " ") for m in modes])
        ax.set(ylabel="1 - F_unit", title=f"layer {li}: fidelity through the HAL")
        ax.legend()
    return draw


def _without_crosstalk(cal: Any) -> Any:
    from lightloop.hal.phase_shifters import ThermoOpticCalibration

    return ThermoOpticCalibration(cal.phi0, cal.p_pi_w, cal.resistance_ohm, None)


@register_routine
class MeshRoutine(Routine):
    """Program Haar-random unitaries from the calibrated model and by sequential nulling; measured fidelity."""

    name = "mesh"
    version = "0.2"
    order = 30
    summary = "program unitaries from the calibrated model and by sequential nulling; fidelity via receivers"

    def applicable(self, proc: Any) -> str | None:
        why = _is_chip(proc)
        if why:
            return why.replace("phase_shifters", "mesh")
        if any(not hasattr(l, "out_receiver") for l in proc.layers):
            return "mesh needs coherent receivers at the layer outputs"
        return None

    def instruments(self, proc: Any) -> dict[str, str]:
        return {f"layer{i}.bank": l.bank.name for i, l in enumerate(proc.layers)}

    def layout(self, proc: Any) -> dict[str, Any]:
        return {"ports": [int(l.n_ports) for l in proc.layers], "mesh": [l.mesh for l in proc.layers]}

    def run(self, proc: Any, ctx: RunContext) -> CalibrationResult:
        res, t0 = self.new_result(proc), time.perf_counter()
        n_targets = int(ctx.options.get("mesh_targets", 2))
        passes = int(ctx.options.get("mesh_passes", 2))
        f_min = float(ctx.options.get("mesh_min_fidelity", 0.99))
        sc_max_n = int(ctx.options.get("mesh_self_configure_max_n", 16))
        iters = int(ctx.options.get("mesh_program_iters", 1000))
        rng = ctx.rng(31)
        acq = writes = 0
        _all_sources_dark(proc)
        res.meta["layers"] = {}
        modes = ["model_no_xt_compensation", "ideal_decomposition", "model", "self_configured"]
        res.meta["columns"] = modes
        for li, lay in enumerate(proc.layers):
            f = np.zeros((n_targets, len(modes)))
            fu = np.zeros((n_targets, len(modes)))
            f_model, t_prog = np.zeros(n_targets), np.zeros(n_targets)
            last = None
            a_self = 0
            do_self = int(lay.n_ports) <= sc_max_n
            for t in ctx.bar(range(n_targets), desc=f"mesh layer {li}", total=n_targets):
                u_t = random_unitary(lay.n_ports, rng)
                t1 = time.perf_counter()
                phases, f_model[t] = program_unitary(layer_model(lay), u_t, max_iter=iters)
                t_prog[t] = time.perf_counter() - t1
                cal = lay.bank.cal
                lay.bank.cal = _without_crosstalk(cal)
                try:
                    lay.bank.set_phases(phases)
                    f[t, 0], fu[t, 0] = layer_fidelity(lay, u_t)
                finally:
                    lay.bank.cal = cal
                lay.bank.set_phases(ideal_phases(lay, u_t))
                f[t, 1], fu[t, 1] = layer_fidelity(lay, u_t)
                lay.bank.set_phases(phases)
                f[t, 2], fu[t, 2] = layer_fidelity(lay, u_t)
                acq, writes = acq + 3, writes + 3
                if do_self:
                    _, a = self_configure(lay, u_t, ideal_phases(lay, u_t), passes)   # no coupler model needed
                    a_self = a
                    f[t, 3], fu[t, 3] = layer_fidelity(lay, u_t)
                    acq, writes = acq + a + 1, writes + a + 1
                else:
                    f[t, 3] = fu[t, 3] = np.nan
                last = (u_t, phases)
            if last is not None:   # leave the model-programmed last target on the layer (graded against the truth)
                lay.bank.set_phases(last[1])
                writes += 1
                res.arrays[f"target_re_{li}"], res.arrays[f"target_im_{li}"] = last[0].real, last[0].imag
            res.arrays[f"fidelity_{li}"] = f
            res.arrays[f"fidelity_unit_{li}"] = fu
            used = modes if do_self else modes[:3]
            res.meta["layers"][str(li)] = {
                **{f"F_{m}_mean": float(f[:, i].mean()) for i, m in enumerate(used)},
                **{f"F_unit_{m}_min": float(fu[:, i].min()) for i, m in enumerate(used)},
                "model_predicted_mean": float(f_model.mean()), "targets": n_targets, "ports": int(lay.n_ports),
                "program_seconds_mean": float(t_prog.mean()) if n_targets else 0.0,
                "self_configure_acquisitions_per_target": int(a_self), "passes": passes,
                "self_configured": "run" if do_self else
                f"skipped: N = {lay.n_ports} > mesh_self_configure_max_n = {sc_max_n} (F_unit column NaN)"}
            res.plots.append((f"mesh_layer{li}", _plot_fidelity(fu, modes, li)))
            if n_targets and fu[:, 2].min() < f_min:
                res.fail(f"layer {li}: fidelity F_unit from the calibrated model {fu[:, 2].min():.4f} below {f_min}")
        res.counts = Counts(acquisitions=acq, frames=acq, writes=writes)
        res.seconds = time.perf_counter() - t0
        return res

    def apply(self, proc: Any, arrays: dict[str, NDArray], meta: dict[str, Any]) -> None:
        """Nothing to apply: the routine verifies the calibrated model (its fidelities are the record)."""
