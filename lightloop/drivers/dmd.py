"""Digital micromirror device through a vendor SDK (ViALUX ALP-4.x style C API) loaded lazily with ctypes.

The shared library is loaded in ``__init__`` (= connect), never at import; an absent or
broken SDK raises InstrumentError naming the library path. Every SDK call returns a
``long`` status, ``ALP_OK = 0`` on success; anything else raises InstrumentError naming
the call and the code.

Call sequence (the contract a fake SDK in tests, or a loopback shim, must honour):

* connect:  ``AlpDevAlloc(device_number, ALP_DEFAULT, &dev_id)``;
  ``AlpDevInquire(dev_id, ALP_DEV_DISPLAY_WIDTH=2058, &width)``;
  ``AlpDevInquire(dev_id, ALP_DEV_DISPLAY_HEIGHT=2057, &height)``;
  ``AlpSeqAlloc(dev_id, bitplanes=1, picnum=1, &seq_id)``
* write_frame: [``AlpProjHalt(dev_id)`` if projecting]; ``AlpSeqPut(dev_id, seq_id, 0, 1, data)``
  with ``data`` = height*width uint8, row-major, 255 = mirror on, 0 = off;
  ``AlpProjStartCont(dev_id, seq_id)``
* stop: ``AlpProjHalt(dev_id)``
* close: [``AlpProjHalt``]; ``AlpSeqFree(dev_id, seq_id)``; ``AlpDevHalt(dev_id)``; ``AlpDevFree(dev_id)``

Binding notes: ``ALP_ID`` is ``unsigned long``; out-parameters are passed with
``ctypes.byref``; frame data as ``c_void_p``. Constants follow ``alp.h`` (ALP_OK = 0,
ALP_DEFAULT = 0, ALP_DEV_DISPLAY_HEIGHT = 2057, ALP_DEV_DISPLAY_WIDTH = 2058).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from qcodes.instrument import Instrument
from qcodes.parameters import Parameter

from lightloop.drivers._base import DriverError

__all__ = ["DMDController", "ALP_OK", "ALP_DEFAULT", "ALP_DEV_DISPLAY_HEIGHT", "ALP_DEV_DISPLAY_WIDTH"]

ALP_OK = 0
ALP_NOT_ONLINE = 1001  # the device went offline (unplugged, power cycled)
ALP_DEFAULT = 0
ALP_DEV_DISPLAY_HEIGHT = 2057
ALP_DEV_DISPLAY_WIDTH = 2058

_ALP_ID = ctypes.c_ulong
_SIGNATURES: dict[str, list[Any]] = {
    "AlpDevAlloc": [ctypes.c_long, ctypes.c_long, ctypes.POINTER(_ALP_ID)],
    "AlpDevInquire": [_ALP_ID, ctypes.c_long, ctypes.POINTER(ctypes.c_long)],
    "AlpSeqAlloc": [_ALP_ID, ctypes.c_long, ctypes.c_long, ctypes.POINTER(_ALP_ID)],
    "AlpSeqPut": [_ALP_ID, _ALP_ID, ctypes.c_long, ctypes.c_long, ctypes.c_void_p],
    "AlpProjStartCont": [_ALP_ID, _ALP_ID],
    "AlpProjHalt": [_ALP_ID],
    "AlpSeqFree": [_ALP_ID, _ALP_ID],
    "AlpDevHalt": [_ALP_ID],
    "AlpDevFree": [_ALP_ID],
}


def load_library(path: str) -> Any:
    """Load the vendor SDK shared library with ``ctypes.CDLL`` (on Windows the ALP DLL uses cdecl too)."""
    return ctypes.CDLL(path)


class DMDController(Instrument):
    """Binary DMD frame sink via the vendor SDK; frames are (height, width) arrays of 0/1 or bool."""

    family = "DMD"

    def __init__(
        self,
        name: str,
        library_path: str,
        device_number: int = 0,
        loader: Callable[[str], Any] = load_library,
        **kwargs: Any,
    ) -> None:
        """Load the SDK at ``library_path`` (via ``loader``), allocate device ``device_number`` and a 1-frame sequence."""
        super().__init__(name, **kwargs)
        self.library_path = library_path
        self._lock = threading.RLock()
        self._lib: Any = None
        self._dev: Any = None
        self._seq: Any = None
        self._projecting = False
        try:
            try:
                lib = loader(library_path)
            except OSError as exc:
                raise DriverError(
                    f"{self.family} {name!r}: cannot load vendor SDK library {library_path!r} "
                    f"({type(exc).__name__}: {' '.join(str(exc).split())}); "
                    "expected the DMD vendor SDK (ALP-4.x API) installed at that path"
                ) from exc
            for fname, argtypes in _SIGNATURES.items():
                try:
                    func = getattr(lib, fname)
                except AttributeError as exc:
                    raise DriverError(
                        f"{self.family} {name!r}: SDK library {library_path!r} has no function {fname!r}; "
                        "expected the ALP-4.x API"
                    ) from exc
                try:
                    func.argtypes = argtypes
                    func.restype = ctypes.c_long
                except (AttributeError, TypeError):  # pragma: no cover - exotic loaders
                    pass
            self._lib = lib
            dev = _ALP_ID(0)
            self._call("AlpDevAlloc", ctypes.c_long(int(device_number)), ctypes.c_long(ALP_DEFAULT), ctypes.byref(dev))
            self._dev = dev
            width, height = ctypes.c_long(0), ctypes.c_long(0)
            self._call("AlpDevInquire", dev, ctypes.c_long(ALP_DEV_DISPLAY_WIDTH), ctypes.byref(width))
            self._call("AlpDevInquire", dev, ctypes.c_long(ALP_DEV_DISPLAY_HEIGHT), ctypes.byref(height))
            if width.value < 1 or height.value < 1:
                raise DriverError(
                    f"{self.family} {name!r}: SDK reported a {height.value}x{width.value} mirror array; "
                    "expected positive dimensions"
                )
            self._shape = (int(height.value), int(width.value))
            seq = _ALP_ID(0)
            self._call("AlpSeqAlloc", dev, ctypes.c_long(1), ctypes.c_long(1), ctypes.byref(seq))
            self._seq = seq
        except Exception:
            self.close()
            raise

        self.height: Parameter = self.add_parameter(
            "height", unit="px", get_cmd=lambda: self._shape[0], set_cmd=False,
            docstring="Mirror rows.",
        )
        self.width: Parameter = self.add_parameter(
            "width", unit="px", get_cmd=lambda: self._shape[1], set_cmd=False,
            docstring="Mirror columns.",
        )

    @property
    def shape(self) -> tuple[int, int]:
        """Mirror array shape (height, width)."""
        return self._shape

    def _call(self, fname: str, *args: Any) -> None:
        code = getattr(self._lib, fname)(*args)
        if code != ALP_OK:
            offline = " (ALP_NOT_ONLINE: device not connected, e.g. after a power cycle)" if code == ALP_NOT_ONLINE else ""
            raise DriverError(
                f"{self.family} {self.name!r} ({self.library_path!r}): {fname} returned {code}{offline}; "
                "expected ALP_OK (0)"
            )

    def _validate(self, frame: Any) -> np.ndarray:
        label = f"{self.family} {self.name!r}"
        if not isinstance(frame, np.ndarray):
            raise ValueError(f"{label}: frame must be a numpy array, got {type(frame).__name__}")
        if frame.shape != self._shape:
            raise ValueError(f"{label}: frame shape {frame.shape}; expected {self._shape}")
        if frame.dtype != np.bool_:
            if not np.issubdtype(frame.dtype, np.integer):
                raise ValueError(f"{label}: frame dtype {frame.dtype}; expected bool or integer 0/1")
            if frame.size and (int(frame.min()) < 0 or int(frame.max()) > 1):
                raise ValueError(f"{label}: binary frame has values outside {{0, 1}}")
        return np.ascontiguousarray(np.where(frame.astype(bool), 255, 0).astype(np.uint8))

    def write_frame(self, frame: np.ndarray) -> None:
        """Display one binary (height, width) frame (True/1 = mirror on); validated before any SDK call."""
        data = self._validate(frame)
        with self._lock:
            if self._lib is None:
                raise DriverError(f"{self.family} {self.name!r}: not connected; expected an open device")
            if self._projecting:
                self._call("AlpProjHalt", self._dev)
                self._projecting = False
            self._call(
                "AlpSeqPut", self._dev, self._seq, ctypes.c_long(0), ctypes.c_long(1),
                data.ctypes.data_as(ctypes.c_void_p),
            )
            self._call("AlpProjStartCont", self._dev, self._seq)
            self._projecting = True

    def blank(self) -> None:
        """Display an all-off frame."""
        self.write_frame(np.zeros(self._shape, dtype=bool))

    def stop(self) -> None:
        """Halt projection (``AlpProjHalt``); mirrors keep their last state until the next frame."""
        with self._lock:
            if self._lib is not None and self._projecting:
                self._call("AlpProjHalt", self._dev)
                self._projecting = False

    def get_idn(self) -> dict[str, str | None]:
        """Identity: the SDK path and mirror array size."""
        shape = getattr(self, "_shape", (0, 0))
        return {"vendor": None, "model": f"{shape[0]}x{shape[1]} DMD", "serial": None,
                "firmware": getattr(self, "library_path", None)}

    def close(self) -> None:
        """Halt, free the sequence and the device (best effort), then deregister the instrument."""
        lib = getattr(self, "_lib", None)
        if lib is not None:
            dev, seq = self._dev, self._seq
            steps: list[tuple[str, tuple[Any, ...]]] = []
            if self._projecting:
                steps.append(("AlpProjHalt", (dev,)))
            if seq is not None:
                steps.append(("AlpSeqFree", (dev, seq)))
            if dev is not None:
                steps += [("AlpDevHalt", (dev,)), ("AlpDevFree", (dev,))]
            for fname, args in steps:
                try:
                    getattr(lib, fname)(*args)
                except Exception:  # pragma: no cover - teardown is best effort
                    pass
            self._lib = None
            self._projecting = False
        super().close()
