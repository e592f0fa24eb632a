"""README figures of issue 16: the bench error budget and the energy / latency ledger, regenerated from a fresh clone.

Runs, in a scratch working directory (its calibration store and runs go there, never into the repository):

1. ``lightloop calibrate all --config lightloop/lab_configs/free_space_sa.yaml`` then ``lightloop check`` on the
   same config -> ``error_budget_free_space.png`` (check.png: measured vs model scatter and error histograms);
2. ``lightloop train`` on scratch copies of free_space_sa.yaml and integrated_chip.yaml with ``epochs: 1`` and
   ``ledger: {}`` added (the documented ledger defaults) -> ``ledger_free_space.png`` and ``ledger_chip.png``
   (``lightloop.records.ledger.ledger_figure`` of each run's ledger.json); the same one-epoch run on
   wire_free_space.yaml (drivers over TCP to the wire twin) -> ``ledger_free_space_wire.png``: the declared timing
   model beside the measured program / display / acquire / host wall time (benchmarks/ledger_reconcile.py explains
   the residual per group).

PNGs are written to --out-dir (default docs/figures/) as palette PNGs (< 300 kB each). Prints one JSON object:
the figure paths, the check's per-path gain errors and pass/fail, and each run's ledger headline numbers
(energy per sample in J, model and measured time per step in s, test accuracy). About 16 s on 2 cores.

Example: python benchmarks/ledger_figures.py [--out-dir docs/figures] [--work DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "lightloop" / "lab_configs"


def _cli(args: list[str], cwd: Path) -> str:
    """Run `python -m lightloop ARGS` in cwd; its stdout (raises with the stderr tail on a non-zero exit)."""
    env = {**os.environ, "MPLBACKEND": "Agg", "LIGHTLOOP_OFFLINE": os.environ.get("LIGHTLOOP_OFFLINE", "1")}
    proc = subprocess.run([sys.executable, "-m", "lightloop", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and args[0] != "check"):
        raise SystemExit(f"ledger_figures.py: `lightloop {' '.join(args)}` exited {proc.returncode}: "
                         f"{proc.stderr.strip()[-400:]}")
    return proc.stdout


def _scratch_config(src: Path, dst: Path) -> Path:
    """Copy a lab config with training.epochs 1 and a `ledger: {}` section appended."""
    lines = [("  epochs: 1" if line.startswith("  epochs:") else line) for line in src.read_text().splitlines()]
    if not any(line.startswith("  epochs: 1") for line in lines):
        raise SystemExit(f"ledger_figures.py: {src}: training.epochs: expected a line '  epochs: N' to shorten")
    dst.write_text("\n".join(lines) + "\nledger: {}\n")
    return dst


def save_small_png(fig_or_path: object, dst: Path, dpi: int = 90) -> int:
    """Save a matplotlib Figure (or re-encode a PNG file) as an adaptive-palette PNG; returns its size (bytes)."""
    from PIL import Image

    if isinstance(fig_or_path, (str, Path)):
        img = Image.open(fig_or_path).convert("RGB")
    else:
        buf = io.BytesIO()
        fig_or_path.savefig(buf, format="png", dpi=dpi)
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    return dst.stat().st_size


def _headline(summary: dict, accuracy: float | None) -> dict:
    """The README numbers of one ledger summary."""
    t = summary["time_per_step_s"]
    return {"steps": summary["steps"], "samples": summary["samples"], "test_accuracy": accuracy,
            "energy_per_sample_j": summary["energy_per_sample_j"],
            "electronics_j_per_sample": {k: v / summary["samples"]
                                         for k, v in summary.get("electronics_j", {}).items()},
            "time_per_step_s": {k: t[k] for k in ("optics", "electronics", "host", "total", "measured")},
            "model_groups_per_step_s": {k: t.get(k) for k in ("program", "acquire", "transfer", "host")},
            "measured_per_step_s": summary.get("measured_per_step_s"),
            "model_over_measured": summary["model_over_measured"], "frames": summary["frames"],
            "acquisitions": summary["acquisitions"], "adc_samples": summary["adc_samples"]}


def main(argv: list[str] | None = None) -> dict:
    """Regenerate the figures; returns (and prints) the JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=REPO / "docs" / "figures", help="folder for the PNGs")
    ap.add_argument("--work", type=Path, default=None, help="scratch working directory (default: a new temp dir)")
    args = ap.parse_args(argv)
    from lightloop.records.ledger import ledger_figure, load_ledger

    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="ledger_figures-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    fs_cfg = CONFIGS / "free_space_sa.yaml"
    result: dict = {"work_dir": str(work), "figures": {}, "sizes_bytes": {}}

    _cli(["calibrate", "all", "--config", str(fs_cfg)], work)
    _cli(["check", "--config", str(fs_cfg), "--out", str(work / "check")], work)
    check = json.loads((work / "check" / "check.json").read_text())
    dst = out / "error_budget_free_space.png"
    result["sizes_bytes"][dst.name] = save_small_png(work / "check" / "check.png", dst)
    result["figures"]["error_budget"] = str(dst)
    result["check"] = {"bench": check["bench"], "samples": check["samples"], "passed": check["passed"],
                       "paths": {p["name"]: {"passed": p["passed"], "gain_error": p.get("gain_error"),
                                             "noise_rms": p.get("noise_rms"), "unit": p.get("unit")}
                                 for p in check["paths"]}}

    for name, cfg in (("free_space", fs_cfg), ("chip", CONFIGS / "integrated_chip.yaml"),
                      ("free_space_wire", CONFIGS / "wire_free_space.yaml")):
        scratch = _scratch_config(cfg, work / f"{name}_ledger.yaml")
        run = work / f"run_{name}"
        _cli(["train", "--config", str(scratch), "--out", str(run), "--no-progress"], work)
        summary = load_ledger(run)["summary"]
        acc = json.loads((run / "summary.json").read_text()).get("test_accuracy")
        result[f"ledger_{name}"] = _headline(summary, acc)
        fig = ledger_figure(summary, title=f"energy / latency ledger: {name.replace('_', ' ')} twin, "
                                           f"{summary['steps']} steps (1 epoch), ledger defaults")
        dst = out / f"ledger_{name}.png"
        result["sizes_bytes"][dst.name] = save_small_png(fig, dst)
        result["figures"][f"ledger_{name}"] = str(dst)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
