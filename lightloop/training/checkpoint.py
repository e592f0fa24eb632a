"""Atomic checkpoints: one NPZ holding parameter and optimizer arrays plus a JSON metadata record."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.atomic_io import atomic_write_bytes, atomic_write_text
from lightloop.errors import LightloopError

__all__ = ["save_checkpoint", "load_checkpoint", "atomic_write_bytes", "atomic_write_text"]


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
