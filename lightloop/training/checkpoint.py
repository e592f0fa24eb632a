"""Atomic checkpoints: one NPZ holding parameter and optimizer arrays plus a JSON metadata record."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.atomic_io import atomic_write_bytes, atomic_write_text
from lightloop.errors import RunFolderError

__all__ = ["save_checkpoint", "load_checkpoint", "load_training_checkpoint", "TRAINING_KEYS", "atomic_write_bytes",
           "atomic_write_text"]


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
            if "__meta__" not in z.files:
                raise RunFolderError(f"{path}: __meta__: missing from the checkpoint (expected lightloop's metadata "
                                     f"record)")
            skeleton = json.loads(str(z["__meta__"]))
            missing = sorted(_array_names(skeleton) - set(z.files))
            if missing:
                raise RunFolderError(f"{path}: {missing[0]}: missing from the checkpoint (expected the array its "
                                     f"metadata names)")
            return _unflatten(skeleton, z)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise RunFolderError(f"{path}: not a readable lightloop checkpoint ({reason}); expected an NPZ file written "
                             f"by lightloop") from None


def _array_names(skeleton: Any) -> set[str]:
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__array__"}:
            return {str(skeleton["__array__"])}
        return set().union(*(_array_names(v) for v in skeleton.values()))
    if isinstance(skeleton, list):
        return set().union(*(_array_names(v) for v in skeleton))
    return set()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_params(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(p, np.ndarray) and np.issubdtype(p.dtype, np.number) for p in v)


def _is_best(v: Any) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("test_accuracy"), (int, float)) and _is_int(v.get("epoch"))
            and not isinstance(v.get("test_accuracy"), bool))


#: key of a training checkpoint -> (test, what is expected)
TRAINING_KEYS: dict[str, tuple[Any, str]] = {
    "epoch": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "params": (_is_params, "a list of numeric arrays"),
    "optimizer": (lambda v: isinstance(v, dict), "an object (the optimizer state)"),
    "rng": (lambda v: isinstance(v, dict), "an object (the numpy bit-generator state)"),
    "processor": (lambda v: isinstance(v, dict), "an object (the processor snapshot)"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(h, dict) for h in v), "a list of epoch records"),
    "best": (_is_best, "an object with a numeric test_accuracy and an integer epoch"),
}


def load_training_checkpoint(path: Path) -> dict[str, Any]:
    """Load a Trainer checkpoint; one-line error naming the file and the first missing or wrong-typed key."""
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise RunFolderError(f"{path}: expected a training checkpoint object, got {type(state).__name__}")
    for key, (ok, expected) in TRAINING_KEYS.items():
        if key not in state:
            raise RunFolderError(f"{path}: {key}: missing from the checkpoint (expected {expected})")
        if not ok(state[key]):
            raise RunFolderError(f"{path}: {key}: expected {expected}, got {type(state[key]).__name__}")
    return state
