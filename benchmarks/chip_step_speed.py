"""Chip in-situ adjoint step vs a dense numpy reference of the same physics; prints one JSON object.

    python benchmarks/chip_step_speed.py [--sizes 8 16 32 64] [--batches 32 256] [--repeats 5]

lightloop's step: program(phases) + forward(x) + measure_phase_gradients(delta) on the integrated-chip
twin of lightloop/lab_configs/integrated_chip.yaml (two N-port Clements meshes, N EO activations, no bias
ports; the realistic twin by default, --ideal for the ideal one): heater voltages through the crosstalk
compensation, the twin's light path and every tap exposure of the HAL's adjoint protocol. Every step writes new
phases (a random walk of 0.02 rad per phase and step, like an optimiser's updates; both sides get the same phases),
so no cache of an unchanged write is measured.
The reference: the same network (two Clements meshes of 50:50 MZIs, EO activation a = k p / sqrt(1 + (k p)^2),
output powers, MSE loss) in plain numpy, complex64: fields per MZI column recorded forward and backward,
dL/dphi = -2 Im(u v) (Hughes et al. 2018); its gradient is checked against central finite differences in
complex128 before any timing. glibc's malloc thresholds are pinned first (--default-allocator: not). Timings are interleaved (lightloop, reference, lightloop, ...), best of 3
rounds of --repeats steps, in process CPU time (the *_wall_ms fields: wall clock; on a shared machine the CPU
time is the steadier figure); the exponent is a least-squares fit of log(time) on log(N) per batch size.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # small matrices: BLAS threads only contend

import argparse  # noqa: E402
import copy  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lightloop.bench import BuildOverrides, build_processor  # noqa: E402
from lightloop.config import parse_config  # noqa: E402
from lightloop.physics.mzi import mesh_layout  # noqa: E402

CONFIG = ROOT / "lightloop" / "lab_configs" / "integrated_chip.yaml"
K_ACT = 3.0          # activation strength k (the lab config's activation.k)
SQ = 1 / np.sqrt(2)


# --- the dense numpy reference -------------------------------------------------------------------------
class RefMesh:
    """Clements mesh of 50:50 MZIs, T = B diag(e^{i theta}, 1) B diag(e^{i phi}, 1); channels [theta, phi].

    Fields are mode-major (n, batch); each column is one stacked product of per-MZI 4 x 2 matrices with its
    (k, 2, batch) pairs of rows: [field after phi, field after theta, top out, bottom out] (backward:
    [adjoint at theta, adjoint at phi, top in, bottom in]) - the fastest plain-numpy form we know."""

    def __init__(self, n: int, dtype: type = np.complex64):
        lay = mesh_layout(n, "rectangular")
        self.n, self.k, self.dtype = n, lay.n_mzi, np.dtype(dtype)
        self.cols = [(slice(int(lay.offsets[c]), int(lay.offsets[c + 1])), int(m[0]), m.size)
                     for c, m in enumerate(lay.columns) if m.size]

    def set_phases(self, phases: np.ndarray) -> None:
        """Phases [theta..., phi...] (rad): the per-MZI forward and backward 4 x 2 matrices."""
        et, ep = np.exp(1j * phases[: self.k]), np.exp(1j * phases[self.k:])
        one, zero = np.ones_like(et), np.zeros_like(et)
        # forward: p = ep top; c = et (p + i bot)/sqrt2; low = (i p + bot)/sqrt2; out = ((c + i low), (i c + low))/sqrt2
        c_t, c_b = et * ep * SQ, et * 1j * SQ
        l_t, l_b = 1j * ep * SQ, one * SQ
        fwd = [[ep, zero], [c_t, c_b], [(c_t + 1j * l_t) * SQ, (c_b + 1j * l_b) * SQ],
               [(1j * c_t + l_t) * SQ, (1j * c_b + l_b) * SQ]]
        # backward (U^T): p = (top + i bot)/sqrt2; q = (i top + bot)/sqrt2; r = (et p + i q)/sqrt2; in = (ep r, (i et p + q)/sqrt2)
        p_t, p_b = one * SQ, 1j * one * SQ
        r_t, r_b = (et * p_t + 1j * 1j * SQ) * SQ, (et * p_b + 1j * SQ) * SQ
        bwd = [[p_t, p_b], [r_t, r_b], [ep * r_t, ep * r_b],
               [(1j * et * p_t + 1j * SQ) * SQ, (1j * et * p_b + SQ) * SQ]]
        self.mf = np.array(fwd).transpose(2, 0, 1).astype(self.dtype)      # (k, 4, 2)
        self.mb = np.array(bwd).transpose(2, 0, 1).astype(self.dtype)

    def _run(self, x: np.ndarray, m: np.ndarray, cols: list) -> tuple[np.ndarray, np.ndarray]:
        x = np.array(x.T, self.dtype, order="C")
        rec = np.empty((self.k, 2, x.shape[1]), self.dtype)
        tap, out = np.ascontiguousarray(m[:, :2]), np.ascontiguousarray(m[:, 2:])
        for fl, a, k in cols:
            y = x[a: a + 2 * k].reshape(k, 2, -1)
            np.matmul(tap[fl], y, out=rec[fl])
            y[...] = np.matmul(out[fl], y)
        return x.T, rec

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Output fields (batch, n) and the fields after every [phi, theta] shifter (n_mzi, 2, batch)."""
        return self._run(x, self.mf, self.cols)

    def backward(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Adjoint fields at the inputs (U^T y) and the adjoint at every [theta, phi] shifter (n_mzi, 2, batch)."""
        return self._run(y, self.mb, self.cols[::-1])


def grad(fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
    """dL/dphase = -2 Im sum_b u v per channel [theta..., phi...] from the forward and adjoint records."""
    g = -2 * np.imag(np.sum(fwd * bwd[:, ::-1], 2))     # (n_mzi, [phi, theta])
    return np.concatenate([g[:, 1], g[:, 0]])


def ref_loss(meshes: list[RefMesh], x: np.ndarray, t: np.ndarray) -> tuple[float, list]:
    """MSE loss 1/(2B) sum (|z2|^2 - t)^2 of the two-layer network, and the cached forward state."""
    z1, f1 = meshes[0].forward(x)
    p1 = (z1.real ** 2 + z1.imag ** 2)
    a1 = K_ACT * p1 / np.sqrt(1 + (K_ACT * p1) ** 2)
    z2, f2 = meshes[1].forward(a1)
    out = (z2.real ** 2 + z2.imag ** 2)[:, : t.shape[1]]
    loss = 0.5 * float(np.sum((out - t) ** 2)) / x.shape[0]
    return loss, [(z1, f1, p1), (z2, f2, out)]


def ref_step(meshes: list[RefMesh], phases: list[np.ndarray], x: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
    """One adjoint step: set phases, forward with records, backward with records, dL/dphase per layer."""
    for m, ph in zip(meshes, phases):
        m.set_phases(ph)
    _, ((z1, f1, p1), (z2, f2, out)) = ref_loss(meshes, x, t)
    e = np.zeros(z2.shape, z2.real.dtype)
    e[:, : t.shape[1]] = (out - t) / x.shape[0]
    v2, b2 = meshes[1].backward(e * np.conj(z2))
    e1 = 2 * v2.real * (K_ACT / (1 + (K_ACT * p1) ** 2) ** 1.5)
    _, b1 = meshes[0].backward(e1 * np.conj(z1))
    return [grad(f1, b1), grad(f2, b2)]


def ref_fd_error(n: int, rng: np.random.Generator, channels: int | None) -> float:
    """Max relative error of the reference gradient vs central differences (complex128, batch 8)."""
    meshes = [RefMesh(n, np.complex128), RefMesh(n, np.complex128)]
    phases = [rng.uniform(0, 2 * np.pi, 2 * m.k) for m in meshes]
    x = rng.uniform(0, 1, (8, n))
    t = rng.uniform(0, 0.5, (8, min(10, n)))
    grads = ref_step(meshes, phases, x, t)
    scale = max(float(np.max(np.abs(g))) for g in grads)
    worst, h = 0.0, 1e-6
    for layer, g in enumerate(grads):
        idx = np.arange(g.size) if channels is None else rng.choice(g.size, channels, replace=False)
        for i in idx:
            for sign in (1, -1):
                phases[layer][i] += sign * h
                for m, ph in zip(meshes, phases):
                    m.set_phases(ph)
                lv = ref_loss(meshes, x, t)[0]
                phases[layer][i] -= sign * h
                if sign == 1:
                    lp = lv
            fd = (lp - lv) / (2 * h)
            worst = max(worst, abs(fd - g[i]) / scale)
    return worst


# --- lightloop ---------------------------------------------------------------------------------------
def chip(n: int, ideal: bool):
    """ChipProcessor with two n-port meshes from the lab config (no bias ports, n activations)."""
    raw = copy.deepcopy(yaml.safe_load(CONFIG.read_text()))
    p = raw["processor"]
    p["hidden"] = [n]
    p["encoder"].update(bias_ports=0)
    return build_processor(parse_config(raw, str(CONFIG)), n, min(10, n),
                           BuildOverrides(ideal=ideal, extra={"chip_seed": 1, "noise_seed": 0}))


def timed(fn, repeats: int) -> tuple[float, float]:
    """Mean CPU seconds and wall seconds per call over `repeats` calls (CPU time: robust on a shared machine)."""
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.process_time() - c0) / repeats, (time.perf_counter() - t0) / repeats


def measure(n: int, batch: int, repeats: int, ideal: bool, rng: np.random.Generator) -> dict:
    """Interleaved best-of-3 step times (ms) of lightloop and the reference at one (N, batch)."""
    proc = chip(n, ideal)
    params = proc.init_parameters(rng, 1.0)
    x = rng.uniform(0, 1, (batch, n)).astype(np.float32)
    delta = rng.standard_normal((batch, min(10, n))).astype(np.float32)
    meshes = [RefMesh(n), RefMesh(n)]
    walk = []                                     # 16 phase sets of a random walk, used in turn by both sides
    for _ in range(16):
        params = [(p + 0.02 * rng.standard_normal(p.shape)).astype(np.float32) for p in params]
        walk.append((params, [p.astype(np.float64) for p in params]))
    t = rng.uniform(0, 0.5, (batch, min(10, n))).astype(np.float32)
    step = {"ll": 0, "ref": 0}

    def ll() -> None:
        step["ll"] += 1
        proc.program(walk[step["ll"] % 16][0])
        proc.forward(x)
        proc.measure_phase_gradients(delta)

    def ref() -> None:
        step["ref"] += 1
        ref_step(meshes, walk[step["ref"] % 16][1], x, t)

    ll(), ref()                                   # warm-up (first solve factorises the crosstalk matrix)
    best = {k: np.inf for k in ("ll_cpu", "ll_wall", "ref_cpu", "ref_wall")}
    for _ in range(3):
        for name, fn in (("ll", ll), ("ref", ref)):
            cpu, wall = timed(fn, repeats)
            best[name + "_cpu"], best[name + "_wall"] = min(best[name + "_cpu"], cpu), min(best[name + "_wall"], wall)
    return {"n": n, "batch": batch, "phase_shifters": int(sum(2 * m.k for m in meshes)),
            "lightloop_ms": 1e3 * best["ll_cpu"], "reference_ms": 1e3 * best["ref_cpu"],
            "ratio": best["ll_cpu"] / best["ref_cpu"], "lightloop_wall_ms": 1e3 * best["ll_wall"],
            "reference_wall_ms": 1e3 * best["ref_wall"], "wall_ratio": best["ll_wall"] / best["ref_wall"]}


def pin_allocator() -> bool:
    """glibc malloc with fixed mmap / trim thresholds (64 / 128 MB): large temporaries of both timed paths come from
    the heap. With glibc's default dynamic threshold the cost depends on the process's history (the reference's
    N = 32, batch 256 step took 4.6 or 10.8 ms depending on which lightloop code ran before it)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(-3, 64 << 20) and libc.mallopt(-1, 128 << 20))   # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


def fit_exponent(rows: list[dict], key: str) -> float:
    """Slope of log(time) against log(N)."""
    n = np.log([r["n"] for r in rows])
    return float(np.polyfit(n, np.log([r[key] for r in rows]), 1)[0])


def main(argv: list[str] | None = None) -> int:
    """Check the reference by finite differences, time both, print JSON; exit 1 if the FD check fails."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--repeats", type=int, default=5, help="steps per timing round")
    ap.add_argument("--ideal", action="store_true", help="the ideal twin (no variation, no noise)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--default-allocator", action="store_true", help="keep glibc's dynamic mmap threshold")
    args = ap.parse_args(argv)
    pinned = False if args.default_allocator else pin_allocator()
    rng = np.random.default_rng(args.seed)
    fd = {str(n): ref_fd_error(n, rng, None if n <= 8 else 6) for n in args.sizes}
    rows = [measure(n, b, args.repeats, args.ideal, rng) for b in args.batches for n in args.sizes]
    scaling = {}
    for b in args.batches:
        sel = [r for r in rows if r["batch"] == b]
        if len(sel) > 1:
            scaling[str(b)] = {"lightloop_exponent_in_n": fit_exponent(sel, "lightloop_ms"),
                               "reference_exponent_in_n": fit_exponent(sel, "reference_ms")}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    ok = bool(max(fd.values()) < 1e-6)
    print(json.dumps({"benchmark": "chip_step_speed", "twin": "ideal" if args.ideal else "realistic",
                      "reference_fd_max_rel_error": fd, "reference_fd_ok": ok, "rows": rows,
                      "scaling": scaling, "load_average_1min": load, "repeats": args.repeats,
                      "allocator_pinned": pinned}, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
