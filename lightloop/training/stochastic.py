"""Photon-limited (stochastic, one-bit, noisy) feedback around any backward pass: gradient `stochastic_photonic`.

After the forward pass, the wrapped backward pass measures the per-neuron errors delta(l) (for the
free-space bench: the optical pump-probe errors at the vapor cells; for the digital network of the
paper: exact backprop). Each error is then delivered to its neuron through a photon-limited
channel - the processor's `feedback_channel`, a HAL `PhotonCountingArray` (see
`lightloop.hal.photon_counting` for how the bench attaches it) - and the weight update uses what
arrived:

    received_j = xi_j * delta_j                        xi_j ~ Bernoulli(q)    (stochastic feedback)
    received_j = epsilon * xi_j * sign(delta_j)        one_bit                 (one bit per photon)
    received_j += epsilon * nu_j * sigma_j             nu_j ~ Bernoulli(n_p), sigma_j = +-1 uniformly
                                                       (uncorrelated noise photons)
    dW(l) = received(l)^T a(l-1) / B,   W <- W - lr * dW   (the optimizer; the paper uses plain SGD)

This is our reading of Eqs. 11-14 of Zarkeshian, Kergan, Ghobadi, Nicola & Simon, "Photons guided
by axons may enable backpropagation-based learning in the brain", Sci. Rep. 12, 20720 (2022),
arXiv:2203.11135 (we could not retrieve the equations verbatim): q is the probability that a
neuron's backward channel carries a photon in a trial, a photon carries only the sign of the
update, and noise photons arrive with probability n_p and a random sign. In the analog
(one_bit=False) mode the photon gates the full analog error, and a noise photon delivers the
channel's |delta| with a random sign. Detector realism (efficiency, dark counts, polarisation
readout error, click detectors where opposite coincident clicks cancel) comes from the channel.
`epsilon` is the error value one bit stands for; the paper's learning rate is the optimizer's lr.

Which neurons are photon-limited: by default the hidden neurons (output_feedback=False) - the
teaching signal travels backward from post- to pre-synaptic neurons, while output neurons hold
their own error (for the free-space bench: delta(L) is formed digitally at the output). With
output_feedback=True every neuron, output included, learns only when a photon arrives. Note that
one-bit feedback on sigmoid+MSE OUTPUT units cannot converge: a non-target output always has
delta > 0, so its one-bit updates never change sign; use output_feedback=True with one_bit only
for a linear-output processor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError
from lightloop.hal.photon_counting import PhotonCountingArray, feedback_channel_of
from lightloop.hal.processor import ForwardTaps, OpticalProcessor
from lightloop.training.gradients import GradientMethod, GradientResult, option_bool, register_gradient

__all__ = ["StochasticPhotonicGradient", "parse_bool"]

_INNER = ("pump_probe", "exact")


def parse_bool(value: Any, name: str) -> bool:
    """bool from True/False, 0/1 or the strings true/false/yes/no/on/off (config and CLI values)."""
    v = option_bool(value)
    if v is None:
        raise ConfigError(f"stochastic_photonic: {name} must be true or false, got {value!r}")
    return v


def _prob(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"stochastic_photonic: {name} must be a probability in [0, 1], got {value!r}") from None
    if not (np.isfinite(v) and 0.0 <= v <= 1.0):
        raise ConfigError(f"stochastic_photonic: {name} must be a probability in [0, 1], got {value!r}")
    return v


def _layer_grad(d: NDArray, a: NDArray) -> NDArray[np.float32]:
    """dW = d^T a / B; for one sample only the rows of neurons that received a photon are non-zero."""
    b = d.shape[0]
    if b == 1:
        rows = np.flatnonzero(d[0])
        if 2 * rows.size > d.shape[1]:
            return np.multiply.outer(d[0], a[0]).astype(np.float32, copy=False)
        g = np.zeros((d.shape[1], a.shape[1]), np.float32)
        if rows.size:
            g[rows] = np.multiply.outer(d[0, rows], a[0])
        return g
    return ((d.T @ a) * np.float32(1.0 / b)).astype(np.float32, copy=False)


@register_gradient
class StochasticPhotonicGradient(GradientMethod):
    """Backprop whose per-neuron errors reach the neurons as photons: Bernoulli(q), one bit, noise photons n_p."""

    name = "stochastic_photonic"
    requires = None  # checked in check(): a backward pass ('inner') and a feedback channel

    def __init__(self, q: float = 1.0, one_bit: bool | str = False, noise_rate: float = 0.0,
                 epsilon: float = 1.0, inner: str = "pump_probe", output_feedback: bool | str = False):
        self.q = _prob(q, "q")
        self.one_bit = parse_bool(one_bit, "one_bit")
        self.noise_rate = _prob(noise_rate, "noise_rate")
        try:
            self.epsilon = float(epsilon)
        except (TypeError, ValueError):
            raise ConfigError(f"stochastic_photonic: epsilon must be a positive number, got {epsilon!r}") from None
        if not (np.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"stochastic_photonic: epsilon must be a positive number, got {epsilon!r}")
        if inner not in _INNER:
            raise ConfigError(f"stochastic_photonic: inner must be one of {', '.join(_INNER)}, got {inner!r}")
        self.inner = inner
        self.output_feedback = parse_bool(output_feedback, "output_feedback")
        self.steps = 0
        self.delivered = 0  # neuron-trials whose update was non-zero (a photon or a noise photon arrived)

    def options(self) -> dict[str, Any]:
        """The method's parameters (for run summaries)."""
        return {"q": self.q, "one_bit": self.one_bit, "noise_rate": self.noise_rate, "epsilon": self.epsilon,
                "inner": self.inner, "output_feedback": self.output_feedback}

    # ------------------------------------------------------------------------------------------
    def check(self, processor: OpticalProcessor) -> None:
        """The processor needs the inner backward capability and a feedback channel of the right size."""
        if self.inner not in processor.capabilities:
            caps = ", ".join(sorted(processor.capabilities)) or "none"
            raise ConfigError(f"gradient 'stochastic_photonic' wraps the '{self.inner}' backward pass, which "
                              f"{type(processor).__name__} does not offer (it supports: {caps}); set inner")
        fc = feedback_channel_of(processor)
        if fc is None:
            raise ConfigError(
                f"gradient 'stochastic_photonic' needs a photon-counting feedback channel on "
                f"{type(processor).__name__}; add a 'feedback:' section to the lab config "
                f"(see lab_configs/photon_limited.yaml)")
        need = sum(processor.layer_sizes[1:])
        if fc.n_channels != need:
            raise ConfigError(f"stochastic_photonic: feedback channel has {fc.n_channels} channels, the network "
                              f"needs one per non-input neuron ({need})")

    def _configure(self, fc: PhotonCountingArray) -> None:
        if fc.emission_probability != self.q:
            fc.set_emission_probability(self.q)
        if fc.background_probability != self.noise_rate:
            fc.set_background_probability(self.noise_rate)

    def _deltas(self, processor: OpticalProcessor, params: Any, taps: ForwardTaps, d_out: NDArray) -> list[NDArray]:
        if self.inner == "pump_probe":
            return list(processor.backward(d_out))
        d = d_out
        deltas = [d]
        for i in range(len(params) - 1, 0, -1):
            d = (d @ params[i]) * processor.activation_slope(i - 1, taps.pre[i - 1])
            deltas.append(d)
        deltas.reverse()
        return deltas

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        fc = feedback_channel_of(processor)
        if fc is None:
            self.check(processor)
        assert fc is not None
        self._configure(fc)
        before = processor.measurements
        taps = processor.forward(x)
        d_out = self.loss.error(taps.output, targets)
        deltas = self._deltas(processor, params, taps, d_out)
        widths = [d.shape[1] for d in deltas]
        sent = deltas if self.output_feedback else [*deltas[:-1], np.zeros_like(deltas[-1])]
        received = fc.transmit(np.concatenate(sent, axis=1), one_bit=self.one_bit, bit_value=self.epsilon)
        parts = np.split(received, np.cumsum(widths)[:-1], axis=1)
        if not self.output_feedback:
            parts[-1] = deltas[-1]
        grads = [_layer_grad(d, taps.activations(i)) for i, d in enumerate(parts)]
        self.steps += 1
        self.delivered += int(np.count_nonzero(received))
        return GradientResult(self.loss.value(taps.output, targets), taps.output, grads,
                              processor.measurements - before + 1)
