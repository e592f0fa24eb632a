"""Random command sequences through the HAL safety layer against the wire-level twin (issue 11).

Shared by ``tests/test_safety_wire.py`` (a few dozen examples) and ``benchmarks/safety_property.py``
(>= 10,000): one bench of four instruments (heater controller, laser, SCPI source, Qontrol heaters) on a
loopback :class:`WireTwinServer`, driven through the real drivers, station adapters and HAL wrappers; a
hypothesis strategy of commands (in-range, out-of-range, NaN and inf requests, rapid set-point changes,
outputs moved behind the HAL's back, lost writes, reconnects, reboots); :func:`run` executes one command
and :func:`audit` counts what reached the wire: values outside the limits and unramped steps, from the
twins' own monitors and from the command log.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from lightloop.drivers.laser_controller import LaserDiodeController
from lightloop.drivers.qontrol_heater import QontrolHeater
from lightloop.drivers.scpi_source import ScpiSource
from lightloop.drivers.temperature_controller import TemperatureController
from lightloop.errors import InstrumentError, SafetyLimitError
from lightloop.hal.safety import LinearLaserModel, RampPolicy, Range, SafeLaser, SafeTemperatureControl, SafeVoltageBank
from lightloop.simulators.wire.laser_controller import LaserControllerTwin
from lightloop.simulators.wire.qontrol_heater import QontrolTwin
from lightloop.simulators.wire.scpi_source import ScpiSourceTwin
from lightloop.simulators.wire.server import WireTwinServer
from lightloop.simulators.wire.temperature_controller import TemperatureControllerTwin
from lightloop.station import Link, ReconnectPolicy, TransactionStats
from lightloop.station._station import _tcp_nodelay
from lightloop.station.adapters.laser_controller import LaserControllerDevice
from lightloop.station.adapters.qontrol_heater import QontrolHeaterDevice
from lightloop.station.adapters.scpi_source import ScpiSourceDevice
from lightloop.station.adapters.temperature_controller import TemperatureControllerDevice

__all__ = ["T_LIM", "RAMP_K_MIN", "I_LIM", "P_LIM", "I_EFF", "V_LIM", "H_LIM", "SafetyBench", "make_bench",
           "COMMANDS", "SEQUENCES", "run", "audit", "NAMES"]

T_LIM = (280.0, 400.0)            # K
RAMP_K_MIN = 10.0                 # K/min
I_LIM, P_LIM = 0.2, 0.05          # A, W  (threshold 30 mA, 0.4 W/A: 155 mA effective)
I_EFF = 0.03 + P_LIM / 0.4
V_LIM, H_LIM = (0.0, 5.0), (0.0, 9.0)
INTERVAL = 0.002                  # s per software ramp step (the twin does not see time: nosleep)
I_RAMP, V_RAMP, H_RAMP = 5.0, 250.0, 500.0      # A/s, V/s, V/s
NAMES = ("tc", "laser", "source", "heaters")


@dataclass
class SafetyBench:
    """The four instruments: twins on one server, links, device adapters and the HAL wrappers."""

    server: WireTwinServer
    twins: dict[str, Any]
    links: dict[str, Link]
    hal: dict[str, Any]
    stats: TransactionStats
    counts: dict[str, int] = field(default_factory=lambda: {"commands": 0, "refused": 0, "faults": 0})

    def close(self) -> None:
        """Close every link and stop the server."""
        for lk in self.links.values():
            lk.close()
        self.server.stop()


def make_bench(tag: str = "", time_scale: float = 1e5, visa_timeout: float = 2.0) -> SafetyBench:
    """Start the twins and connect the HAL to them (nosleep ramps, fast twin clock)."""
    twins = {
        "tc": TemperatureControllerTwin("tc", time_scale=time_scale, envelope=T_LIM, max_ramp_envelope=RAMP_K_MIN),
        "laser": LaserControllerTwin("laser", 0.03, 0.4, max_current_envelope=I_LIM, max_step_envelope=I_RAMP * INTERVAL),
        "source": ScpiSourceTwin("source", 2, envelope=V_LIM, max_step_envelope=V_RAMP * INTERVAL),
        "heaters": QontrolTwin("heaters", 4, vmax=12.0, envelope=H_LIM, max_step_envelope=H_RAMP * INTERVAL),
    }
    server = WireTwinServer(list(twins.values())).start()
    stats = TransactionStats()
    visa = lambda n: f"TCPIP::127.0.0.1::{server.port(n)}::SOCKET"  # noqa: E731
    q = f"{os.getpid()}{tag}"
    policy = ReconnectPolicy(attempts=3, backoff_s=0.001, budget=10**9)
    connect = {
        "tc": lambda: TemperatureController(f"tc_{q}", visa("tc"), visalib="@py", timeout=visa_timeout, device_clear=False),
        "laser": lambda: LaserDiodeController(f"laser_{q}", visa("laser"), visalib="@py", timeout=visa_timeout, device_clear=False),
        "source": lambda: ScpiSource(f"src_{q}", visa("source"), visalib="@py", n_channels=2, timeout=visa_timeout,
                                     device_clear=False),
        "heaters": lambda: QontrolHeater(f"heat_{q}", f"socket://127.0.0.1:{server.port('heaters')}", timeout=visa_timeout),
    }
    def nodelay(make: Any) -> Any:
        def connect_one() -> Any:
            drv = make()
            _tcp_nodelay(drv)       # as the Station does: no delayed-ACK wait between a write and a query
            return drv
        return connect_one

    links = {n: Link(n, n, nodelay(connect[n]), stats, policy).open() for n in NAMES}
    nosleep = lambda s: None  # noqa: E731
    tc_dev = TemperatureControllerDevice(links["tc"], Range(*T_LIM, "K"), RAMP_K_MIN)
    laser_dev = LaserControllerDevice(links["laser"], Range(0, I_LIM, "A"))
    src_dev = ScpiSourceDevice(links["source"])
    src_dev.enable([0, 1], 0.005)
    heat_dev = QontrolHeaterDevice(links["heaters"], Range(*H_LIM, "V"))
    hal = {
        "tc": SafeTemperatureControl(tc_dev, tc_dev.limits, RAMP_K_MIN, settle_tolerance_k=0.01, settle_timeout_s=5.0,
                                     poll_s=0.001),
        "laser": SafeLaser(laser_dev, laser_dev.current_limit, LinearLaserModel(0.03, 0.4), P_LIM,
                           RampPolicy(I_RAMP, INTERVAL), sleep=nosleep),
        "source": SafeVoltageBank(src_dev, Range(*V_LIM, "V"), RampPolicy(V_RAMP, INTERVAL), sleep=nosleep),
        "heaters": SafeVoltageBank(heat_dev, Range(*H_LIM, "V"), RampPolicy(H_RAMP, INTERVAL), sleep=nosleep),
    }
    return SafetyBench(server, twins, links, hal, stats)


_NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])
volts = st.floats(-3.0, 14.0) | _NONFINITE
COMMANDS = st.one_of(
    st.tuples(st.just("temperature"), st.floats(250.0, 450.0) | _NONFINITE),
    st.tuples(st.just("laser_on"), st.floats(-0.1, 0.4) | _NONFINITE),
    st.tuples(st.just("laser_current"), st.floats(-0.1, 0.4) | _NONFINITE),
    st.tuples(st.just("laser_off"), st.none()),
    st.tuples(st.just("source"), st.lists(volts, min_size=2, max_size=2)),
    st.tuples(st.just("source_channel"), st.tuples(st.integers(0, 1), volts)),
    st.tuples(st.just("heaters"), st.lists(volts, min_size=4, max_size=4)),
    st.tuples(st.just("heater_channel"), st.tuples(st.integers(0, 3), volts)),
    st.tuples(st.just("safe"), st.none()),
    # behind the HAL's back (not on the wire): front panels, lost writes, link drops, power cycles
    st.tuples(st.just("front_laser"), st.tuples(st.floats(0.0, 0.5), st.booleans())),
    st.tuples(st.just("front_source"), st.tuples(st.integers(1, 2), st.floats(-20.0, 20.0), st.booleans())),
    st.tuples(st.just("front_heater"), st.tuples(st.integers(0, 3), st.floats(0.0, 12.0))),
    st.tuples(st.just("front_tc"), st.tuples(st.floats(273.15, 473.15), st.booleans(), st.booleans())),
    st.tuples(st.just("lose"), st.tuples(st.sampled_from(["tc", "laser"]), st.integers(1, 5))),
    st.tuples(st.just("reconnect"), st.sampled_from(NAMES)),
    st.tuples(st.just("reboot"), st.sampled_from(NAMES)),
)
SEQUENCES = st.lists(COMMANDS, min_size=1, max_size=8)


def _apply(b: SafetyBench, cmd: str, arg: Any) -> None:
    hal, tw = b.hal, b.twins
    if cmd == "temperature":
        hal["tc"].set_temperature(arg)
    elif cmd == "laser_on":
        hal["laser"].on(arg)
    elif cmd == "laser_current":
        hal["laser"].set_current(arg)
    elif cmd == "laser_off":
        hal["laser"].off()
    elif cmd == "source":
        hal["source"].set_voltages(arg)
    elif cmd == "source_channel":
        hal["source"].set_channels({arg[0]: arg[1]})
    elif cmd == "heaters":
        hal["heaters"].set_voltages(arg)
    elif cmd == "heater_channel":
        hal["heaters"].set_channels({arg[0]: arg[1]})
    elif cmd == "safe":
        for key in ("laser", "tc", "source", "heaters"):
            hal[key].safe_state()
    elif cmd == "front_laser":
        tw["laser"].front_panel(current=min(arg[0], tw["laser"].limit), output=arg[1])
    elif cmd == "front_source":
        tw["source"].front_panel(arg[0], volts=arg[1], output=arg[2])
    elif cmd == "front_heater":
        tw["heaters"].front_panel(arg[0], arg[1])
    elif cmd == "front_tc":
        tw["tc"].front_panel(setpoint=min(arg[0], tw["tc"].limit), output=arg[1], ramp_on=arg[2])
    elif cmd == "lose":
        setattr(tw[arg[0]], "lose_setpoints" if arg[0] == "tc" else "lose_writes", arg[1])
    elif cmd == "reconnect":          # the link resets at the next command (that command is lost)
        b.server.drop(arg, after=1)
    elif cmd == "reboot":             # power cycle; the link resets at the next command
        tw[arg].reboot()
        b.server.drop(arg, after=1)
    else:  # pragma: no cover
        raise ValueError(cmd)


def run(b: SafetyBench, cmd: str, arg: Any) -> str:
    """Execute one command: 'ok', 'refused' (SafetyLimitError, nothing written) or 'fault' (a clear
    InstrumentError, the device in its safe state). A refusal that still wrote to the wire raises AssertionError."""
    b.counts["commands"] += 1
    before = b.server.log.count()
    try:
        _apply(b, cmd, arg)
    except SafetyLimitError:
        b.counts["refused"] += 1
        assert b.server.log.count() == before, f"{cmd}({arg}) was refused but still wrote to the wire"
        return "refused"
    except InstrumentError as exc:
        assert "\n" not in str(exc), str(exc)
        b.counts["faults"] += 1
        return "fault"
    return "ok"


_NUM = r"([-+0-9.eE]+|nan|inf)"
_UNRAMPED = ("step", "ramp", "jump", "relay closed", "switched on at")


def _parts(b: SafetyBench, name: str) -> list[str]:
    return [part.strip().lstrip(":") for line in b.server.log.commands(name) for part in line.split(";")]


def audit(b: SafetyBench) -> dict[str, Any]:
    """What reached the wire since the last clear: commands, out-of-limit values, unramped steps (violations listed)."""
    out_of_limit: list[str] = []
    unramped: list[str] = []
    for text in b.server.log.violations:
        (unramped if any(w in text for w in _UNRAMPED) else out_of_limit).append(text)

    def check(name: str, pattern: str, ok: Any) -> None:
        for part in _parts(b, name):
            m = re.fullmatch(pattern, part)
            if m and not ok(m):
                out_of_limit.append(f"{name}: {part}")

    check("tc", r"SOUR:TEMP " + _NUM, lambda m: T_LIM[0] <= float(m.group(1)) <= T_LIM[1])
    check("tc", r"SOUR:TEMP:LIM " + _NUM, lambda m: float(m.group(1)) <= T_LIM[1])
    check("tc", r"SOUR:TEMP:RAMP:RATE " + _NUM, lambda m: 0 < float(m.group(1)) <= RAMP_K_MIN)
    check("laser", r"SOUR:CURR " + _NUM, lambda m: 0.0 <= float(m.group(1)) <= I_EFF + 1e-9)
    check("laser", r"SOUR:CURR:LIM " + _NUM, lambda m: float(m.group(1)) <= I_LIM)
    check("source", r"SOUR:VOLT ([^(]*),\(@[0-9,]+\)",
          lambda m: all(V_LIM[0] <= float(x) <= V_LIM[1] for x in m.group(1).split(",") if x))
    check("heaters", r"V\d+=" + _NUM, lambda m: H_LIM[0] <= float(m.group(1)) <= H_LIM[1])
    return {"wire_commands": b.server.log.count(), "out_of_limit": out_of_limit, "unramped": unramped,
            "server_errors": list(b.server.errors)}
