"""Speed of free-space MNIST epochs (Adam, pump_probe) through the HAL against references in THIS process.

For each network (default 784-128-10, batch 64) the epochs of every implementation are interleaved
(each sees the same machine conditions) and the best of --epochs is reported:
  * lightloop with the ideal twin, through the HAL (the Trainer's epoch_seconds or epoch_cpu_seconds: training steps only);
  * plain numpy: the same math written out (forward, probe backward, outer products, Adam, clip);
  * the matmul bound: every matrix product of an epoch at its own measured speed (each product shape
    timed alone, best of several), i.e. what an epoch costs if only the products cost anything;
  * the numpy floor: the bound plus what no numpy step avoids (Adam's 12 float32 passes, one a sqrt; a clip;
    the batch gather), each timed alone - why the bound itself is out of reach of any numpy implementation;
  * with --realistic: the realistic twin (SLM LUT and fringing, efficiency and gain errors, homodyne
    gain, LO phase, offsets, shot and electronic noise, 14-bit ADC; differential error readout);
  * PyTorch autograd of the same network, if installed (not a lightloop dependency; --no-torch skips it; a CPU
    wheel in a scratch venv that sees lightloop's site-packages is enough).
--scaling adds how the ideal epoch's cost grows with batch size and hidden width (log-log fitted exponents).
Prints one JSON object.

Examples:
  python benchmarks/free_space_speed.py --epochs 3
  python benchmarks/free_space_speed.py --realistic --networks 128 256 128,128 --epochs 3
  python benchmarks/free_space_speed.py --scaling --samples 12800
  OPENBLAS_NUM_THREADS=1 python benchmarks/free_space_speed.py --realistic --clock process   # on a shared machine
  OPENBLAS_NUM_THREADS=1 python benchmarks/free_space_speed.py --clock process --torch-threads 1   # torch, 1 thread too
With --realistic the JSON also holds realistic_parts_over_ideal: each part of a realistic step timed alone, per epoch,
over the ideal epoch (SLM gray levels, the twin's SLM field, the optics, the homodyne readings, their noise draws).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import tracemalloc
from typing import Any

import numpy as np

from lightloop.bench import BuildOverrides, build_processor
from lightloop.cli import default_config_path
from lightloop.config import load_config
from lightloop.training.datasets import Dataset, load_dataset, one_hot
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import Adam
from lightloop.training.trainer import Trainer, TrainSettings

A0, LR = 10.0, 5e-4


def init_weights(sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """N(0, 0.1) weights clipped to [-1, 1], float32, one (out, in) matrix per layer."""
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(0, 0.1, (o, i)), -1, 1).astype(np.float32) for i, o in zip(sizes[:-1], sizes[1:])]


def plain_numpy_epoch(x, y, t, ws, perm, batch):
    """The same math as the HAL path, written out: forward, probe backward, outer products, Adam, clip."""
    b1, b2, eps = np.float32(0.9), np.float32(0.999), 1e-8
    m, v = [np.zeros_like(w) for w in ws], [np.zeros_like(w) for w in ws]
    loss_sum, correct, step_no = 0.0, 0, 0
    for k in range(0, x.shape[0], batch):
        idx = perm[k: k + batch]
        a, acts, trs = x[idx], [], []
        for i, w in enumerate(ws):
            acts.append(a)
            z = a @ w.T
            if i < len(ws) - 1:
                tr = np.exp((-0.5 * A0) / (1.0 + z * z))
                trs.append(tr)
                a = z * tr
        d = z - t[idx]
        loss_sum += 0.5 * float(np.einsum("ij,ij->", d, d))
        correct += int(np.count_nonzero(z.argmax(1) == y[idx]))
        inv = np.float32(1.0 / idx.size)
        grads = [None] * len(ws)
        for i in range(len(ws) - 1, -1, -1):
            grads[i] = (d.T @ acts[i]) * inv
            if i:
                d = (d @ ws[i]) * trs[i - 1]
        step_no += 1
        step = np.float32(LR * np.sqrt(1 - 0.999**step_no) / (1 - 0.9**step_no))
        e = np.float32(eps * np.sqrt(1 - 0.999**step_no))
        for p, g, mm, vv in zip(ws, grads, m, v):
            mm *= b1
            mm += (1 - b1) * g
            vv *= b2
            vv += (1 - b2) * (g * g)
            p -= step * mm / (np.sqrt(vv) + e)
            np.clip(p, -1.0, 1.0, out=p)
    return loss_sum / x.shape[0], correct / x.shape[0]


def matmul_bound(sizes: tuple[int, ...], batch: int, n: int, repeats: int = 5, calls: int = 40) -> dict[str, Any]:
    """Seconds per epoch of the matrix products alone, each product shape timed at its own speed."""
    rng = np.random.default_rng(0)
    shapes = []  # (m, k, n) of each product of one step: forward, backward (layers > 0), weight gradient
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes.append(("forward", batch, n_in, n_out))
        if i:
            shapes.append(("backward", batch, n_out, n_in))
        shapes.append(("gradient", n_out, batch, n_in))
    out, total = [], 0.0
    for kind, mm, kk, nn in shapes:
        a = rng.random((mm, kk), dtype=np.float32)
        b = rng.random((kk, nn), dtype=np.float32)
        if kind == "gradient":
            a = np.ascontiguousarray(a.T).T  # d.T @ x: the left operand is a transposed view, as in training
        best = min(_timed(lambda: [a @ b for _ in range(calls)]) for _ in range(repeats)) / calls
        flops = 2.0 * mm * kk * nn
        out.append({"product": kind, "shape": [mm, kk, nn], "seconds": best, "gflops": flops / best / 1e9})
        total += best
    steps = -(-n // batch)
    return {"seconds_per_epoch": total * steps, "products": out}


def elementwise_floor(x: np.ndarray, sizes: tuple[int, ...], batch: int, n: int, repeats: int = 5,
                      steps: int = 40) -> dict[str, float]:
    """Seconds per epoch of what every numpy step needs besides the products, each timed alone (best of repeats):
    Adam on every parameter (12 float32 passes, one a sqrt), one clip, the batch gather from the training set."""
    rng = np.random.default_rng(0)
    params = [rng.normal(0, 0.1, (o, i)).astype(np.float32) for i, o in zip(sizes[:-1], sizes[1:])]
    grads = [rng.normal(0, 1e-3, p.shape).astype(np.float32) for p in params]
    opt = Adam(LR)
    opt.step(params, grads)
    sq = [np.abs(p) for p in params]   # sqrt of a non-negative array (Adam takes it of v)
    parts = {
        "adam": lambda: opt.step(params, grads),
        "sqrt_alone": lambda: [np.sqrt(q, out=q) for q in sq],
        "clip": lambda: [np.clip(p, -1.0, 1.0, out=p) for p in params],
        "gather": lambda: x[rng.integers(0, x.shape[0], batch)],
    }
    per_epoch = -(-n // batch)
    out = {f"{k}_seconds_per_epoch": min(_timed(lambda: [f() for _ in range(steps)]) for _ in range(repeats)) / steps
           * per_epoch for k, f in parts.items()}
    out["parameters"] = float(sum(p.size for p in params))
    out["seconds_per_epoch"] = sum(out[f"{k}_seconds_per_epoch"] for k in ("adam", "clip", "gather"))
    return out


def noise_draw_seconds(sizes: tuple[int, ...], batch: int, n: int, repeats: int = 5, steps: int = 20) -> float:
    """Seconds per epoch of the realistic twin's noise draws alone: two float64 normals (shot, electronic)
    per homodyne reading, differential readout (pre and post taps forward, two error readings back)."""
    rng = np.random.default_rng(0)
    per_step = [(batch, m) for m in (*sizes[1:], *sizes[1:-1], *sizes[1:-1], *sizes[1:-1])]

    def draws() -> None:
        for _ in range(steps):
            for shape in per_step:
                rng.standard_normal(shape)
                rng.standard_normal(shape)

    return min(_timed(draws) for _ in range(repeats)) / steps * -(-n // batch)


def realistic_parts(proc, batch: int, steps: int, repeats: int = 5, calls: int = 50) -> dict[str, float]:
    """Seconds per epoch of each part of a realistic step, each timed alone (best of repeats): the HAL's SLM gray
    levels, the twin's SLM field (pair table, fringing) and weight set-up, the optics (forward and backward products),
    the homodyne readings (5 per step, 784-H-10, differential) and, inside them, the float64 noise draws alone."""
    emu, rng = proc.emulator, np.random.default_rng(0)
    if not all(hasattr(b, "gray_levels") for b in proc.weights):
        return {}   # the parts below are those of SLM weight blocks
    params = proc.init_parameters(rng, 0.1)
    x = rng.random((batch, proc.layer_sizes[0]), dtype=np.float32)
    proc.program(params)
    d = proc.forward(x).output - np.eye(proc.layer_sizes[-1], dtype=np.float32)[rng.integers(0, 10, batch)]
    proc.backward(d)
    grays = [b.gray_levels(np.clip(p, -1, 1)) for b, p in zip(proc.weights, params)]

    def optics() -> None:
        emu._gen += 1   # a new weight generation: the cached passes are recomputed
        emu._backward()

    dets = [*proc.pre_taps, *proc.post_taps, *proc.error_taps, *proc.error_taps]
    shapes = [(batch, det.n_channels) for det in dets]
    parts = {
        "slm_gray_levels": lambda: [b.gray_levels(np.clip(p, -1, 1)) for b, p in zip(proc.weights, params)],
        "slm_twin_field": lambda: [emu.set_weight_field(i, emu.truth.slm[i].block_field(*g))
                                   for i, g in enumerate(grays)],
        "optics_forward_backward": optics,
        "homodyne_reads": lambda: [det.acquire() for det in dets],
        "noise_draws_alone": lambda: [(rng.standard_normal(s), rng.standard_normal(s)) for s in shapes],
    }
    return {f"{k}_seconds_per_epoch": min(_timed(lambda: [f() for _ in range(calls)]) for _ in range(repeats)) / calls
            * steps for k, f in parts.items()}


#: the clock of every timing: wall time, or with --clock process this process's CPU time (steadier on a shared
#: machine; equal to wall time for single-threaded BLAS on an idle one)
CLOCK = time.perf_counter


def _timed(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def torch_epoch(x, y, t, ws, perm, batch, threads: int | None = None):
    """Plain PyTorch autograd of the exact network (g' not T), Adam, same batch order; None if torch is absent."""
    try:
        import torch
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(threads)
    X, T = torch.from_numpy(x), torch.from_numpy(t)
    W = [torch.tensor(w, requires_grad=True) for w in ws]
    opt = torch.optim.Adam(W, lr=LR)
    P = torch.from_numpy(perm)
    t0 = CLOCK()
    for k in range(0, x.shape[0], batch):
        idx = P[k: k + batch]
        a, tb = X[idx], T[idx]
        for i, w in enumerate(W):
            z = a @ w.T
            a = z * torch.exp(-0.5 * A0 / (1 + z * z)) if i < len(W) - 1 else z
        loss = 0.5 * ((z - tb) ** 2).sum() / idx.numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for w in W:
                w.clamp_(-1, 1)
    return {"seconds": CLOCK() - t0, "threads": torch.get_num_threads(), "version": torch.__version__}


def build(hidden: list[int], realistic: bool):
    """The free-space processor of the default config: ideal twin (single readout) or realistic (differential)."""
    cfg = load_config(default_config_path())
    cfg.processor.error_readout = "differential" if realistic else "single"
    return build_processor(cfg, 784, 10, BuildOverrides(hidden=hidden, ideal=not realistic, optical_depth=A0))


def hal_epoch(proc, data: Dataset, batch: int, seed: int) -> float:
    """CPU or wall seconds of one HAL training epoch: the Trainer's epoch_cpu_seconds or epoch_seconds (steps only)."""
    tr = Trainer(proc, make_gradient("pump_probe"), Adam(LR),
                 TrainSettings(epochs=1, batch_size=batch, seed=seed, progress=False))
    hist = tr.fit(data).history
    key = "epoch_seconds" if CLOCK is time.perf_counter else "epoch_cpu_seconds"   # steps only, either clock
    return float(np.mean([h[key] for h in hist]))


def compare(data: Dataset, t_all, hidden: list[int], batch: int, epochs: int, realistic: bool,
            use_torch: bool, torch_threads: int | None = None) -> dict[str, Any]:
    """Interleaved epochs of every implementation for one network; best of `epochs` each."""
    sizes = (784, *hidden, 10)
    n = data.x_train.shape[0]
    ideal = build(hidden, False)
    real = build(hidden, True) if realistic else None
    times: dict[str, list[float]] = {"hal": [], "plain_numpy": [], "realistic": [], "torch": []}
    torch_info = None
    for e in range(epochs):
        times["hal"].append(hal_epoch(ideal, data, batch, e))
        perm = np.random.default_rng(e).permutation(n)
        ws = init_weights(sizes, e)
        times["plain_numpy"].append(_timed(lambda: plain_numpy_epoch(data.x_train, data.y_train, t_all, ws, perm, batch)))
        if real is not None:
            times["realistic"].append(hal_epoch(real, data, batch, e))
        if use_torch:
            r = torch_epoch(data.x_train, data.y_train, t_all, init_weights(sizes, e), perm, batch, torch_threads)
            if r is not None:
                times["torch"].append(r["seconds"])
                torch_info = r
    bound = matmul_bound(sizes, batch, n)
    floor = elementwise_floor(data.x_train, sizes, batch, n)
    hal, plain = min(times["hal"]), min(times["plain_numpy"])
    out: dict[str, Any] = {
        "layer_sizes": list(sizes), "batch_size": batch, "samples": n,
        "hal_seconds_per_epoch": hal, "plain_numpy_seconds_per_epoch": plain,
        "matmul_bound_seconds_per_epoch": bound["seconds_per_epoch"],
        "hal_over_plain_numpy": hal / plain, "hal_over_matmul_bound": hal / bound["seconds_per_epoch"],
        "plain_numpy_over_matmul_bound": plain / bound["seconds_per_epoch"],
        "hal_samples_per_second": n / hal, "matmul_products": bound["products"],
        "hal_epoch_times": times["hal"], "plain_numpy_epoch_times": times["plain_numpy"],
        # what numpy cannot avoid besides the products: the bound plus Adam, a clip and the gather, each alone
        "numpy_floor_seconds_per_epoch": bound["seconds_per_epoch"] + floor["seconds_per_epoch"],
        "numpy_floor_over_matmul_bound": 1 + floor["seconds_per_epoch"] / bound["seconds_per_epoch"],
        "hal_over_numpy_floor": hal / (bound["seconds_per_epoch"] + floor["seconds_per_epoch"]),
        "elementwise_parts": floor,
    }
    if real is not None:
        rt = min(times["realistic"])
        noise = noise_draw_seconds(sizes, batch, n)
        parts = realistic_parts(real, batch, -(-n // batch))
        out["realistic_parts_over_ideal"] = {k.replace("_seconds_per_epoch", ""): v / hal for k, v in parts.items()}
        out.update({"realistic_seconds_per_epoch": rt, "realistic_over_ideal": rt / hal,
                    "realistic_epoch_times": times["realistic"], "realistic_error_readout": "differential",
                    "realistic_noise_draw_seconds_per_epoch": noise,
                    "realistic_floor_over_ideal": (hal + noise) / hal})
    if times["torch"]:
        tt = min(times["torch"])
        out.update({"torch_seconds_per_epoch": tt, "hal_over_torch": hal / tt, "torch_version": torch_info["version"],
                    "torch_threads": torch_info["threads"]})
    return out


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """Slope of log(y) against log(x) (least squares): cost ~ x**slope."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def scaling(data: Dataset, epochs: int) -> dict[str, Any]:
    """Ideal-twin and plain-numpy epoch cost against batch size (hidden 128), hidden width and depth (batch 64)."""
    t_all = one_hot(data.y_train, 10)
    rows: dict[str, list[dict[str, Any]]] = {"batch": [], "width": []}
    for batch in (16, 32, 64, 128, 256):
        r = compare(data, t_all, [128], batch, epochs, False, False)
        rows["batch"].append({k: r[k] for k in ("batch_size", "hal_seconds_per_epoch", "plain_numpy_seconds_per_epoch",
                                                "matmul_bound_seconds_per_epoch")})
    for width in (32, 64, 128, 256, 512):
        r = compare(data, t_all, [width], 64, epochs, False, False)
        rows["width"].append({"hidden": width, **{k: r[k] for k in ("hal_seconds_per_epoch", "plain_numpy_seconds_per_epoch",
                                                                     "matmul_bound_seconds_per_epoch")}})
    rows["depth"] = []
    for depth in (1, 2, 3, 4):
        r = compare(data, t_all, [128] * depth, 64, epochs, False, False)
        rows["depth"].append({"hidden_layers": depth, **{k: r[k] for k in ("hal_seconds_per_epoch",
                                                                           "plain_numpy_seconds_per_epoch",
                                                                           "matmul_bound_seconds_per_epoch")}})
    out: dict[str, Any] = {"samples": int(data.x_train.shape[0]), **rows}
    for axis, key in (("batch", "batch_size"), ("width", "hidden"), ("depth", "hidden_layers")):
        xs = [row[key] for row in rows[axis]]
        out[f"{axis}_exponent"] = {impl: fit_exponent(xs, [row[f"{impl}_seconds_per_epoch"] for row in rows[axis]])
                                   for impl in ("hal", "plain_numpy", "matmul_bound")}
    out["note"] = ("seconds per epoch ~ batch**batch_exponent at fixed samples (per-step overheads amortise: < 0) "
                   "and ~ hidden**width_exponent at batch 64 (-> 1 once the products dominate); ~ hidden_layers**"
                   "depth_exponent for 784-128x(hidden_layers)-10 at batch 64 (the 784-wide first layer dominates: < 1)")
    return out


def peak_memory(data: Dataset, t_all, batch: int) -> dict[str, float]:
    """Peak traced memory of 6400 samples through the HAL and through plain numpy (untimed: tracemalloc is slow)."""
    small = Dataset("m", data.x_train[:6400], data.y_train[:6400], data.x_test[:10], data.y_test[:10], 10)
    proc = build([128], False)
    tracemalloc.start()
    Trainer(proc, make_gradient("pump_probe"), Adam(LR), TrainSettings(epochs=1, batch_size=batch, progress=False)).fit(small)
    peak_hal = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    plain_numpy_epoch(small.x_train, small.y_train, t_all[:6400], init_weights((784, 128, 10), 0), np.arange(6400), batch)
    peak_np = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"hal_peak_traced_mib": peak_hal / 2**20, "plain_numpy_peak_traced_mib": peak_np / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per implementation (best is reported)")
    ap.add_argument("--networks", nargs="+", default=["128"],
                    help="hidden layers of each network, comma-separated (128 = 784-128-10; 128,128 = two hidden)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--samples", type=int, default=60000, help="training samples per epoch (first n of MNIST)")
    ap.add_argument("--realistic", action="store_true", help="also time the realistic twin (differential readout)")
    ap.add_argument("--scaling", action="store_true", help="also fit the cost exponents in batch size and width")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads for the PyTorch reference (default: torch's own; 1 next to OPENBLAS_NUM_THREADS=1)")
    ap.add_argument("--clock", choices=["wall", "process"], default="wall",
                    help="wall time, or this process's CPU time (steadier on a loaded machine; use with OPENBLAS_NUM_THREADS=1)")
    a = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if a.clock == "process" else time.perf_counter
    full = load_dataset("mnist", a.data_dir)
    n = min(a.samples, full.x_train.shape[0])
    data = Dataset("m", full.x_train[:n], full.y_train[:n], full.x_test[:10], full.y_test[:10], 10)
    t_all = one_hot(data.y_train, 10)
    runs = [compare(data, t_all, [int(h) for h in net.split(",")], a.batch_size, a.epochs, a.realistic, not a.no_torch,
                    a.torch_threads)
            for net in a.networks]
    out: dict[str, Any] = {
        "benchmark": "free_space_speed", "gradient": "pump_probe", "optimizer": "adam", "epochs_timed": a.epochs,
        "clock": a.clock,
        **runs[0], "networks": runs[1:],
        "blas_threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
        "load_average": list(os.getloadavg()), **peak_memory(data, t_all, a.batch_size),
    }
    if a.scaling:
        out["scaling"] = scaling(data, a.epochs)
    out["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
