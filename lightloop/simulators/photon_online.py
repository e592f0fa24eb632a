"""Fast, exact online-learning simulator for the biophoton paper's network (one hidden layer, ideal photon channel).

Zarkeshian, Kergan, Ghobadi, Nicola & Simon, "Photons guided by axons may enable backpropagation-based
learning in the brain", Sci. Rep. 12, 20720 (2022): an n_in-H-n_out sigmoid network with biases, MSE
loss, online learning (one sample per trial, plain SGD), whose per-neuron errors reach the neurons
through a photon-limited channel.

This computes EXACTLY what `DigitalProcessor` + `stochastic_photonic` (through the HAL
`PhotonCountingArray` with ideal detectors: efficiency 1, no dark counts, no polarisation error) +
`SGD` compute trial by trial - same forward pass, same errors, same received values
(`lightloop.training.stochastic` documents them), same update dW = received^T a, W <- W - lr dW - but
much faster, because it only does the work whose result is non-zero:

  * a hidden neuron's backward error delta_j = (delta_out . W2[:, j]) s'(z_j) is computed only for the
    neurons that receive a photon (signal or noise) in that trial, and only their weight rows are
    updated (the rows of the others are exactly zero in the dense update);
  * when every neuron is photon-limited and q is small, most trials deliver no photon at all and
    leave the weights unchanged; the forward passes of the trials between two photon events then run
    as ONE batched matrix product (the training-error record needs every trial's output), or are
    skipped when only the last 100 trials before each checkpoint are recorded (`record_all=False`:
    the reported moving-average curve is the same, and a q = 1e-4 trial costs ~0.03 ms).

Photon statistics are drawn exactly: per trial and layer the number of signal photons is
Binomial(n, q) and the receiving neurons a uniform subset of that size (identical in law to
independent Bernoulli(q) per neuron); noise photons likewise with n_p and a uniform random
polarisation; a neuron reading an H and a V click in the same trial (signal + opposite noise)
reads 0, as the HAL's click decoding does. A signal photon is emitted only if the error is non-zero.

Use `PhotonCountingArray` and the Trainer for anything with detector imperfections or another
processor; this module is the reference-network engine of `benchmarks/photon_limited.py`. It is
checked against the HAL path in tests/test_photon_feedback.py.

Width conventions (documented choices, see `init_weights` and `layer_learning_rates`):
  init='fixed'   every weight and bias ~ N(0, init_scale^2) (the earlier default, scale 0.05);
  init='fan_in'  weights ~ N(0, 1/fan_in) (LeCun), biases 0: pre-activations O(1) at any width;
  lr_scaling='none'    one learning rate for both layers (the paper's plain SGD);
  lr_scaling='fan_in'  layer l uses lr / fan_in(l): the per-trial change of every pre-activation,
                       lr * delta * |a|^2 / fan_in, no longer grows with the layer's width (normalised
                       LMS; the NTK parametrisation's step). With plain SGD the output layer's step
                       grows linearly with H (|h|^2 ~ 0.25 H for sigmoid units).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

__all__ = ["OnlineSettings", "init_weights", "layer_learning_rates", "PhotonOnlineNet", "augment", "run_online"]

Init = Literal["fixed", "fan_in"]
LrScaling = Literal["none", "fan_in"]


@dataclass
class OnlineSettings:
    """One online run: network width, photon channel (q, one_bit, epsilon, n_p, output_feedback), SGD."""

    hidden: int = 500
    q: float = 1.0
    one_bit: bool = False
    epsilon: float = 1.0
    noise_rate: float = 0.0
    output_feedback: bool = False
    lr: float = 0.1
    lr_scaling: LrScaling = "none"
    init: Init = "fixed"
    init_scale: float = 0.05

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON reports)."""
        return dict(self.__dict__)


def init_weights(rng: np.random.Generator, sizes: tuple[int, ...], init: Init = "fixed",
                 init_scale: float = 0.05) -> list[NDArray[np.float32]]:
    """Weights W(l) of shape (n_out, n_in + 1), last column the bias.

    'fixed' draws exactly what `DigitalProcessor.init_parameters(rng, init_scale)` draws (same rng calls).
    """
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        if init == "fixed":
            w = rng.normal(0.0, init_scale, size=(n_out, n_in + 1))
        elif init == "fan_in":
            w = np.zeros((n_out, n_in + 1))
            w[:, :-1] = rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(n_out, n_in))
        else:
            raise ValueError(f"photon online: init must be 'fixed' or 'fan_in', got {init!r}")
        out.append(w.astype(np.float32))
    return out


def layer_learning_rates(lr: float, sizes: tuple[int, ...], lr_scaling: LrScaling = "none") -> list[float]:
    """Per-layer SGD step: lr everywhere ('none') or lr / fan_in ('fan_in', fan_in = inputs incl. bias)."""
    if lr_scaling == "none":
        return [float(lr)] * (len(sizes) - 1)
    if lr_scaling == "fan_in":
        return [float(lr) / (n_in + 1) for n_in in sizes[:-1]]
    raise ValueError(f"photon online: lr_scaling must be 'none' or 'fan_in', got {lr_scaling!r}")


@dataclass
class _Stats:
    photons: int = 0          # neuron-trials with a non-zero received value
    signal: int = 0           # signal photons emitted
    noise: int = 0            # noise photons
    events: int = 0           # trials with at least one update


@dataclass
class PhotonOnlineNet:
    """n_in-H-n_out sigmoid MLP with biases trained online through an ideal photon-limited channel."""

    weights: list[NDArray[np.float32]]
    settings: OnlineSettings
    rng: np.random.Generator
    lrs: list[float] = field(default_factory=list)
    stats: _Stats = field(default_factory=_Stats)
    #: a block whose photon trials exceed this fraction runs trial by trial; otherwise the forward passes
    #: between photon trials are batched (both give identical results; tests force each path)
    dense_fraction: float = 0.25

    def __post_init__(self) -> None:
        if len(self.weights) != 2:
            raise ValueError("photon online: exactly one hidden layer (the paper's network)")
        sizes = (self.weights[0].shape[1] - 1, self.weights[0].shape[0], self.weights[1].shape[0])
        if self.weights[1].shape[1] != sizes[1] + 1:
            raise ValueError("photon online: weight shapes do not chain")
        self.sizes = sizes
        if not self.lrs:
            self.lrs = layer_learning_rates(self.settings.lr, sizes, self.settings.lr_scaling)

    # --- forward ----------------------------------------------------------------------------
    def forward(self, xa: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Hidden activations (B, H) and outputs (B, n_out) for bias-augmented inputs xa (B, n_in + 1)."""
        w1, w2 = self.weights
        h = expit(xa @ w1.T)
        y = expit(h @ w2[:, :-1].T + w2[:, -1])
        return h, y

    # --- photon channel (ideal detectors) ------------------------------------------------------
    def _counts(self, n: int, p: float, trials: int) -> NDArray[np.int64]:
        """Photons per trial for a layer of n neurons, each independently with probability p: Binomial(n, p)."""
        if p <= 0.0:
            return np.zeros(trials, np.int64)
        if p >= 1.0:
            return np.full(trials, n, np.int64)
        return self.rng.binomial(n, p, size=trials)

    def _subset(self, n: int, k: int) -> NDArray[np.intp]:
        """k distinct neurons out of n, uniformly (with the Binomial count: i.i.d. Bernoulli per neuron)."""
        if k == 0:
            return np.empty(0, np.intp)
        if k == n:
            return np.arange(n)
        return np.sort(self.rng.choice(n, k, replace=False))

    def _receive(self, delta_at: Any, n: int, ks: int, kn: int) -> tuple[NDArray, NDArray]:
        """Rows with a non-zero received value and those values (the HAL's click decoding, ideal detectors)."""
        sig = self._subset(n, ks)
        noi = self._subset(n, kn)
        pol = np.where(self.rng.random(kn) < 0.5, 1, -1).astype(np.int8) if kn else np.empty(0, np.int8)
        rows = np.union1d(sig, noi) if kn else sig
        if rows.size == 0:
            return rows, np.empty(0, np.float32)
        d = np.asarray(delta_at(rows), np.float32)
        hv = np.zeros((rows.size, 2), np.int8)
        if sig.size:
            i = np.searchsorted(rows, sig)
            sgn = np.sign(d[i]).astype(np.int8)           # a zero error triggers no emission
            self.stats.signal += int(np.count_nonzero(sgn))
            hv[i[sgn > 0], 0] = 1
            hv[i[sgn < 0], 1] = 1
        if kn:
            j = np.searchsorted(rows, noi)
            self.stats.noise += int(kn)
            hv[j[pol > 0], 0] = 1
            hv[j[pol < 0], 1] = 1
        bits = (hv[:, 0] - hv[:, 1]).astype(np.float32)   # H and V both clicking reads 0
        recv = bits * np.float32(self.settings.epsilon) if self.settings.one_bit else np.abs(d) * bits
        keep = recv != 0
        self.stats.photons += int(keep.sum())
        return rows[keep], recv[keep].astype(np.float32)

    # --- one update --------------------------------------------------------------------------
    def update(self, xa: NDArray[np.float32], h: NDArray[np.float32], y: NDArray[np.float32],
               t: NDArray[np.float32], counts: tuple[int, int, int, int]) -> None:
        """The stochastic_photonic SGD step of one trial, given its forward pass and its photon counts.

        counts = (signal, noise) photons of the hidden layer, then of the output layer (ignored unless
        output_feedback). Backward errors are computed only where a photon arrived, with the pre-update W2.
        """
        s = self.settings
        w1, w2 = self.weights
        n_hidden, n_out = self.sizes[1], self.sizes[2]
        d2 = ((y - t) * y * (1.0 - y)).astype(np.float32)
        rows1, r1 = self._receive(lambda r: (d2 @ w2[:, r]) * (h[r] * (1.0 - h[r])), n_hidden, counts[0], counts[1])
        if s.output_feedback:
            rows2, r2 = self._receive(lambda r: d2[r], n_out, counts[2], counts[3])
        else:
            rows2, r2 = np.arange(n_out), d2
        if rows1.size:
            w1[rows1] -= np.float32(self.lrs[0]) * np.multiply.outer(r1, xa)
        if rows2.size:
            ha = np.empty(n_hidden + 1, np.float32)
            ha[:-1] = h
            ha[-1] = 1.0
            w2[rows2] -= np.float32(self.lrs[1]) * np.multiply.outer(r2, ha)
        if rows1.size or rows2.size:
            self.stats.events += 1

    def train_block(self, xa: NDArray[np.float32], targets: NDArray[np.float32], labels: NDArray[np.int64],
                    record: NDArray[np.bool_] | None = None) -> NDArray[np.bool_]:
        """Train on a block of trials in order; returns each trial's misclassification (forward before its update).

        record: which trials' misclassification is needed (default all). In the sparse regime the
        forward pass of a trial without a photon only feeds the training-error record, so unrecorded
        trials without a photon are skipped entirely (their entries read False); the weights are the same.
        """
        s = self.settings
        n = xa.shape[0]
        n_hidden, n_out = self.sizes[1], self.sizes[2]
        c = np.stack([self._counts(n_hidden, s.q, n), self._counts(n_hidden, s.noise_rate, n),
                      self._counts(n_out, s.q, n) if s.output_feedback else np.zeros(n, np.int64),
                      self._counts(n_out, s.noise_rate, n) if s.output_feedback else np.zeros(n, np.int64)], 1)
        events = np.flatnonzero(c.sum(1)) if s.output_feedback else np.arange(n)
        wrong = np.zeros(n, bool)
        if events.size > self.dense_fraction * n:     # dense: one forward per trial
            w1, w2 = self.weights
            for k in range(n):
                h = expit(w1 @ xa[k])
                y = expit(w2[:, :-1] @ h + w2[:, -1])
                wrong[k] = y.argmax() != labels[k]
                self.update(xa[k], h, y, targets[k], tuple(c[k]))
            return wrong
        rec = np.ones(n, bool) if record is None else np.asarray(record, bool)
        pos = 0                                       # sparse: weights constant between photon trials
        for k in [*events.tolist(), n - 1]:
            if k < pos:
                continue
            event = bool(c[k].any())
            need = pos + np.flatnonzero(rec[pos:k + 1])
            if event and (need.size == 0 or need[-1] != k):
                need = np.append(need, k)
            if need.size:
                hb, yb = self.forward(xa[need])
                wrong[need] = yb.argmax(1) != labels[need]
                if event:
                    self.update(xa[k], hb[-1], yb[-1], targets[k], tuple(c[k]))
            pos = k + 1
        return wrong


def augment(x: NDArray) -> NDArray[np.float32]:
    """Append the constant-1 bias unit: (B, n) -> (B, n + 1) float32."""
    out = np.empty((x.shape[0], x.shape[1] + 1), np.float32)
    out[:, :-1] = x
    out[:, -1] = 1.0
    return out


def run_online(x_train: NDArray, y_train: NDArray, x_test: NDArray, y_test: NDArray, settings: OnlineSettings,
               trials: int, seed: int, *, n_classes: int = 10, n_val: int = 10000, val_every: int = 500,
               val_size: int = 1000, xa_train: NDArray | None = None,
               weights: list[NDArray[np.float32]] | None = None, record_all: bool = True) -> dict[str, Any]:
    """One online run with the paper's protocol; returns its error curves and final test error.

    The last n_val training images are held out; validation uses val_size of them every val_every
    trials; the training error rate is the moving average of misclassification over the last 100
    trials. record_all=False evaluates only those 100 trials before each checkpoint (the reported
    curve is identical; with sparse photons most trials then cost nothing). Random draws: rng(seed)
    -> initial weights, validation subset, then one permutation of the training images per pass
    (the same sequence as the HAL-path loop of benchmarks/photon_limited.py, drawn lazily);
    photons from rng([seed, 1]).
    """
    rng = np.random.default_rng(seed)
    n_train = x_train.shape[0] - n_val
    sizes = (x_train.shape[1], settings.hidden, n_classes)
    w = weights if weights is not None else init_weights(rng, sizes, settings.init, settings.init_scale)
    net = PhotonOnlineNet([np.array(v, np.float32) for v in w], settings, np.random.default_rng([seed, 1]))
    val_idx = n_train + rng.choice(n_val, val_size, replace=False)
    perm, used = rng.permutation(n_train), 0

    def next_indices(m: int) -> NDArray[np.intp]:
        nonlocal perm, used
        parts = []
        while m > 0:
            if used == n_train:
                perm, used = rng.permutation(n_train), 0
            take = min(m, n_train - used)
            parts.append(perm[used:used + take])
            used += take
            m -= take
        return np.concatenate(parts)

    xa = xa_train if xa_train is not None else augment(x_train)
    targets = np.eye(n_classes, dtype=np.float32)
    xv, yv = xa[val_idx], y_train[val_idx]
    keep_all = record_all or val_every < 100
    last = np.zeros(0, bool)                           # misclassification of the most recent trials
    curve_t, curve_train, curve_val = [], [], []
    t0 = time.perf_counter()
    for start in range(0, trials, val_every):
        idx = next_indices(min(val_every, trials - start))
        rec = None if keep_all else np.arange(idx.size) >= idx.size - 100
        last = np.concatenate([last, net.train_block(xa[idx], targets[y_train[idx]], y_train[idx], rec)])[-100:]
        k = start + idx.size
        curve_t.append(k)
        curve_train.append(float(last.mean()))
        curve_val.append(float((net.forward(xv)[1].argmax(1) != yv).mean()))
    seconds = time.perf_counter() - t0
    test_err = float((net.forward(augment(x_test))[1].argmax(1) != y_test).mean())
    return {"test_error": test_err, "final_train_error_rate": curve_train[-1], "final_validation_error": curve_val[-1],
            "trials": trials, "seed": seed, "photons_delivered": net.stats.photons,
            "photons_per_trial": net.stats.photons / trials, "update_trials": net.stats.events,
            "seconds": round(seconds, 2), "ms_per_trial": round(1000 * seconds / trials, 4),
            "settings": settings.as_dict(), "layer_lr": net.lrs,
            "curve": {"trial": curve_t, "train_error_rate": curve_train, "validation_error": curve_val},
            "weights": net.weights}
