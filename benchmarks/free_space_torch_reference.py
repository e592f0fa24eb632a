"""Independent PyTorch reference of the free-space SA network (Guo et al. 2021 recipe); prints JSON.

Written from the equations, sharing no code with lightloop's HAL or twin: fields z = a @ W.T with
no biases, g(E) = E exp(-(a0/2)/(1+E^2)) with the probe transmission T(E) as its backward slope
(pump-probe) or the exact slope, MSE on one-hot targets (or softmax cross-entropy), Adam, N(0, std)
init, pixel value = input field, no weight clipping. Its accuracy against `free_space_mnist.py`
(the twin through the HAL) tells whether a gap to a published figure is the recipe or the twin.
Needs PyTorch (not a lightloop dependency).

Example: python benchmarks/free_space_torch_reference.py --optical-depth 10 --epochs 50 --loss mse
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from lightloop.training.datasets import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128])
    ap.add_argument("--optical-depth", type=float, default=10.0)
    ap.add_argument("--gradient", choices=["pump_probe", "exact"], default="pump_probe")
    ap.add_argument("--loss", choices=["mse", "cross_entropy"], default="mse")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--init-scale", type=float, default=0.1)
    ap.add_argument("--input-field-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        raise SystemExit("free_space_torch_reference: PyTorch is not installed (pip install torch)") from None
    torch.set_num_threads(a.threads)
    a0, exact = a.optical_depth, a.gradient == "exact"

    class SaturableAbsorber(torch.autograd.Function):
        """g(E) forward; T(E) (pump-probe) or g'(E) (exact) backward."""

        @staticmethod
        def forward(ctx, e):  # type: ignore[override]
            t = torch.exp(-(a0 / 2) / (1 + e * e))
            ctx.save_for_backward(e, t)
            return e * t

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            e, t = ctx.saved_tensors
            slope = t * (1 + a0 * e * e / (1 + e * e) ** 2) if exact else t
            return g * slope

    d = load_dataset("mnist", a.data_dir)
    xtr = torch.tensor(d.x_train * a.input_field_scale)
    xte = torch.tensor(d.x_test * a.input_field_scale)
    ytr, yte = torch.tensor(d.y_train).long(), torch.tensor(d.y_test).long()
    torch.manual_seed(a.seed)
    sizes = [784, *a.hidden, 10]
    weights = [(torch.randn(o, i) * a.init_scale).requires_grad_() for i, o in zip(sizes[:-1], sizes[1:])]
    opt = torch.optim.Adam(weights, lr=a.lr)
    eye = torch.eye(10)

    def net(x):
        for w in weights[:-1]:
            x = SaturableAbsorber.apply(x @ w.T)
        return x @ weights[-1].T

    accs, t0 = [], time.perf_counter()
    for _ in range(a.epochs):
        perm = torch.randperm(xtr.shape[0])
        for i in range(0, xtr.shape[0], a.batch_size):
            idx = perm[i:i + a.batch_size]
            z = net(xtr[idx])
            if a.loss == "mse":
                loss = ((z - eye[ytr[idx]]) ** 2).mean()
            else:
                loss = torch.nn.functional.cross_entropy(z, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            accs.append(float((net(xte).argmax(1) == yte).float().mean()))
    print(json.dumps({"benchmark": "free_space_torch_reference", "layer_sizes": sizes, "optical_depth": a0,
                      "gradient": a.gradient, "loss": a.loss, "epochs": a.epochs, "seed": a.seed,
                      "input_field_scale": a.input_field_scale, "torch_version": torch.__version__,
                      "best_test_accuracy": max(accs), "best_epoch": int(np.argmax(accs)) + 1,
                      "test_accuracy": accs[-1], "test_accuracy_by_epoch": [round(v, 4) for v in accs],
                      "wall_seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
