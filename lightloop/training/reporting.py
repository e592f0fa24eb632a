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
    """Append-only JSON-lines log; each line goes out in one os.write on an O_APPEND descriptor, then fsync (with
    fsync=False the line survives a killed process at once and reaches the disk at the next sync())."""

    def __init__(self, path: Path, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def sync(self) -> None:
        """fsync the log (the Trainer calls it before each checkpoint, so the log holds every epoch it names)."""
        if self.path.exists():
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (a crash leaves either the whole line or a torn tail that repair() drops)."""
        data = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            if self.fsync:
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


def plot_learning_curve(history: Sequence[dict[str, Any]], path: Path, title: str = "", settings: str = "") -> Path:
    """Save accuracy (train, test) and loss (train, test) against epoch as a PNG, the best test epoch marked and the
    run's settings written under the title (a matplotlib Figure: the caller's backend is never changed)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ep = [h["epoch"] for h in history]
    best = max(history, key=lambda h: h["test_accuracy"])
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ep, [100 * h["train_accuracy"] for h in history], "o-", ms=3, label="train")
    ax1.plot(ep, [100 * h["test_accuracy"] for h in history], "s-", ms=3, label="test")
    ax1.axvline(best["epoch"], color="0.5", ls=":", lw=1)
    ax1.annotate(f"best test {100 * best['test_accuracy']:.2f}% (epoch {best['epoch']})",
                 (best["epoch"], 100 * best["test_accuracy"]), textcoords="offset points", xytext=(4, -14),
                 fontsize=8, color="0.3")
    ax1.set(xlabel="epoch", ylabel="accuracy (%)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.plot(ep, [h["train_loss"] for h in history], "o-", ms=3, color="C0", label="train")
    if all(h.get("test_loss") is not None for h in history):
        ax2.plot(ep, [h["test_loss"] for h in history], "s-", ms=3, color="C1", label="test")
    if all(h["train_loss"] > 0 for h in history):
        ax2.set_yscale("log")
    ax2.axvline(best["epoch"], color="0.5", ls=":", lw=1)
    if all(h.get("prediction_error") is not None for h in history):   # physics_aware: its model's error
        ax3 = ax2.twinx()
        ax3.plot(ep, [h["prediction_error"] for h in history], "^--", ms=3, color="C2")
        ax3.set_ylabel("model prediction error (rel. rms)", color="C2", fontsize=8)
    ax2.set(xlabel="epoch", ylabel="loss")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title or settings:
        fig.suptitle("\n".join(t for t in (title, settings) if t), fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
