"""Atomic checkpoints: one NPZ holding parameter and optimizer arrays plus a JSON metadata record."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import LightloopError

__all__ = ["save_checkpoint", "load_checkpoint", "atomic_write_bytes", "atomic_write_text"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the new content, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic text write (UTF-8)."""
    atomic_write_bytes(path, text.encode())


def _flatten(prefix: str, value: Any, arrays: dict[str, NDArray]) -> Any:
    """Move arrays (possibly in lists) into `arrays`; return a JSON-able skeleton."""
    if isinstance(value, np.ndarray):
        arrays[prefix] = value
        return {"__array__": prefix}
    if isinstance(value, (list, tuple)):
        return [_flatten(f"{prefix}/{i}", v, arrays) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _flatten(f"{prefix}/{k}", v, arrays) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unflatten(skeleton: Any, arrays: Any) -> Any:
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__array__"}:
            return np.array(arrays[skeleton["__array__"]])
        return {k: _unflatten(v, arrays) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_unflatten(v, arrays) for v in skeleton]
    return skeleton


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically save a nested state (dicts, lists, arrays, JSON scalars) to an NPZ file."""
    import io

    arrays: dict[str, NDArray] = {}
    skeleton = _flatten("s", state, arrays)
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.array(json.dumps(skeleton)), **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by save_checkpoint (one clear error if it is unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            skeleton = json.loads(str(z["__meta__"]))
            return _unflatten(skeleton, z)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise LightloopError(f"{path}: not a readable lightloop checkpoint ({exc})") from None
