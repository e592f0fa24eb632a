"""Figure of a run's energy / latency ledger (ledger.json): energy per sample (J) and time per step (s), split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightloop.errors import RunFolderError

__all__ = ["ledger_figure", "load_ledger"]


def load_ledger(folder: Path | str) -> dict[str, Any]:
    """The ledger.json of a run folder (its summary under 'summary')."""
    path = Path(folder) / "ledger.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path}: ledger: no ledger file; expected a run trained with a `ledger:` "
                             "section in its config") from None
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: ledger: not JSON ({exc.msg}); expected the file the Trainer wrote") from None


def ledger_figure(summary: dict[str, Any], title: str = "") -> Any:
    """One Figure: energy per sample (log J: optics, electronics in the loop, host, digital backprop equivalent)
    and model time per step (s: optics, electronics in the loop, host; the measured wall time beside it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_e, ax_t = fig.subplots(1, 2)
    e = summary["energy_per_sample_j"]
    names = ["optics", "electronics_in_loop", "host", "digital_equivalent"]
    values = [max(float(e.get(k) or 0.0), 0.0) for k in names]
    colours = ["C0", "C1", "C2", "C7"]
    ax_e.bar(["optics", "electronics\nin the loop", "host", "electronic\nbackprop"], values, color=colours)
    if any(v > 0 for v in values):
        ax_e.set_yscale("log")
    ax_e.set(ylabel="energy per sample (J)", title="energy per training sample")
    t = summary["time_per_step_s"]
    bottom = 0.0
    for key, colour, label in (("optics", "C0", "optics (exposure)"), ("electronics", "C1", "electronics in the loop"),
                               ("host", "C2", "host")):
        v = float(t.get(key) or 0.0)
        ax_t.bar(["model"], [v], bottom=bottom, color=colour, label=label)
        bottom += v
    measured = t.get("measured")
    if measured is not None and measured == measured:
        ax_t.bar(["measured"], [float(measured)], color="C3", label="measured wall time")
    ax_t.set(ylabel="time per step (s)", title="time per step (declared timing model vs measured)")
    ax_t.legend(fontsize="small")
    for ax in (ax_e, ax_t):
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title or f"energy / latency ledger: {summary.get('kind', '')}, {summary.get('steps', 0)} steps")
    return fig
