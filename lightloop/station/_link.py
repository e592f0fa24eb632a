"""One instrument connection: counted, timed calls; bounded reconnects with backoff on transport faults.

Faults a call can meet, and what :meth:`Link.run` does about each (every retry is bounded):

* transport fault (timeout, reset or refused link; ``is_transport_fault``) - close, reconnect with backoff,
  re-apply every ``on_connect`` step (instrument set-up, adapter caches re-sent), call again;
* broken binary reply (a corrupt IEEE 488.2 block: the position in the byte stream is lost) - likewise;
* bad reply (garbage where a number or ``OK`` was expected; ``is_bad_reply``) or a bad reading (a returned
  number that is NaN, infinite or the SCPI overrange marker +-9.9E37; ``bad_reading``) - call again on the
  same connection, at most ``ReconnectPolicy.retries`` times per call, counted in ``TransactionStats.retries``.

Every call an adapter makes through a link is idempotent (absolute set-points, frames, read-backs, an
acquisition that is simply re-done), which is what makes calling it again safe.
"""

from __future__ import annotations

import math
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from lightloop.errors import InstrumentError

__all__ = ["TransactionStats", "ReconnectPolicy", "BadReplyError", "is_transport_fault", "is_bad_reply",
           "bad_reading", "peer_closed", "Link"]


T = TypeVar("T")


@dataclass
class TransactionStats:
    """Transactions and instrument time, in total and per instrument."""

    transactions: int = 0
    instrument_seconds: float = 0.0
    reconnects: int = 0
    retries: int = 0           # calls repeated after a bad reply or reading (no reconnect)
    per_instrument: dict[str, int] = field(default_factory=dict)
    seconds_per_instrument: dict[str, float] = field(default_factory=dict)
    retries_per_instrument: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        """Add n transactions of instrument `name`."""
        self.transactions += n
        self.per_instrument[name] = self.per_instrument.get(name, 0) + n

    def retry(self, name: str) -> None:
        """Count one repeated call of instrument `name` (after a bad reply or reading)."""
        self.retries += 1
        self.retries_per_instrument[name] = self.retries_per_instrument.get(name, 0) + 1

    def add_time(self, name: str, seconds: float) -> None:
        """Add time spent inside driver calls of instrument `name`."""
        self.instrument_seconds += seconds
        self.seconds_per_instrument[name] = self.seconds_per_instrument.get(name, 0.0) + seconds


@dataclass(frozen=True)
class ReconnectPolicy:
    """Reconnect at most `attempts` times per fault (backoff_s * factor**k between tries), `budget` per run;
    repeat a call after a bad reply or reading at most `retries` times."""

    attempts: int = 3
    backoff_s: float = 0.1
    factor: float = 2.0
    budget: int = 20
    retries: int = 3


_TRANSPORT_TEXT = ("(timeout)", "connection failed", "link closed", "cannot open", "cannot connect",
                   "not connected", "no reply")


_DESYNC_TEXT = ("IEEE 488.2 block from", "waveform data from")
_BAD_REPLY_TEXT = ("replied ", "waveform preamble from", "bad reading")
OVERRANGE = 9.9e37   # SCPI: +9.9E37 = overrange / +inf, 9.91E37 = NaN


class BadReplyError(InstrumentError):
    """A reply that is not what the command returns (garbage, NaN, out of the instrument's range); worth a retry."""


def bad_reading(value: Any) -> str | None:
    """Why a returned reading is impossible (NaN, inf, |x| >= 9.9E37 at any depth of a list/tuple/array), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, np.floating, np.integer)):
        v = float(value)
        return None if math.isfinite(v) and abs(v) < OVERRANGE else f"{v!r}"
    if isinstance(value, np.ndarray) and value.dtype.kind in "fc":
        bad = ~np.isfinite(value) | (np.abs(value) >= OVERRANGE)
        return f"{int(bad.sum())} of {value.size} values NaN/inf/overrange" if bad.any() else None
    if isinstance(value, (list, tuple)):
        return next((b for b in map(bad_reading, value) if b is not None), None)
    return None


def is_bad_reply(exc: BaseException) -> bool:
    """True for garbage or impossible replies on an intact link (worth repeating the call, no reconnect)."""
    return isinstance(exc, BadReplyError) or (not is_transport_fault(exc) and not _desynced(exc)
                                              and any(t in str(exc) for t in _BAD_REPLY_TEXT))


def _desynced(exc: BaseException) -> bool:
    """A corrupt binary block: the reply's length is unknown, so the link must be re-opened."""
    return any(t in str(exc) for t in _DESYNC_TEXT)


def _socket_of(driver: Any) -> socket.socket | None:
    """The TCP socket under a driver: the SLM's own, or a pyvisa-py TCPIP SOCKET session's; else None."""
    sock = getattr(driver, "_sock", None)
    if sock is None and getattr(driver, "visa_handle", None) is not None:
        try:
            handle = driver.visa_handle
            sock = handle.visalib.sessions[handle.session].interface
        except Exception:
            sock = None
    return sock if isinstance(sock, socket.socket) else None


def peer_closed(driver: Any) -> bool:
    """True when the instrument closed or reset the driver's TCP link (no wire traffic: a zero-time poll)."""
    sock = _socket_of(driver)
    if sock is None or sock.fileno() < 0:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:          # reset by peer
        return True


def is_transport_fault(exc: BaseException) -> bool:
    """True for timeouts and dropped/refused connections (worth a reconnect); False for garbage and device errors."""
    text = str(exc)
    if any(t in text for t in _TRANSPORT_TEXT):
        return True
    e: BaseException | None = exc.__cause__
    while e is not None:
        if isinstance(e, (OSError, EOFError)) or type(e).__name__ in ("VisaIOError", "SerialException",
                                                                      "SerialTimeoutException"):
            return True
        e = e.__cause__
    return False


class Link:
    """One instrument connection: (re)connects through `connect`, counts and times every call, retries transport faults."""

    def __init__(self, name: str, family: str, connect: Callable[[], Any], stats: TransactionStats,
                 policy: ReconnectPolicy = ReconnectPolicy(), connect_transactions: int = 0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name, self.family = name, family
        self._connect, self.stats, self.policy = connect, stats, policy
        self.connect_transactions = int(connect_transactions)
        self._sleep = sleep
        self.driver: Any = None
        self.epoch = 0            # +1 on every (re)connect: caches keyed on it are re-read
        self.reconnects = 0
        self._setups: list[Callable[[Any], None]] = []
        self.securing = False     # set while the safe state runs: the run's reconnect budget does not apply

    @property
    def label(self) -> str:
        """'<family> <name>' for messages."""
        return f"{self.family} {self.name!r}"

    @property
    def identity(self) -> str:
        """'vendor,model,serial' as the instrument reported it at connect (no wire traffic)."""
        drv = self.driver
        if drv is None:
            return f"{self.family} {self.name} (disconnected)"
        info = getattr(drv, "idn_info", None)
        if info is None and not hasattr(drv, "visa_handle"):
            info = drv.get_idn()       # SLM, DMD and Qontrol answer from what they read when connecting
        info = info or {}
        parts = [str(info.get(k)) for k in ("vendor", "model", "serial") if info.get(k)]
        return ",".join(parts) or f"{self.family} {self.name}"

    def open(self) -> "Link":
        """First connection; a timeout, reset or bad reply while connecting is retried (policy.attempts times),
        a refused or unknown address is not (errors propagate unchanged: the caller adds the config context)."""
        t0, tries = time.perf_counter(), 0
        try:
            while True:
                try:
                    self.driver = self._connect()
                    break
                except InstrumentError as exc:
                    text, tries = str(exc), tries + 1
                    refused = "cannot open" in text or "cannot connect" in text
                    if tries > self.policy.attempts or not (is_bad_reply(exc) or _desynced(exc)
                                                            or (is_transport_fault(exc) and not refused)):
                        raise
                    self.stats.retry(self.name)
                    self._sleep(self.policy.backoff_s * self.policy.factor ** (tries - 1))
            self.stats.count(self.name, self.connect_transactions)
            self.epoch += 1
        finally:
            self.stats.add_time(self.name, time.perf_counter() - t0)
        return self

    def on_connect(self, fn: Callable[[Any], None]) -> None:
        """Register a setup step re-applied (in order) after every reconnect."""
        self._setups.append(fn)

    def tick(self, n: int = 1) -> None:
        """Count n transactions of this instrument."""
        self.stats.count(self.name, n)

    def _drop(self) -> None:
        drv, self.driver = self.driver, None
        if drv is not None:
            try:
                drv.close()
            except Exception:
                pass

    def _reopen(self) -> None:
        self.driver = self._connect()
        self.stats.count(self.name, self.connect_transactions)
        self.epoch += 1
        self.reconnects += 1
        self.stats.reconnects += 1
        try:
            for fn in self._setups:   # set-up and adapter caches (frames, settings) re-sent before anything else
                fn(self.driver)
        except BaseException:
            self._drop()              # a half-set-up instrument is never used: the next try starts afresh
            raise

    def run(self, label: str, fn: Callable[[Any], T]) -> T:
        """Call fn(driver): transport faults reconnect (bounded, with backoff) and call again; a bad reply or an
        impossible reading (NaN, inf, overrange) is called again on the same link (bounded)."""
        failures = retries = 0
        t0 = time.perf_counter()
        try:
            while True:
                try:
                    if self.driver is None:
                        self._reopen()
                    result = fn(self.driver)
                    why = bad_reading(result)
                    if why is not None:
                        raise BadReplyError(f"{self.label}: {label}: bad reading {why}; expected finite values "
                                            "inside the instrument's range")
                    return result
                except InstrumentError as exc:
                    if is_bad_reply(exc):
                        if retries >= self.policy.retries:
                            raise InstrumentError(f"{exc} [{self.label}: {label}: still bad after {retries} "
                                                  "retries; run stopped]") from exc
                        retries += 1
                        self.stats.retry(self.name)
                        continue
                    if not (is_transport_fault(exc) or _desynced(exc)):
                        raise
                    self._drop()
                    failures += 1
                    budget_left = self.policy.budget - self.stats.reconnects
                    if failures > self.policy.attempts or (budget_left <= 0 and not self.securing):
                        why = (f"{failures - 1} reconnect attempt(s) failed" if failures > self.policy.attempts
                               else f"the run's reconnect budget of {self.policy.budget} is used up")
                        raise InstrumentError(f"{exc} [{self.label}: {label}: {why}; run stopped]") from exc
                    self._sleep(self.policy.backoff_s * self.policy.factor ** (failures - 1))
                except BaseException as exc:
                    if not isinstance(exc, Exception):
                        # a signal (KeyboardInterrupt, Terminated) or SystemExit inside a transaction may leave a
                        # reply unread on the wire: drop the link so the safe-state commands start on a fresh one
                        self._drop()
                    raise
        finally:
            self.stats.add_time(self.name, time.perf_counter() - t0)

    def ensure_alive(self) -> bool:
        """If the instrument closed the link since the last call (a reboot, a dropped cable), reconnect now so its
        set-up and the adapters' state are re-sent before anything relies on them; True when it reconnected."""
        if self.driver is None or not peer_closed(self.driver):
            return False
        self._drop()
        self.run("reconnect", lambda drv: None)
        return True

    def close(self) -> None:
        """Close the driver (best effort)."""
        self._drop()
