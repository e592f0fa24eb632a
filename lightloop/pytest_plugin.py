"""pytest plugin (entry point ``pytest11``): fixtures for a lab's own CI on lightloop's twins.

Fixtures (every bench is closed - safe state, instruments released, wire twin stopped - at teardown):

* ``lightloop_open_bench``   factory ``(config, **open_bench_kwargs) -> Bench``
* ``lightloop_bench``        an in-process twin bench, from ``lightloop_bench_config`` (default: the packaged
                             ``free_space_sa`` with hidden [8], ideal twin)
* ``lightloop_wire_bench``   the real drivers talking to the wire-level twin over loopback TCP, from
                             ``lightloop_wire_config`` (default: packaged ``wire_free_space``, sizes [8, 4, 3],
                             ideal, short timeouts and quick reconnects)
* ``lightloop_command_log``  the wire twin's log of every command received (``.commands(instrument)``,
                             ``.count()``, ``.violations``), cleared when the test starts
* ``lightloop_faults``       :class:`FaultInjector` on the wire twin: seeded random faults, drops, garbage,
                             silence, reboots, instruments off the network; switched off at teardown

Override ``lightloop_bench_config`` / ``lightloop_wire_config`` in a conftest.py to use your own lab config (a
dict of :func:`lightloop.open_bench` arguments). Lightloop is imported only when a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = ["FaultInjector", "fast_wire"]


def fast_wire(data: dict[str, Any], timeout: str = "0.3 s") -> dict[str, Any]:
    """A wire config mapping with short I/O timeouts and quick, generous reconnects (for fault tests)."""
    for spec in (data.get("instruments") or {}).values():
        if isinstance(spec, dict) and spec.get("driver") != "twin":
            spec["timeout"] = timeout
            spec["reconnect"] = {"attempts": 3, "backoff": "5 ms", "budget": 1000}
    return data


class FaultInjector:
    """Fault injection on a running wire twin (WireTwinServer): every call names the instrument it hits."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def random(self, rate: float, seed: int = 0, instruments: list[str] | None = None, **per_kind: float) -> None:
        """Seeded random faults: total probability ``rate`` per transaction over drop, timeout, garbage,
        bad_reading and reboot (``per_kind`` overrides one kind's probability)."""
        from dataclasses import replace

        from lightloop.simulators.wire.server import FaultPlan

        plan = FaultPlan.uniform(rate, seed, **per_kind)
        self.server.set_faults(replace(plan, instruments=tuple(instruments)) if instruments else plan)

    def off(self) -> None:
        """No more random faults (one-shot faults already armed still fire)."""
        self.server.set_faults(None)

    def drop(self, name: str, after: int = 1, refuse: int = 0) -> None:
        """Close ``name``'s connection after ``after`` more commands; refuse the next ``refuse`` connects."""
        self.server.drop(name, after, refuse)

    def garbage(self, name: str, count: int = 1) -> None:
        """Answer ``name``'s next ``count`` queries with garbage."""
        self.server.garbage(name, count)

    def silence(self, name: str, count: int = 1) -> None:
        """No reply to ``name``'s next ``count`` queries (the driver times out)."""
        self.server.silence(name, count)

    def reboot(self, name: str) -> None:
        """Power-cycle ``name``: power-on defaults, every connection closed."""
        self.server.reboot(name)

    def set_down(self, name: str, down: bool = True) -> None:
        """Take ``name`` off the network (True) or bring it back (False)."""
        self.server.set_down(name, down)

    def counts(self) -> dict[str, dict[str, int]]:
        """Faults injected so far: {instrument: {kind: count}} and 'total'."""
        return self.server.fault_counts()


@pytest.fixture
def lightloop_open_bench() -> Iterator[Callable[..., Any]]:
    """Factory ``(config, **open_bench_kwargs) -> Bench``; every bench it opened is closed at teardown."""
    from lightloop.api import open_bench

    opened: list[Any] = []

    def factory(config: Any = "free_space_sa", **kwargs: Any) -> Any:
        bench = open_bench(config, **kwargs)
        opened.append(bench)
        return bench

    yield factory
    for bench in reversed(opened):
        bench.close()


@pytest.fixture
def lightloop_bench_config() -> dict[str, Any]:
    """open_bench arguments of ``lightloop_bench`` (override in your conftest.py)."""
    return {"config": "free_space_sa", "hidden": [8], "ideal": True}


@pytest.fixture
def lightloop_bench(lightloop_open_bench: Callable[..., Any], lightloop_bench_config: dict[str, Any]) -> Any:
    """An in-process twin bench (fast, deterministic when ideal)."""
    return lightloop_open_bench(**lightloop_bench_config)


@pytest.fixture
def lightloop_wire_config() -> dict[str, Any]:
    """open_bench arguments of ``lightloop_wire_bench`` (override in your conftest.py; the config must autostart
    the wire twin: ``emulator.autostart: true``)."""
    import yaml

    from lightloop.api import config_path

    data = fast_wire(yaml.safe_load(config_path("wire_free_space").read_text()))
    return {"config": data, "sizes": [8, 4, 3], "ideal": True}


@pytest.fixture
def lightloop_wire_bench(lightloop_open_bench: Callable[..., Any], lightloop_wire_config: dict[str, Any]) -> Any:
    """A bench whose real drivers talk to the wire-level twin on loopback TCP (``.wire_server``, ``.command_log``)."""
    bench = lightloop_open_bench(**lightloop_wire_config)
    if bench.wire_server is None:
        raise pytest.UsageError("lightloop_wire_config: the config starts no wire twin; expected emulator.autostart: "
                                "true")
    return bench


@pytest.fixture
def lightloop_command_log(lightloop_wire_bench: Any) -> Any:
    """The wire twin's command log, cleared when the test starts."""
    log = lightloop_wire_bench.command_log
    log.clear()
    return log


@pytest.fixture
def lightloop_faults(lightloop_wire_bench: Any) -> Iterator[FaultInjector]:
    """Fault injection on the wire twin of ``lightloop_wire_bench``; random faults off at teardown."""
    injector = FaultInjector(lightloop_wire_bench.wire_server)
    yield injector
    injector.off()
