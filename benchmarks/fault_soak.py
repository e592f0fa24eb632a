"""Fault soak: a full wire-twin training with random faults in 1 % of all transactions, against a fault-free run.

    python benchmarks/fault_soak.py [--bench free_space|chip] [--epochs 10] [--rate 0.01] [--seed 0] [--noisy]
                                    [--work DIR]

Both runs are ``lightloop train --config <copy of the bench's wire config> --dataset <its dataset> --epochs N
--out DIR --json --ideal`` in a subprocess: ``--bench free_space`` (default) trains lab_configs/wire_free_space.yaml on
digits, ``--bench chip`` trains lab_configs/wire_integrated_chip.yaml on circles (the copy drops the calibration store,
so both runs use the nominal calibration whatever `lightloop calibrate` wrote meanwhile). The faulted copy adds
``emulator.faults: {rate, seed}`` (drop, timeout, garbage, bad_reading and reboot mixed equally). A faulted run that
stops (retries or the reconnect budget used up) must leave the bench safe with its checkpoint intact; the soak then
runs it again with ``--resume`` (bounded; each process draws faults from seed + attempt). Every twin appends its stop
report to a file (``LIGHTLOOP_WIRE_REPORT``): violations (unsafe commands), faults injected, the client's
retries and reconnects, whether every output ended safe.

Checks (exit code 1 when one fails): unsafe commands = 0; every stop safe; epochs lost = 0 (every epoch
logged before a stop is in the surviving checkpoint; the final history has epochs 1..N exactly once);
final parameters bit-identical to the fault-free run (ideal twin: a re-done acquisition reads the same) - on the
chip only reported, its test accuracy compared instead (within --tolerance): the digitiser's auto-range restarts from
the configured ranges after a reconnect, so a re-done acquisition is quantised differently.
``--noisy`` repeats the pair on the noisy twin: a re-done acquisition draws new noise there, so results
differ and only the test accuracy is compared (within --tolerance). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "lab_configs" / "wire_free_space.yaml"
#: bench -> (wire config, dataset)
BENCHES = {"free_space": (CONFIG, "digits"), "chip": (REPO / "lab_configs" / "wire_integrated_chip.yaml", "circles")}


def _config(work: Path, name: str, faults: dict[str, Any] | None, bench: str = "free_space",
            budget: int | None = None) -> Path:
    data = yaml.safe_load(BENCHES[bench][0].read_text())
    if budget is not None:                             # reconnects allowed per run (the config's default: 20)
        for spec in data["instruments"].values():
            spec.setdefault("reconnect", {})["budget"] = budget
    if faults is not None:
        data["emulator"]["faults"] = {k: v for k, v in faults.items() if v is not None}
    if bench == "chip":
        data["processor"].pop("calibration", None)     # nominal calibration in both runs (no shared store)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _train(cfg: Path, out: Path, epochs: int, ideal: bool, resume: bool, env: dict[str, str],
           timeout_s: float, dataset: str = "digits") -> tuple[int, dict[str, Any] | None, str]:
    cmd = [sys.executable, "-m", "lightloop", "train", "--config", str(cfg), "--dataset", dataset, "--epochs",
           str(epochs), "--out", str(out), "--json", "--no-progress"] + (["--ideal"] if ideal else []) + \
          (["--resume"] if resume else [])
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    lines = [ln for ln in p.stdout.strip().splitlines() if ln.startswith("{")]
    summary = json.loads(lines[-1]) if p.returncode == 0 and lines else None
    err = [ln for ln in p.stderr.strip().splitlines() if ln.startswith("lightloop:")]
    return p.returncode, summary, (err[-1] if err else p.stderr.strip()[-300:])


def _reports(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def _checkpoint(out: Path) -> dict[str, Any] | None:
    from lightloop.training.checkpoint import load_checkpoint

    ckpt = out / "checkpoint.npz"
    return load_checkpoint(ckpt) if ckpt.exists() else None


def _logged_epochs(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    epochs = []
    if path.exists():
        for ln in path.read_text().splitlines():
            try:
                epochs.append(int(json.loads(ln)["epoch"]))
            except (ValueError, KeyError, TypeError):
                pass   # a torn line is the run folder's business; it is not an epoch
    return epochs


def soak(work: Path, epochs: int, rate: float, seed: int, ideal: bool, max_resumes: int, timeout_s: float,
         bench: str = "free_space", instruments: list[str] | None = None, budget: int | None = None) -> dict[str, Any]:
    """Fault-free reference, then the faulted run (resumed after safe stops); the figures and checks as a dict."""
    tag = "ideal" if ideal else "noisy"
    dataset = BENCHES[bench][1]
    base_env = {**os.environ, "LIGHTLOOP_OFFLINE": os.environ.get("LIGHTLOOP_OFFLINE", "1"), "MPLBACKEND": "Agg"}
    t0 = time.monotonic()
    ref_out, ref_rep = work / f"ref_{tag}", work / f"ref_{tag}_twin.jsonl"
    rc, ref, err = _train(_config(work, "ref", None, bench), ref_out, epochs, ideal, False,
                          {**base_env, "LIGHTLOOP_WIRE_REPORT": str(ref_rep)}, timeout_s, dataset)
    if ref is None:
        raise SystemExit(f"fault_soak: the fault-free run failed (exit {rc}): {err}")
    ref_seconds = time.monotonic() - t0
    cfg = _config(work, "faults", {"rate": rate, "seed": seed, "instruments": instruments}, bench, budget)
    rep = work / f"faults_{tag}_twin.jsonl"
    out, attempt, stops, lost, summary = work / f"faults_{tag}", 0, [], 0, None
    t1 = time.monotonic()
    while attempt <= max_resumes:
        before = _checkpoint(out)
        env = {**base_env, "LIGHTLOOP_WIRE_REPORT": str(rep), "LIGHTLOOP_FAULT_SEED": str(seed + attempt)}
        n_reports = len(_reports(rep))
        if before is None and out.exists():        # stopped before the first checkpoint: a fresh folder
            out = work / f"faults_{tag}_{attempt}"
        rc, summary, err = _train(cfg, out, epochs, ideal, before is not None, env, timeout_s, dataset)
        attempt += 1
        if rc == 0:
            break
        after = _checkpoint(out)
        logged = _logged_epochs(out)
        ck_epoch = int(after["epoch"]) if after is not None else 0
        lost += max(0, max(logged, default=0) - ck_epoch)
        new = _reports(rep)[n_reports:]
        stops.append({"attempt": attempt, "exit": rc, "error": err[:300], "checkpoint_epoch": ck_epoch,
                      "history_ok": after is None or [h["epoch"] for h in after["history"]] == list(range(1, ck_epoch + 1)),
                      "bench_safe": bool(new) and all(r["safe"] for r in new)})
    reports = _reports(ref_rep) + _reports(rep)
    final = _checkpoint(out)
    history = [h["epoch"] for h in final["history"]] if final is not None else []
    ref_ck = _checkpoint(ref_out)
    faults: dict[str, int] = {}
    for r in _reports(rep):
        for k, v in r["faults"]["total"].items():
            faults[k] = faults.get(k, 0) + int(v)
    client = [r["client"] or {} for r in _reports(rep)]
    same = (final is not None and ref_ck is not None
            and all(np.array_equal(a, b) for a, b in zip(final["params"], ref_ck["params"])))
    res = {
        "bench": bench, "dataset": dataset, "faulted_instruments": instruments or "all",
        "reconnect_budget": budget if budget is not None else "config",
        "variant": tag, "epochs": epochs, "fault_rate": rate, "seed": seed, "completed": summary is not None,
        "faults_injected": faults, "faults_total": sum(faults.values()),
        "twin_commands": sum(int(r["commands"]) for r in _reports(rep)),
        "fault_fraction": round(sum(faults.values()) / max(1, sum(int(r["commands"]) for r in _reports(rep))), 5),
        "transactions": sum(int(c.get("transactions") or 0) for c in client),
        "retries": sum(int(c.get("retries") or 0) for c in client),
        "reconnects": sum(int(c.get("reconnects") or 0) for c in client),
        "safe_stops": len(stops), "resumes": max(0, attempt - 1),
        "stops_all_safe": all(s["bench_safe"] and s["history_ok"] for s in stops),
        "epochs_lost": lost + (0 if history == list(range(1, epochs + 1)) else abs(epochs - len(set(history)))),
        "final_history_epochs_once": history == list(range(1, epochs + 1)),
        "unsafe_commands": sum(len(r["violations"]) for r in reports),
        "twin_errors": sum(len(r["errors"]) for r in reports),
        "test_accuracy": summary["test_accuracy"] if summary else None, "reference_test_accuracy": ref["test_accuracy"],
        "params_equal_reference": bool(same),
        "reference_seconds": round(ref_seconds, 1), "faulted_seconds": round(time.monotonic() - t1, 1),
        "stops": stops,
    }
    return res


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print one JSON line; exit 1 when a check fails."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", choices=sorted(BENCHES), default="free_space",
                    help="free_space: wire_free_space.yaml on digits; chip: wire_integrated_chip.yaml on circles")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--reconnect-budget", type=int, default=None,
                    help="reconnects allowed per run in the faulted copy (default: the config's, 20); the chip's "
                         "~80 transactions per step meet ~50 faults per epoch at 1 %%")
    ap.add_argument("--instruments", default=None,
                    help="comma-separated instruments that get faults (emulator.faults.instruments; default: all)")
    ap.add_argument("--rate", type=float, default=0.01, help="fault probability per transaction (all kinds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-resumes", type=int, default=30)
    ap.add_argument("--noisy", action="store_true", help="also soak the noisy twin (accuracy within --tolerance)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="noisy variant: allowed test-accuracy difference")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per training process")
    ap.add_argument("--work", type=Path, default=None, help="folder for configs, runs and twin reports (default: temp)")
    args = ap.parse_args(argv)
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="fault_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    only = [n.strip() for n in args.instruments.split(",") if n.strip()] if args.instruments else None
    runs = [soak(work / "ideal", args.epochs, args.rate, args.seed, True, args.max_resumes, args.timeout, args.bench,
                 only, args.reconnect_budget) if (work / "ideal").mkdir(exist_ok=True) is None else None]
    if args.noisy:
        (work / "noisy").mkdir(exist_ok=True)
        runs.append(soak(work / "noisy", args.epochs, args.rate, args.seed, False, args.max_resumes, args.timeout,
                         args.bench, only, args.reconnect_budget))
    ok = True
    for r in runs:
        good = (r["completed"] and r["unsafe_commands"] == 0 and r["epochs_lost"] == 0 and r["stops_all_safe"]
                and r["final_history_epochs_once"])
        if r["variant"] == "ideal" and args.bench != "chip":
            good = good and r["params_equal_reference"]
        else:   # chip: the digitiser's auto-range restarts from the configured ranges after every reconnect, so a
            # re-done acquisition is re-quantised: parameters are reported, accuracy is compared
            r["params_check"] = "reported only" if r["variant"] == "ideal" else "noisy"
            good = good and abs(r["test_accuracy"] - r["reference_test_accuracy"]) <= args.tolerance
        r["ok"] = bool(good)
        ok = ok and good
    print(json.dumps({"benchmark": "fault_soak", "bench": args.bench, "ok": ok, "wall_seconds": round(time.monotonic() - t0, 1),
                      "work": str(work), "runs": runs}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
