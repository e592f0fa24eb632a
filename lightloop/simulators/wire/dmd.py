"""Wire twin of ``lightloop.drivers.dmd``: a stand-in for the DMD vendor SDK (ALP-4.x C API) loaded instead of a DLL.

ctypes cannot load a Python "library", and a DMD has no wire protocol to serve; so the DMD's twin is
an in-process object with the same nine functions, passed to ``DMDController(..., loader=...)``.
It honours the driver's calling convention exactly (``ctypes.byref`` out-parameters, frame data as a
``c_void_p`` to height*width uint8 bytes, ``ALP_OK = 0`` status codes) and hands every uploaded
frame to ``on_frame(frame: bool (height, width))`` - e.g. :func:`dmd_weight_sink` decoding differential
block pairs into a ``DMDWeightTwin`` of the emulator.

Faults for tests: ``fail_next = {"AlpSeqPut": 1003}`` makes the next call of that function return the
status code given; ``missing = {"AlpSeqPut"}`` hides a function (a broken SDK).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.hal.frames import decode_dmd_frame

__all__ = ["LoopbackALP", "dmd_weight_sink"]

ALP_OK = 0
ALP_NOT_ONLINE = 1001
_WIDTH, _HEIGHT = 2058, 2057


def _out(ref: Any) -> Any:
    """The ctypes object behind a byref() argument."""
    return getattr(ref, "_obj", ref)


class LoopbackALP:
    """In-process ALP SDK: one device of (height, width) mirrors; `calls` records every function called."""

    def __init__(self, height: int, width: int, on_frame: Callable[[NDArray[np.bool_]], None] | None = None) -> None:
        self.height, self.width, self.on_frame = int(height), int(width), on_frame
        self.calls: list[str] = []
        self.frames = 0
        self.projecting = False
        self.allocated = False
        self.fail_next: dict[str, int] = {}
        self.missing: set[str] = set()
        for name in ("AlpDevAlloc", "AlpDevInquire", "AlpSeqAlloc", "AlpSeqPut", "AlpProjStartCont",
                     "AlpProjHalt", "AlpSeqFree", "AlpDevHalt", "AlpDevFree"):
            setattr(self, name, self._wrap(name, getattr(self, "_" + name)))

    def reboot(self) -> None:
        """Power cycle: the device drops offline (calls return ALP_NOT_ONLINE until re-allocated), mirrors all off."""
        self.allocated = self.projecting = False
        if self.on_frame is not None:
            self.on_frame(np.zeros((self.height, self.width), dtype=bool))

    def loader(self, path: str) -> "LoopbackALP":
        """Use as ``DMDController(name, path, loader=sdk.loader)``."""
        return self

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("Alp") and name in object.__getattribute__(self, "missing"):
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    def _wrap(self, name: str, fn: Callable[..., int]) -> Callable[..., int]:
        def call(*args: Any) -> int:
            self.calls.append(name)
            code = self.fail_next.pop(name, None)
            if code is not None:
                return code
            return fn(*args)

        call.__name__ = name
        return call

    # the nine SDK functions ---------------------------------------------------------------------------
    def _AlpDevAlloc(self, device: Any, init: Any, dev_id: Any) -> int:
        _out(dev_id).value = 1
        self.allocated = True
        return ALP_OK

    def _AlpDevInquire(self, dev: Any, what: Any, value: Any) -> int:
        key = int(getattr(what, "value", what))
        if key == _WIDTH:
            _out(value).value = self.width
        elif key == _HEIGHT:
            _out(value).value = self.height
        else:
            return 1002
        return ALP_OK

    def _AlpSeqAlloc(self, dev: Any, bitplanes: Any, picnum: Any, seq_id: Any) -> int:
        _out(seq_id).value = 1
        return ALP_OK

    def _AlpSeqPut(self, dev: Any, seq: Any, first: Any, count: Any, data: Any) -> int:
        if not self.allocated:
            return ALP_NOT_ONLINE
        address = data.value if isinstance(data, ctypes.c_void_p) else int(data)
        raw = ctypes.string_at(address, self.height * self.width)
        frame = np.frombuffer(raw, dtype=np.uint8).reshape(self.height, self.width) > 127
        self.frames += 1
        if self.on_frame is not None:
            self.on_frame(frame)
        return ALP_OK

    def _AlpProjStartCont(self, dev: Any, seq: Any) -> int:
        self.projecting = True
        return ALP_OK

    def _AlpProjHalt(self, dev: Any) -> int:
        self.projecting = False
        return ALP_OK

    def _AlpSeqFree(self, dev: Any, seq: Any) -> int:
        return ALP_OK

    def _AlpDevHalt(self, dev: Any) -> int:
        return ALP_OK

    def _AlpDevFree(self, dev: Any) -> int:
        self.allocated = False
        return ALP_OK


def dmd_weight_sink(twin: Any, shape: tuple[int, int], block_pixels: int) -> Callable[[NDArray[np.bool_]], None]:
    """on_frame callback decoding differential k x k block pairs into ``twin.write_blocks(on_plus, on_minus)``."""

    def on_frame(frame: NDArray[np.bool_]) -> None:
        twin.write_blocks(*decode_dmd_frame(frame, shape, block_pixels))

    return on_frame
