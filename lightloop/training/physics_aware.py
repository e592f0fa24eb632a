"""Physics-aware training (Wright et al., Nature 601, 549 (2022)): forward on the processor, backward in its model.

`physics_aware`: one forward pass on the processor (twin or instruments) gives the measured taps a(l), z(l);
the errors then travel back DIGITALLY through the processor's calibrated differentiable model evaluated at
that measured state, never through the twin's hidden truth:

    delta(L) = dL/dy * f'(z(L))                        (f: the model's output nonlinearity; identity if linear)
    delta(l) = (delta(l+1) @ W_model(l+1)) * g'_l(z(l))  (g'_l: processor.activation_slope, the calibrated slope)
    dL/dW(l) = delta(l)^T a(l-1) / B * dW_model/dW

W_model(l) = clip(W(l), parameter_bounds) is the calibrated model of the weights the devices realise for the
requested parameters (the HAL clips to the realisable range; a free-space block pre-compensates its
calibrated fringing, assumed exact inside that range), and dW_model/dW masks the clipped entries to 0.
Differences from `exact` (lightloop.training.gradients): `exact` backpropagates through the requested
parameters and has no bias or output nonlinearity; `physics_aware` uses the model of the realised weights,
handles a bias column (parameters of shape (out, in + 1)) and a sigmoid output (`output_activation`), and
needs only a forward acquisition per step (no optical backward pass).

A processor has a model when its parameters are weight matrices (out, in) or (out, in + 1) and it implements
`activation_slope`, or when it brings its own (`model_gradients`, e.g. chip meshes and flow networks); others
raise a one-line ConfigError naming what is missing.

Twin refinement (options in `training.gradient_options`, or `--gradient-option KEY=VALUE`):

    refine_every   steps between refits of the model to the recent forward taps; 0 (default): never
    refine_window  recent forward batches the refit uses (default 20)
    refine_slope   weight-matrix models: also fit one scale of each hidden nonlinearity's slope (default true)

A weight-matrix model is refined by lightloop.training.model_refinement (per output row a gain g and offset c,
z_meas ~= g (W_model a_meas) + c, least squares over the window, gains ridged toward 1; the backward pass
uses diag(g) W_model and s * activation_slope); a processor with its own model refits through its
`refine_model(history)`. Refits use the taps every step measures anyway: no extra acquisition.
Prediction error: every step, the relative rms error of the model in use predicting the measured
pre-activations taps.pre[l] from the measured inputs of each layer (per layer and pooled), computed before
the step's refit; `epoch_metrics()` gives the epoch's means (metrics.jsonl), `refine(processor)` refits on demand.
The Trainer checkpoints `state_dict()` (step count, kept batches, the weight-model fit, the epoch's sums; the
processor's own fit travels in its snapshot): a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import ConfigError
from lightloop.hal.processor import ForwardTaps, OpticalProcessor
from lightloop.training.gradients import GradientMethod, GradientResult, _outer_grads, option_bool, register_gradient
from lightloop.training.flow_learning import FlowCost
from lightloop.training.losses import Loss, MSELoss
from lightloop.training.model_refinement import WeightModelRefiner, relative_rms

__all__ = ["PhysicsAwareGradient", "model_layout", "has_own_model"]


def has_own_model(processor: OpticalProcessor) -> bool:
    """True if the processor implements model_gradients (its parameters are not plain weight matrices)."""
    return _own(processor, "model_gradients")


def model_layout(processor: OpticalProcessor) -> list[bool] | None:
    """Per weight layer: True if its last parameter column is a bias; None if the processor brings its own
    model (model_gradients); ConfigError if the processor has no model."""
    if has_own_model(processor):
        return None
    name = type(processor).__name__
    sizes, shapes = processor.layer_sizes, processor.parameter_shapes()
    if len(shapes) != len(sizes) - 1:
        raise ConfigError(f"gradient 'physics_aware': {name} has {len(shapes)} parameter arrays for "
                          f"{len(sizes) - 1} layers; expected one weight matrix per layer")
    bias = []
    for i, s in enumerate(shapes):
        if len(s) != 2 or s[0] != sizes[i + 1] or s[1] not in (sizes[i], sizes[i] + 1):
            raise ConfigError(f"gradient 'physics_aware': {name} parameter {i} has shape {tuple(s)}; expected a "
                              f"weight matrix ({sizes[i + 1]}, {sizes[i]}) (a differentiable model of its "
                              f"parameters is missing)")
        bias.append(s[1] == sizes[i] + 1)
    if len(sizes) > 2:
        try:
            processor.activation_slope(0, np.zeros((1, sizes[1]), np.float32))
        except NotImplementedError:
            raise ConfigError(f"gradient 'physics_aware': {name} has no calibrated nonlinearity model; expected "
                              f"an activation_slope(layer, pre) method") from None
    if getattr(processor, "output_activation", "linear") not in ("linear", "sigmoid"):
        raise ConfigError(f"gradient 'physics_aware': {name}.output_activation is "
                          f"{processor.output_activation!r}; expected 'linear' or 'sigmoid'")
    return bias


def _count_option(name: str, value: Any, minimum: int) -> int:
    """An integer option >= minimum (ints, integral floats or digit strings); one-line ConfigError otherwise."""
    v = value
    if isinstance(v, str) and v.strip().lstrip("+").isdigit():
        v = int(v.strip())
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < minimum:
        what = "steps between refits, 0 = off" if name == "refine_every" else "forward batches kept"
        raise ConfigError(f"physics_aware: gradient option {name}: expected an integer >= {minimum} ({what}), "
                          f"got {value!r}")
    return int(v)


def _bool_option(name: str, value: Any) -> bool:
    """A true/false option (bools, 0/1 or the strings true/false/yes/no/on/off); one-line ConfigError otherwise."""
    v = option_bool(value)
    if v is None:
        raise ConfigError(f"physics_aware: gradient option {name}: expected true or false, got {value!r}")
    return v


def _own(processor: OpticalProcessor, method: str) -> bool:
    """True if the processor overrides OpticalProcessor.<method>."""
    return getattr(type(processor), method) is not getattr(OpticalProcessor, method)


@register_gradient
class PhysicsAwareGradient(GradientMethod):
    """Forward on the processor; backward through its calibrated (optionally refined) model at the measured state."""

    name = "physics_aware"
    requires = None
    _requested_loss: Loss = MSELoss()
    _model_loss: Loss | None = None

    @property  # type: ignore[override]
    def loss(self) -> Loss:
        """The Trainer's loss, or the one the processor's own model descends (a flow network: its flow cost)."""
        return self._model_loss if self._model_loss is not None else self._requested_loss

    @loss.setter
    def loss(self, value: Loss) -> None:
        if self._model_loss is not None and not isinstance(value, (MSELoss, type(self._model_loss))):
            raise ConfigError(f"gradient 'physics_aware': this processor's model descends its {self._model_loss.name} "
                              f"(loss 'mse' maps onto it); loss '{getattr(value, 'name', value)}' is not available")
        self._requested_loss = value

    def __init__(self, refine_every: Any = 0, refine_window: Any = 20, refine_slope: Any = True) -> None:
        self.refine_every = _count_option("refine_every", refine_every, 0)
        self.refine_window = _count_option("refine_window", refine_window, 1)
        self.refine_slope = _bool_option("refine_slope", refine_slope)
        self._layout: tuple[int, list[bool] | None] | None = None     # (id of the processor, bias columns) of check()
        self._refiner: WeightModelRefiner | None = None
        self._history: deque[ForwardTaps] = deque(maxlen=self.refine_window)   # own-model processors
        self._steps = 0
        self._predicts = True          # False once an own model turned out to have no model_prediction
        self._keep = False             # keep batches without scheduled refits (after an on-demand refine)
        self._errors: dict[str, Any] = {}     # this epoch's prediction errors: n, sums, first and last step
        self._epoch_refits = 0
        self.last_fit: dict[str, float] = {}

    def check(self, processor: OpticalProcessor) -> None:
        """Raise ConfigError if the processor has no differentiable calibrated model (or none to refine)."""
        # a flow network's model descends its flow cost (processor.model_loss), as the flow rules do
        self._model_loss = FlowCost() if getattr(processor, "model_loss", None) == "flow_cost" else None
        self.loss = self._requested_loss     # re-checked against the processor's model loss
        bias = model_layout(processor)
        if bias is None:
            processor.check_model()   # e.g. a chip's 'svd' layers have no calibrated model: refused before step 1
        if bias is None and self.refine_every and not _own(processor, "refine_model"):
            raise ConfigError(f"physics_aware: gradient option refine_every={self.refine_every}: "
                              f"{type(processor).__name__} has no refine_model; expected refine_every 0")
        if self._layout is None or self._layout[0] != id(processor):
            self._refiner = None if bias is None else WeightModelRefiner(
                len(processor.parameter_shapes()), self.refine_window, fit_slope=self.refine_slope)
            self._history.clear()
            self._steps, self._predicts = 0, True
        self._layout = (id(processor), bias)

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        if self._layout is None or self._layout[0] != id(processor):   # the model probe runs once, not every step
            self.check(processor)
        bias = self._layout[1]
        before = processor.measurements
        taps = processor.forward(x)
        d = np.asarray(self.loss.error(taps.output, targets), np.float32)
        if bias is None:   # the processor carries its own calibrated model (chip meshes, flow networks)
            self._observe_own(processor, taps)
            grads = processor.model_gradients(taps, d)
            return GradientResult(self.loss.value(taps.output, targets), taps.output, list(grads),
                                  processor.measurements - before)
        w_model, masks = self._realised(processor, params)
        ref = self._refiner
        assert ref is not None
        self._observe_weights(processor, w_model, taps)
        if getattr(processor, "output_activation", "linear") == "sigmoid":
            y = 1.0 / (1.0 + np.exp(-taps.pre[-1].astype(np.float64)))
            d = np.asarray(d * (y * (1.0 - y)), np.float32)
        deltas: list[NDArray] = [d] * len(params)
        for i in range(len(params) - 1, -1, -1):
            g = ref.row_gain(i)
            if g is not None:          # refined model: z(i) = g * (W_model a) + c, so dL/d(W_model a) = g * delta
                d = d * g
            deltas[i] = d
            if i:
                w = w_model[i][:, :-1] if bias[i] else w_model[i]
                slope = processor.activation_slope(i - 1, taps.pre[i - 1])
                s = ref.slope_scales[i - 1]
                d = np.asarray((d @ w) * (slope if s == 1.0 else slope * np.float32(s)), np.float32)
        grads = _outer_grads(taps, deltas, params)
        grads = [g if m is None else g * m for g, m in zip(grads, masks)]
        return GradientResult(self.loss.value(taps.output, targets), taps.output, grads,
                              processor.measurements - before)

    # --- twin refinement and prediction error ----------------------------------------------------------
    def _observe_weights(self, processor: OpticalProcessor, w_model: Sequence[NDArray], taps: ForwardTaps) -> None:
        """Prediction error of the model in use on this batch; keep the batch; refit when due."""
        ref = self._refiner
        assert ref is not None
        u = ref.unrefined(w_model, taps)
        self._note(*relative_rms(ref.predict(u), taps.pre))
        self._steps += 1
        if self.refine_every or self._keep:
            ref.record(u, taps, processor.layer_sizes)
        if self.refine_every and self._steps % self.refine_every == 0:
            self._refit(processor)

    def _observe_own(self, processor: OpticalProcessor, taps: ForwardTaps) -> None:
        """The same for a processor's own model: model_prediction, refine_model(history)."""
        if self._predicts:
            try:
                pred = processor.model_prediction(taps)
            except NotImplementedError:
                self._predicts = False
            else:
                n = min(len(pred), len(taps.pre))
                self._note(*relative_rms(pred[:n], taps.pre[:n]))
        self._steps += 1
        if self.refine_every or self._keep:
            self._history.append(taps)
        if self.refine_every and self._steps % self.refine_every == 0:
            self._refit(processor)

    def _refit(self, processor: OpticalProcessor) -> dict[str, float]:
        if self._refiner is not None:
            fig = self._refiner.refit(processor.activation_slope)
        elif self._history:
            fig = processor.refine_model(list(self._history))
        else:
            fig = {}
        self.last_fit = {k: float(v) for k, v in (fig or {}).items() if isinstance(v, (int, float, np.number))}
        self._epoch_refits += 1
        return self.last_fit

    def refine(self, processor: OpticalProcessor, params: Sequence[NDArray] | None = None,
               x: NDArray | None = None) -> dict[str, float]:
        """Refit the model now (on demand) from the kept batches, after forwarding batch x if given (params then
        programmed first); returns the fit figures. Keeps batches from here on even with refine_every 0."""
        if self._layout is None or self._layout[0] != id(processor):
            self.check(processor)
        self._keep = True
        if x is not None:
            if params is None:
                raise ConfigError("physics_aware.refine: x given without params; expected the parameters to program")
            processor.program(params)
            taps = processor.forward(np.asarray(x, np.float32))
            if self._refiner is not None:
                self._refiner.record(self._refiner.unrefined(self._realised(processor, params)[0], taps), taps,
                                     processor.layer_sizes)
            else:
                self._history.append(taps)
        fig = self._refit(processor)
        self._epoch_refits -= 1        # an on-demand refit is not a scheduled one
        return fig

    def _note(self, per: list[float], total: float) -> None:
        """Add one step's prediction errors (per layer, pooled) to the epoch's running sums."""
        e = self._errors
        if not e:
            e.update(n=0, total=0.0, layers=np.zeros(len(per)), first=total)
        e["n"] += 1
        e["total"] += total
        e["layers"] = e["layers"] + np.asarray(per, np.float64)
        e["last"] = total

    def epoch_metrics(self) -> dict[str, Any]:
        """Since the last call: mean prediction error (pooled and per layer, dimensionless), refits, last fit."""
        e, self._errors = self._errors, {}
        refits, self._epoch_refits = self._epoch_refits, 0
        if not e:
            return {}
        out: dict[str, Any] = {"prediction_error": e["total"] / e["n"],
                               "prediction_error_layers": [float(v) for v in e["layers"] / e["n"]],
                               "prediction_error_first_step": float(e["first"]),
                               "prediction_error_last_step": float(e["last"])}
        if self.refine_every:
            out["model_refits"] = refits
            out["model_fit"] = dict(self.last_fit)
        return out

    # --- exact resume (the Trainer's checkpoint) ---------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Step count, kept forward batches, the weight-model refiner's fit, this epoch's error sums, last fit."""
        st: dict[str, Any] = {"steps": self._steps, "predicts": self._predicts, "keep": self._keep,
                              "epoch_refits": self._epoch_refits, "errors": dict(self._errors),
                              "last_fit": dict(self.last_fit), "history": [_taps_state(t) for t in self._history]}
        if self._refiner is not None:
            st["refiner"] = self._refiner.state_dict()
        return st

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict` after check(processor) (the Trainer does); ValueError naming a field that misfits."""
        if self._layout is None:
            raise ValueError("physics_aware state: expected check(processor) before load_state_dict")
        if ("refiner" in state) != (self._refiner is not None):
            raise ValueError(f"physics_aware refiner: expected {'a weight-model fit' if self._refiner else 'none'} "
                             f"(the processor {'has no' if self._refiner else 'brings its'} own model)")
        hist = [_taps_from(t) for t in state.get("history", [])]
        if self._refiner is not None:
            self._refiner.load_state_dict(state["refiner"])
        self._history.clear()
        self._history.extend(hist)
        self._steps, self._epoch_refits = int(state["steps"]), int(state.get("epoch_refits", 0))
        self._predicts, self._keep = bool(state.get("predicts", True)), bool(state.get("keep", False))
        e = dict(state.get("errors") or {})
        if e:
            e["layers"] = np.asarray(e["layers"], np.float64)
        self._errors = e
        self.last_fit = {str(k): float(v) for k, v in (state.get("last_fit") or {}).items()}

    @staticmethod
    def _realised(processor: OpticalProcessor, params: Sequence[NDArray]) -> tuple[list[NDArray], list[NDArray | None]]:
        """Model weights clip(W, bounds) and the clip masks dW_model/dW (None where nothing is clipped)."""
        out, masks = [], []
        for p, (lo, hi) in zip(params, processor.parameter_bounds()):
            inside = (p >= lo) & (p <= hi)
            if inside.all():
                out.append(p)
                masks.append(None)
            else:
                out.append(np.clip(p, lo, hi).astype(p.dtype))
                masks.append(inside.astype(np.float32))
        return out, masks


def _taps_state(taps: ForwardTaps) -> dict[str, Any]:
    """A kept forward batch as nested dicts / lists of arrays (what a checkpoint stores)."""
    return {"inputs": np.asarray(taps.inputs), "pre": [np.asarray(p) for p in taps.pre],
            "post": [np.asarray(p) for p in taps.post], "extra": dict(taps.extra or {})}


def _taps_from(state: Any) -> ForwardTaps:
    """The forward batch `_taps_state` stored; ValueError naming the field if it is not one."""
    if not isinstance(state, dict) or not {"inputs", "pre", "post"} <= set(state):
        raise ValueError("physics_aware history: expected forward batches with inputs, pre and post")
    if not isinstance(state["pre"], list) or not isinstance(state["post"], list):
        raise ValueError("physics_aware history: expected pre and post as lists of arrays")
    return ForwardTaps(inputs=np.asarray(state["inputs"]), pre=[np.asarray(p) for p in state["pre"]],
                       post=[np.asarray(p) for p in state["post"]], extra=dict(state.get("extra") or {}))
