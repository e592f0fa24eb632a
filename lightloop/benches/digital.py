"""Digital reference bench: the biophoton paper's sigmoid MLP as a processor (kind: digital).

Also home of the photon-counting feedback channel builder used by ANY bench: a lab config may carry
a top-level `feedback:` section (`FeedbackSettings`); `lightloop.cli.run_training` then calls
`attach_photon_feedback(processor, settings, seed)`, which builds the twin detector array
(`lightloop.simulators.photon_feedback`) behind the HAL role `PhotonCountingArray` and sets it as
`processor.feedback_channel` (one channel per neuron of every non-input layer). The gradient method
`stochastic_photonic` finds it there (training never imports simulators).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lightloop.errors import ConfigError
from lightloop.hal.photon_counting import PhotonCountingArray, PhotonCountingCalibration, PhotonCountingLimits
from lightloop.hal.processor import OpticalProcessor
from lightloop.schema import BuildOverrides, FeedbackSettings, LabConfig, LayerSize, StrictModel

__all__ = ["Schema", "build", "FeedbackSettings", "attach_photon_feedback"]


class Schema(StrictModel):
    """processor section of a digital bench config (Zarkeshian et al. 2022: 784-500-10, sigmoid, biases)."""

    kind: Literal["digital"]
    hidden: list[LayerSize] = Field(default_factory=lambda: [500], min_length=1)
    output_activation: Literal["sigmoid", "linear"] = "sigmoid"
    max_weight: float = Field(100.0, gt=0, description="clip |W| (guards against divergence only)")


def build(cfg: LabConfig, n_inputs: int, n_outputs: int, ov: BuildOverrides) -> OpticalProcessor:
    """DigitalProcessor for (n_inputs, *hidden, n_outputs)."""
    from lightloop.simulators.digital_network import DigitalProcessor

    p: Schema = cfg.processor
    if ov.extra:
        raise ConfigError(f"{cfg.source}: options {sorted(ov.extra)} do not apply to a digital bench; expected none")
    if ov.optical_depth is not None:
        raise ConfigError("--optical-depth: a digital bench has no saturable absorber; expected no --optical-depth")
    hidden = list(ov.hidden) if ov.hidden is not None else list(p.hidden)
    if any(h < 1 for h in hidden):
        raise ConfigError(f"--hidden: expected positive integer layer sizes, got {hidden}")
    return DigitalProcessor((n_inputs, *hidden, n_outputs), p.output_activation, p.max_weight)


# --- photon-counting feedback channel (any bench) ----------------------------------------------
def attach_photon_feedback(proc: OpticalProcessor, settings: FeedbackSettings | dict[str, Any] | None = None,
                           seed: int = 0) -> PhotonCountingArray:
    """Build the twin photon-counting array for `proc` and attach it as `proc.feedback_channel`.

    The twin's noise generator is seeded with noise_seed + seed (seed: the training seed, so repeats
    of a sweep draw independent photons). Its state joins the processor's snapshot/restore.
    """
    from lightloop.simulators.photon_feedback import PhotonChannelTruth, PhotonCountingTwin, PhotonFeedbackEmulator

    s = settings if isinstance(settings, FeedbackSettings) else FeedbackSettings.model_validate(settings or {})
    n = int(sum(proc.layer_sizes[1:]))
    truth = PhotonChannelTruth.draw(n, s.truth_seed, detection_efficiency=s.detection_efficiency,
                                    polarisation_error=s.polarisation_error,
                                    dark_count_probability=s.dark_count_probability, spread=s.spread)
    emu = PhotonFeedbackEmulator(n, truth, seed=s.noise_seed + int(seed))
    cal = (PhotonCountingCalibration(s.detection_efficiency, s.dark_count_probability, s.polarisation_error)
           if s.calibrated else PhotonCountingCalibration())
    channel = PhotonCountingArray(PhotonCountingTwin(emu), cal,
                                  PhotonCountingLimits(s.max_emission_probability, s.max_background_probability))
    _install(proc, channel)
    return channel


def _install(proc: OpticalProcessor, channel: PhotonCountingArray) -> None:
    """Set proc.feedback_channel; processors without native support get snapshot/restore/summary/safe_state hooks."""
    from lightloop.simulators.digital_network import DigitalProcessor

    proc.feedback_channel = channel
    if isinstance(proc, DigitalProcessor):
        return  # handles its feedback channel itself
    snap, rest, safe = proc.snapshot, proc.restore, proc.safe_state
    summary = getattr(proc, "summary_fields", lambda: {})

    def snapshot() -> dict[str, Any]:
        return {**snap(), "feedback_channel": channel.snapshot()}

    def restore(state: dict[str, Any]) -> None:
        rest(state)
        if "feedback_channel" in state:
            channel.restore(state["feedback_channel"])

    def safe_state() -> None:
        channel.safe_state()
        safe()

    def summary_fields() -> dict[str, Any]:
        return {**summary(), **channel.summary_fields()}

    proc.snapshot, proc.restore, proc.safe_state = snapshot, restore, safe_state  # type: ignore[method-assign]
    proc.summary_fields = summary_fields  # type: ignore[method-assign]
