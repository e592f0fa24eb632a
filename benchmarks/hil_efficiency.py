"""HIL efficiency: transactions and framework overhead per training step, through the real drivers against the
wire-level twin (lab_configs/wire_free_space.yaml), for several batch sizes and layer widths, next to the same
run on the in-process twin. Prints one JSON object.

Definitions (lightloop.station):
  transaction   one request sent to an instrument in one write, plus its reply if it has one
  instrument s  time inside driver calls (wire round trip and the instrument's - here the twin's - work)
  overhead s    step wall time minus instrument time: the framework (HAL, encoding, gradient, optimizer)
A step is measured between two consecutive trainer step hooks (program .. update).

Expected transactions per step for L weight layers (pump_probe): L weight frames + 1 input frame + DIG/*OPC?
+ 3 x (2L - 1) forward tap transfers + 1 probe frame + DIG/*OPC? + 3 x (L - 1) error tap transfers = 9L + 2
with error_readout: single; the config's differential readout (+-delta probes) adds the second probe frame and
its triggered error-tap acquisition: 26 for L = 2 (measured).
(20 for the 64-64-10 network), independent of the batch size and of the layer widths; a batch whose size
differs from the previous one adds one ACQ:POIN.

Example: python benchmarks/hil_efficiency.py --epochs 1 --batch-sizes 16 32 128 --hidden 16 64

Integrated chip (``--bench chip``, lab_configs/wire_integrated_chip.yaml, in-situ ``adjoint`` gradient, circles):
the station is rescaled to N-port meshes (hidden [N]: two N x N meshes, N(N-1) heaters each, 5 N IQ channels)
for every N of ``--ports``. Per step: 2 heater banks x (read-back + ramp step(s)), the encoder upload and gate,
one acquisition per detector array per pass (forward: activations + outputs; backward: receivers, slopes, taps,
then per layer adjoint upload / input receivers / injector upload / two tap exposures), none of it per port or per
pattern. Example: python benchmarks/hil_efficiency.py --bench chip --ports 8 16 --batch-sizes 16 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _chip_station import chip_wire_config
from lightloop.bench import BuildOverrides, build_processor
from lightloop.config import load_config
from lightloop.training.datasets import load_dataset
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import make_optimizer
from lightloop.training.trainer import Trainer, TrainSettings

ROOT = Path(__file__).resolve().parent.parent
WIRE = ROOT / "lab_configs" / "wire_free_space.yaml"
TWIN = ROOT / "lab_configs" / "free_space_sa.yaml"
CHIP_WIRE = ROOT / "lab_configs" / "wire_integrated_chip.yaml"
CHIP_TWIN = ROOT / "lab_configs" / "integrated_chip.yaml"


def main_chip(args: argparse.Namespace) -> None:
    import tempfile

    data = load_dataset(args.dataset or "circles")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.ports:
            wire_cfg = chip_wire_config(Path(tmp), n)
            for batch in args.batch_sizes or [16, 64]:
                wire = run(wire_cfg, data, n, batch, args.epochs, args.seed, "adjoint")
                twin = run(CHIP_TWIN, data, n, batch, args.epochs, args.seed, "adjoint")
                wire["ports"] = n
                wire["twin_seconds_per_step"] = twin["seconds_per_step"]
                wire["twin_test_accuracy"] = twin["test_accuracy"]
                rows.append(wire)
    tps = [r["transactions_per_step"] for r in rows]
    print(json.dumps({
        "benchmark": "hil_efficiency", "bench": "chip", "config": str(CHIP_WIRE.relative_to(ROOT)),
        "dataset": data.name, "epochs": args.epochs, "gradient": "adjoint",
        "transactions_per_step_range": [round(min(tps), 2), round(max(tps), 2)],
        "runs": rows,
    }, indent=1))


def run(config: Path, data, hidden: int, batch: int, epochs: int, seed: int, gradient: str = "pump_probe") -> dict:
    """One training run of `epochs` with hidden width `hidden` (chip: N-port meshes): accuracy, seconds per step and,
    on a station, transactions, instrument and overhead seconds per step."""
    cfg = load_config(config)
    t0 = time.perf_counter()
    proc = build_processor(cfg, data.n_features, data.n_classes, BuildOverrides(hidden=[hidden]))
    build_s = time.perf_counter() - t0
    with proc:
        trainer = Trainer(proc, make_gradient(gradient), make_optimizer("adam", cfg.training.lr),
                          TrainSettings(epochs=epochs, batch_size=batch, seed=seed, progress=False))
        res = trainer.fit(data)
        fields = proc.summary_fields()
        station = getattr(proc, "station", None)
        per_instrument = dict(station.stats.per_instrument) if station else None
    steps = -(-data.x_train.shape[0] // batch)
    out = {"hidden": hidden, "batch_size": batch, "test_accuracy": round(res.test_accuracy, 4),
           "seconds_per_step": res.mean_epoch_seconds / steps, "build_seconds": round(build_s, 3)}
    if "phase_shifters" in fields:
        out["phase_shifters"] = fields["phase_shifters"]
    if station is not None:
        out.update({k: fields[k] for k in ("transactions_per_step", "instrument_seconds_per_step",
                                           "overhead_seconds_per_step", "steps_measured", "reconnects")})
        out["transactions_total_by_instrument"] = per_instrument
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", choices=("free_space", "chip"), default="free_space")
    ap.add_argument("--dataset", default=None, help="default: digits (free space), circles (chip)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                    help="default: 16 32 128 (free space), 16 64 (chip)")
    ap.add_argument("--hidden", type=int, nargs="+", default=[16, 64], help="free-space hidden widths")
    ap.add_argument("--ports", type=int, nargs="+", default=[8, 16], help="chip mesh sizes N")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.bench == "chip":
        main_chip(args)
        return
    data = load_dataset(args.dataset or "digits")
    rows = []
    for hidden in args.hidden:
        for batch in args.batch_sizes or [16, 32, 128]:
            wire = run(WIRE, data, hidden, batch, args.epochs, args.seed)
            twin = run(TWIN, data, hidden, batch, args.epochs, args.seed)
            wire["twin_seconds_per_step"] = twin["seconds_per_step"]
            wire["twin_test_accuracy"] = twin["test_accuracy"]
            rows.append(wire)
    tps = [r["transactions_per_step"] for r in rows]
    print(json.dumps({
        "benchmark": "hil_efficiency", "config": str(WIRE.relative_to(ROOT)), "dataset": args.dataset,
        "epochs": args.epochs, "gradient": "pump_probe", "expected_transactions_per_step": 26,
        "transactions_per_step_range": [min(tps), max(tps)],
        "runs": rows,
    }, indent=1))


if __name__ == "__main__":
    main()
