"""Loopback instrument server: one thread, one ``selectors`` loop, one listening socket per instrument.

Binds 127.0.0.1 only. Every instrument is an :class:`Endpoint` (a protocol device, one module per
driver in ``lightloop.simulators.wire``) that turns bytes received on a connection into reply bytes.
Every command any endpoint receives is appended to a :class:`WireLog` (time, instrument, command
text), and every value an endpoint finds outside its configured safety envelope is appended to
``WireLog.violations`` - the evidence the safety property test checks.

Scripted faults: ``drop`` (reset after N commands, refuse reconnects), ``garbage``, ``silence`` (no reply),
``set_down`` (listener closed), ``reboot`` (power-on defaults, links closed). Random faults
(:class:`FaultPlan`, ``set_faults``): each transaction draws at most one fault from a seeded per-instrument
generator: drop (executed, then the link reset), timeout (no reply), garbage (a junk reply line),
bad_reading (a number of a reply -> NaN or +-9.9E37, SCPI overrange) or reboot. A reply fault drawn for a
command without a reply (or number) waits for the next one; ``Endpoint.injected`` counts what was applied.
"""

from __future__ import annotations

import re
import selectors
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["WireRecord", "WireLog", "Endpoint", "Session", "DropConnection", "WireTwinServer", "LOOPBACK",
           "FAULT_KINDS", "FaultPlan"]

LOOPBACK = "127.0.0.1"
FAULT_KINDS = ("drop", "timeout", "garbage", "bad_reading", "reboot")
_GARBAGE, _BAD_NUMBERS = (b"#!garbage!#", b"\x7f\x7f?", b"1,2,3,x", b"OK OK", b"\x00\x00#\x00"), ("nan", "9.9E37", "-9.9E37")


@dataclass(frozen=True)
class FaultPlan:
    """Per-transaction fault probabilities (each in [0, 1], sum <= 1), their seed, optionally only some instruments."""

    drop: float = 0.0
    timeout: float = 0.0
    garbage: float = 0.0
    bad_reading: float = 0.0
    reboot: float = 0.0
    seed: int = 0
    instruments: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        p = self.probabilities
        if any(not 0.0 <= v <= 1.0 for v in p.values()) or sum(p.values()) > 1.0 + 1e-12:
            raise ValueError(f"fault probabilities {p}: expected each in [0, 1] and a sum <= 1")
        if self.seed < 0:
            raise ValueError(f"fault seed {self.seed}: expected an integer >= 0")

    @classmethod
    def uniform(cls, rate: float, seed: int = 0, **overrides: float) -> "FaultPlan":
        """Total probability `rate` per transaction, split equally over the five kinds (overrides per kind)."""
        return cls(**{k: float(overrides.get(k, rate / len(FAULT_KINDS))) for k in FAULT_KINDS}, seed=int(seed))

    @property
    def probabilities(self) -> dict[str, float]:
        """{kind: probability per transaction}."""
        return {k: float(getattr(self, k)) for k in FAULT_KINDS}



@dataclass(frozen=True)
class WireRecord:
    """One command received: wall time (s, monotonic), instrument name, command text."""

    t: float
    instrument: str
    command: str


class WireLog:
    """Thread-safe command log and list of limit violations seen on the wire."""

    def __init__(self, max_records: int = 1_000_000) -> None:
        self._lock = threading.Lock()
        self.records: list[WireRecord] = []
        self.violations: list[str] = []
        self.max_records, self.dropped_records = max_records, 0

    def add(self, instrument: str, command: str) -> None:
        """Append one command (the log is bounded; beyond max_records only a counter grows)."""
        with self._lock:
            if len(self.records) < self.max_records:
                self.records.append(WireRecord(time.monotonic(), instrument, command))
            else:
                self.dropped_records += 1

    def violation(self, text: str) -> None:
        """Record a value that broke the configured safety envelope."""
        with self._lock:
            self.violations.append(text)

    def commands(self, instrument: str | None = None) -> list[str]:
        """Command texts, optionally of one instrument."""
        with self._lock:
            return [r.command for r in self.records if instrument is None or r.instrument == instrument]

    def count(self, instrument: str | None = None) -> int:
        """Number of commands received (optionally by one instrument)."""
        with self._lock:
            return (len(self.records) + self.dropped_records if instrument is None
                    else sum(1 for r in self.records if r.instrument == instrument))

    def clear(self) -> None:
        """Forget records and violations."""
        with self._lock:
            self.records, self.violations, self.dropped_records = [], [], 0


class DropConnection(Exception):
    """Raised by a session to close its connection without replying."""


class Session:
    """Per-connection protocol state: feed(bytes) -> reply bytes."""

    def feed(self, data: bytes) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class _Faults:
    drop_after: int | None = None   # close the connection when this many more commands arrived
    refuse: int = 0                 # refuse this many following connection attempts
    garbage: int = 0                # answer this many next queries with garbage
    garbage_text: bytes = b"#!garbage!#"
    silence: int = 0                # swallow this many next queries (no reply: client times out)


class Endpoint:
    """A protocol device served on one port. Subclasses implement ``session()``; all share `server` faults/log."""

    #: protocol family for addresses: 'visa' (TCPIP SOCKET), 'slm' (host:port) or 'serial' (socket://)
    transport = "visa"

    def __init__(self, name: str) -> None:
        self.name = name
        self.server: WireTwinServer | None = None
        self.faults = _Faults()
        self.injected: dict[str, int] = {k: 0 for k in FAULT_KINDS}   # random (and scripted reboot) faults applied
        self._rng: np.random.Generator | None = None
        self._cum: np.ndarray | None = None
        # drawn per transaction: for its reply (timeout, garbage, bad_reading) / after it (drop, reboot; the server's)
        self._reply_fault: str | None = None
        self.post_fault: str | None = None

    def arm_faults(self, plan: FaultPlan | None) -> None:
        """Draw random faults per transaction from `plan` (None or all zero: off); seeded by (seed, name)."""
        self._reply_fault = self.post_fault = None
        if plan is None or not any(plan.probabilities.values()) or self.name not in (plan.instruments or [self.name]):
            self._rng = self._cum = None
            return
        self._rng = np.random.default_rng([plan.seed, zlib.crc32(self.name.encode())])
        self._cum = np.cumsum([plan.probabilities[k] for k in FAULT_KINDS])

    def _draw(self) -> None:
        k = int(np.searchsorted(self._cum, self._rng.random(), side="right"))  # type: ignore[arg-type, union-attr]
        kind = FAULT_KINDS[k] if k < len(FAULT_KINDS) else None
        if kind in ("timeout", "garbage", "bad_reading"):   # a command without a reply passes it on to the next reply
            self._reply_fault = kind if self._reply_fault in (None, "bad_reading") else self._reply_fault
        elif kind in ("drop", "reboot"):
            self.post_fault = self.post_fault or kind

    def reboot(self) -> None:
        """Power cycle: restore power-on defaults (twins override; the server closes the connections)."""

    # hooks used by sessions --------------------------------------------------------------------------
    def log(self, command: str) -> None:
        """Log one received command and apply a pending 'drop' fault."""
        if self.server is not None:
            self.server.log.add(self.name, command)
        f = self.faults
        if f.drop_after is not None:
            f.drop_after -= 1
            if f.drop_after <= 0:
                f.drop_after = None
                raise DropConnection(f"{self.name}: injected drop")
        if self._rng is not None:
            self._draw()

    def violation(self, text: str) -> None:
        """Record a safety-envelope violation seen on the wire."""
        if self.server is not None:
            self.server.log.violation(f"{self.name}: {text}")

    def filter_reply(self, reply: bytes) -> bytes | None:
        """Apply a pending 'garbage' or 'silence' fault to a reply (None: send nothing)."""
        f = self.faults
        if f.silence > 0:
            f.silence -= 1
            return None
        if f.garbage > 0:
            f.garbage -= 1
            return f.garbage_text + b"\n"
        kind = self._reply_fault
        if kind is None or self._rng is None or self.post_fault is not None:
            return reply
        out = None if kind == "timeout" else (_GARBAGE[int(self._rng.integers(len(_GARBAGE)))] + b"\n"
                                              if kind == "garbage" else self._bad_number(reply))
        if out is None and kind == "bad_reading":
            return reply       # no number in this reply: the bad reading waits for a numeric reply
        self._reply_fault = None
        self.injected[kind] += 1
        return out

    def _bad_number(self, reply: bytes) -> bytes | None:
        """The reply with one of its numbers replaced by NaN or +-9.9E37; None when it is not a numeric reply."""
        if reply[:1] == b"#" or len(reply) > 4096:
            return None
        parts = re.split(r"([,;])", reply.decode("latin-1").strip())   # numbers at even indices, separators between
        try:
            [float(x) for x in parts[::2]]
        except ValueError:
            return None
        assert self._rng is not None
        k = 2 * int(self._rng.integers(len(parts[::2])))
        parts[k] = _BAD_NUMBERS[int(self._rng.integers(len(_BAD_NUMBERS)))]
        return "".join(parts).encode("latin-1") + b"\n"

    def session(self) -> Session:  # pragma: no cover - interface
        raise NotImplementedError

    def address(self, host: str, port: int) -> str:
        """The address a driver uses to reach this endpoint."""
        forms = {"visa": f"TCPIP::{host}::{port}::SOCKET", "serial": f"socket://{host}:{port}"}
        return forms.get(self.transport, f"{host}:{port}")


@dataclass
class _Conn:
    sock: socket.socket
    endpoint: Endpoint
    session: Session
    out: bytearray = field(default_factory=bytearray)
    events: int = selectors.EVENT_READ


@dataclass
class _Listener:
    sock: socket.socket | None
    endpoint: Endpoint
    port: int


class WireTwinServer:
    """Serves every endpoint on its own 127.0.0.1 port from one background thread (context manager)."""

    def __init__(self, endpoints: Iterable[Endpoint], ports: dict[str, int] | None = None,
                 host: str = LOOPBACK, lock: threading.RLock | None = None, select_timeout_s: float = 0.05) -> None:
        if host not in (LOOPBACK, "localhost"):
            raise ValueError(f"wire twin: host {host!r} refused; expected the loopback address 127.0.0.1")
        self.host = LOOPBACK
        self.endpoints = {e.name: e for e in endpoints}
        self._wanted_ports = dict(ports or {})
        self.lock = lock or threading.RLock()   # held while any endpoint handles bytes (shared physics)
        self.log = WireLog()
        self._select_timeout = float(select_timeout_s)
        self._sel: selectors.BaseSelector | None = None
        self._listeners: dict[str, _Listener] = {}
        self._conns: dict[int, _Conn] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._pending: list[tuple[str, bool, bool, threading.Event]] = []
        self._pending_lock = threading.Lock()
        self.errors: list[str] = []
        self.on_stop: list[Callable[["WireTwinServer"], None]] = []   # called once by stop(), after the thread ended
        self._rxbuf = bytearray(1 << 18)
        self._rxview = memoryview(self._rxbuf)
        for e in self.endpoints.values():
            e.server = self

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> "WireTwinServer":
        """Bind every listener (port 0 = any free port) and start the serving thread."""
        if self._thread is not None:
            return self
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            for name, ep in self.endpoints.items():
                self._listeners[name] = self._listen(ep, int(self._wanted_ports.get(name, 0)))
        except OSError:
            self._close_all()
            raise
        self._thread = threading.Thread(target=self._run, name="lightloop-wire-twin", daemon=True)
        self._thread.start()
        return self

    def _listen(self, ep: Endpoint, port: int) -> _Listener:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"wire twin: cannot listen for {ep.name!r} on {self.host}:{port} ({exc})") from exc
        sock.listen(8)
        sock.setblocking(False)
        assert self._sel is not None
        self._sel.register(sock, selectors.EVENT_READ, ("listen", ep.name))
        return _Listener(sock, ep, sock.getsockname()[1])

    def stop(self) -> None:
        """Stop the thread and close every socket (idempotent)."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close_all()
        hooks, self.on_stop = self.on_stop, []
        for fn in hooks:
            fn(self)

    def __enter__(self) -> "WireTwinServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    # --- addresses ---------------------------------------------------------------------------------------
    def port(self, name: str) -> int:
        """The TCP port of one instrument."""
        return self._listeners[name].port

    def address(self, name: str) -> str:
        """Driver address of one instrument (VISA resource, host:port or socket:// URL)."""
        return self.endpoints[name].address(self.host, self.port(name))

    @property
    def addresses(self) -> dict[str, str]:
        """Driver address of every instrument."""
        return {name: self.address(name) for name in self.endpoints}

    # --- faults ------------------------------------------------------------------------------------------
    def drop(self, name: str, after: int = 1, refuse: int = 0) -> None:
        """Close `name`'s connection when `after` more commands arrived; refuse the next `refuse` connects."""
        f = self.endpoints[name].faults
        f.drop_after, f.refuse = max(1, int(after)), int(refuse)

    def garbage(self, name: str, count: int = 1, text: bytes = b"#!garbage!#") -> None:
        """Answer the next `count` queries of `name` with `text`."""
        f = self.endpoints[name].faults
        f.garbage, f.garbage_text = int(count), text

    def silence(self, name: str, count: int = 1) -> None:
        """Send no reply to the next `count` queries of `name` (the client times out)."""
        self.endpoints[name].faults.silence = int(count)

    def reboot(self, name: str) -> None:
        """Power-cycle `name`: its twin restores power-on defaults and every open connection is closed."""
        ep = self.endpoints[name]
        with self.lock:
            ep.reboot()
            ep.injected["reboot"] += 1
        self.disconnect(name)

    def set_faults(self, plan: FaultPlan | None) -> None:
        """Random per-transaction faults on every endpoint (or plan.instruments); None switches them off."""
        if plan is not None and set(plan.instruments or ()) - set(self.endpoints):
            raise KeyError(f"fault plan: instruments {sorted(set(plan.instruments or ()) - set(self.endpoints))} not served")
        with self.lock:
            for ep in self.endpoints.values():
                ep.arm_faults(plan)

    def fault_counts(self) -> dict[str, dict[str, int]]:
        """Faults injected so far: {instrument: {kind: count}} plus 'total' {kind: count} over all instruments."""
        with self.lock:
            out = {n: {k: v for k, v in e.injected.items() if v} for n, e in self.endpoints.items() if any(e.injected.values())}
            out["total"] = {k: sum(e.injected[k] for e in self.endpoints.values()) for k in FAULT_KINDS}
            return out

    def disconnect(self, name: str) -> None:
        """Close every open connection of `name` now (the listener stays up)."""
        self._request(name, False, close_only=True)

    def set_down(self, name: str, down: bool = True) -> None:
        """Take `name` off the network (listener and connections closed) or bring it back on its port."""
        self._request(name, not down)

    def _request(self, name: str, up: bool, close_only: bool = False) -> None:
        if name not in self.endpoints:
            raise KeyError(name)
        done = threading.Event()
        with self._pending_lock:
            self._pending.append((name, up, close_only, done))
        self._wake()
        if self.running:
            done.wait(timeout=2)
        else:
            self._apply_pending()

    def _apply_pending(self) -> None:
        with self._pending_lock:
            todo, self._pending = self._pending, []
        for name, up, close_only, done in todo:
            for fd, conn in list(self._conns.items()):
                if conn.endpoint.name == name:
                    self._close_conn(fd)
            lst = self._listeners[name]
            if not close_only:
                if not up and lst.sock is not None:
                    assert self._sel is not None
                    self._sel.unregister(lst.sock)
                    lst.sock.close()
                    lst.sock = None
                elif up and lst.sock is None:
                    try:
                        self._listeners[name] = self._listen(lst.endpoint, lst.port)
                    except OSError as exc:
                        self.errors.append(str(exc))
            done.set()

    def _wake(self) -> None:
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass

    # --- the loop ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        sel = self._sel
        assert sel is not None
        while not self._stop.is_set():
            try:
                events = sel.select(timeout=self._select_timeout)
            except OSError:  # pragma: no cover - selector closed under us
                return
            self._dispatch(events)
        # stopping: serve what clients already sent (e.g. the last safe-state writes), bounded
        for _ in range(100):
            try:
                events = [(k, m) for k, m in sel.select(timeout=0) if k.data == "conn"]
            except OSError:  # pragma: no cover
                return
            if not events:
                return
            self._dispatch(events)

    def _dispatch(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, mask in events:
            data = key.data
            if data is None:
                try:
                    self._wake_r.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    pass
                continue
            if isinstance(data, tuple):
                self._accept(data[1])
                continue
            fd = key.fd
            if mask & selectors.EVENT_READ:
                self._read(fd)
            if fd in self._conns and mask & selectors.EVENT_WRITE:
                self._write(fd)
        if self._pending:
            self._apply_pending()

    def _accept(self, name: str) -> None:
        lst = self._listeners[name]
        if lst.sock is None:
            return
        try:
            sock, _ = lst.sock.accept()
        except (BlockingIOError, OSError):
            return
        ep = lst.endpoint
        if ep.faults.refuse > 0:
            ep.faults.refuse -= 1
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # reset at once: the client sees a refused/reset link, not a silent one
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock, ep, ep.session())
        self._conns[sock.fileno()] = conn
        assert self._sel is not None
        self._sel.register(sock, selectors.EVENT_READ, "conn")

    def _read(self, fd: int) -> None:
        conn = self._conns.get(fd)
        if conn is None:
            return
        try:
            n = conn.sock.recv_into(self._rxbuf)
            data = bytes(self._rxview[:n])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_conn(fd)
            return
        if not data:
            self._close_conn(fd)
            return
        try:
            with self.lock:
                reply = conn.session.feed(data)
        except DropConnection:
            self._close_conn(fd, abort=True)
            return
        except Exception as exc:  # a bug in a twin must not kill the server thread: drop this link
            self.errors.append(f"{conn.endpoint.name}: {type(exc).__name__}: {exc}")
            self._close_conn(fd)
            return
        ep = conn.endpoint
        if ep.post_fault is not None:   # drop / reboot drawn for a transaction just executed: no reply goes out
            kind, ep.post_fault = ep.post_fault, None
            with self.lock:
                ep.injected[kind] += 1
                if kind == "reboot":
                    ep.reboot()
            for other, c in list(self._conns.items()):
                if other == fd or (kind == "reboot" and c.endpoint is ep):
                    self._close_conn(other, abort=True)
            return
        if reply:
            conn.out.extend(reply)
            self._write(fd)

    def _write(self, fd: int) -> None:
        conn = self._conns.get(fd)
        if conn is None:
            return
        try:
            sent = conn.sock.send(conn.out) if conn.out else 0
            del conn.out[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close_conn(fd)
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if want != conn.events:
            assert self._sel is not None
            try:
                self._sel.modify(conn.sock, want, "conn")
                conn.events = want
            except (KeyError, ValueError):  # pragma: no cover
                pass

    def _close_conn(self, fd: int, abort: bool = False) -> None:
        conn = self._conns.pop(fd, None)
        if conn is None:
            return
        if abort:  # abortive close (RST), as a crashing instrument's network stack does
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:  # pragma: no cover
                pass
        try:
            assert self._sel is not None
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:  # pragma: no cover
            pass

    def _close_all(self) -> None:
        for fd in list(self._conns):
            self._close_conn(fd)
        for lst in self._listeners.values():
            if lst.sock is not None:
                try:
                    if self._sel is not None:
                        self._sel.unregister(lst.sock)
                except (KeyError, ValueError):
                    pass
                lst.sock.close()
                lst.sock = None
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._wake_r = self._wake_w = None
        if self._sel is not None:
            self._sel.close()
            self._sel = None

    def __repr__(self) -> str:
        return f"WireTwinServer({', '.join(f'{n}={a}' for n, a in self.addresses.items()) if self._listeners else ''})"
