"""PNG drawers of the LUT fit (phase in rad against gray level) and of the saturation fits (field units)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.physics.saturable_absorber import sa_forward


def _plot_lut(layer: int, gray: NDArray, volts: NDArray, fit: Any) -> Any:
    """Drawer: normalised phase-sweep volts per gray level and the fitted LUT phase (rad)."""
    def draw(fig: Any) -> None:
        ax1, ax2 = fig.subplots(1, 2)
        p = fit.params
        g = np.arange(256)
        phi = p["phase_max_rad"] * (g / 255.0) ** p["gamma"]
        amp, th, off = p["amplitude_v"], p["lo_phase_rad"], p["offset_v"]
        norm = (volts - off) / amp
        for j in range(min(norm.shape[1], 8)):
            ax1.plot(gray, norm[:, j], ".", ms=3, alpha=0.5)
            ax1.plot(g, np.cos(phi - th[j]), "-", lw=0.5, alpha=0.5)
        ax1.set(xlabel="gray level", ylabel="(V - offset) / amplitude", title=f"layer {layer}: phase sweep")
        ax2.plot(g, phi, "k-")
        ax2.set(xlabel="gray level", ylabel="phase (rad)",
                title=f"LUT: phi_max {p['phase_max_rad']:.3f}, gamma {p['gamma']:.3f}")
    return draw


def _plot_sa(layer: int, drive: list[NDArray], pre: list[NDArray], post: list[NDArray], fit: Any) -> Any:
    """Drawer: transmitted field g(E) against pump field E (saturation units), one colour per set-point."""
    def draw(fig: Any) -> None:
        ax = fig.subplots()
        p = fit.params
        for s, (d, vp) in enumerate(zip(drive, post)):
            e = p["alpha"] * d
            y = (vp - p["offset_post"]) / p["k_post"]
            ax.plot(e, y[:, : min(y.shape[1], 16)], ".", ms=2, alpha=0.4, color=f"C{s}")
            ee = np.linspace(0, e.max(), 200)
            ax.plot(ee, sa_forward(ee, p["a0"][s]), "-", color=f"C{s}", label=f"a0 = {p['a0'][s]:.3f}")
        ax.set(xlabel="pump field E (saturation units)", ylabel="transmitted field g(E)",
               title=f"vapor cell {layer + 1} (after weight layer {layer + 1}): saturation level alpha = {p['alpha']:.4f} field/drive")
        ax.legend(fontsize=7)
    return draw
