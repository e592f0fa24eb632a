"""Run records: JSON-lines metrics log and learning-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

__all__ = ["MetricsLog", "plot_learning_curve"]


class MetricsLog:
    """Append-only JSON-lines log; each line is flushed and fsynced."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        import os

        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, epoch: int) -> None:
        """Drop epoch records after `epoch` (used on resume so the log matches the checkpoint)."""
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("epoch", 0) <= epoch]
        self.path.write_text("".join(ln + "\n" for ln in keep))


def plot_learning_curve(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Save train/test accuracy and train loss against epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(ep, [100 * h["train_accuracy"] for h in history], "o-", label="train")
    ax1.plot(ep, [100 * h["test_accuracy"] for h in history], "s-", label="test")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("accuracy (%)")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.semilogy(ep, [h["train_loss"] for h in history], "o-", color="C3")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("train MSE loss")
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
