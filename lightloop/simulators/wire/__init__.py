"""Wire-level twin: a loopback (127.0.0.1) server answering each instrument's own protocol from the emulator.

``server``     the selectors-based TCP server, command log, fault injection
``devices``    protocol twins (SCPI instruments, digitiser blocks, SLM frames, Qontrol heater lines)
``free_space`` the free-space SA bench behind those protocols (one FreeSpaceEmulator)
``dmd_sdk``    an in-process stand-in for the DMD vendor SDK (ctypes cannot load a Python "library")
"""

from lightloop.simulators.wire.server import LOOPBACK, WireLog, WireRecord, WireTwinServer

__all__ = ["LOOPBACK", "WireLog", "WireRecord", "WireTwinServer"]
