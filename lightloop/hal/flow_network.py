r"""The flow (resistor) network bench as an OpticalProcessor: FlowProcessor (processor kind `flow_network`).

A ConductanceNetwork (`lightloop.hal.flow_network_roles`: topology, limits, physics and units of the
bench) on the flow-network ports of `lightloop.hal.ports`, trained in place by the flow learning rules
(`lightloop.training.flow_learning`: chemical signaling, equilibrium propagation, coupled learning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lightloop.errors import ConfigError, LightloopError
from lightloop.hal.flow_model import FlowModel
from lightloop.hal.flow_network_roles import ConductanceInit, ConductanceNetwork, desired_from_class_means
from lightloop.hal.processor import ForwardTaps, OpticalProcessor

__all__ = ["FlowProcessor"]

FloatArray = NDArray[np.float64]

#: plot_network(positions, edges, dw, path, input_pairs, output_pairs, title=...) -> Path (injected by the bench)
NetworkPlotter = Callable[..., Path]


class FlowProcessor(OpticalProcessor):
    r"""A ConductanceNetwork as a trainable processor; its one parameter array is the edge conductances (S).

    forward(x): features x (batch, n_inputs) in [0, 1] drive the input pairs with currents
    I = feature_scale * x (A; feature_scale = 5 gives ASS22's [0, 5]); the output drops
    Delta v (batch, n_output_pairs) are measured.

    Classification under the generic Trainer (one-hot targets, argmax of taps.output): the processor
    owns the desired output drops T (n_classes, n_output_pairs), refreshed at the start of every epoch
    by `prepare_epoch(x_train, y_train)` from the drops it measures for the class-mean training inputs
    (rule "class_mean" or "one_hot", see `desired_from_class_means`). taps.output is the score
    s_k = -C_k = -1/2 ||Delta v - T_k||^2 (V^2), so argmax = nearest desired vector (ASS22's rule) and
    sum_k t_k s_k = -C for a one-hot target t: the flow cost is recoverable from (output, targets),
    which is how the flow gradient methods report it as the run's loss. The learning rules use the raw
    drops and potentials (taps.extra["drops"], ["potentials"]) and T (taps.extra["desired"]).

    Physics-aware training (`physics_aware`): `model_gradients` takes the measured free state of ONE probe
    acquisition and solves the feedback channel digitally in `self.model` (`lightloop.hal.flow_model`: the
    conductances the HAL believes are realised, gain * written), so with the flow cost it returns what
    chemical signalling measures with two acquisitions; `refine_model` fits the model's gain to the
    measured potentials of recent forward batches (taps.extra["conductances"]: what was written then).
    """

    #: the loss the model's gradients descend under the generic Trainer: the flow cost ('mse' maps onto it)
    model_loss = "flow_cost"

    capabilities = frozenset({"chemical_signaling", "equilibrium_propagation", "coupled_learning"})

    def __init__(
        self,
        network: ConductanceNetwork,
        n_classes: int,
        *,
        feature_scale: float = 5.0,
        init: ConductanceInit | None = None,
        target_rule: Literal["class_mean", "one_hot"] = "class_mean",
        learning_defaults: dict[str, float] | None = None,
        plotter: NetworkPlotter | None = None,
        stateful: Sequence[Any] = (),
    ):
        if n_classes < 1:
            raise ConfigError(f"flow processor: n_classes must be >= 1, got {n_classes}")
        if not (np.isfinite(feature_scale) and feature_scale > 0):
            raise ConfigError(f"flow processor: feature_scale must be a positive number of A, got {feature_scale}")
        desired_from_class_means(np.zeros((1, 1)), target_rule)  # validates the rule name
        self.network = network
        self.topology = network.topology
        self.n_classes = int(n_classes)
        self.feature_scale = float(feature_scale)
        self.init = init or ConductanceInit()
        self.target_rule = target_rule
        #: defaults of the flow learning rules from the bench (eta, nudge); gradient options override them
        self.learning_defaults: dict[str, float] = dict(learning_defaults or {})
        self.plotter = plotter
        self._stateful = list(stateful)
        self._desired: FloatArray | None = None
        self._w_initial: FloatArray | None = None
        self.network_png: Path | None = None
        self.feedback_rescaled = 0  # feedback frames driven scaled down to respect the current limit
        self.model = FlowModel(self.topology)  # calibrated model for physics_aware (gain 1 = nominal map)

    # -- OpticalProcessor contract -----------------------------------------------------------
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """(input pairs, classes): no hidden layers -- the whole network is one physical system."""
        return (len(self.topology.input_pairs), self.n_classes)

    def parameter_shapes(self) -> list[tuple[int, ...]]:
        """One array: the edge conductances (n_edges,)."""
        return [(self.topology.n_edges,)]

    def parameter_bounds(self) -> list[tuple[float, float]]:
        """Loosest (w_min, w_max) over the edges, S (the role applies the per-edge box on every write)."""
        lo, hi = self.network.bounds
        return [(float(lo.min()), float(hi.max()))]

    def init_parameters(self, rng: np.random.Generator, scale: float) -> list[NDArray[np.float32]]:
        """Conductances from the bench's init distribution (truncated normal); `scale` is not used."""
        lo, hi = self.network.bounds
        return [np.clip(self.init.draw(self.topology.n_edges, rng), lo, hi).astype(np.float32)]

    def program(self, params: Sequence[NDArray]) -> None:
        """Write the conductances (one batched write; per-edge limits per the role's policy)."""
        self._notify("program")
        if len(params) != 1:
            raise ConfigError(f"flow processor: expected one parameter array (conductances), got {len(params)}")
        self.network.write_conductances(params[0])
        if self._w_initial is None:
            self._w_initial = self.network.conductances

    def input_currents(self, x: NDArray) -> FloatArray:
        """Input-pair currents (batch, n_inputs), A: feature_scale * x."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[1] != len(self.topology.input_pairs):
            raise ConfigError(f"flow processor: x has {x.shape[1]} features, the network {len(self.topology.input_pairs)} "
                              f"input pairs")
        return self.feature_scale * x

    def measure(self, x: NDArray) -> FloatArray:
        """Free-state node potentials (batch, n_nodes), V, for inputs x (one probe acquisition)."""
        self.network.inject_currents(self.input_currents(x))
        v = self.network.measure_potentials()
        self._count()
        return v

    def forward(self, x: NDArray) -> ForwardTaps:
        """Drive x, measure; output = scores -C_k (batch, n_classes); extra: potentials, drops, desired."""
        if self._desired is None:
            raise LightloopError("flow processor: no desired outputs yet; call prepare_epoch(x_train, y_train) "
                                 "(the Trainer does at every epoch) or set_desired()")
        v = self.measure(x)
        drops = self.topology.output_drops(v)
        scores = self.scores(drops)
        return ForwardTaps(inputs=np.asarray(x), pre=[drops], post=[scores],
                           extra={"potentials": v, "drops": drops, "desired": self._desired.copy(),
                                  "conductances": self.network.conductances})

    def scores(self, drops: NDArray) -> FloatArray:
        """s_k = -1/2 ||drops - T_k||^2 (batch, n_classes), V^2: argmax = nearest desired vector."""
        assert self._desired is not None
        r = drops[:, None, :] - self._desired[None, :, :]
        return -0.5 * np.einsum("bkj,bkj->bk", r, r)

    # -- desired outputs ---------------------------------------------------------------------
    @property
    def desired(self) -> FloatArray | None:
        """Desired output drops per class (n_classes, n_output_pairs), V; None before the first refresh."""
        return None if self._desired is None else self._desired.copy()

    def set_desired(self, desired: ArrayLike) -> None:
        """Set the desired output drops per class explicitly (n_classes, n_output_pairs), V."""
        t = np.asarray(desired, dtype=np.float64)
        shape = (self.n_classes, len(self.topology.output_pairs))
        if t.shape != shape or not np.all(np.isfinite(t)):
            raise ConfigError(f"flow processor: desired outputs must be finite with shape {shape}, got {t.shape}")
        self._desired = t.copy()

    def prepare_epoch(self, x_train: NDArray, y_train: NDArray) -> None:
        """Trainer hook (start of every epoch, parameters programmed): T from the class-mean training inputs."""
        y = np.asarray(y_train)
        means = []
        for k in range(self.n_classes):
            sel = y == k
            if not np.any(sel):
                raise ConfigError(f"flow processor: class {k} has no training samples; cannot form its desired output")
            means.append(np.asarray(x_train, dtype=np.float64)[sel].mean(axis=0))
        drops = self.topology.output_drops(self.measure(np.stack(means)))
        self._desired = desired_from_class_means(drops, self.target_rule)

    # -- what the learning rules need ---------------------------------------------------------
    def edge_drops(self, potentials: NDArray) -> FloatArray:
        """Drops across every edge (batch, n_edges), V -- what each edge senses locally."""
        return self.topology.edge_drops(potentials)

    def feedback(self, error_currents: NDArray) -> FloatArray:
        """Feedback currents E at the output pairs (batch, n_output_pairs) A -> u (batch, n_nodes) V, L(w) u = E.

        A frame whose peak |E| exceeds the feedback sources' limit is driven scaled down to 99 % of the
        limit and its u scaled back up (the network is linear, so u is exact; only the probe SNR drops).
        """
        E = np.atleast_2d(np.asarray(error_currents, dtype=np.float64))
        peak = np.max(np.abs(E), axis=1, keepdims=True) if E.size else np.zeros((E.shape[0], 1))
        lim = self.network.limits.max_feedback_current_a
        scale = np.where(peak > lim, 0.99 * lim / np.where(peak > 0, peak, 1.0), 1.0)
        self.network.inject_feedback(E * scale)
        u = self.network.measure_feedback() / scale
        self._count()
        self.feedback_rescaled += int(np.count_nonzero(scale < 1.0))
        return u

    def nudged(self, x: NDArray, desired: NDArray, beta: float) -> FloatArray:
        """EP nudged state: outputs tied through conductance beta (S) to sources t (batch, n_out) V; potentials."""
        self.network.inject_currents(self.input_currents(x))
        self.network.clamp_outputs(desired, conductance=beta)
        try:
            v = self.network.measure_potentials()
        finally:
            self.network.release_outputs()
        self._count()
        return v

    def clamped(self, x: NDArray, drops: NDArray) -> FloatArray:
        """CL clamped state: output drops held at `drops` (batch, n_out) V by ideal sources; potentials."""
        return self.nudged(x, drops, np.inf)

    # -- the calibrated model (physics_aware) --------------------------------------------------
    def _written(self, taps: ForwardTaps) -> FloatArray:
        w = taps.extra.get("conductances")
        w = self.network.conductances if w is None else w
        if w is None:
            raise LightloopError("flow processor: no conductances written yet; program() before the model is used")
        return np.asarray(w, np.float64)

    def model_gradients(self, taps: ForwardTaps, delta_out: NDArray) -> list[NDArray]:
        r"""eta dL/dw (n_edges,), per S, as chemical signalling: measured v, model u = L(w_model)^-1 (-eta P^T g) in V.

        delta_out = B dL/ds (batch, n_classes) on the scores s_k = -1/2 ||Delta v - T_k||^2, so the per-sample
        output error is g = B dL/dDelta v = -sum_k delta_k (Delta v - T_k) (= Delta v - t for the flow cost,
        whose delta is -t); grad_e = gain_e <u_e v_e> = eta dL/dw_e (eta: the bench's learning.eta).
        """
        d = np.atleast_2d(np.asarray(delta_out, np.float64))
        drops, v, T = taps.extra["drops"], taps.extra["potentials"], taps.extra["desired"]
        g = -np.einsum("bk,bkj->bj", d, drops[:, None, :] - T[None, :, :])
        eta = float(self.learning_defaults.get("eta", 1.0))
        u = self.model.feedback(self._written(taps), -eta * g)
        grad = self.model.gain * np.mean(self.edge_drops(u) * self.edge_drops(v), axis=0)
        return [grad.astype(np.float32)]

    def model_prediction(self, taps: ForwardTaps) -> list[NDArray]:
        """[output drops (batch, n_output_pairs), V] the model predicts from the measured inputs taps.inputs."""
        v = self.model.potentials(self._written(taps), self.input_currents(taps.inputs))
        return [self.topology.output_drops(v)]

    def refine_model(self, history: Sequence[ForwardTaps], *, mode: Literal["edge", "global"] = "edge",
                     ridge: float = 1e-5) -> dict[str, float]:
        """Fit the model's conductance gain to the measured potentials of `history` (kept if it predicts better).

        Returns prediction_error_before / _after (relative rms of the output drops over the history),
        potential_rms_before_v / _after_v, gain_min / gain_max / gain_rms_change, n_samples, accepted (1/0).
        """
        if not history:
            raise ConfigError("flow processor: refine_model needs at least one forward batch in the history")
        ws = [self._written(t) for t in history]
        amps = [self.input_currents(t.inputs) for t in history]
        meas_v = [np.asarray(t.extra["potentials"], np.float64) for t in history]
        meas_d = np.concatenate([self.topology.output_drops(v) for v in meas_v])

        def errors() -> tuple[float, float]:
            pv = [self.model.potentials(w, a) for w, a in zip(ws, amps)]
            pd = np.concatenate([self.topology.output_drops(v) for v in pv])
            rel = float(np.sqrt(np.sum((pd - meas_d) ** 2) / max(np.sum(meas_d ** 2), 1e-300)))
            rms_v = float(np.sqrt(np.mean(np.concatenate([(p - m).ravel() for p, m in zip(pv, meas_v)]) ** 2)))
            return rel, rms_v

        old = self.model.gain.copy()
        before, before_v = errors()
        self.model.set_gain(self.model.fit_gain(ws, amps, meas_v, mode=mode, ridge=ridge))
        after, after_v = errors()
        accepted = after <= before
        if not accepted:
            self.model.set_gain(old)
            after, after_v = before, before_v
        gain = self.model.gain
        return {"prediction_error_before": before, "prediction_error_after": after,
                "potential_rms_before_v": before_v, "potential_rms_after_v": after_v,
                "gain_min": float(gain.min()), "gain_max": float(gain.max()),
                "gain_rms_change": float(np.sqrt(np.mean((gain - old) ** 2))),
                "n_samples": float(meas_d.shape[0]), "accepted": float(accepted)}

    # -- bookkeeping ---------------------------------------------------------------------------
    def summary_fields(self) -> dict[str, Any]:
        """Bench figures for the run summary (then the station's, on instruments)."""
        w = self.network.conductances
        out: dict[str, Any] = {
            "n_nodes": self.topology.n_nodes, "n_edges": self.topology.n_edges,
            "feature_scale_a": self.feature_scale, "target_rule": self.target_rule,
            "conductance_writes": self.network.writes, "clipped_conductances": self.network.clipped,
            "feedback_frames_rescaled": self.feedback_rescaled,
        }
        if w is not None:
            lo, hi = self.network.bounds
            out.update(conductance_min_s=float(w.min()), conductance_max_s=float(w.max()),
                       edges_at_limit=int(np.count_nonzero((w <= lo * (1 + 1e-6)) | (w >= hi * (1 - 1e-6)))))
            if self._w_initial is not None:
                out["mean_abs_dw_s"] = float(np.mean(np.abs(w - self._w_initial)))
        if self._desired is not None:
            out["desired_drops_v"] = self._desired.round(6).tolist()
        if np.any(self.model.gain != 1.0):
            out.update(model_gain_min=float(self.model.gain.min()), model_gain_max=float(self.model.gain.max()))
        if self.network_png is not None:
            out["network_png"] = str(self.network_png)
        return {**out, **super().summary_fields()}

    def write_run_artifacts(self, out_dir: Path | str) -> list[Path]:
        """Trainer hook (end of a run): PNG of the network with each edge's conductance change since the start."""
        w = self.network.conductances
        if self.plotter is None or w is None or self._w_initial is None or self.topology.positions is None:
            return []
        path = Path(out_dir) / "flow_network.png"
        t = self.topology
        self.network_png = Path(self.plotter(t.positions, t.edges, w - self._w_initial, path, t.input_pairs,
                                             t.output_pairs, title=f"flow network ({t.n_nodes} nodes, {t.n_edges} "
                                             f"edges): conductance change dw per edge (S)"))
        return [self.network_png]

    def snapshot(self) -> dict[str, Any]:
        """Twin state plus the initial conductances and desired outputs, for exact resume."""
        st = super().snapshot()
        if self._w_initial is not None:
            st["w_initial"] = self._w_initial.copy()
        if self._desired is not None:
            st["desired"] = self._desired.copy()
        st["model_gain"] = self.model.gain.copy()
        return st

    def restore(self, state: dict[str, Any]) -> None:
        """Restore `snapshot` state."""
        super().restore(state)
        if "w_initial" in state:
            self._w_initial = np.asarray(state["w_initial"], np.float64)
        if "desired" in state:
            self._desired = np.asarray(state["desired"], np.float64)
        if "model_gain" in state:
            self.model.set_gain(state["model_gain"])

    def device_safe_state(self) -> None:
        """Every source to zero and the clamp released."""
        self.network.safe_state()
