"""The OpticalProcessor contract that training talks to: program / forward / backward."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lightloop.shutdown import shielded

__all__ = ["ForwardTaps", "OpticalProcessor"]


@dataclass
class ForwardTaps:
    """Fields tapped during one forward pass (batch-first, saturation-field units).

    inputs is a(0); pre[l] is z(l+1) before the nonlinearity; post[l] is a(l+1) after it.
    The output layer is linear, so post[-1] is pre[-1].
    """

    inputs: NDArray
    pre: list[NDArray]
    post: list[NDArray]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> NDArray:
        """Network output z(L) (batch, n_out)."""
        return self.post[-1]

    def activations(self, layer: int) -> NDArray:
        """a(layer) for layer = 0 .. L-1 (the input of weight layer `layer`)."""
        return self.inputs if layer == 0 else self.post[layer - 1]


class OpticalProcessor(ABC):
    """A trainable physical network: write parameters, send light forward, send errors backward.

    Parameters are the device-independent trainable quantities of the processor (weights for a
    free-space bench, phases for a mesh chip, conductances for a flow network); the processor
    maps them to device settings through its calibration and clips them to what the hardware
    can realise.

    Attributes the bench builder sets (declared here so every processor has them):
    ``bench_name`` (the config's bench), ``emulator`` (the in-process twin, or None on instruments;
    only truth reports read it), ``station`` (the connected instruments, or None; see
    ``lightloop.station``), ``calibration_log`` (ids of the calibration records loaded),
    ``step_hooks`` (called by the Trainer after every update with the step info),
    ``activity_hooks`` (called with ``"program"`` / ``"backward"`` at the start of those calls;
    the station's per-step meter listens here), ``device`` (weight device kind, free space),
    ``feedback_channel`` (an attached photon-counting feedback channel, or None).
    """

    #: names of the gradient methods this processor can serve (beyond generic ones)
    capabilities: frozenset[str] = frozenset()

    bench_name: str = ""
    emulator: Any = None
    station: Any = None
    device: str | None = None
    feedback_channel: Any = None
    _stateful: Sequence[Any] = ()

    @property
    def calibration_log(self) -> list[dict[str, Any]]:
        """Calibration records loaded into this processor (id, routine, version), in load order."""
        return self.__dict__.setdefault("_calibration_log", [])

    @calibration_log.setter
    def calibration_log(self, records: list[dict[str, Any]]) -> None:
        self.__dict__["_calibration_log"] = list(records)

    @property
    def step_hooks(self) -> list[Callable[[dict[str, Any]], None]]:
        """Trainer step hooks this processor brings (called after every update)."""
        return self.__dict__.setdefault("_step_hooks", [])

    @step_hooks.setter
    def step_hooks(self, hooks: list[Callable[[dict[str, Any]], None]]) -> None:
        self.__dict__["_step_hooks"] = list(hooks)

    @property
    def activity_hooks(self) -> list[Callable[[str], None]]:
        """Listeners told "program" / "backward" when those calls start."""
        return self.__dict__.setdefault("_activity_hooks", [])

    def _notify(self, event: str) -> None:
        for hook in self.__dict__.get("_activity_hooks", ()):
            hook(event)

    @property
    @abstractmethod
    def layer_sizes(self) -> tuple[int, ...]:
        """Neurons per layer, input first."""

    @abstractmethod
    def parameter_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the trainable parameter arrays."""

    @abstractmethod
    def parameter_bounds(self) -> list[tuple[float, float]]:
        """Realisable (low, high) range of each parameter array."""

    @abstractmethod
    def init_parameters(self, rng: np.random.Generator, scale: float) -> list[NDArray[np.float32]]:
        """Draw initial parameters (for weights: N(0, scale), clipped to the bounds)."""

    @abstractmethod
    def program(self, params: Sequence[NDArray]) -> None:
        """Write parameters to the devices (one batched write per device)."""

    @abstractmethod
    def forward(self, x: NDArray) -> ForwardTaps:
        """Encode a batch x (batch, n_in) in [0, 1], propagate, return the tapped fields."""

    def backward(self, delta_out: NDArray) -> list[NDArray]:
        """Inject the output error as backward light; return tapped errors delta(l), l = 1..L."""
        raise NotImplementedError(f"{type(self).__name__} has no optical backward path")

    def activation_slope(self, layer: int, pre: NDArray) -> NDArray:
        """Calibrated model slope g'(z) of the nonlinearity after weight layer `layer` (0-based)."""
        raise NotImplementedError(f"{type(self).__name__} has no activation slope model")

    def measure_phase_gradients(self, delta_out: NDArray) -> list[NDArray]:
        """In-situ gradients dL/dphase of every mesh layer (rad^-1); chips with unitary meshes only."""
        raise NotImplementedError(f"{type(self).__name__} has no in-situ phase gradients")

    def model_gradients(self, taps: ForwardTaps, delta_out: NDArray) -> list[NDArray]:
        """dL/dparams back-propagated through the calibrated model at the measured forward state `taps`
        (delta_out = B dL/doutput); for processors whose parameters are not plain weight matrices."""
        raise NotImplementedError(f"{type(self).__name__} has no differentiable model of its own")

    def check_model(self) -> None:
        """Raise ConfigError if the processor's own calibrated model cannot serve (called before training starts)."""

    def model_prediction(self, taps: ForwardTaps) -> list[NDArray]:
        """The calibrated model's prediction of every measured taps.pre[l] from the measured inputs of layer l."""
        raise NotImplementedError(f"{type(self).__name__} has no differentiable model of its own")

    def refine_model(self, history: Sequence[ForwardTaps]) -> dict[str, float]:
        """Fit the model's drifting parameters to forward measurements (twin refinement); returns fit figures."""
        raise NotImplementedError(f"{type(self).__name__} has no refinable model")

    @property
    def measurements(self) -> int:
        """Detector acquisitions made so far (one per detector array per batch)."""
        return getattr(self, "_measurements", 0)

    def _count(self, n: int = 1) -> None:
        self._measurements = self.measurements + n

    def summary_fields(self) -> dict[str, Any]:
        """Bench figures for the run summary (the calibration records loaded; the station's per-step figures)."""
        out: dict[str, Any] = {}
        if self.calibration_log:
            out["calibration_loaded"] = [f"{r['routine']} v{r.get('record_version')} ({r['created_utc']})"
                                         for r in self.calibration_log]
        return {**out, **(self.station.summary() if self.station is not None else {})}

    def snapshot(self) -> dict[str, Any]:
        """Restorable state that is not parameters: each stateful twin's (noise generators, drift); {} on hardware."""
        return {str(i): s.snapshot() for i, s in enumerate(self._stateful)}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what `snapshot` returned."""
        for i, s in enumerate(self._stateful):
            if str(i) in state:
                s.restore(state[str(i)])

    def safe_state(self) -> None:
        """Drive every device to its safe state (outputs to zero, sources off)."""
        with shielded():   # a second signal cannot abort the sequence
            if self.station is not None:
                self.station.safe_state()
                return
            self.device_safe_state()

    def device_safe_state(self) -> None:
        """Safe state through the HAL roles alone (the in-process twin's; a station runs its own sequence)."""

    def close(self) -> None:
        """Leave the bench in its safe state and release the devices (and the station, if any)."""
        if self.station is not None:
            self.station.close()
            return
        self.safe_state()

    def __enter__(self) -> "OpticalProcessor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
