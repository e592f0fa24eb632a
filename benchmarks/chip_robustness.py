"""Robustness to fabrication variation: over N chips drawn from the process-variation model (chip seeds
1..N), with every fabrication spread of the lab config (each `processor.chip.variation.*_sd*`) scaled by
--spread-scale (default 3), test accuracy of (a) on-chip `adjoint` training on each chip and (b) weights trained
offline on the ideal model, then programmed onto each chip through its nominal calibration. Also (b) for other
phase-offset spreads (evaluation only). Prints one JSON object.

Each task's network and training settings are the ones `chip_tasks.py` chose on validation data (never on the
test set): (a) uses its on-chip choice, (b) its ideal-model choice. Pass that benchmark's JSON with --settings,
else the values below (from `python benchmarks/chip_tasks.py`, see README) are used.

    python benchmarks/chip_robustness.py --chips 20 --spread-scale 3
    python benchmarks/chip_robustness.py --tasks circles moons --spread-scale 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import _chip_common as cc
from lightloop.training.datasets import load_dataset

#: validation-chosen settings of `python benchmarks/chip_tasks.py` (on_chip / ideal_digital "chosen"); circles and
#: moons keep the issue-10 settings (fixed, not selected: lr 0.03, 8 on-chip / 20 offline epochs)
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "spirals": {"on_chip": {"hidden": [8, 8], "n_out": 1, "lr": 0.03, "bias_ports": 2, "epochs": 30},
                "ideal_digital": {"hidden": [8, 8], "n_out": 1, "lr": 0.01, "bias_ports": 2, "epochs": 24}},
    "xor": {"on_chip": {"hidden": [8, 8], "n_out": 1, "lr": 0.01, "bias_ports": 2, "epochs": 30},
            "ideal_digital": {"hidden": [8], "n_out": 2, "lr": 0.03, "bias_ports": 2, "epochs": 3}},
    "iris": {"on_chip": {"hidden": [8], "n_out": 3, "lr": 0.1, "bias_ports": 1, "epochs": 51},
             "ideal_digital": {"hidden": [8], "n_out": 3, "lr": 0.1, "bias_ports": 1, "epochs": 32}},
    **{t: {"on_chip": {"hidden": [8], "n_out": 2, "lr": 0.03, "bias_ports": 2, "epochs": 8},
           "ideal_digital": {"hidden": [8], "n_out": 2, "lr": 0.03, "bias_ports": 2, "epochs": 20}}
       for t in ("circles", "moons")},
}


def settings_of(task: str, path: Path | None) -> dict[str, dict[str, Any]]:
    """{'on_chip': setting, 'ideal_digital': setting} of a task from a chip_tasks JSON file or SETTINGS."""
    if path is not None:
        rec = json.loads(path.read_text())["tasks"].get(task)
        if rec is None:
            raise SystemExit(f"{path}: tasks.{task}: missing; expected chip_tasks.py output holding the task")
        return {k: rec[k]["chosen"] for k in ("on_chip", "ideal_digital")}
    if task not in SETTINGS:
        raise SystemExit(f"--tasks: no stored settings for {task!r}; expected one of {sorted(SETTINGS)} "
                         "or --settings FILE (chip_tasks.py JSON)")
    return SETTINGS[task]


def build(data: Any, s: dict[str, Any], *, ideal: bool, chip_seed: int, spread: dict[str, float],
          extra: dict[str, Any] | None = None) -> Any:
    """A chip of the setting's shape (hidden, outputs, bias ports) with the scaled spreads."""
    return cc.chip(data, ideal=ideal, chip_seed=chip_seed, hidden=s["hidden"], n_out=s["n_out"],
                   edits={**spread, "encoder.bias_ports": s["bias_ports"], **(extra or {})})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chips", type=int, default=20)
    ap.add_argument("--spread-scale", type=float, default=3.0, help="factor on every *_sd* fabrication spread")
    ap.add_argument("--settings", type=Path, default=None, help="chip_tasks.py JSON output (chosen settings)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--phi0-sweep", type=float, nargs="*", default=[0.1, 1.0, 3.0],
                    help="extra phase-offset spreads (rad, replacing the scaled one) for the offline-weights check")
    ap.add_argument("--tasks", nargs="+", default=["spirals", "xor", "iris"])
    args = ap.parse_args(argv)
    clock = cc.Timer()
    seeds = list(range(1, args.chips + 1))
    spread = cc.spread_edits(args.spread_scale)
    out: dict = {"benchmark": "chip_robustness", "chips": args.chips, "chip_seeds": [seeds[0], seeds[-1]],
                 "spread_scale": args.spread_scale,
                 "variation": {k.split(".")[-1]: round(v, 9) for k, v in spread.items()}, "tasks": {}}
    for task in args.tasks:
        data = load_dataset(task)
        st = settings_of(task, args.settings)
        s_on, s_off = st["on_chip"], st["ideal_digital"]
        off = cc.train(build(data, s_off, ideal=True, chip_seed=1, spread=spread), data, epochs=s_off["epochs"],
                       batch_size=args.batch_size, lr=s_off["lr"])
        offline = [p.copy() for p in off.params]
        on_chip, programmed = [], []
        for s in seeds:
            programmed.append(cc.accuracy_with(build(data, s_off, ideal=False, chip_seed=s, spread=spread),
                                               offline, data))
            res = cc.train(build(data, s_on, ideal=False, chip_seed=s, spread=spread), data, epochs=s_on["epochs"],
                           batch_size=args.batch_size, lr=s_on["lr"], seed=s)
            on_chip.append(res.test_accuracy)
        sweep = {}
        for sd in args.phi0_sweep:
            accs = [cc.accuracy_with(build(data, s_off, ideal=False, chip_seed=s, spread=spread,
                                           extra={"chip.variation.phi0_sd_rad": sd}), offline, data) for s in seeds]
            sweep[f"{sd:g}"] = cc.stats(accs)
        a, b = cc.stats(on_chip), cc.stats(programmed)
        out["tasks"][task] = {
            "settings": {"on_chip": s_on, "offline": s_off},
            "ideal_model_test_accuracy": off.test_accuracy,
            "a_on_chip_training": a,
            "b_offline_weights_nominal_calibration": b,
            "b_offline_by_phi0_sd_rad": sweep,
            "a_per_chip": on_chip, "b_per_chip": programmed,
            "on_chip_holds": bool(a["mean"] >= off.test_accuracy - 0.02),
            "offline_degrades_points": 100 * (off.test_accuracy - b["mean"]),
        }
        print(json.dumps({"progress": task, "a": a["mean"], "b": b["mean"], "seconds": round(clock(), 1)}),
              file=sys.stderr, flush=True)
    out["total_seconds"] = clock()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
