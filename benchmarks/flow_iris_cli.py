"""Iris on the flow-network bench through the `lightloop train` CLI, one run per learning rule; prints one JSON object.

Usage: python benchmarks/flow_iris_cli.py [--config lab_configs/flow_network.yaml] [--out runs/flow_iris_cli]
                                          [--methods chemical_signaling equilibrium_propagation coupled_learning]
Each run writes its directory (metrics, checkpoints, learning curve, flow_network.png with the
conductance changes) under --out. Exit status 1 if chemical signalling ends below 93 % test accuracy.
"""

from __future__ import annotations

import os

# Many tiny sparse factorisations: BLAS threads only add contention. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from lightloop.cli import main as cli_main  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
METHODS = ("chemical_signaling", "equilibrium_propagation", "coupled_learning")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI once per method; print {method: summary (+ wall seconds)} as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "lab_configs" / "flow_network.yaml")
    ap.add_argument("--out", type=Path, default=Path("runs") / "flow_iris_cli")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args(argv)
    results: dict[str, object] = {"benchmark": "flow_iris_cli", "config": str(args.config)}
    for method in args.methods:
        cmd = ["train", "--config", str(args.config), "--dataset", "iris", "--gradient", method,
               "--out", str(args.out / method), "--json", "--no-progress"]
        if args.epochs:
            cmd += ["--epochs", str(args.epochs)]
        buf = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            code = cli_main(cmd)
        if code != 0:
            print(json.dumps({**results, "failed": method, "exit_code": code}))
            return code
        summary = json.loads(buf.getvalue().strip().splitlines()[-1])
        summary["wall_seconds"] = time.perf_counter() - t0
        results[method] = summary
    print(json.dumps(results))
    chem = results.get("chemical_signaling")
    return 0 if not isinstance(chem, dict) or chem["test_accuracy"] >= 0.93 else 1


if __name__ == "__main__":
    sys.exit(main())
