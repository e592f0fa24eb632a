"""Energy and latency ledger of a training run: optical joules, electronics and host joules, frames, acquisitions (SI).

The ledger listens on a processor through instance-level wrappers of its HAL roles (sources and detector arrays:
what the HAL commands and measures, never a twin's hidden truth), its ``activity_hooks`` ("program" opens a
training step) and its ``step_hooks`` (the Trainer closes the step after the update). Per step it records:

* optical energy in joules: every *exposure* (a set of detector-array reads of one light state; reading the same
  array again, or any change of a source, starts a new one) charges each lit source
  ``power_per_unit_w * frame_s * sum_b sum_i |E_bi|^2`` (E: the commanded fields in the HAL's field units, summed
  over the batch: one sample per frame), and each read charges its detector array the same with the *measured*
  fields (|E|^2), powers (P) or batch-integrated intensities; grouped as ``input`` (forward source),
  ``backward_probe`` (probe / adjoint sources / injectors), ``forward_tap`` and ``backward_tap`` (by role), per layer;
* flow (resistor) network: each probe read is one exposure of ``batch`` drive frames at ``flow_frame_rate_hz``,
  charged the network's Joule power ``sum_b sum_e w_e dv_be^2`` (written conductances, measured potentials) x frame
  period, as ``input`` (signal channel, incl. nudged / clamped states) or ``backward_probe`` (feedback channel);
* electronics in the loop (``ledger_models.electronics_j``): heaters sum_k V_k^2 / R_k (written volts, calibrated
  resistance), modulator, weight device and detector/digitiser powers, each times its share of the step's model time;
* host: ``host_power_w`` x the MEASURED host time of the step (wall time minus the time inside HAL device calls);
* frames shown, detector acquisitions and ADC samples (``digitizer_record_length`` x channels x batch per read);
* latency from the declared timing model (``ledger_models.latency_model``), grouped program / acquire / transfer /
  host, beside the measured wall time per group (program, display, acquire: time inside those HAL calls; host: the
  rest; with a station, its instrument I/O seconds);
* the equivalent electronic backprop: 6 B sum_l n_l n_(l+1) FLOPs times ``pj_per_flop``. A digital bench has only
  this (its real work: 6 B x its weights and biases) and host time.

Evaluation and calibration passes outside a step go to ``outside_steps``. Kinds: free space, integrated chip, flow
network, digital (an attached photon-counting feedback channel is not charged).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lightloop.atomic_io import atomic_write_text
from lightloop.errors import ConfigError
from lightloop.ledger_models import (KINDS, LIGHT_M_S, PLANCK_J_S, WAVELENGTH_M, LedgerSettings, Tally,
                                     digital_flops, electronics_j, kind_of, latency_model)

__all__ = ["LedgerSettings", "Ledger", "attach_ledger", "digital_flops", "PLANCK_J_S", "LIGHT_M_S"]

class Ledger:
    """Per-step energy and latency records of one processor (see the module docstring for the model)."""

    def __init__(self, processor: Any, settings: LedgerSettings | None = None, source: str = "<config>"):
        self.proc, self.s = processor, settings or LedgerSettings()
        self.kind = _kind(processor, source)
        self.wavelength_m = self.s.wavelength_m or WAVELENGTH_M[self.kind]
        rate = self.s.flow_frame_rate_hz if self.kind == "flow_network" else self.s.frame_rate_hz
        self.frame_s = 1.0 / rate
        self.groups: dict[str, tuple[str, int | None]] = {}   # key -> (group, layer)
        self.steps: list[dict[str, Any]] = []
        self.outside = Tally()
        self._cur = Tally()
        self._lit: dict[str, float] = {}                      # source key -> sum |E|^2 over the batch
        self._pending: dict[str, float] = {}                  # last commanded fields of a gated source
        self._batch = 0
        self._read: set[str] = set()
        self._dirty = True
        self._t0: float | None = None
        self._io0 = 0.0
        self._depth = 0
        self._undo: list[tuple[Any, str]] = []
        self.last_step: dict[str, Any] = {}
        {"free_space": self._attach_free_space, "integrated_chip": self._attach_chip,
         "flow_network": self._attach_flow, "digital": self._attach_digital}[self.kind]()
        processor.activity_hooks.append(self._activity)
        processor.step_hooks.append(self.close_step)

    # --- wiring ------------------------------------------------------------------------------------------
    def _wrap(self, obj: Any, name: str, after: Callable[..., None] | None = None, timed: str | None = None,
              before: Callable[..., None] | None = None) -> None:
        """Wrap obj.name on the instance: before(*args), the call (wall s into device_s[timed]), after(out, *args)."""
        orig = getattr(obj, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                before(*args, **kwargs)
            outer = timed is not None and self._depth == 0
            t0 = time.perf_counter()
            self._depth += 1
            try:
                out = orig(*args, **kwargs)
            finally:
                self._depth -= 1
                if outer:
                    self._cur.device_s[timed] += time.perf_counter() - t0   # type: ignore[index]
            if after is not None:
                after(out, *args, **kwargs)
            return out
        setattr(obj, name, wrapper)
        self._undo.append((obj, name))

    def _detector(self, role: Any, key: str, group: str, layer: int | None, unit: str, method: str = "acquire") -> None:
        self.groups[key] = (group, layer)
        self._wrap(role, method, lambda out, *a, **k: self._on_read(key, out, unit), timed="acquire")

    def _source(self, key: str, group: str, layer: int | None) -> None:
        self.groups[key] = (group, layer)

    def _attach_free_space(self) -> None:
        p = self.proc
        self._source("input", "input", None)
        self._source("probe", "backward_probe", len(p.weights))
        self._wrap(p, "program", timed="program")
        fs = lambda: float(p.encoder.field_scale)  # noqa: E731
        self._wrap(p.encoder, "display", lambda out, x: self._show("input", np.asarray(x, np.float64) * fs(),
                                                                    "input", gate=False), timed="display")
        self._wrap(p.encoder, "display_fields", lambda out, f: self._show("input", np.asarray(f, np.float64), "input",
                                                                          gate=False), timed="display")
        self._wrap(p.probe, "display", lambda scale, d: self._show("probe", np.asarray(d, np.float64) * scale,
                                                                   "probe", gate=False), timed="display")
        self._wrap(p.probe, "display_fields", lambda out, f: self._show("probe", np.asarray(f, np.float64), "probe",
                                                                        gate=False), timed="display")
        for i, d in enumerate(p.pre_taps):
            self._detector(d, f"pre[{i}]", "forward_tap", i, "field")
        for i, d in enumerate(p.post_taps):
            self._detector(d, f"post[{i}]", "forward_tap", i, "field")
        for i, d in enumerate(p.error_taps):
            self._detector(d, f"error[{i}]", "backward_tap", i, "field")

    def _attach_chip(self) -> None:
        p = self.proc
        self._source("input", "input", None)
        self._wrap(p, "program", timed="program")
        self._wrap(p.source, "display", lambda ports, x: self._show("input", ports, "input", gate=True),
                   timed="display")
        self._wrap(p.source, "on", lambda out: self._gate("input", True), timed="display")
        self._wrap(p.source, "dark", lambda out: self._gate("input", False), timed="display")
        for l, lay in enumerate(p.layers):
            for role, name in ((lay.injector, f"injector[{l}]"), (lay.adjoint_source, f"adjoint[{l}]")):
                self._source(name, "backward_probe", l)
                self._wrap(role, "inject", lambda out, f, name=name: self._show(name, f, None, gate=False),
                           timed="display")
                self._wrap(role, "off", lambda out, name=name: self._unlight(name), timed="display")
            self._detector(lay.out_receiver, f"receiver_out[{l}]", "forward_tap", l, "field")
            self._detector(lay.in_receiver, f"receiver_in[{l}]", "backward_tap", l, "field")
            self._detector(lay.monitor, f"monitor[{l}]", "forward_tap", l, "integrated")
        for i, act in enumerate(p.activations):
            self._detector(act, f"activation[{i}]", "forward_tap", i, "power")
            self._detector(act, f"slope[{i}]", "forward_tap", i, "electrical", method="acquire_slope")
        self._detector(p.output, "output", "forward_tap", len(p.layers) - 1, "power")

    def _attach_flow(self) -> None:
        p, net = self.proc, self.proc.network
        self._source("signal", "input", 0)
        self._source("feedback", "backward_probe", 0)
        self._wrap(p, "program", timed="program")
        for method, frames in (("inject_currents", "input"), ("inject_feedback", "feedback"),
                               ("clamp_outputs", "clamp")):
            self._wrap(net, method, lambda out, a, *r, frames=frames, **k: self._drive(frames, a), timed="display")
        self._wrap(net, "release_outputs", timed="display")
        self._wrap(net, "measure_potentials", lambda v: self._flow_read("signal", v), timed="acquire")
        self._wrap(net, "measure_feedback", lambda u: self._flow_read("feedback", u), timed="acquire")

    def _attach_digital(self) -> None:
        p = self.proc                     # no notify on program: the wrapper opens the step; all work is host
        self._wrap(p, "program", before=lambda *a, **k: self._activity("program"))
        self._wrap(p, "forward", lambda out, x: setattr(self, "_batch", int(np.shape(x)[0])))

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

    def _count_read(self, key: str, a: np.ndarray, batch: int) -> None:
        t, s = self._cur, self.s
        t.acquisitions[key] += 1
        channels = int(a.shape[-1]) if a.ndim else 1
        samples = s.digitizer_record_length * channels * batch
        t.adc_samples += samples
        t.transfer_s += s.digitizer_overhead_s + samples * s.digitizer_transfer_s_per_sample

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
        self._count_read(key, a, batch)

    def _drive(self, frames_key: str, values: Any) -> None:
        """A flow-network drive (input / feedback currents, clamp EMFs): batch frames shown."""
        b = int(np.atleast_2d(np.asarray(values)).shape[0])
        self._batch = b
        self._cur.frames[frames_key] += b
        self._cur.displays += 1

    def _flow_read(self, key: str, v: Any) -> None:
        """One probe read of a flow network: one exposure of batch frames, charged its Joule power x frame period."""
        t = self._cur
        v = np.atleast_2d(np.asarray(v, np.float64))
        batch = int(v.shape[0])
        w = self.proc.network.conductances
        dv = self.proc.topology.edge_drops(v)
        t.exposures += 1
        t.exposed_samples += batch
        t.energy_j[key] += self.frame_s * float(np.sum(dv ** 2 * w)) if w is not None else 0.0
        self._count_read(key, v, batch)

    def _activity(self, event: str) -> None:
        if event == "program":
            self.outside.add(self._cur)       # evaluation / calibration since the last step
            self._cur = Tally()
            self._cur.programs += 1
            if self.kind == "free_space":
                self._cur.frames["weights"] += len(self.proc.weights)
            self._io0 = self._io_seconds()
            self._t0 = time.perf_counter()

    def _io_seconds(self) -> float:
        stats = getattr(getattr(self.proc, "station", None), "stats", None)
        return float(getattr(stats, "instrument_seconds", 0.0)) if stats is not None else 0.0

    # --- the step record -----------------------------------------------------------------------------------
    def heater_powers_w(self) -> list[float]:
        """Electrical power (W) of each layer's heater bank now: sum V^2 / R over its written volts."""
        if self.kind != "integrated_chip":
            return []
        return [float(np.sum(np.asarray(l.bank.written_volts, np.float64) ** 2 / l.bank.cal.resistance_ohm))
                for l in self.proc.layers]

    def latency_model(self, t: Tally) -> dict[str, float]:
        """Model seconds of the tallied work (ledger_models.latency_model)."""
        return latency_model(self.kind, self.s, t, self.frame_s)

    def step_flops(self) -> int:
        """FLOPs of the step's electronic backprop: the dense equivalent, or a digital bench's own weights + biases."""
        if self.kind == "digital":
            return int(6 * self._batch * sum(int(np.prod(s)) for s in self.proc.parameter_shapes()))
        return digital_flops(self.proc.layer_sizes, self._batch)

    def close_step(self, info: dict[str, Any]) -> None:
        """Step hook: close the step opened by the last "program", record it."""
        t, s = self._cur, self.s
        measured = time.perf_counter() - self._t0 if self._t0 is not None else float("nan")
        lat = self.latency_model(t)
        watts = self.heater_powers_w()
        heaters = [p * lat["total"] for p in watts]
        elec = electronics_j(self.kind, s, lat, float(sum(watts)))
        device = {k: float(t.device_s.get(k, 0.0)) for k in ("program", "display", "acquire")}
        host_s = measured - sum(device.values())
        flops = self.step_flops()
        rec = {"global_step": int(info.get("global_step", len(self.steps) + 1)), "batch": self._batch,
               "optical_j": dict(t.energy_j), "heater_j": heaters, "electronics_j": elec,
               "host_j": s.host_power_w * host_s if host_s == host_s else float("nan"),
               "digital_flops": flops, "digital_j": flops * s.pj_per_flop * 1e-12,
               "acquisitions": dict(t.acquisitions), "adc_samples": t.adc_samples, "frames": dict(t.frames),
               "exposures": t.exposures, "latency_s": lat, "measured_s": measured,
               "measured_groups_s": {**device, "host": host_s},
               "instrument_io_s": self._io_seconds() - self._io0}
        self.last_step = rec
        self.steps.append(rec)
        self._cur = Tally()
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
        steps = self.steps
        n = len(steps)
        samples = sum(r["batch"] for r in steps)
        optical: dict[str, float] = defaultdict(float)
        elec: dict[str, float] = defaultdict(float)
        for r in steps:
            for k, v in r["optical_j"].items():
                optical[k] += v
            for k, v in r["electronics_j"].items():
                elec[k] += v
        sources = sum(v for k, v in optical.items() if self.groups.get(k, ("",))[0] in ("input", "backward_probe"))
        electronics = float(sum(elec.values()))
        host = float(sum(r["host_j"] for r in steps))
        digital = float(sum(r["digital_j"] for r in steps))
        keys = ("optics", "electronics", "host", "total", "program", "acquire", "transfer")
        lat = {k: float(sum(r["latency_s"][k] for r in steps)) for k in keys}
        measured = float(sum(r["measured_s"] for r in steps))
        groups = {k: float(sum(r["measured_groups_s"][k] for r in steps))
                  for k in ("program", "display", "acquire", "host")}
        per = lambda x, d: x / d if d else float("nan")  # noqa: E731
        photon_j = PLANCK_J_S * LIGHT_M_S / self.wavelength_m
        return {
            "kind": self.kind, "steps": n, "samples": samples, "wavelength_m": self.wavelength_m,
            "energy_j": {"optical_sources": sources, "electronics_in_loop": electronics,
                         "heaters": float(elec.get("heaters", 0.0)), "host": host, "digital_equivalent": digital},
            "energy_per_sample_j": {"optics": per(sources, samples), "electronics_in_loop": per(electronics, samples),
                                    "host": per(host, samples), "digital_equivalent": per(digital, samples)},
            "electronics_j": {k: float(v) for k, v in elec.items()},
            "optical": self._by_group(optical),
            "photons": {k: v / photon_j for k, v in optical.items()},
            "heater_j_per_layer": [float(sum(r["heater_j"][i] for r in steps))
                                   for i in range(len(steps[0]["heater_j"]) if steps else 0)],
            "acquisitions": int(sum(sum(r["acquisitions"].values()) for r in steps)),
            "adc_samples": int(sum(r["adc_samples"] for r in steps)),
            "frames": {k: int(sum(r["frames"].get(k, 0) for r in steps))
                       for k in sorted({k for r in steps for k in r["frames"]})},
            "digital_flops": int(sum(r["digital_flops"] for r in steps)),
            "time_per_step_s": {**{k: per(v, n) for k, v in lat.items()}, "measured": per(measured, n)},
            "measured_per_step_s": {**{k: per(v, n) for k, v in groups.items()},
                                    "instrument_io": per(float(sum(r["instrument_io_s"] for r in steps)), n)},
            "model_over_measured": per(lat["total"], measured),
            "outside_steps": {"optical_j": float(sum(self.outside.energy_j.values())),
                              "acquisitions": int(sum(self.outside.acquisitions.values()))},
        }

    def write(self, folder: Path | str) -> Path:
        """Write ledger.json (settings, summary, per-step totals) into a run folder; returns its path."""
        self.outside.add(self._cur)
        self._cur = Tally()
        steps = [{"global_step": r["global_step"], "batch": r["batch"], "optical_j": sum(r["optical_j"].values()),
                  "heater_j": sum(r["heater_j"]), "electronics_j": sum(r["electronics_j"].values()),
                  "host_j": r["host_j"], "digital_j": r["digital_j"], "model_s": r["latency_s"]["total"],
                  "measured_s": r["measured_s"], "model_groups_s": {k: r["latency_s"][k] for k in
                                                                     ("program", "acquire", "transfer", "host")},
                  "measured_groups_s": r["measured_groups_s"]} for r in self.steps]
        path = Path(folder) / "ledger.json"
        doc = {"settings": self.s.model_dump(), "summary": self.summary(), "steps": steps}
        atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=True) + "\n")
        return path


def _kind(proc: Any, source: str = "<config>") -> str:
    kind = kind_of(proc)
    if kind is None:
        raise ConfigError(f"{source}: ledger: processor {type(proc).__name__}: expected one of {', '.join(KINDS)} "
                          "(the ledger has no model of this bench's sources and detectors)")
    return kind


def attach_ledger(proc: Any, settings: LedgerSettings | None = None, source: str = "<config>") -> Ledger:
    """Attach a Ledger to a processor (proc.ledger); attach before the Trainer is made (it copies step_hooks)."""
    led = Ledger(proc, settings, source)
    proc.ledger = led
    return led
