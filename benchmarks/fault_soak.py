"""Fault soak: a full wire-twin training with random faults in 1 % of all transactions, against a fault-free run.

    python benchmarks/fault_soak.py [--epochs 10] [--rate 0.01] [--seed 0] [--noisy] [--work DIR]

Both runs are ``lightloop train --config <copy of lab_configs/wire_free_space.yaml> --dataset digits
--epochs N --out DIR --json --ideal`` in a subprocess; the faulted copy adds ``emulator.faults: {rate, seed}``
(drop, timeout, garbage, bad_reading and reboot mixed equally). A faulted run that stops (retries or the
reconnect budget used up) must leave the bench safe with its checkpoint intact; the soak then runs it again
with ``--resume`` (bounded; each process draws faults from seed + attempt). Every twin appends its stop
report to a file (``LIGHTLOOP_WIRE_REPORT``): violations (unsafe commands), faults injected, the client's
retries and reconnects, whether every output ended safe.

Checks (exit code 1 when one fails): unsafe commands = 0; every stop safe; epochs lost = 0 (every epoch
logged before a stop is in the surviving checkpoint; the final history has epochs 1..N exactly once);
final parameters bit-identical to the fault-free run (ideal twin: a re-done acquisition reads the same).
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


def _config(work: Path, name: str, faults: dict[str, Any] | None) -> Path:
    data = yaml.safe_load(CONFIG.read_text())
    if faults is not None:
        data["emulator"]["faults"] = faults
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _train(cfg: Path, out: Path, epochs: int, ideal: bool, resume: bool, env: dict[str, str],
           timeout_s: float) -> tuple[int, dict[str, Any] | None, str]:
    cmd = [sys.executable, "-m", "lightloop", "train", "--config", str(cfg), "--dataset", "digits", "--epochs",
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


def soak(work: Path, epochs: int, rate: float, seed: int, ideal: bool, max_resumes: int, timeout_s: float) -> dict[str, Any]:
    """Fault-free reference, then the faulted run (resumed after safe stops); the figures and checks as a dict."""
    tag = "ideal" if ideal else "noisy"
    base_env = {**os.environ, "LIGHTLOOP_OFFLINE": os.environ.get("LIGHTLOOP_OFFLINE", "1"), "MPLBACKEND": "Agg"}
    t0 = time.monotonic()
    ref_out, ref_rep = work / f"ref_{tag}", work / f"ref_{tag}_twin.jsonl"
    rc, ref, err = _train(_config(work, "ref", None), ref_out, epochs, ideal, False,
                          {**base_env, "LIGHTLOOP_WIRE_REPORT": str(ref_rep)}, timeout_s)
    if ref is None:
        raise SystemExit(f"fault_soak: the fault-free run failed (exit {rc}): {err}")
    ref_seconds = time.monotonic() - t0
    cfg = _config(work, "faults", {"rate": rate, "seed": seed})
    rep = work / f"faults_{tag}_twin.jsonl"
    out, attempt, stops, lost, summary = work / f"faults_{tag}", 0, [], 0, None
    t1 = time.monotonic()
    while attempt <= max_resumes:
        before = _checkpoint(out)
        env = {**base_env, "LIGHTLOOP_WIRE_REPORT": str(rep), "LIGHTLOOP_FAULT_SEED": str(seed + attempt)}
        n_reports = len(_reports(rep))
        if before is None and out.exists():        # stopped before the first checkpoint: a fresh folder
            out = work / f"faults_{tag}_{attempt}"
        rc, summary, err = _train(cfg, out, epochs, ideal, before is not None, env, timeout_s)
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
    ap.add_argument("--epochs", type=int, default=10)
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
    runs = [soak(work / "ideal", args.epochs, args.rate, args.seed, True, args.max_resumes, args.timeout)
            if (work / "ideal").mkdir(exist_ok=True) is None else None]
    if args.noisy:
        (work / "noisy").mkdir(exist_ok=True)
        runs.append(soak(work / "noisy", args.epochs, args.rate, args.seed, False, args.max_resumes, args.timeout))
    ok = True
    for r in runs:
        good = (r["completed"] and r["unsafe_commands"] == 0 and r["epochs_lost"] == 0 and r["stops_all_safe"]
                and r["final_history_epochs_once"])
        if r["variant"] == "ideal":
            good = good and r["params_equal_reference"]
        else:
            good = good and abs(r["test_accuracy"] - r["reference_test_accuracy"]) <= args.tolerance
        r["ok"] = bool(good)
        ok = ok and good
    print(json.dumps({"benchmark": "fault_soak", "ok": ok, "wall_seconds": round(time.monotonic() - t0, 1),
                      "work": str(work), "runs": runs}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
