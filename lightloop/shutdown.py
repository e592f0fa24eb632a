"""How a run ends: SIGTERM, SIGHUP and SIGINT become exceptions in the main thread; the safe-state sequence is shielded.

Every ending of a run must reach the bench's safe state (docs/safety.md). Python's default SIGTERM and
SIGHUP actions kill the process without unwinding, so no ``finally``, ``with`` or ``except`` block runs
and the instruments keep their last set-points. :func:`handle_signals` installs handlers that raise
:class:`Terminated` (SIGTERM, SIGHUP) or :class:`KeyboardInterrupt` (SIGINT) at the point the main thread
is executing: the run unwinds through the Trainer's and the processor's safe-state code like any error.

A second signal that arrives while the safe-state sequence runs must not abort it: code that drives the
bench safe runs inside :func:`shielded`, during which signals are only recorded. When the outermost shield
ends, a recorded signal is raised then - unless an exception is already unwinding (the run is ending anyway:
the first ending wins and its message is the one printed).

SIGKILL (``kill -9``) and power loss cannot be caught by any process: ``lightloop safe --config FILE``
drives the instruments safe from another shell.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Terminated", "handle_signals", "shielded", "HANDLED_SIGNALS"]

#: signals turned into exceptions (SIGHUP does not exist on Windows)
HANDLED_SIGNALS: tuple[int, ...] = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, n))


class Terminated(BaseException):
    """The process was asked to stop by a signal (SIGTERM, SIGHUP); exit code 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        """Shell convention for a process ended by a signal: 128 + signal number."""
        return 128 + self.signum


class _State:
    depth = 0                    # nesting of shielded() in the main thread
    pending: list[int] = []      # signals received while shielded
    installed = 0                # nesting of handle_signals()
    raised: int | None = None    # the signal whose exception is unwinding the run


def _exception_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _handler(signum: int, frame: Any) -> None:
    if _State.depth > 0 or _State.raised is not None:   # shielded, or the run is already ending by a signal
        _State.pending.append(signum)
        return
    _State.raised = signum
    raise _exception_for(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def handle_signals() -> Iterator[None]:
    """Within the block, SIGTERM/SIGHUP raise Terminated and SIGINT raises KeyboardInterrupt (main thread only)."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in HANDLED_SIGNALS}
    _State.installed += 1
    _State.raised = None
    try:
        yield
    finally:
        _State.installed -= 1
        ending = _State.raised is not None and isinstance(sys.exc_info()[1], (Terminated, KeyboardInterrupt))
        with shielded():
            for s, h in previous.items():
                # a process ending by a signal ignores further ones until it has exited (no default kill
                # after the safe state and before the exit code); otherwise the caller's handlers come back
                signal.signal(s, signal.SIG_IGN if ending else (h if h is not None else signal.SIG_DFL))
            _State.raised = None


@contextmanager
def shielded() -> Iterator[None]:
    """Signals arriving inside the block are recorded and raised after it (not during), so the block completes."""
    if not _main_thread():
        yield
        return
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0 and _State.pending:
            signum = _State.pending[0]
            _State.pending.clear()
            if sys.exc_info()[1] is None and _State.installed and _State.raised is None:
                _State.raised = signum
                raise _exception_for(signum)
