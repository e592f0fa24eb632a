"""Energy and latency ledger of a training run: optical joules, heater joules, frames, acquisitions, ADC samples (SI units).

The ledger listens on a processor through instance-level wrappers of its HAL roles (sources and detector arrays:
what the HAL commands and measures, never a twin's hidden truth), its ``activity_hooks`` ("program" opens a
training step) and its ``step_hooks`` (the Trainer closes the step after the update). Per step it records:

* optical energy in joules: every *exposure* (a set of detector-array reads of one light state; reading the same
  array again, or any change of a source, starts a new one) charges each lit source
  ``power_per_unit_w * frame_s * sum_b sum_i |E_bi|^2`` (E: the commanded fields in the HAL's field units, summed
  over the batch: one sample per frame), and each read charges its detector array the same with the *measured*
  fields (|E|^2), powers (P) or batch-integrated intensities; grouped as ``input`` (forward source),
  ``backward_probe`` (probe / adjoint sources / injectors), ``forward_tap`` and ``backward_tap`` (by role), per layer;
* heater electrical energy: sum_k V_k^2 / R_k (written volts, calibrated resistance) times the step's model time;
* frames shown (input / probe modulator samples, weight frames), detector acquisitions and ADC samples
  (``digitizer_record_length`` x channels x batch per read);
* latency from the declared timing model (``LedgerSettings``): optics = exposed samples x frame period;
  electronics-in-the-loop = modulator settling per display + weight-frame or heater settling per program + digitiser
  overhead and transfer per read; host = ``host_compute_s``; reconciled against the measured wall time of the step;
* the equivalent electronic backprop: 6 B sum_l n_l n_(l+1) FLOPs (forward 2, input- and weight-gradients 4 per
  multiply-accumulate of a dense network of the processor's layer sizes) times ``pj_per_flop``.

Evaluation and calibration passes outside a step go to ``outside_steps``. Supported: free-space and integrated-chip
processors; flow-network and digital processors have no optical sources / detector roles here yet.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import Field

from lightloop.atomic_io import atomic_write_text
from lightloop.errors import ConfigError
from lightloop.schema import StrictModel

__all__ = ["LedgerSettings", "Ledger", "attach_ledger", "digital_flops", "PLANCK_J_S", "LIGHT_M_S"]

PLANCK_J_S = 6.62607015e-34
LIGHT_M_S = 299_792_458.0
#: default wavelengths (m): Rb D2 line of the free-space vapor-cell bench; telecom C band of the chip
_WAVELENGTH_M = {"free_space": 780.241e-9, "integrated_chip": 1.55e-6}


class LedgerSettings(StrictModel):
    """Top-level `ledger:` section: the declared instrument timing model and energy figures (SI units)."""

    power_per_unit_w: float = Field(1e-3, gt=0, le=10, description="optical power (W) per unit |field|^2 of the "
                                    "HAL's field units (free space: saturation power; chip: reference power)")
    wavelength_m: float | None = Field(None, gt=1e-7, lt=1e-4, description="for photon counts; None: 780.241 nm "
                                       "(Rb D2) on free space, 1550 nm on the chip")
    # input / probe modulator: one sample per frame; default a DMD's binary-pattern rate (TI DLP7000: 22.7 kHz)
    frame_rate_hz: float = Field(22_700.0, gt=0, description="input/probe modulator frames (samples) per second")
    modulator_settle_s: float = Field(0.0, ge=0, le=10, description="settling per display of a new batch (s)")
    # weight device: a liquid-crystal phase SLM (60 Hz frame, ~10 ms LC response; e.g. Holoeye PLUTO-2 data sheet)
    weight_frame_rate_hz: float = Field(60.0, gt=0, description="weight SLM/DMD frames per second")
    weight_settle_s: float = Field(0.01, ge=0, le=10, description="weight device settling per program (s)")
    # thermo-optic heaters: rise times of a few us (Harris et al., Opt. Express 22, 10487 (2014): 2.4 us);
    # 10 us is a conservative constant, settled after 5 of them (0.7 % left)
    heater_time_constant_s: float = Field(1e-5, gt=0, le=10, description="heater thermal time constant (s)")
    heater_settle_time_constants: float = Field(5.0, ge=0, le=100, description="constants waited per program")
    # the chip's calibrated monitor intensity is the waveguide's; its photodiode gets the designed tap ratio of it
    monitor_tap_fraction: float = Field(1.0, gt=0, le=1, description="share of the waveguide power a tap monitor "
                                        "absorbs (e.g. 0.01 for 1 % taps); 1: the full reading")
    digitizer_record_length: int = Field(1000, ge=1, le=10**9, description="ADC samples per channel per frame")
    digitizer_transfer_s_per_sample: float = Field(1e-9, ge=0, le=1, description="transfer time per ADC sample (s)")
    digitizer_overhead_s: float = Field(1e-4, ge=0, le=10, description="arm + trigger + fetch overhead per read (s)")
    host_compute_s: float = Field(1e-3, ge=0, le=1e3, description="host compute per step (s): error, update")
    host_power_w: float = Field(0.0, ge=0, le=1e4, description="host power charged over host_compute_s; 0: uncounted")
    # Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm): FP32 multiply 3.7 pJ + add 0.9 pJ per
    # multiply-accumulate = 2 FLOPs -> 2.3 pJ/FLOP, arithmetic only (memory access, often 10-100x more, excluded)
    pj_per_flop: float = Field(2.3, ge=0, le=1e6, description="energy of one FLOP of electronic backprop (pJ)")


def digital_flops(layer_sizes: tuple[int, ...] | list[int], batch: int) -> int:
    """FLOPs of one electronic backprop step of a dense network: 6 B sum_l n_l n_(l+1)."""
    return int(6 * batch * sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:])))


class _Tally:
    """What accumulates between two step boundaries."""

    def __init__(self) -> None:
        self.energy_j: dict[str, float] = defaultdict(float)
        self.acquisitions: dict[str, int] = defaultdict(int)
        self.adc_samples = 0
        self.frames: dict[str, int] = defaultdict(int)
        self.displays = 0
        self.exposures = 0
        self.exposed_samples = 0
        self.transfer_s = 0.0
        self.programs = 0

    def add(self, other: "_Tally") -> None:
        for mine, theirs in ((self.energy_j, other.energy_j), (self.acquisitions, other.acquisitions),
                             (self.frames, other.frames)):
            for k, v in theirs.items():
                mine[k] += v
        for name in ("adc_samples", "displays", "exposures", "exposed_samples", "transfer_s", "programs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Ledger:
    """Per-step energy and latency records of one processor (see the module docstring for the model)."""

    def __init__(self, processor: Any, settings: LedgerSettings | None = None, source: str = "<config>"):
        self.proc, self.s = processor, settings or LedgerSettings()
        self.kind = _kind(processor, source)
        self.wavelength_m = self.s.wavelength_m or _WAVELENGTH_M[self.kind]
        self.frame_s = 1.0 / self.s.frame_rate_hz
        self.groups: dict[str, tuple[str, int | None]] = {}   # key -> (group, layer)
        self.steps: list[dict[str, Any]] = []
        self.outside = _Tally()
        self._cur = _Tally()
        self._lit: dict[str, float] = {}                      # source key -> sum |E|^2 over the batch
        self._pending: dict[str, float] = {}                  # last commanded fields of a gated source
        self._batch = 0
        self._read: set[str] = set()
        self._dirty = True
        self._t0: float | None = None
        self._undo: list[tuple[Any, str]] = []
        self.last_step: dict[str, Any] = {}
        (self._attach_free_space if self.kind == "free_space" else self._attach_chip)()
        processor.activity_hooks.append(self._activity)
        processor.step_hooks.append(self.close_step)

    # --- wiring ------------------------------------------------------------------------------------------
    def _wrap(self, obj: Any, name: str, after: Callable[..., None]) -> None:
        orig = getattr(obj, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = orig(*args, **kwargs)
            after(out, *args, **kwargs)
            return out
        setattr(obj, name, wrapper)
        self._undo.append((obj, name))

    def _detector(self, role: Any, key: str, group: str, layer: int | None, unit: str, method: str = "acquire") -> None:
        self.groups[key] = (group, layer)
        self._wrap(role, method, lambda out, *a, **k: self._on_read(key, out, unit))

    def _source(self, key: str, group: str, layer: int | None) -> None:
        self.groups[key] = (group, layer)

    def _attach_free_space(self) -> None:
        p = self.proc
        self._source("input", "input", None)
        self._source("probe", "backward_probe", len(p.weights))
        fs = lambda: float(p.encoder.field_scale)  # noqa: E731
        self._wrap(p.encoder, "display", lambda out, x: self._show("input", np.asarray(x, np.float64) * fs(),
                                                                    "input", gate=False))
        self._wrap(p.encoder, "display_fields", lambda out, f: self._show("input", np.asarray(f, np.float64), "input",
                                                                          gate=False))
        self._wrap(p.probe, "display", lambda scale, d: self._show("probe", np.asarray(d, np.float64) * scale,
                                                                   "probe", gate=False))
        self._wrap(p.probe, "display_fields", lambda out, f: self._show("probe", np.asarray(f, np.float64), "probe",
                                                                        gate=False))
        for i, d in enumerate(p.pre_taps):
            self._detector(d, f"pre[{i}]", "forward_tap", i, "field")
        for i, d in enumerate(p.post_taps):
            self._detector(d, f"post[{i}]", "forward_tap", i, "field")
        for i, d in enumerate(p.error_taps):
            self._detector(d, f"error[{i}]", "backward_tap", i, "field")

    def _attach_chip(self) -> None:
        p = self.proc
        self._source("input", "input", None)
        self._wrap(p.source, "display", lambda ports, x: self._show("input", ports, "input", gate=True))
        self._wrap(p.source, "on", lambda out: self._gate("input", True))
        self._wrap(p.source, "dark", lambda out: self._gate("input", False))
        for l, lay in enumerate(p.layers):
            for role, name in ((lay.injector, f"injector[{l}]"), (lay.adjoint_source, f"adjoint[{l}]")):
                self._source(name, "backward_probe", l)
                self._wrap(role, "inject", lambda out, f, name=name: self._show(name, f, None, gate=False))
                self._wrap(role, "off", lambda out, name=name: self._unlight(name))
            self._detector(lay.out_receiver, f"receiver_out[{l}]", "forward_tap", l, "field")
            self._detector(lay.in_receiver, f"receiver_in[{l}]", "backward_tap", l, "field")
            self._detector(lay.monitor, f"monitor[{l}]", "forward_tap", l, "integrated")
        for i, act in enumerate(p.activations):
            self._detector(act, f"activation[{i}]", "forward_tap", i, "power")
            self._detector(act, f"slope[{i}]", "forward_tap", i, "electrical", method="acquire_slope")
        self._detector(p.output, "output", "forward_tap", len(p.layers) - 1, "power")

    def detach(self) -> None:
        """Remove every wrapper and hook (the roles behave exactly as before)."""
        for obj, name in reversed(self._undo):
            obj.__dict__.pop(name, None)
        self._undo.clear()
        for hooks, fn in ((self.proc.activity_hooks, self._activity), (self.proc.step_hooks, self.close_step)):
            if fn in hooks:
                hooks.remove(fn)

    # --- events ------------------------------------------------------------------------------------------
    def _show(self, key: str, fields: Any, frames_key: str | None, gate: bool) -> None:
        """A source displays (batch, n) fields: a new light state; modulator frames counted per sample."""
        f = np.asarray(fields)
        e2 = float(np.sum(np.abs(f) ** 2))
        if frames_key is not None:
            self._batch = int(f.shape[0])
            self._cur.frames[frames_key] += int(f.shape[0])
            self._cur.displays += 1
        self._pending[key] = e2
        if not gate or self.proc.source.enabled:
            self._lit[key] = e2
        self._dirty = True

    def _gate(self, key: str, on: bool) -> None:
        was = key in self._lit
        if on and not was and key in self._pending:
            self._lit[key] = self._pending[key]
            self._dirty = True
        elif not on and was:
            del self._lit[key]
            self._dirty = True

    def _unlight(self, key: str) -> None:
        if self._lit.pop(key, None) is not None:
            self._dirty = True

    def _on_read(self, key: str, out: Any, unit: str) -> None:
        """One read of a detector array: a new exposure if the light changed or this array was read in it."""
        t, s, pw = self._cur, self.s, self.s.power_per_unit_w
        batch = max(self._batch, 1)
        if self._dirty or key in self._read:
            t.exposures += 1
            t.exposed_samples += batch
            for src, e2 in self._lit.items():
                t.energy_j[src] += pw * self.frame_s * e2
            self._read, self._dirty = set(), False
        self._read.add(key)
        a = np.asarray(out)
        if unit == "field":
            t.energy_j[key] += pw * self.frame_s * float(np.sum(np.abs(a) ** 2))
        elif unit == "power":
            t.energy_j[key] += pw * self.frame_s * float(np.sum(a))
        elif unit == "integrated":
            t.energy_j[key] += pw * self.frame_s * float(np.sum(a)) * s.monitor_tap_fraction
        t.acquisitions[key] += 1
        channels = int(a.shape[-1]) if a.ndim else 1
        samples = s.digitizer_record_length * channels * batch
        t.adc_samples += samples
        t.transfer_s += s.digitizer_overhead_s + samples * s.digitizer_transfer_s_per_sample

    def _activity(self, event: str) -> None:
        if event == "program":
            self.outside.add(self._cur)       # evaluation / calibration since the last step
            self._cur = _Tally()
            self._cur.programs += 1
            if self.kind == "free_space":
                self._cur.frames["weights"] += len(self.proc.weights)
            self._t0 = time.perf_counter()

    # --- the step record -----------------------------------------------------------------------------------
    def heater_powers_w(self) -> list[float]:
        """Electrical power (W) of each layer's heater bank now: sum V^2 / R over its written volts."""
        if self.kind != "integrated_chip":
            return []
        return [float(np.sum(np.asarray(l.bank.written_volts, np.float64) ** 2 / l.bank.cal.resistance_ohm))
                for l in self.proc.layers]

    def latency_model(self, t: _Tally) -> dict[str, float]:
        """Model seconds of the tallied work: optics, electronics in the loop, host, and their total."""
        s = self.s
        if self.kind == "free_space":
            per_program = 1.0 / s.weight_frame_rate_hz + s.weight_settle_s
        else:
            per_program = s.heater_time_constant_s * s.heater_settle_time_constants
        optics = t.exposed_samples * self.frame_s
        electronics = t.displays * s.modulator_settle_s + t.programs * per_program + t.transfer_s
        return {"optics": optics, "electronics": electronics, "host": s.host_compute_s,
                "total": optics + electronics + s.host_compute_s}

    def close_step(self, info: dict[str, Any]) -> None:
        """Step hook: close the step opened by the last "program", record it."""
        t, s = self._cur, self.s
        measured = time.perf_counter() - self._t0 if self._t0 is not None else float("nan")
        lat = self.latency_model(t)
        heaters = [p * lat["total"] for p in self.heater_powers_w()]
        flops = digital_flops(self.proc.layer_sizes, self._batch)
        rec = {"global_step": int(info.get("global_step", len(self.steps) + 1)), "batch": self._batch,
               "optical_j": dict(t.energy_j), "heater_j": heaters, "host_j": s.host_power_w * s.host_compute_s,
               "digital_flops": flops, "digital_j": flops * s.pj_per_flop * 1e-12,
               "acquisitions": dict(t.acquisitions), "adc_samples": t.adc_samples, "frames": dict(t.frames),
               "exposures": t.exposures, "latency_s": lat, "measured_s": measured}
        self.last_step = rec
        self.steps.append(rec)
        self._cur = _Tally()
        self._t0 = None

    # --- summary -------------------------------------------------------------------------------------------
    def _by_group(self, energy: dict[str, float]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, j in energy.items():
            group, layer = self.groups.get(key, ("other", None))
            g = out.setdefault(group, {"total_j": 0.0, "per_layer_j": {}, "per_role_j": {}})
            g["total_j"] += j
            g["per_role_j"][key] = g["per_role_j"].get(key, 0.0) + j
            if layer is not None:
                g["per_layer_j"][str(layer)] = g["per_layer_j"].get(str(layer), 0.0) + j
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-able totals over the recorded steps, per sample, per step, per layer and per group."""
        n = len(self.steps)
        samples = sum(r["batch"] for r in self.steps)
        optical: dict[str, float] = defaultdict(float)
        for r in self.steps:
            for k, v in r["optical_j"].items():
                optical[k] += v
        sources = sum(v for k, v in optical.items() if self.groups.get(k, ("",))[0] in ("input", "backward_probe"))
        heater = float(sum(sum(r["heater_j"]) for r in self.steps))
        host = float(sum(r["host_j"] for r in self.steps))
        digital = float(sum(r["digital_j"] for r in self.steps))
        lat = {k: float(sum(r["latency_s"][k] for r in self.steps)) for k in ("optics", "electronics", "host", "total")}
        measured = float(sum(r["measured_s"] for r in self.steps))
        per = lambda x, d: x / d if d else float("nan")  # noqa: E731
        photon_j = PLANCK_J_S * LIGHT_M_S / self.wavelength_m
        return {
            "kind": self.kind, "steps": n, "samples": samples, "wavelength_m": self.wavelength_m,
            "energy_j": {"optical_sources": sources, "heaters": heater, "host": host, "digital_equivalent": digital},
            "energy_per_sample_j": {"optics": per(sources, samples), "electronics_in_loop": per(heater, samples),
                                    "host": per(host, samples), "digital_equivalent": per(digital, samples)},
            "optical": self._by_group(optical),
            "photons": {k: v / photon_j for k, v in optical.items()},
            "heater_j_per_layer": [float(sum(r["heater_j"][i] for r in self.steps))
                                   for i in range(len(self.steps[0]["heater_j"]) if self.steps else 0)],
            "acquisitions": int(sum(sum(r["acquisitions"].values()) for r in self.steps)),
            "adc_samples": int(sum(r["adc_samples"] for r in self.steps)),
            "frames": {k: int(sum(r["frames"].get(k, 0) for r in self.steps))
                       for k in sorted({k for r in self.steps for k in r["frames"]})},
            "digital_flops": int(sum(r["digital_flops"] for r in self.steps)),
            "time_per_step_s": {**{k: per(v, n) for k, v in lat.items()}, "measured": per(measured, n)},
            "model_over_measured": per(lat["total"], measured),
            "outside_steps": {"optical_j": float(sum(self.outside.energy_j.values())),
                              "acquisitions": int(sum(self.outside.acquisitions.values()))},
        }

    def write(self, folder: Path | str) -> Path:
        """Write ledger.json (settings, summary, per-step totals) into a run folder; returns its path."""
        self.outside.add(self._cur)
        self._cur = _Tally()
        steps = [{"global_step": r["global_step"], "batch": r["batch"], "optical_j": sum(r["optical_j"].values()),
                  "heater_j": sum(r["heater_j"]), "digital_j": r["digital_j"], "model_s": r["latency_s"]["total"],
                  "measured_s": r["measured_s"]} for r in self.steps]
        path = Path(folder) / "ledger.json"
        doc = {"settings": self.s.model_dump(), "summary": self.summary(), "steps": steps}
        atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=True) + "\n")
        return path


def _kind(proc: Any, source: str = "<config>") -> str:
    if all(hasattr(proc, a) for a in ("encoder", "probe", "pre_taps", "error_taps")):
        return "free_space"
    if all(hasattr(proc, a) for a in ("source", "layers", "activations", "output")):
        return "integrated_chip"
    raise ConfigError(f"{source}: ledger: processor {type(proc).__name__}: expected a free-space or integrated-chip "
                      "processor (the ledger has no model of this bench's sources and detectors yet)")


def attach_ledger(proc: Any, settings: LedgerSettings | None = None, source: str = "<config>") -> Ledger:
    """Attach a Ledger to a processor (proc.ledger); attach before the Trainer is made (it copies step_hooks)."""
    led = Ledger(proc, settings, source)
    proc.ledger = led
    return led
