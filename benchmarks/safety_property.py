"""Safety property benchmark (issues 11 and 12): hypothesis-generated command sequences through the HAL against the
wire-level twin; counts what reached the wire, per station. Prints one JSON line.

    python benchmarks/safety_property.py [--sequences 10000] [--workers 2] [--stations free_space,chip]
                                         [--awg-front-panel-max 1.0]

free_space: every sequence (1-8 commands from ``_safety_sequences.COMMANDS``: in-range, out-of-range, NaN and inf
requests, rapid set-point changes, outputs moved behind the HAL's back, lost writes, link drops, power cycles) runs
on a heater controller, a laser, a SCPI source and a Qontrol heater driver served by the wire twin.
chip: the integrated chip (a small copy of lab_configs/wire_integrated_chip.yaml: hidden layer 4, two 4-port meshes)
built by the chip builder on its auto-started wire twin; sequences of ``_safety_sequences.chip_commands()`` go through
the HAL roles (PhaseShifterBank.set_phases / set_voltages, EOActivation.set_detuning, FieldInjector.inject / off,
ForwardSource.display / dark, the SafeLaser, the station's safe state, a tap acquisition) with any values (NaN, inf,
huge, beyond max_injection_field, batches beyond the AWG memory) while AWG amplitudes and outputs, heaters, ring
biases and the laser are moved behind the HAL's back (front panels: AWG amplitudes up to --awg-front-panel-max V), links
drop and instruments power-cycle.
Reported per station and in total: sequences, commands, refused requests (SafetyLimitError - or a ValueError /
ConfigError for an impossible batch - with nothing written), faults (a clear InstrumentError and the safe state), wire
commands, reconnects, and the two counts that must be 0 - out-of-limit values on the wire and unramped steps on the
wire (the twins' monitors measure steps from the instrument's actual output; on the chip also a per-IQ-block code
monitor and the audit of every laser, heater, bias and amplitude command against the config's limits), with the
violations grouped by kind. Chip only: safe_incomplete (station safe states that logged a failed step) and left_live
(safe states after which an output was still not safe: must be 0 too). Exit code 1 when a must-be-0 count is not.
Software ramps do not sleep and the heater twin runs 1e5 x real time, so 10,000 sequences per station take minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import re
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _fast_pyserial_close() -> None:
    """pyserial's socket:// close sleeps 0.3 s 'for quick reconnects'; the twin needs no such pause."""
    import types

    from serial.urlhandler import protocol_socket

    protocol_socket.time = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    protocol_socket.time.sleep = lambda s: None


def _worker(args: tuple[int, int, str, float]) -> dict[str, Any]:
    target, index, station, awg_max = args
    from hypothesis import HealthCheck, Phase, given, seed, settings

    import _safety_sequences as seq

    _fast_pyserial_close()
    logging.getLogger("lightloop.instruments").setLevel(logging.ERROR)   # counted below instead (safe_incomplete)
    if station == "chip":
        bench: Any = seq.make_chip_bench(f"c{index}")
        sequences, run, audit = seq.chip_sequences(awg_max), seq.run_chip, seq.audit_chip
    else:
        bench = seq.make_bench(f"b{index}")
        sequences, run, audit = seq.SEQUENCES, seq.run, seq.audit
    out: dict[str, Any] = {"sequences": 0, "wire_commands": 0, "out_of_limit": 0, "unramped": 0, "examples": [],
                           "kinds": {}}

    def one(commands: list[tuple[str, Any]]) -> None:
        if out["sequences"] >= target:
            return
        bench.server.log.clear()
        for cmd, arg in commands:
            run(bench, cmd, arg)
        report = audit(bench)
        out["sequences"] += 1
        out["wire_commands"] += report["wire_commands"]
        out["out_of_limit"] += len(report["out_of_limit"])
        out["unramped"] += len(report["unramped"])
        for text in report["out_of_limit"] + report["unramped"]:       # numbers and channels blanked: one key per kind
            kind = re.sub(r"\b[-+]?[0-9][0-9.eE+-]*", "#", text)[:120]
            out["kinds"][kind] = out["kinds"].get(kind, 0) + 1
        if len(out["examples"]) < 5 and (report["out_of_limit"] or report["unramped"]):
            out["examples"].append({"commands": repr(commands)[:400], **{k: report[k][:3] for k in ("out_of_limit", "unramped")}})

    round_ = 0
    try:
        while out["sequences"] < target:
            test = settings(max_examples=target - out["sequences"], deadline=None, database=None,
                            phases=[Phase.generate], suppress_health_check=list(HealthCheck))(given(sequences)(one))
            seed(1000 * index + round_)(test)()
            round_ += 1
    finally:
        out.update(bench.counts)
        out["reconnects"] = bench.stats.reconnects
        out["server_errors"] = len(bench.server.errors)
        bench.close()
    return out


def _merge(dicts: list[dict[str, int]]) -> dict[str, int]:
    """Sum of counts per key, largest first."""
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


_INSTRUMENTS = {"free_space": ["temperature_controller", "laser_controller", "scpi_source", "qontrol_heater"],
                "chip": ["laser_controller", "awg", "qontrol_heater", "scpi_source", "digitizer"]}
_KEYS = ("sequences", "commands", "refused", "faults", "wire_commands", "reconnects", "out_of_limit", "unramped",
         "server_errors")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sequences of every station in `workers` processes (one wire twin each) and print the JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=10_000, help="sequences per station")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--stations", default="free_space,chip", help="comma-separated: free_space, chip")
    ap.add_argument("--awg-front-panel-max", type=float, default=1.0,
                    help="chip: highest AWG amplitude (V) dialled in behind the HAL's back (the AWG allows 1 V)")
    a = ap.parse_args(argv)
    stations = [s.strip() for s in a.stations.split(",") if s.strip()]
    unknown = sorted(set(stations) - set(_INSTRUMENTS))
    if unknown or not stations:
        ap.error(f"--stations: {unknown or stations}; expected some of {sorted(_INSTRUMENTS)}")
    t0 = time.perf_counter()
    shares = [a.sequences // a.workers + (1 if k < a.sequences % a.workers else 0) for k in range(a.workers)]
    jobs = [(n, k, st, a.awg_front_panel_max) for st in stations for k, n in enumerate(shares) if n]
    if a.workers == 1:
        parts = [_worker(job) for job in jobs]
    else:
        with mp.get_context("spawn").Pool(a.workers) as pool:
            parts = pool.map(_worker, jobs, chunksize=1)
    total: dict[str, Any] = {"benchmark": "safety_property",
                             "instruments": list(dict.fromkeys(i for st in stations for i in _INSTRUMENTS[st]))}
    per: dict[str, dict[str, Any]] = {}
    for st in stations:
        mine = [p for p, job in zip(parts, jobs) if job[2] == st]
        per[st] = {"instruments": _INSTRUMENTS[st], **{key: sum(int(p[key]) for p in mine) for key in _KEYS},
                   **({k: sum(int(p[k]) for p in mine) for k in ("safe_incomplete", "left_live")} if st == "chip" else {}),
                   "violation_examples": [e for p in mine for e in p["examples"]][:5],
                   "violation_kinds": _merge([p["kinds"] for p in mine])}
    if "chip" in per:
        per["chip"]["awg_front_panel_max_v"] = a.awg_front_panel_max
    for key in _KEYS:
        total[key] = sum(per[st][key] for st in stations)
    total["violation_examples"] = [e for st in stations for e in per[st]["violation_examples"]][:5]
    total["stations"] = per
    total["workers"] = a.workers
    total["wall_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(total))
    return total


if __name__ == "__main__":
    result = main()
    live = sum(int(st.get("left_live", 0)) for st in result["stations"].values())   # chip: safe states left live
    sys.exit(0 if result["out_of_limit"] == 0 and result["unramped"] == 0 and live == 0 else 1)
