"""Safety property benchmark (issue 11): hypothesis-generated command sequences through the HAL against the
wire-level twin; counts what reached the wire. Prints one JSON line.

    python benchmarks/safety_property.py [--sequences 10000] [--workers 2]

Every sequence (1-8 commands from ``_safety_sequences.COMMANDS``: in-range, out-of-range, NaN and inf requests,
rapid set-point changes, outputs moved behind the HAL's back, lost writes, link drops, power cycles) runs on a
heater controller, a laser, a SCPI source and a Qontrol heater driver served by the wire twin. Reported:
sequences, commands, refused requests (SafetyLimitError, nothing written), faults (a clear InstrumentError and
the safe state), wire commands, reconnects, and the two counts that must be 0 - out-of-limit values on the wire
and unramped steps on the wire (the twins' monitors measure steps from the instrument's actual output).
Software ramps do not sleep and the heater twin runs 1e5 x real time, so 10,000 sequences take minutes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
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


def _worker(args: tuple[int, int]) -> dict[str, Any]:
    target, index = args
    from hypothesis import HealthCheck, Phase, given, seed, settings

    import _safety_sequences as seq

    _fast_pyserial_close()
    bench = seq.make_bench(f"b{index}")
    out: dict[str, Any] = {"sequences": 0, "wire_commands": 0, "out_of_limit": 0, "unramped": 0, "examples": []}

    def one(commands: list[tuple[str, Any]]) -> None:
        if out["sequences"] >= target:
            return
        bench.server.log.clear()
        for cmd, arg in commands:
            seq.run(bench, cmd, arg)
        report = seq.audit(bench)
        out["sequences"] += 1
        out["wire_commands"] += report["wire_commands"]
        out["out_of_limit"] += len(report["out_of_limit"])
        out["unramped"] += len(report["unramped"])
        if len(out["examples"]) < 5 and (report["out_of_limit"] or report["unramped"]):
            out["examples"].append({"commands": repr(commands)[:400], **{k: report[k][:3] for k in ("out_of_limit", "unramped")}})

    round_ = 0
    try:
        while out["sequences"] < target:
            test = settings(max_examples=target - out["sequences"], deadline=None, database=None,
                            phases=[Phase.generate], suppress_health_check=list(HealthCheck))(given(seq.SEQUENCES)(one))
            seed(1000 * index + round_)(test)()
            round_ += 1
    finally:
        out.update(bench.counts)
        out["reconnects"] = bench.stats.reconnects
        out["server_errors"] = len(bench.server.errors)
        bench.close()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sequences in `workers` processes (one wire twin each) and print the JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    shares = [a.sequences // a.workers + (1 if k < a.sequences % a.workers else 0) for k in range(a.workers)]
    if a.workers == 1:
        parts = [_worker((shares[0], 0))]
    else:
        with mp.get_context("spawn").Pool(a.workers) as pool:
            parts = pool.map(_worker, [(n, k) for k, n in enumerate(shares)])
    total: dict[str, Any] = {"benchmark": "safety_property", "instruments": ["temperature_controller", "laser_controller",
                                                                              "scpi_source", "qontrol_heater"]}
    for key in ("sequences", "commands", "refused", "faults", "wire_commands", "reconnects", "out_of_limit", "unramped",
                "server_errors"):
        total[key] = sum(int(p[key]) for p in parts)
    total["violation_examples"] = [e for p in parts for e in p["examples"]][:5]
    total["workers"] = a.workers
    total["wall_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(total))
    return total


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["out_of_limit"] == 0 and result["unramped"] == 0 else 1)
