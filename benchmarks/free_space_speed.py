"""Speed of one MNIST epoch (784-128-10, batch 64, Adam, pump_probe, ideal twin) through the HAL,
against a plain-numpy implementation of the same math and (if installed) plain PyTorch, all in
this process. Prints one JSON object.

Example: python benchmarks/free_space_speed.py --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import tracemalloc

import numpy as np

from lightloop.bench import BuildOverrides, build_processor
from lightloop.cli import default_config_path
from lightloop.config import load_config
from lightloop.training.datasets import Dataset, load_dataset, one_hot
from lightloop.training.gradients import make_gradient
from lightloop.training.optimizers import Adam
from lightloop.training.trainer import Trainer, TrainSettings

A0, LR, B, HIDDEN = 10.0, 5e-4, 64, 128


def plain_numpy_epoch(x, y, t, w1, w2, perm, state):
    """The same math as the HAL path, written out: forward, probe backward, outer products, Adam, clip."""
    b1, b2, eps = np.float32(0.9), np.float32(0.999), 1e-8
    loss_sum, correct = 0.0, 0
    for k in range(0, x.shape[0], B):
        idx = perm[k: k + B]
        xb, tb = x[idx], t[idx]
        z1 = xb @ w1.T
        tr = np.exp((-0.5 * A0) / (1.0 + z1 * z1))
        a1 = z1 * tr
        z2 = a1 @ w2.T
        d2 = z2 - tb
        d1 = (d2 @ w2) * tr
        inv = np.float32(1.0 / idx.size)
        grads = [(d1.T @ xb) * inv, (d2.T @ a1) * inv]
        loss_sum += 0.5 * float(np.einsum("ij,ij->", d2, d2))
        correct += int(np.count_nonzero(z2.argmax(1) == y[idx]))
        state["t"] += 1
        tt = state["t"]
        step = np.float32(LR * np.sqrt(1 - 0.999**tt) / (1 - 0.9**tt))
        e = np.float32(eps * np.sqrt(1 - 0.999**tt))
        for p, g, m, v in zip((w1, w2), grads, state["m"], state["v"]):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= step * m / (np.sqrt(v) + e)
            np.clip(p, -1.0, 1.0, out=p)
    return loss_sum / x.shape[0], correct / x.shape[0]


def torch_epoch(x, y, t, w1, w2, perm):
    """Plain PyTorch autograd of the exact network (g' not T), Adam, same batch order; None if torch is absent."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(max(1, torch.get_num_threads()))
    X, T = torch.from_numpy(x), torch.from_numpy(t)
    W1 = torch.tensor(w1, requires_grad=True)
    W2 = torch.tensor(w2, requires_grad=True)
    opt = torch.optim.Adam([W1, W2], lr=LR)
    P = torch.from_numpy(perm)
    t0 = time.perf_counter()
    for k in range(0, x.shape[0], B):
        idx = P[k: k + B]
        xb, tb = X[idx], T[idx]
        z1 = xb @ W1.T
        a1 = z1 * torch.exp(-0.5 * A0 / (1 + z1 * z1))
        z2 = a1 @ W2.T
        loss = 0.5 * ((z2 - tb) ** 2).sum() / idx.numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            W1.clamp_(-1, 1)
            W2.clamp_(-1, 1)
    return {"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(), "version": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per implementation (best is reported)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    a = ap.parse_args()
    data = load_dataset("mnist", a.data_dir)
    t_all = one_hot(data.y_train, 10)
    cfg = load_config(default_config_path())
    cfg.processor.error_readout = "single"  # noise-free ideal twin: the differential probe would only double the cost
    proc = build_processor(cfg, 784, 10, BuildOverrides(hidden=[HIDDEN], ideal=True, optical_depth=A0))

    # epochs of the three implementations are interleaved so that each sees the same machine conditions
    hal_times, np_times, torch_runs = [], [], []
    for e in range(a.epochs):
        tr = Trainer(proc, make_gradient("pump_probe"), Adam(LR),
                     TrainSettings(epochs=1, batch_size=B, seed=e, progress=False))
        # the Trainer's epoch_seconds times the training steps only (evaluation excluded)
        hal_times.append(tr.fit(Dataset("m", data.x_train, data.y_train, data.x_test[:10], data.y_test[:10], 10))
                         .mean_epoch_seconds)

        rng = np.random.default_rng(e)
        w1 = np.clip(rng.normal(0, 0.1, (HIDDEN, 784)), -1, 1).astype(np.float32)
        w2 = np.clip(rng.normal(0, 0.1, (10, HIDDEN)), -1, 1).astype(np.float32)
        perm = rng.permutation(60000)
        st = {"t": 0, "m": [np.zeros_like(w1), np.zeros_like(w2)], "v": [np.zeros_like(w1), np.zeros_like(w2)]}
        t0 = time.perf_counter()
        plain_numpy_epoch(data.x_train, data.y_train, t_all, w1, w2, perm, st)
        np_times.append(time.perf_counter() - t0)

        if not a.no_torch:
            r = torch_epoch(data.x_train, data.y_train, t_all, w1.copy(), w2.copy(), perm)
            if r is not None:
                torch_runs.append(r)

    # peak memory: a separate, untimed pass over 6400 samples (tracemalloc slows allocation-heavy code)
    small = Dataset("m", data.x_train[:6400], data.y_train[:6400], data.x_test[:10], data.y_test[:10], 10)
    tracemalloc.start()
    Trainer(proc, make_gradient("pump_probe"), Adam(LR), TrainSettings(epochs=1, batch_size=B, progress=False)).fit(small)
    peak_hal = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    st = {"t": 0, "m": [np.zeros_like(w1), np.zeros_like(w2)], "v": [np.zeros_like(w1), np.zeros_like(w2)]}
    plain_numpy_epoch(small.x_train, small.y_train, t_all[:6400], w1, w2, np.arange(6400), st)
    peak_np = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    hal, plain = min(hal_times), min(np_times)
    out = {
        "benchmark": "free_space_speed", "layer_sizes": [784, HIDDEN, 10], "batch_size": B, "mode": "ideal",
        "gradient": "pump_probe", "hal_seconds_per_epoch": hal, "plain_numpy_seconds_per_epoch": plain,
        "hal_over_plain_numpy": hal / plain, "hal_samples_per_second": 60000 / hal,
        "plain_numpy_samples_per_second": 60000 / plain,
        "hal_epoch_times": hal_times, "plain_numpy_epoch_times": np_times,
        "blas_threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
        "hal_peak_traced_mib": peak_hal / 2**20, "plain_numpy_peak_traced_mib": peak_np / 2**20,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if torch_runs:
        tt = min(r["seconds"] for r in torch_runs)
        out.update({"torch_seconds_per_epoch": tt, "hal_over_torch": hal / tt, "torch_version": torch_runs[0]["version"],
                    "torch_threads": torch_runs[0]["threads"]})
    else:
        out["torch_seconds_per_epoch"] = None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
