"""Figures of recorded runs (matplotlib Figure objects: the caller's backend is never changed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lightloop.errors import RunFolderError
from lightloop.records.runs import epoch_metrics, load_record

__all__ = ["plot_runs"]


def plot_runs(folders: Sequence[Path]) -> Any:
    """One Figure: loss (left) and accuracy (right) per epoch of each run, train dashed and test solid."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(folders))]
    for folder, colour in zip(folders, colours):
        rows = epoch_metrics(folder)
        if not rows:
            raise RunFolderError(f"{folder}: RUN: no per-epoch metrics (metrics.jsonl or run.db); expected a "
                                 "training run that finished at least one epoch")
        rec = load_record(folder)
        label = Path(folder).name
        epochs = [r["epoch"] for r in rows]
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.plot(epochs, [r.get(f"train_{key}") for r in rows], "--", color=colour, marker="o", ms=3)
            ax.plot(epochs, [r.get(f"test_{key}") for r in rows], "-", color=colour, marker="o", ms=3, label=label)
        best = (rec.get("summary") or {}).get("best_epoch")
        if best in epochs:
            ax_acc.plot([best], [rows[epochs.index(best)].get("test_accuracy")], "*", color=colour, ms=12)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (train dashed, test solid)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (star: best test epoch)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.legend(fontsize="small", loc="lower right")
    return fig
