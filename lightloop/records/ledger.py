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


def _stack(ax: Any, label: str, parts: list[tuple[str, float, str, str]]) -> None:
    """One stacked bar of (name, seconds, colour, hatch) parts."""
    bottom = 0.0
    for name, v, colour, hatch in parts:
        if v == v and v > 0:
            ax.bar([label], [v], bottom=bottom, color=colour, hatch=hatch, label=name, alpha=0.9)
            bottom += v


def ledger_figure(summary: dict[str, Any], title: str = "") -> Any:
    """One Figure: energy per sample (log J: optics, electronics in the loop and each of its devices, host, digital
    backprop equivalent) and time per step (s: the model split optics / electronics / host and by group program /
    acquire / transfer / host, beside the measured program / display / acquire / host wall time)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.4), layout="constrained")
    ax_e, ax_t = fig.subplots(1, 2, width_ratios=[1, 1.2])
    e = summary["energy_per_sample_j"]
    samples = summary.get("samples") or 0
    optics = "network (Joule heat)" if summary.get("kind") == "flow_network" else "optics (sources)"
    rows = [(optics, e.get("optics"), "C0"), ("electronics in the loop", e.get("electronics_in_loop"), "C1")]
    for name, joules in (summary.get("electronics_j") or {}).items():
        rows.append((f"  {name.replace('_', ' ')}", float(joules) / samples if samples else 0.0, "#f5b27a"))
    rows += [("host (measured time)", e.get("host"), "C2"), ("electronic backprop equiv.", e.get("digital_equivalent"),
                                                             "C7")]
    values = [max(float(v or 0.0), 0.0) for _, v, _ in rows]
    ax_e.barh([r[0] for r in rows], values, color=[r[2] for r in rows])
    ax_e.invert_yaxis()
    if any(v > 0 for v in values):
        ax_e.set_xscale("log")
    ax_e.set(xlabel="energy per training sample (J)", title="energy per training sample")
    t = summary["time_per_step_s"]
    g = lambda d, k: float(d.get(k) or 0.0)  # noqa: E731
    _stack(ax_t, "model", [("optics (exposure)", g(t, "optics"), "C0", ""),
                           ("electronics in the loop", g(t, "electronics"), "C1", ""), ("host", g(t, "host"), "C2", "")])
    if "program" in t:
        _stack(ax_t, "model\nby group", [("program", g(t, "program"), "C5", ".."),
                                         ("acquire (exposure + settle)", g(t, "acquire"), "C9", ".."),
                                         ("transfer", g(t, "transfer"), "C4", ".."), ("host", g(t, "host"), "C2", "..")])
    m = summary.get("measured_per_step_s")
    if m:
        _stack(ax_t, "measured", [("measured: program", g(m, "program"), "C5", "//"),
                                  ("measured: display", g(m, "display"), "C8", "//"),
                                  ("measured: acquire", g(m, "acquire"), "C9", "//"),
                                  ("measured: host", g(m, "host"), "C2", "//")])
    elif t.get("measured") is not None and t.get("measured") == t.get("measured"):
        ax_t.bar(["measured"], [float(t["measured"])], color="C3", label="measured wall time")
    ax_t.set(ylabel="time per step (s)", title="time per step: declared timing model vs measured")
    ax_t.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax_e.grid(alpha=0.3, axis="x")
    ax_t.grid(alpha=0.3, axis="y")
    fig.suptitle(title or f"energy / latency ledger: {summary.get('kind', '')}, {summary.get('steps', 0)} steps")
    return fig
