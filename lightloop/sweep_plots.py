"""Sweep results as pictures: a heatmap over two grid parameters and a curve over one (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["fmt_value", "colour_limits", "plot_heatmap", "plot_curve"]


def fmt_value(v: Any) -> str:
    """Canonical text of a grid value: lists as a:b:c, floats by repr."""
    if isinstance(v, list):
        return ":".join(str(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def colour_limits(mean: Any, std: Any) -> tuple[float, float, float]:
    """(low, high, seed std) of a heatmap's colour scale: the means' range, widened to +-2 seed std around its
    middle when the means differ by less than 4 std (seed noise must not look like an effect)."""
    import numpy as np

    lo, hi = float(np.nanmin(mean)), float(np.nanmax(mean))
    noise = float(np.nanmax(std)) if np.isfinite(std).any() else 0.0
    if hi - lo < 4 * noise:
        mid = 0.5 * (hi + lo)
        lo, hi = mid - 2 * noise, mid + 2 * noise
    return lo, hi, noise


def plot_heatmap(summary: Any, grid: dict[str, list[Any]], metric: str, path: Path, title: str) -> Path:
    """Heatmap of mean metric over the first two grid parameters (others averaged); 1-D grids give one row.

    The colour scale spans at least +-2 seed standard deviations around the mean, so differences within the
    seed-to-seed spread do not show as contrast."""
    import numpy as np
    from matplotlib.figure import Figure

    names = list(grid)
    xname = names[0]
    yname = names[1] if len(names) > 1 else None
    xs = [fmt_value(v) for v in grid[xname]]
    ys = [fmt_value(v) for v in grid[yname]] if yname else [""]
    mean = np.full((len(ys), len(xs)), np.nan)
    std = np.full_like(mean, np.nan)
    count = np.zeros_like(mean)
    for _, r in summary.iterrows():
        i = ys.index(r[yname]) if yname else 0
        j = xs.index(r[xname])
        # more than two grid parameters: average the cell over the others
        m, s = float(r["mean"]), float(r["std"]) if r["count"] > 1 else 0.0
        mean[i, j] = m if np.isnan(mean[i, j]) else (mean[i, j] * count[i, j] + m) / (count[i, j] + 1)
        std[i, j] = s if np.isnan(std[i, j]) else max(std[i, j], s)
        count[i, j] += 1
    pct = metric.endswith("accuracy") or metric.endswith("error")
    scale = 100.0 if pct else 1.0
    fig = Figure(figsize=(1.3 * len(xs) + 2.5, 0.9 * len(ys) + 1.8), layout="constrained")
    ax = fig.subplots()
    lo, hi, noise = colour_limits(mean, std)
    im = ax.imshow(mean * scale, cmap="viridis", aspect="auto", origin="lower", vmin=lo * scale,
                   vmax=(hi if hi > lo else lo + 1e-12) * scale)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if np.isfinite(mean[i, j]):
                txt = f"{mean[i, j] * scale:.1f}" + (f"\n±{std[i, j] * scale:.1f}" if std[i, j] > 0 else "")
                v = (mean[i, j] - lo) / (hi - lo + 1e-12)
                ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="black" if v > 0.6 else "white")
    ax.set_xticks(range(len(xs)), xs)
    ax.set_xlabel(xname)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_ylabel(yname or "")
    fig.colorbar(im, ax=ax, label=f"{metric}{' (%)' if pct else ''}")
    extra = f" (mean over {', '.join(names[2:])})" if len(names) > 2 else ""
    ax.set_title(title + extra + (f"\ncolour scale widened to +-2 seed std ({noise * scale:.2g})"
                                  if hi - lo <= 4 * noise + 1e-15 and noise > 0 else ""), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_curve(summary: Any, grid: dict[str, list[Any]], metric: str, path: Path, title: str) -> Path:
    """Metric (mean +- std over repeats) against the single grid parameter: joined by lines for a numeric
    parameter, separate points for categories."""
    import numpy as np
    from matplotlib.figure import Figure

    (name, values), = grid.items()
    labels = [fmt_value(v) for v in values]
    by = {r[name]: r for _, r in summary.iterrows()}
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    x = np.array(values, float) if numeric else np.arange(len(values))
    m = np.array([float(by[lab]["mean"]) if lab in by else np.nan for lab in labels])
    s = np.array([float(by[lab]["std"]) if lab in by and by[lab]["count"] > 1 else 0.0 for lab in labels])
    pct = metric.endswith("accuracy") or metric.endswith("error")
    k = 100.0 if pct else 1.0
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.errorbar(x, m * k, yerr=s * k, fmt="o-" if numeric else "o", capsize=3)
    if numeric and np.all(x > 0) and x.max() / x.min() >= 100:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(x, labels)
    ax.set_xlabel(name)
    ax.set_ylabel(f"{metric}{' (%)' if pct else ''}")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=110)
    return path
