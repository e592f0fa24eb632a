"""The Station: the connected instruments of one bench, their links, per-step meter, safe-state sequence and close."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from lightloop.errors import ConfigError, InstrumentError
from lightloop.shutdown import shielded
from lightloop.station._instruments import CONNECT_TRANSACTIONS, VISA_DRIVERS, InstrumentSpec
from lightloop.station._link import Link, ReconnectPolicy, TransactionStats
from lightloop.station._meter import StepMeter

log = logging.getLogger("lightloop.instruments")

__all__ = ["Station", "make_driver"]


def _free_name(name: str) -> str:
    from qcodes.instrument import Instrument

    candidate, k = name, 1
    while Instrument.exist(candidate):
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def _tcp_nodelay(driver: Any) -> None:
    """Disable Nagle on VISA TCP sockets (a write followed by a query otherwise waits for a delayed ACK)."""
    handle = getattr(driver, "visa_handle", None)
    if handle is None or "SOCKET" not in str(getattr(handle, "resource_name", "")).upper():
        return
    from pyvisa import constants

    try:
        handle.set_visa_attribute(constants.VI_ATTR_TCPIP_NODELAY, constants.VI_TRUE)
        return
    except Exception:
        pass
    try:  # pyvisa-py <= 0.8 wires the NODELAY setter to a method that refuses it: set the socket option
        import socket

        sock = handle.visalib.sessions[handle.session].interface
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except Exception:
        pass


def make_driver(driver: str, qname: str, address: str, spec: InstrumentSpec) -> Any:
    """Construct a driver instance (= connect) for one instrument spec."""
    from lightloop.drivers import driver_class

    cls = driver_class(spec.driver_target if spec.driver == driver else driver)   # a foreign class plays `driver`
    kw = dict(spec.init)
    if spec.timeout is not None and driver != "dmd":
        kw["timeout"] = spec.timeout
    if driver in VISA_DRIVERS:
        if spec.visalib:
            kw["visalib"] = spec.visalib
        if address.upper().endswith("::SOCKET"):
            # viClear on a raw socket only drains input; pyvisa-py (<= 0.8) spins forever in it when the peer
            # has closed the link, which would make a reconnect unbounded
            kw["device_clear"] = False
        return cls(qname, address, **kw)
    if driver == "slm":
        host, _, port = address.rpartition(":")
        host = host.removeprefix("tcp://")
        if not host or not port.isdigit():
            raise ConfigError(f"SLM {qname!r}: address {address!r}; expected host:port")
        return cls(qname, host, int(port), **kw)
    return cls(qname, address, **kw)   # qontrol_heater: url; dmd: library path


_FAMILY = {"temperature_controller": "temperature controller", "laser_controller": "laser controller",
           "digitizer": "digitizer", "scpi_source": "SCPI source", "power_meter": "power meter", "slm": "SLM",
           "qontrol_heater": "Qontrol heater", "dmd": "DMD", "awg": "IQ AWG"}


class Station:
    """The connected instruments of one bench: links, transaction stats, safe-state actions, the wire twin."""

    def __init__(self, source: str = "<config>") -> None:
        self.source = source
        self.stats = TransactionStats()
        self.meter = StepMeter(self.stats)
        self.links: dict[str, Any] = {}
        self.server: Any = None
        self.mode = "drivers"   # 'drivers' (real instruments or a separate emulator), 'wire-twin', 'twin'
        self._safe: list[tuple[str, Callable[[], None]]] = []
        self._closed = False
        self.safe_state_failures: list[str] = []

    def connect(self, name: str, spec: InstrumentSpec, address: str) -> Any:
        """Open one instrument (driver + Link); a wrong address is one line naming file, field and instrument."""
        r = spec.reconnect
        link = Link(name, _FAMILY.get(spec.driver, spec.driver),
                    lambda: make_driver(spec.driver, _free_name(name), address, spec), self.stats,
                    ReconnectPolicy(r.attempts, r.backoff, 2.0, r.budget), CONNECT_TRANSACTIONS.get(spec.driver, 0))
        try:
            link.open()
        except InstrumentError as exc:
            raise InstrumentError(f"{self.source}: instruments.{name}.address: {exc}") from exc
        self.links[name] = link
        if spec.driver_target != spec.driver:   # a foreign class: check the role contract before any set-up
            from lightloop.drivers import missing_contract

            missing = missing_contract(spec.driver, link.driver)
            if missing:
                link.close()
                raise ConfigError(f"{self.source}: instruments.{name}.driver: {spec.driver_target} lacks "
                                  f"{', '.join(missing)} of the {spec.driver} role contract; expected a driver "
                                  "providing them (docs/add_an_instrument.md#role-contract)")
        setup = self._setup(link, name, spec)
        try:
            link.run("set-up", setup)     # a fault during the first set-up is retried like any transaction
        except BaseException:
            link.close()
            raise
        link.on_connect(setup)
        return link

    def _setup(self, link: Any, name: str, spec: InstrumentSpec) -> Callable[[Any], None]:
        def apply(drv: Any) -> None:
            _tcp_nodelay(drv)
            for pname, value in spec.parameters.items():
                obj = drv
                parts = pname.split(".")
                try:
                    for part in parts[:-1]:
                        obj = obj.submodules[part]
                    param = obj.parameters[parts[-1]]
                except KeyError:
                    raise ConfigError(f"{self.source}: instruments.{name}.parameters.{pname}: the {spec.driver} has no "
                                      "such parameter; expected a QCoDeS parameter name such as 'ch1.range'") from None
                try:
                    param.set(value)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"{self.source}: instruments.{name}.parameters.{pname}: "
                                      f"{' '.join(str(exc).split())}") from None
                link.tick()

        return apply

    def add_safe_action(self, label: str, fn: Callable[[], None]) -> None:
        """Register one safe-state step (run in registration order, each best effort)."""
        self._safe.append((label, fn))

    def safe_state(self) -> None:
        """Every safe action, best effort (a failing one is logged and the rest still run); a signal cannot abort it."""
        failures = []
        with shielded():
            for link in self.links.values():   # a used-up reconnect budget must not keep an output live
                link.securing = True
            try:
                for label, fn in self._safe:
                    try:
                        fn()
                    except Exception as exc:
                        failures.append(f"{label}: {' '.join(str(exc).split())}")
            finally:
                for link in self.links.values():
                    link.securing = False
        self.safe_state_failures = failures
        if failures:
            log.warning("safe state incomplete: %s", " | ".join(failures))

    def close(self) -> None:
        """Safe state, then release every driver and stop the wire twin (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with shielded():
            try:
                self.safe_state()
            finally:
                for link in self.links.values():
                    link.close()
                if self.server is not None:
                    self.server.stop()

    def summary(self) -> dict[str, Any]:
        """JSON fields: instruments mode, per-step transactions and times, totals."""
        return {"instruments": self.mode, **self.meter.summary(), "transactions_total": self.stats.transactions,
                "reconnects": self.stats.reconnects, "retries": self.stats.retries}
