"""DMDController: missing SDK, call sequence against an injected fake ctypes library, validation."""

from __future__ import annotations

import ctypes
import importlib
import os
import sys

import numpy as np
import pytest

from lightloop.drivers.dmd import ALP_DEV_DISPLAY_HEIGHT, ALP_DEV_DISPLAY_WIDTH, DMDController
from lightloop.errors import InstrumentError

from driver_testkit import *  # noqa: F401,F403  (fixtures: see driver_testkit.__all__)


class FakeFunction:
    """Callable standing in for a ctypes foreign function (accepts argtypes/restype assignment)."""

    def __init__(self, lib: FakeAlp, name: str) -> None:
        self.lib, self.name = lib, name
        self.argtypes = None
        self.restype = None

    def __call__(self, *args):
        return self.lib.dispatch(self.name, args)


class FakeAlp:
    """In-memory ALP-4.x SDK: records every call, fills out-parameters, returns ALP_OK or injected codes."""

    def __init__(self, height: int = 3, width: int = 5) -> None:
        self.height, self.width = height, width
        self.calls: list[tuple] = []
        self.fail: dict[str, int] = {}
        self.frames: list[np.ndarray] = []
        self._funcs: dict[str, FakeFunction] = {}

    def __getattr__(self, name: str) -> FakeFunction:
        if not name.startswith("Alp"):
            raise AttributeError(name)
        funcs = self.__dict__["_funcs"]
        if name not in funcs:
            funcs[name] = FakeFunction(self, name)
        return funcs[name]

    @staticmethod
    def _value(arg):
        return arg.value if hasattr(arg, "value") else arg

    def dispatch(self, name: str, args: tuple) -> int:
        shown = tuple(self._value(a) if not type(a).__name__ == "CArgObject" else "&" for a in args)
        if name == "AlpSeqPut":
            shown = shown[:4] + ("data",)
        self.calls.append((name, *shown))
        if name in self.fail:
            return self.fail[name]
        if name == "AlpDevAlloc":
            args[2]._obj.value = 7
        elif name == "AlpDevInquire":
            what = self._value(args[1])
            args[2]._obj.value = {ALP_DEV_DISPLAY_WIDTH: self.width, ALP_DEV_DISPLAY_HEIGHT: self.height}[what]
        elif name == "AlpSeqAlloc":
            args[3]._obj.value = 11
        elif name == "AlpSeqPut":
            n = self.height * self.width
            raw = ctypes.string_at(args[4], n)
            self.frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(self.height, self.width).copy())
        return 0


@pytest.fixture
def sdk():
    return FakeAlp()


@pytest.fixture
def dmd(sdk, unique_name):
    inst = DMDController(unique_name("dmd"), "/opt/alp/alp4395.so", loader=lambda path: sdk)
    yield inst
    inst.close()


CONNECT = [
    ("AlpDevAlloc", 0, 0, "&"),
    ("AlpDevInquire", 7, ALP_DEV_DISPLAY_WIDTH, "&"),
    ("AlpDevInquire", 7, ALP_DEV_DISPLAY_HEIGHT, "&"),
    ("AlpSeqAlloc", 7, 1, 1, "&"),
]


def test_missing_sdk_names_the_library_path(unique_name):
    path = "/nonexistent/vendor/alp4395.so"
    with pytest.raises(InstrumentError) as info:
        DMDController(unique_name("dmd"), path)
    text = str(info.value)
    assert path in text and "vendor SDK" in text and "\n" not in text


def test_import_does_not_load_the_sdk(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("ctypes.CDLL called at import time")

    monkeypatch.setattr(ctypes, "CDLL", boom)
    importlib.reload(sys.modules["lightloop.drivers.dmd"])  # would raise if the SDK were loaded on import


def test_connect_call_sequence_and_geometry(dmd, sdk):
    assert sdk.calls == CONNECT
    assert dmd.shape == (3, 5)
    assert (dmd.height(), dmd.width()) == (3, 5)
    assert sdk.AlpSeqPut.restype is ctypes.c_long  # signatures were declared


def test_write_frame_call_sequence_and_data(dmd, sdk):
    sdk.calls.clear()
    frame = np.zeros((3, 5), dtype=bool)
    frame[1, 2] = frame[0, 0] = True
    dmd.write_frame(frame)
    dmd.write_frame(np.ones((3, 5), dtype=np.int64))
    assert sdk.calls == [
        ("AlpSeqPut", 7, 11, 0, 1, "data"),
        ("AlpProjStartCont", 7, 11),
        ("AlpProjHalt", 7),
        ("AlpSeqPut", 7, 11, 0, 1, "data"),
        ("AlpProjStartCont", 7, 11),
    ]
    np.testing.assert_array_equal(sdk.frames[0], np.where(frame, 255, 0))
    np.testing.assert_array_equal(sdk.frames[1], np.full((3, 5), 255))


def test_stop_blank_and_close_sequence(sdk, unique_name):
    inst = DMDController(unique_name("dmd"), "alp.dll", device_number=2, loader=lambda path: sdk)
    assert sdk.calls[0] == ("AlpDevAlloc", 2, 0, "&")
    inst.blank()
    inst.stop()
    inst.stop()  # idempotent
    inst.write_frame(np.zeros((3, 5), dtype=np.uint8))
    sdk.calls.clear()
    inst.close()
    assert sdk.calls == [("AlpProjHalt", 7), ("AlpSeqFree", 7, 11), ("AlpDevHalt", 7), ("AlpDevFree", 7)]
    np.testing.assert_array_equal(sdk.frames[0], np.zeros((3, 5)))


@pytest.mark.parametrize(
    "frame, match",
    [
        (np.zeros((5, 3), dtype=bool), "shape"),
        (np.full((3, 5), 2, dtype=np.uint8), "outside"),
        (np.full((3, 5), 0.5), "dtype"),
        ("not an array", "numpy array"),
    ],
)
def test_validation_rejects_before_any_sdk_call(dmd, sdk, frame, match):
    sdk.calls.clear()
    with pytest.raises(ValueError, match=match):
        dmd.write_frame(frame)
    assert sdk.calls == []


def test_sdk_error_code_is_instrument_error(dmd, sdk):
    sdk.fail["AlpSeqPut"] = 1003
    with pytest.raises(InstrumentError) as info:
        dmd.write_frame(np.zeros((3, 5), dtype=bool))
    assert "AlpSeqPut returned 1003; expected ALP_OK (0)" in str(info.value)


def test_failed_connect_frees_device_and_name(sdk, unique_name):
    sdk.fail["AlpSeqAlloc"] = 1001
    name = unique_name("dmd")
    with pytest.raises(InstrumentError, match="AlpSeqAlloc returned 1001"):
        DMDController(name, "alp.so", loader=lambda path: sdk)
    assert sdk.calls[-2:] == [("AlpDevHalt", 7), ("AlpDevFree", 7)]
    del sdk.fail["AlpSeqAlloc"]
    DMDController(name, "alp.so", loader=lambda path: sdk).close()


def test_library_without_the_api_is_instrument_error(unique_name):
    class Empty:
        pass

    with pytest.raises(InstrumentError, match="has no function 'AlpDevAlloc'"):
        DMDController(unique_name("dmd"), "libm.so.6", loader=lambda path: Empty())


HW = os.environ.get("LIGHTLOOP_HW_DMD")  # path to the vendor SDK library


@pytest.mark.hardware
@pytest.mark.skipif(not HW, reason="set LIGHTLOOP_HW_DMD to the vendor SDK library path to run on hardware")
def test_real_hardware_connect(unique_name):
    inst = DMDController(unique_name("dmd_hw"), HW)
    try:
        assert inst.height() > 0 and inst.width() > 0
    finally:
        inst.close()
