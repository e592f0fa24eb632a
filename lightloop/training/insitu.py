"""In-situ adjoint gradients of mesh phases (Hughes et al., Optica 2018; Pai et al., Science 2023;
Ashtiani, Idjadi, Kim, Nature 2026).

`adjoint`: one forward pass, then per layer a backward (adjoint) pass and a forward + time-reversed adjoint
pass; every phase shifter's gradient is I_sum - I_fwd - I_adj at its tap monitor (noise included).
The measurements per step do not depend on the mesh size: 7 L - 1 detector-array acquisitions for L mesh
layers, against 2 P (L) + L for `finite_difference` (lightloop.training.gradients) with P phases in all.

The method only talks to the processor through its HAL: forward(x) and measure_phase_gradients(delta)
with delta = B dL/dz of the Trainer's loss (processors that declare the capability "adjoint").
"""

from __future__ import annotations

from lightloop.training.gradients import GradientMethod, GradientResult, register_gradient

__all__ = ["AdjointGradient"]


@register_gradient
class AdjointGradient(GradientMethod):
    """In-situ adjoint: phase gradients from forward, adjoint and sum intensities at the tap monitors."""

    name = "adjoint"
    requires = "adjoint"

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        before = processor.measurements
        taps = processor.forward(x)
        delta = self.loss.error(taps.output, targets)         # B dL/dz (z - t for the default MSE)
        grads = processor.measure_phase_gradients(delta)
        return GradientResult(self.loss.value(taps.output, targets), taps.output, grads,
                              processor.measurements - before)
