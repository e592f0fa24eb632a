"""One instrument connection: counted, timed calls; bounded reconnects with backoff on transport faults."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lightloop.errors import InstrumentError

__all__ = ["TransactionStats", "ReconnectPolicy", "is_transport_fault", "Link"]


T = TypeVar("T")


@dataclass
class TransactionStats:
    """Transactions and instrument time, in total and per instrument."""

    transactions: int = 0
    instrument_seconds: float = 0.0
    reconnects: int = 0
    per_instrument: dict[str, int] = field(default_factory=dict)
    seconds_per_instrument: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        """Add n transactions of instrument `name`."""
        self.transactions += n
        self.per_instrument[name] = self.per_instrument.get(name, 0) + n

    def add_time(self, name: str, seconds: float) -> None:
        """Add time spent inside driver calls of instrument `name`."""
        self.instrument_seconds += seconds
        self.seconds_per_instrument[name] = self.seconds_per_instrument.get(name, 0.0) + seconds


@dataclass(frozen=True)
class ReconnectPolicy:
    """Reconnect at most `attempts` times per fault (backoff_s * factor**k between tries), `budget` per run."""

    attempts: int = 3
    backoff_s: float = 0.1
    factor: float = 2.0
    budget: int = 20


_TRANSPORT_TEXT = ("(timeout)", "connection failed", "link closed", "cannot open", "cannot connect",
                   "not connected", "no reply")


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
        """First connection (errors propagate unchanged: the caller adds the config context)."""
        t0 = time.perf_counter()
        try:
            self.driver = self._connect()
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
        for fn in self._setups:
            fn(self.driver)

    def run(self, label: str, fn: Callable[[Any], T]) -> T:
        """Call fn(driver); transport faults reconnect (bounded, with backoff) and retry fn."""
        failures = 0
        t0 = time.perf_counter()
        try:
            while True:
                try:
                    if self.driver is None:
                        self._reopen()
                    return fn(self.driver)
                except InstrumentError as exc:
                    if not is_transport_fault(exc):
                        raise
                    self._drop()
                    failures += 1
                    budget_left = self.policy.budget - self.stats.reconnects
                    if failures > self.policy.attempts or budget_left <= 0:
                        why = (f"{failures - 1} reconnect attempt(s) failed" if failures > self.policy.attempts
                               else f"the run's reconnect budget of {self.policy.budget} is used up")
                        raise InstrumentError(f"{exc} [{self.label}: {label}: {why}; run stopped]") from exc
                    self._sleep(self.policy.backoff_s * self.policy.factor ** (failures - 1))
        finally:
            self.stats.add_time(self.name, time.perf_counter() - t0)

    def close(self) -> None:
        """Close the driver (best effort)."""
        self._drop()
