"""Run records: JSON-lines metrics log and learning-curve PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from lightloop.atomic_io import atomic_write_bytes
from lightloop.errors import RunFolderError

__all__ = ["MetricsLog", "plot_learning_curve"]


class MetricsLog:
    """Append-only JSON-lines log; each line goes out in one os.write on an O_APPEND descriptor, then fsync."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (a crash leaves either the whole line or a torn tail that repair() drops)."""
        data = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if written != len(data):
            raise RunFolderError(f"{self.path}: short write ({written} of {len(data)} bytes); disk full?")

    def repair(self) -> bool:
        """Drop an incomplete last line (a process killed mid-append); keep the rest; True if something was dropped."""
        if not self.path.exists():
            return False
        raw = self.path.read_bytes()
        if not raw or raw.endswith(b"\n"):
            return False
        atomic_write_bytes(self.path, raw[: raw.rfind(b"\n") + 1])
        return True

    def records(self) -> list[dict[str, Any]]:
        """Every record of the log (one-line error naming the line if one is not a JSON object)."""
        return [rec for _, rec in self._lines()]

    def _lines(self) -> list[tuple[str, dict[str, Any]]]:
        if not self.path.exists():
            return []
        out = []
        for i, ln in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
            if not ln.strip():
                continue
            try:
                rec = json.loads(ln)
            except ValueError:
                rec = None
            if not isinstance(rec, dict) or not isinstance(rec.get("epoch", 0), int):
                raise RunFolderError(f"{self.path}: line {i}: expected a JSON object with an integer epoch")
            out.append((ln, rec))
        return out

    def truncate_after(self, epoch: int) -> None:
        """Repair a torn tail, then drop epoch records after `epoch` (on resume, so the log matches the checkpoint)."""
        if not self.path.exists():
            return
        self.repair()
        keep = [ln for ln, rec in self._lines() if rec.get("epoch", 0) <= epoch]
        atomic_write_bytes(self.path, "".join(ln + "\n" for ln in keep).encode())


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
