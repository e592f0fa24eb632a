"""Random command sequences through the HAL safety layer against the wire-level twin (issues 11 and 12).

Shared by ``tests/test_safety_wire.py``, ``tests/test_chip_safety_wire.py`` (a few dozen examples) and
``benchmarks/safety_property.py`` (>= 10,000 per station).

Free space: one bench of four instruments (heater controller, laser, SCPI source, Qontrol heaters) on a
loopback :class:`WireTwinServer`, driven through the real drivers, station adapters and HAL wrappers; a
hypothesis strategy of commands (in-range, out-of-range, NaN and inf requests, rapid set-point changes,
outputs moved behind the HAL's back, lost writes, reconnects, reboots); :func:`run` executes one command
and :func:`audit` counts what reached the wire: values outside the limits and unramped steps, from the
twins' own monitors and from the command log.

Integrated chip: :func:`make_chip_bench` builds a small chip through the chip builder on its auto-started wire
twin; :data:`CHIP_SEQUENCES` / :func:`chip_sequences` drive its HAL roles, :func:`run_chip` and
:func:`audit_chip` do the same for it (plus a per-IQ-block code monitor and a check that every safe state really
left the chip's outputs safe: :func:`chip_live_outputs`).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hypothesis import strategies as st

from lightloop.drivers.laser_controller import LaserDiodeController
from lightloop.drivers.qontrol_heater import QontrolHeater
from lightloop.drivers.scpi_source import ScpiSource
from lightloop.drivers.temperature_controller import TemperatureController
from lightloop.errors import ConfigError, InstrumentError, SafetyLimitError
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
           "COMMANDS", "SEQUENCES", "run", "audit", "NAMES", "CHIP_HIDDEN", "CHIP_NAMES", "ChipSafetyBench",
           "make_chip_bench", "chip_config_data", "write_chip_config", "CHIP_COMMANDS", "CHIP_SEQUENCES", "run_chip",
           "chip_commands", "chip_sequences", "AWG_HW_AMPLITUDE", "chip_live_outputs",
           "audit_chip"]

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


#: laser commands of both stations: name -> fn(SafeLaser, argument)
_LASER = {"laser_on": lambda laser, a: laser.on(a), "laser_current": lambda laser, a: laser.set_current(a),
          "laser_off": lambda laser, a: laser.off()}


def _apply(b: SafetyBench, cmd: str, arg: Any) -> None:
    hal, tw = b.hal, b.twins
    if cmd == "temperature":
        hal["tc"].set_temperature(arg)
    elif cmd in _LASER:
        _LASER[cmd](hal["laser"], arg)
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


# --- the integrated-chip station (issue 12) ----------------------------------------------------------------------
# A small chip (hidden layer of CHIP_HIDDEN: two 4-port meshes, 12 phase shifters each) built by the ONE chip builder
# from a copy of lab_configs/wire_integrated_chip.yaml: the real drivers, station adapters and HAL roles against the
# auto-started wire twin. Commands go through the HAL roles (PhaseShifterBank, EOActivation, FieldInjector,
# ForwardSource, the SafeLaser); front panels, link drops and power cycles act on the twin behind their back.

REPO = Path(__file__).resolve().parents[1]
CHIP_CONFIG = REPO / "lab_configs" / "wire_integrated_chip.yaml"
CHIP_HIDDEN = 4
CHIP_NAMES = ("laser", "iq_awg", "heaters", "ring_bias", "scope")
CHIP_BIG = "beyond memory"       # a batch one pattern longer than the AWG's sequence memory


def chip_config_data(hidden: int = CHIP_HIDDEN) -> dict[str, Any]:
    """wire_integrated_chip.yaml re-wired for a (2, hidden, 2) network: block sizes, heater channels, fast reconnects."""
    from lightloop.physics.mesh import MeshLayer, layer_ports

    data = yaml.safe_load(CHIP_CONFIG.read_text())
    p, roles = data["processor"], data["roles"]
    ports = layer_ports(2, (hidden,), 2, int(p["encoder"]["bias_ports"]))
    shifters = [MeshLayer.build(p["layer"], n, p["mesh"], gain=1.0, screen=False).n_shifters for n in ports]
    p["hidden"], data["emulator"]["layer_sizes"] = [hidden], [2, hidden, 2]
    roles["encoder"]["count"] = ports[0]
    for key in ("injectors", "adjoint_sources"):
        for layer, r in enumerate(roles[key]):
            r["count"] = ports[layer]
    first = 0
    for layer, r in enumerate(roles["phase_shifters"]):
        r["first_channel"], r["count"] = first, shifters[layer]
        first += shifters[layer]
    data["instruments"]["heaters"]["init"]["n_channels"] = first
    roles["activation_bias"][0]["count"] = hidden
    p.pop("calibration", None)            # nominal calibration: no store relative to wherever the copy is written
    for spec in data["instruments"].values():
        spec["reconnect"] = {"attempts": 3, "backoff": "1 ms", "budget": 1000}
    return data


def write_chip_config(folder: Path, hidden: int = CHIP_HIDDEN, mutate: Any = None) -> Path:
    """The small chip config written to folder/chip.yaml (optionally mutated: mutate(data))."""
    data = chip_config_data(hidden)
    if mutate is not None:
        mutate(data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "chip.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class ChipLimits:
    """What the chip config allows on the wire: laser current (A), heater V and mA, bias V, AWG amplitude (V)."""

    laser_current: float
    laser_effective: float
    heater_v: tuple[float, float]
    heater_ma: float
    bias_v: tuple[float, float]
    amplitude: float


@dataclass
class ChipSafetyBench:
    """The chip processor on its wire twin, the HAL roles the commands go through, and the limits the audit checks."""

    proc: Any
    server: WireTwinServer
    twins: dict[str, Any]
    hal: dict[str, Any]
    stats: TransactionStats
    limits: ChipLimits
    folder: Path
    counts: dict[str, int] = field(default_factory=lambda: {"commands": 0, "refused": 0, "faults": 0,
                                                             "safe_incomplete": 0, "left_live": 0})
    last_fault: str = ""
    last_live: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Safe state, close every link, stop the twin."""
        self.proc.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _watch_blocks(server: WireTwinServer, cfg: Any) -> None:
    """Per-block code monitor on the AWG twin: after every upload, each IQ block's stored |I + iQ| must stay within its
    role's field limit (encoder: max(field_scale, bias_amplitude); injectors and adjoint sources: max_injection_field)
    over its full-scale field x 32767 - the twin's own code_envelope is one bound per instrument."""
    from lightloop.hal.frames import IQ_CODE_MAX

    p, glue = cfg.processor, server.glue
    peaks = {"encoder": max(p.encoder.field_scale, p.encoder.bias_amplitude)}
    for awg_name, awg in glue.awgs.items():
        blocks = [(b, peaks.get(b.kind, p.max_injection_field) / b.full_scale_field * IQ_CODE_MAX)
                  for b in glue.blocks if b.instrument == awg_name]
        inner, seen = awg.on_sequence, [awg.uploads]

        def watch(channels: list[int], volts: Any, awg: Any = awg, blocks: Any = blocks, inner: Any = inner,
                  seen: list[int] = seen) -> None:
            if awg.uploads != seen[0]:
                seen[0] = awg.uploads
                for b, env in blocks:
                    if set(channels) & set(b.channels):
                        codes = awg.sequence(b.channels).astype(np.float64)
                        peak = float(np.hypot(codes[..., 0], codes[..., 1]).max(initial=0.0))
                        if peak > env + 0.5:
                            server.log.violation(f"{awg.name}: {b.kind} block {b.layer} |I + iQ| = {peak:.1f} codes "
                                                 f"above its role's limit {env:.1f} codes")
            if inner is not None:
                inner(channels, volts)

        awg.on_sequence = watch


def make_chip_bench(tag: str = "", hidden: int = CHIP_HIDDEN, folder: Path | None = None) -> ChipSafetyBench:
    """Build the small chip through lightloop.bench.build_processor on its auto-started wire twin (nosleep ramps)."""
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.config import load_config

    folder = Path(tempfile.mkdtemp(prefix=f"chip_safety{tag}_")) if folder is None else folder
    cfg = load_config(write_chip_config(folder, hidden))
    proc = build_processor(cfg, 2, 2, BuildOverrides(hidden=[hidden]))
    station = proc.station
    server = station.server
    nosleep = lambda s: None  # noqa: E731
    for link in station.links.values():
        link.policy = replace(link.policy, budget=10**9)      # thousands of sequences: no per-run reconnect budget
    banks = [lay.bank for lay in proc.layers]
    for bank in banks:
        bank.port.bank._sleep = nosleep
    for act in proc.activations:
        act.port.bias.bank._sleep = nosleep
    laser = next(fn.__self__ for label, fn in station._safe if label.startswith("laser"))
    laser._sleep = nosleep
    _watch_blocks(server, cfg)
    inst = cfg.instruments
    heater_lo, heater_hi = inst["heaters"].limit("voltage").low, inst["heaters"].limit("voltage").high
    bias = inst["ring_bias"].limit("voltage")
    a = cfg.processor.activation
    limits = ChipLimits(
        laser_current=inst["laser"].limit("current").high, laser_effective=laser.current_limit.high,
        heater_v=(max(0.0, heater_lo), min(heater_hi, cfg.processor.phase_shifters.v_max)),
        heater_ma=1e3 * inst["heaters"].limit("current").high,
        bias_v=(max(bias.low, -a.v_bias_max / a.detuning_per_volt), min(bias.high, a.v_bias_max / a.detuning_per_volt)),
        amplitude=inst["iq_awg"].limit("amplitude").high)
    injectors = [lay.injector for lay in proc.layers] + [lay.adjoint_source for lay in proc.layers]
    hal = {"laser": laser, "banks": banks, "activation": proc.activations[0], "injectors": injectors,
           "source": proc.source, "monitors": [lay.monitor for lay in proc.layers]}
    return ChipSafetyBench(proc, server, dict(server.endpoints), hal, station.stats, limits, folder)


_FIELDS = st.tuples(st.integers(1, 48) | st.just(CHIP_BIG), st.floats(0.0, 10.0) | st.floats(9.99, 16.0) | _NONFINITE,
                    st.integers(0, 2**16))
_ARRAY = st.tuples(st.floats(-1e3, 1e3), st.floats(0.0, 1e3), st.sampled_from(["", "", "", "nan", "inf", "huge"]),
                   st.integers(0, 2**16))
AWG_HW_AMPLITUDE = 1.0           # V: what the AWG's own front panel allows (the config limits the HAL to 0.5 V)


def chip_commands(awg_front_panel_max: float = AWG_HW_AMPLITUDE) -> st.SearchStrategy[tuple[str, Any]]:
    """One chip command; `awg_front_panel_max` (V) bounds the amplitudes a person may dial in behind the HAL's back."""
    return st.one_of(
        st.tuples(st.just("phases"), st.tuples(st.integers(0, 1), _ARRAY)),
        st.tuples(st.just("voltages"), st.tuples(st.integers(0, 1), st.tuples(
            st.floats(-3.0, 14.0), st.floats(0.0, 10.0), st.sampled_from(["", "", "nan", "inf"]), st.integers(0, 2**16)))),
        st.tuples(st.just("detuning"), st.floats(-8.0, 8.0) | _NONFINITE
                  | st.lists(st.floats(-8.0, 8.0), min_size=CHIP_HIDDEN, max_size=CHIP_HIDDEN)),
        st.tuples(st.just("inject"), st.tuples(st.integers(0, 3), _FIELDS)),
        st.tuples(st.just("inject_off"), st.integers(0, 3)),
        st.tuples(st.just("display"), st.tuples(st.integers(1, 48) | st.just(CHIP_BIG),
                                                st.floats(-50.0, 50.0) | _NONFINITE, st.integers(0, 2**16))),
        st.tuples(st.just("source_dark"), st.none()),
        st.tuples(st.just("acquire"), st.integers(0, 1)),
        st.tuples(st.just("laser_on"), st.floats(-0.1, 0.4) | _NONFINITE),
        st.tuples(st.just("laser_current"), st.floats(-0.1, 0.4) | _NONFINITE),
        st.tuples(st.just("laser_off"), st.none()),
        st.tuples(st.just("safe"), st.none()),
        # behind the HAL's back (not on the wire): front panels, link drops, power cycles
        st.tuples(st.just("front_awg"), st.tuples(st.integers(1, 40), st.none() | st.floats(0.0, awg_front_panel_max),
                                                  st.none() | st.booleans())),
        st.tuples(st.just("front_heater"), st.tuples(st.integers(0, 23), st.floats(0.0, 12.0))),
        st.tuples(st.just("front_bias"), st.tuples(st.integers(1, 8), st.floats(-20.0, 20.0), st.booleans())),
        st.tuples(st.just("front_laser"), st.tuples(st.floats(0.0, 0.5), st.booleans())),
        st.tuples(st.just("reconnect"), st.sampled_from(CHIP_NAMES)),
        st.tuples(st.just("reboot"), st.sampled_from(CHIP_NAMES)),
    )


CHIP_COMMANDS = chip_commands()
CHIP_SEQUENCES = st.lists(CHIP_COMMANDS, min_size=1, max_size=8)


def chip_sequences(awg_front_panel_max: float = AWG_HW_AMPLITUDE) -> st.SearchStrategy[list[tuple[str, Any]]]:
    """Sequences of 1-8 chip commands (see chip_commands)."""
    return st.lists(chip_commands(awg_front_panel_max), min_size=1, max_size=8)


def _array(n: int, spec: tuple[float, float, str, int]) -> np.ndarray:
    """n values centre +- spread (seeded), one of them NaN / inf / 1e300 when asked."""
    centre, spread, special, seed = spec
    v = np.random.default_rng(seed).uniform(centre - spread, centre + spread, n)
    if special:
        v[seed % n] = {"nan": math.nan, "inf": math.inf * (-1) ** seed, "huge": 1e300 * (-1) ** seed}[special]
    return v


def _fields(n: int, spec: tuple[Any, float, int], max_points: int) -> np.ndarray:
    """Complex fields (batch, n) of random phase whose peak magnitude is exactly `peak` (NaN/inf kept)."""
    batch, peak, seed = spec
    batch = max_points + 1 if batch == CHIP_BIG else int(batch)
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.0, 1.0, (batch, n)) * np.exp(2j * np.pi * rng.uniform(0.0, 1.0, (batch, n)))
    f[seed % batch, seed % n] = np.exp(2j * np.pi * (seed % 8) / 8)
    if not np.isfinite(peak):
        f[seed % batch, seed % n] = peak
        return f.astype(np.complex64)
    return (f * peak).astype(np.complex64)


def chip_live_outputs(server: WireTwinServer) -> list[str]:
    """What is not in the safe state on the chip's instruments: laser output or current, outputs or non-zero sequences
    of the AWG channels the IQ blocks use, heater voltages, ring-bias voltages or relays (empty list: all safe)."""
    twins = server.endpoints
    laser, awg, heaters, bias = twins["laser"], twins["iq_awg"], twins["heaters"], twins["ring_bias"]
    used = sorted({c - 1 for blk in server.glue.blocks for c in blk.channels})
    live = []
    if laser.output or laser.current != 0.0:
        live.append(f"laser output {laser.output} at {laser.current} A")
    on, busy = [c + 1 for c in used if awg.outputs[c]], [c + 1 for c in used if np.any(awg.memory[c])]
    if on or busy:
        live.append(f"AWG outputs on {on} / non-zero sequences {busy}")
    if np.any(heaters.volts):
        live.append(f"heaters at {np.flatnonzero(heaters.volts).tolist()} non-zero")
    if np.any(bias.volts) or bias.outputs.any():
        live.append(f"ring biases {bias.volts.tolist()} V, relays {bias.outputs.astype(int).tolist()}")
    return live


def _barrier(b: ChipSafetyBench, name: str) -> None:
    """One '*OPC?' round trip: the server has logged the call's last unacknowledged write before the next command."""
    b.proc.station.links[name].run("*OPC?", lambda drv: drv.ask("*OPC?"))


def _apply_chip(b: ChipSafetyBench, cmd: str, arg: Any) -> None:
    hal, tw, server = b.hal, b.twins, b.server
    if cmd == "phases":
        bank = hal["banks"][arg[0]]
        bank.set_phases(_array(bank.n_channels, arg[1]))
    elif cmd == "voltages":
        bank = hal["banks"][arg[0]]
        lo, spread, special, seed = arg[1]
        bank.set_voltages(_array(bank.n_channels, (lo + spread / 2, spread / 2, special, seed)))
    elif cmd == "detuning":
        hal["activation"].set_detuning(arg)
    elif cmd == "inject":
        inj = hal["injectors"][arg[0]]
        inj.inject(_fields(inj.n, arg[1], inj.port.max_points))
    elif cmd == "inject_off":
        hal["injectors"][arg].off()
    elif cmd == "display":
        batch, scale, seed = arg
        src = hal["source"]
        batch = src.port.max_points + 1 if batch == CHIP_BIG else batch
        src.display((np.random.default_rng(seed).uniform(-1.0, 2.0, (batch, src.n_features)) * scale).astype(np.float32))
    elif cmd == "source_dark":
        hal["source"].dark()
    elif cmd == "acquire":
        hal["monitors"][arg].acquire()
        _barrier(b, "scope")           # an auto-range ends the call with an unacknowledged 'CHANc:RANG' write
    elif cmd in _LASER:
        _LASER[cmd](hal["laser"], arg)
    elif cmd == "safe":
        b.proc.safe_state()
        b.counts["safe_incomplete"] += bool(b.proc.station.safe_state_failures)   # a step raised ...
        _barrier(b, "ring_bias")       # the sequence ends with the source's unacknowledged ':OUTP OFF'
        b.last_live = chip_live_outputs(b.server)
        b.counts["left_live"] += bool(b.last_live)                                 # ... but are the outputs safe?
    elif cmd == "front_awg":
        tw["iq_awg"].front_panel(arg[0], amplitude=arg[1], output=arg[2])
    elif cmd == "front_heater":
        tw["heaters"].front_panel(arg[0], arg[1])
    elif cmd == "front_bias":
        tw["ring_bias"].front_panel(arg[0], volts=arg[1], output=arg[2])
    elif cmd == "front_laser":
        tw["laser"].front_panel(current=min(arg[0], tw["laser"].limit), output=arg[1])
    elif cmd == "reconnect":          # the link resets at the next command (that command is lost)
        server.drop(arg, after=1)
    elif cmd == "reboot":             # power cycle; the link resets at the next command (as on the free-space bench:
        tw[arg].reboot()              # server.reboot() would cost a VISA timeout per event; tests cover it)
        server.drop(arg, after=1)
    else:  # pragma: no cover
        raise ValueError(cmd)


def run_chip(b: ChipSafetyBench, cmd: str, arg: Any) -> str:
    """Execute one chip command: 'ok', 'refused' (SafetyLimitError, or a ValueError/ConfigError for a batch the role or
    the AWG cannot take - nothing written) or 'fault' (a one-line InstrumentError). A refusal that still wrote to the
    wire raises AssertionError."""
    b.counts["commands"] += 1
    before = b.server.log.count()
    try:
        _apply_chip(b, cmd, arg)
    except (SafetyLimitError, ConfigError, ValueError) as exc:
        if isinstance(exc, InstrumentError):
            raise
        b.counts["refused"] += 1
        new = [f"{r.instrument}: {r.command[:80]}" for r in b.server.log.records[before:]]
        assert not new, f"{cmd}({arg!r:.200}) was refused ({exc}) but still wrote to the wire: {new}"
        return "refused"
    except InstrumentError as exc:
        assert "\n" not in str(exc), str(exc)
        b.counts["faults"] += 1
        b.last_fault = str(exc)
        return "fault"
    return "ok"


def audit_chip(b: ChipSafetyBench) -> dict[str, Any]:
    """What reached the chip's wire since the last clear: commands, out-of-limit values, unramped steps."""
    out_of_limit: list[str] = []
    unramped: list[str] = []
    for text in b.server.log.violations:
        (unramped if any(w in text for w in _UNRAMPED) else out_of_limit).append(text)
    lim = b.limits
    r_ohm = float(np.min(b.twins["heaters"].resistance))

    def check(name: str, pattern: str, ok: Any) -> None:
        for part in _parts(b, name):   # type: ignore[arg-type]
            m = re.fullmatch(pattern, part)
            if m and not ok(m):
                out_of_limit.append(f"{name}: {part}")

    check("laser", r"SOUR:CURR " + _NUM, lambda m: 0.0 <= float(m.group(1)) <= lim.laser_effective + 1e-9)
    check("laser", r"SOUR:CURR:LIM " + _NUM, lambda m: float(m.group(1)) <= lim.laser_current + 1e-12)
    check("heaters", r"V\d+=" + _NUM, lambda m: lim.heater_v[0] <= float(m.group(1)) <= lim.heater_v[1]
          and float(m.group(1)) / r_ohm * 1e3 <= lim.heater_ma)
    check("heaters", r"VMAX\d+=" + _NUM, lambda m: float(m.group(1)) <= lim.heater_v[1])
    check("heaters", r"IMAX\d+=" + _NUM, lambda m: float(m.group(1)) <= lim.heater_ma)
    check("ring_bias", r"SOUR:VOLT ([^(]*),\(@[0-9,]+\)",
          lambda m: all(lim.bias_v[0] - 1e-9 <= float(x) <= lim.bias_v[1] + 1e-9 for x in m.group(1).split(",") if x))
    check("ring_bias", r"SOUR\d+:VOLT " + _NUM, lambda m: lim.bias_v[0] - 1e-9 <= float(m.group(1)) <= lim.bias_v[1] + 1e-9)
    check("iq_awg", r"SOUR\d+:VOLT:AMPL " + _NUM, lambda m: 0.0 < float(m.group(1)) <= lim.amplitude * (1 + 1e-9))
    return {"wire_commands": b.server.log.count(), "out_of_limit": out_of_limit, "unramped": unramped,
            "server_errors": list(b.server.errors)}
