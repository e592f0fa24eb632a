"""PROJECTION of energy per sample and time per training step for the seed papers' networks (issue 16 part 2).

Every number printed is a projection, not a measurement: the ledger's model (lightloop.ledger: LedgerSettings
timing / energy model, exposure and read counting) applied to one training step of each seed network at its
published size, run on the IDEAL twin (so the commanded and read fields are the physics of that shape) with the
device figures below. Each figure carries its source and a status:
  "published"       taken from the cited paper;
  "datasheet"       a device data sheet / device paper the ledger default cites (not the seed paper);
  "ledger default"  the paper's figure is unknown to us: lightloop.ledger.LedgerSettings' default is used;
  "repo nominal"    this repository's lab config nominal (lightloop/lab_configs), not a published figure.
Steps: free space = one `pump_probe` step (forward + differential probe, lab_configs/free_space_sa.yaml readout);
chip = one in-situ `adjoint` step (forward + per-layer adjoint / injector exposures); photon-limited = analytic
(a digital network: the ledger has no optical roles there) - photons x h nu and the digital FLOPs.
Inputs: a stated assumption, not MNIST statistics: 784-pixel inputs have 19 % of pixels lit (roughly MNIST's ink
fraction) with values uniform in [0, 1]; chip inputs are uniform in [0, 1].

Example: python benchmarks/ledger_projection.py [--steps 2] [--only guo_784_128_10 pai_4port_3layer]
Prints one JSON object: {"label": "projection", "systems": {name: {...}}, "notes": [...]}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lightloop.bench import BuildOverrides, build_processor
from lightloop.config import parse_config
from lightloop.ledger import LIGHT_M_S, PLANCK_J_S, LedgerSettings, attach_ledger, digital_flops
from lightloop.ledger_models import DEFAULT_SOURCES, HEATER_TAU, LC_SETTLE, LC_SLM
from lightloop.ledger_models import DLP as DLP_SRC, HOROWITZ as HOROWITZ_SRC

GUO = ("Guo, Barrett, Wang, Lvovsky, Photon. Res. 9(3), B71 (2021) (arXiv 1912.12256; a proposal, simulated); "
       "realised by Spall, Guo, Lvovsky, Adv. Photon. 7, 016004 (2025): SLM weights, atomic vapour cell")
PAI = ("Pai et al., Science 380, 398-403 (2023), doi 10.1126/science.ade8450 (abstract: three-layer four-port chip, "
       ">94 % test accuracy; 64-port MNIST simulated)")
ASHTIANI = ("Ashtiani, Geers, Aflatouni, Nature 606, 501 (2022) (abstract: classification under 570 ps; 2-class "
            "93.8 %, 4-class 89.8 % letters)")
ZARK = "Zarkeshian, Kergan, Ghobadi, Nicola, Simon, Sci. Rep. 12, 20720 (2022) (not re-checked here)"
DLP, SLM_RATE, SLM_SETTLE, HEATER = DLP_SRC, LC_SLM, LC_SETTLE, HEATER_TAU
HOROWITZ = HOROWITZ_SRC
README_RECIPE = "this repo's Guo et al. MNIST recipe (README: Adam lr 5e-4, batch 64)"


def fig(value: Any, status: str, source: str) -> dict[str, Any]:
    """One device figure with its provenance."""
    return {"value": value, "status": status, "source": source}


def _defaults_table(settings: LedgerSettings, used: dict[str, dict]) -> dict[str, dict]:
    """Every ledger setting with provenance: the given ones, the rest from ledger_models.DEFAULT_SOURCES."""
    out = dict(used)
    for k, v in settings.model_dump().items():
        status, source = DEFAULT_SOURCES.get(k, ("ledger default", "lightloop.ledger.LedgerSettings (paper figure "
                                                                   "unknown to us)"))
        out.setdefault(k, fig(v, status, source))
    return out


def systems() -> dict[str, dict[str, Any]]:
    """The seed systems at their published sizes with their device figures."""
    fs_common = {
        "wavelength_m": fig(780.241e-9, "published", GUO + ": Rb vapor-cell saturable absorber (D2 line)"),
        "frame_rate_hz": fig(22_700.0, "datasheet", DLP + "; the seed papers give no input frame rate"),
    }
    slm = {"weight_frame_rate_hz": fig(60.0, "datasheet", SLM_RATE),
           "weight_settle_s": fig(0.01, "datasheet", SLM_SETTLE)}
    dmd_w = {"weight_frame_rate_hz": fig(22_700.0, "datasheet", DLP + " (binary-amplitude weights: a variant)"),
             "weight_settle_s": fig(0.0, "datasheet", "DMD mirrors settle within the frame (variant)")}
    chip_common = {
        "wavelength_m": fig(1.55e-6, "published", "silicon photonics C band (Pai et al.; Ashtiani et al.)"),
        "heater_time_constant_s": fig(1e-5, "ledger default", HEATER),
    }
    return {
        "guo_784_128_10_slm": dict(kind="free_space", hidden=[128], n_in=784, n_out=10, batch=64,
                                   network_source=GUO + ": 784-128-10 MNIST, 97.3 %", batch_source=README_RECIPE,
                                   figures={**fs_common, **slm}),
        "guo_784_128_10_dmd_weights": dict(kind="free_space", hidden=[128], n_in=784, n_out=10, batch=64,
                                           network_source=GUO + ": 784-128-10 MNIST", batch_source=README_RECIPE,
                                           figures={**fs_common, **dmd_w}),
        "guo_784_128_128_10_slm": dict(kind="free_space", hidden=[128, 128], n_in=784, n_out=10, batch=64,
                                       network_source=GUO + ": 784-128-128-10 MNIST, 98.0 %",
                                       batch_source=README_RECIPE, figures={**fs_common, **slm}),
        "pai_4port_3layer": dict(kind="integrated_chip", hidden=[4, 4], n_in=2, n_out=2, batch=32, bias_ports=2,
                                 network_source=PAI + "; 2 features + 2 bias ports, 2 classes (our reading)",
                                 batch_source="lab_configs/integrated_chip.yaml (repo nominal)",
                                 figures={**chip_common}),
        "pai_64port_mnist_sim": dict(kind="integrated_chip", hidden=[64], n_in=64, n_out=10, batch=32, bias_ports=0,
                                     network_source=PAI + "; two 64-port meshes as benchmarks/chip_mnist64.py",
                                     batch_source="lab_configs/integrated_chip.yaml (repo nominal)",
                                     figures={**chip_common}),
        "ashtiani_2_8_1": dict(kind="integrated_chip", hidden=[8], n_in=2, n_out=1, batch=32, bias_ports=2,
                               network_source="Ashtiani et al. 2-8-1 shape as in this repo's chip_tasks "
                               "(README); " + ASHTIANI,
                               batch_source="lab_configs/integrated_chip.yaml (repo nominal)",
                               figures={**chip_common}, reference={"optical_inference_s_per_sample": fig(
                                   570e-12, "published", ASHTIANI + " - inference through the chip, not a "
                                   "training step; the ledger's frame period (input modulator) dominates")}),
    }


def _processor(sysdef: dict[str, Any]):
    """The ideal twin of a seed network's shape (double precision on the chip)."""
    path = "lightloop/lab_configs/" + ("free_space_sa.yaml" if sysdef["kind"] == "free_space"
                                       else "integrated_chip.yaml")
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / path).read_text())
    raw["processor"]["hidden"] = list(sysdef["hidden"])
    extra = {}
    if sysdef["kind"] == "integrated_chip":
        raw["processor"]["encoder"]["bias_ports"] = sysdef["bias_ports"]
        extra = {"precision": "double"}
    cfg = parse_config(raw, path)
    return build_processor(cfg, sysdef["n_in"], sysdef["n_out"], BuildOverrides(ideal=True, extra=extra))


def project(name: str, sysdef: dict[str, Any], steps: int, seed: int = 0) -> dict[str, Any]:
    """Run `steps` training steps of the ideal twin with the ledger attached; the projection record."""
    settings = LedgerSettings(**{k: v["value"] for k, v in sysdef["figures"].items()})
    proc = _processor(sysdef)
    led = attach_ledger(proc, settings, source=name)
    rng = np.random.default_rng(seed)
    params = proc.init_parameters(rng, 0.1 if sysdef["kind"] == "free_space" else 1.0)
    b, n_in = sysdef["batch"], sysdef["n_in"]
    t0 = time.perf_counter()
    for step in range(steps):
        x = rng.uniform(0, 1, (b, n_in)) * (rng.uniform(0, 1, (b, n_in)) < 0.19 if n_in == 784 else 1.0)
        target = np.eye(sysdef["n_out"])[rng.integers(0, sysdef["n_out"], b)]
        proc.program(params)
        if sysdef["kind"] == "free_space":
            taps = proc.forward(x.astype(np.float32))
            proc.backward((taps.output - target).astype(np.float32))
        else:
            taps = proc.forward(x)
            proc.measure_phase_gradients(taps.output - target)
        led.close_step({"global_step": step + 1})
    cpu_s = time.perf_counter() - t0
    s = led.summary()
    t = s["time_per_step_s"]
    e = s["energy_per_sample_j"]
    photon_j = PLANCK_J_S * LIGHT_M_S / led.wavelength_m
    # host: the DECLARED host power x host_compute_s (the twin's wall time is simulation, not a bench's host)
    host_j = settings.host_power_w * settings.host_compute_s / b
    return {
        "label": "projection", "network": list(proc.layer_sizes), "network_source": sysdef["network_source"],
        "batch": b, "batch_source": sysdef["batch_source"], "steps_projected": steps,
        "energy_per_sample_j": {"optics": e["optics"], "electronics_in_loop": e["electronics_in_loop"],
                                "host": host_j, "digital_equivalent": e["digital_equivalent"]},
        "electronics_per_sample_j": {k: v / (b * steps) for k, v in s["electronics_j"].items()},
        "photons_per_sample_from_sources": e["optics"] / photon_j,
        "heater_power_w": float(sum(led.heater_powers_w())) if sysdef["kind"] == "integrated_chip" else None,
        "time_per_step_s": {k: t[k] for k in ("optics", "electronics", "host", "total", "program", "acquire",
                                              "transfer")},
        "samples_per_s": b / t["total"],
        "per_step": {"acquisitions": s["acquisitions"] / steps, "adc_samples": s["adc_samples"] / steps,
                     "frames": {k: v / steps for k, v in s["frames"].items()},
                     "exposures": float(np.mean([r["exposures"] for r in led.steps])),
                     "digital_flops": s["digital_flops"] / steps},
        "device_figures": _defaults_table(settings, sysdef["figures"]),
        **({"reference": sysdef["reference"]} if "reference" in sysdef else {}),
        "twin_cpu_s": cpu_s,
    }


def photon_limited(q_values: tuple[float, ...] = (1.0, 0.01, 1e-4)) -> dict[str, Any]:
    """Zarkeshian et al. 784-500-10, online (batch 1): photons of the backward channel and the digital step."""
    s = LedgerSettings()
    layers = [784, 500, 10]
    channels = 500 + 10                      # every hidden and output neuron has a backward channel
    wavelength = 780.241e-9
    photon_j = PLANCK_J_S * LIGHT_M_S / wavelength
    flops = digital_flops(layers, 1)
    return {
        "label": "projection", "network": layers,
        "network_source": ZARK + ": 784-500-10 sigmoid MLP, online SGD (lab_configs/digital_mlp.yaml)",
        "batch": 1, "batch_source": ZARK + ": online learning, one sample per trial",
        "feedback_photons_per_sample": {str(q): q * channels for q in q_values},
        "feedback_energy_per_sample_j": {str(q): q * channels * photon_j for q in q_values},
        "digital_equivalent_j_per_sample": flops * s.pj_per_flop * 1e-12,
        "digital_flops_per_sample": flops,
        "time_per_step_s": {"host": s.host_compute_s, "source": "ledger default host_compute_s: the paper gives "
                            "no trial rate (unknown to us); the photon channel's time is not modelled"},
        "device_figures": {
            "q": fig(list(q_values), "published", ZARK + ": photon probability per neuron per trial (swept)"),
            "wavelength_m": fig(wavelength, "ledger default", "the paper's photon wavelength is unknown to us; "
                                "780.241 nm (the ledger's free-space default) used"),
            "pj_per_flop": fig(s.pj_per_flop, "datasheet", HOROWITZ),
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Project every seed system; print and return the JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="training steps projected per system (default 2)")
    ap.add_argument("--only", nargs="+", default=None, help="system names (default: all)")
    args = ap.parse_args(argv)
    table = systems()
    names = args.only or [*table, "zarkeshian_784_500_10"]
    out: dict[str, Any] = {"label": "projection", "model": "lightloop.ledger (LedgerSettings + exposure/read "
                           "counting) on the ideal twin at each published shape", "systems": {}}
    for name in names:
        if name == "zarkeshian_784_500_10":
            out["systems"][name] = photon_limited()
        elif name in table:
            out["systems"][name] = project(name, table[name], args.steps)
        else:
            raise SystemExit(f"ledger_projection.py: --only: unknown system {name!r}; expected one of "
                             f"{', '.join([*table, 'zarkeshian_784_500_10'])}")
    out["notes"] = [
        "projections, not measurements: the ledger's declared timing model and energy figures applied to one "
        "training step of each network on the ideal twin",
        "optics energy counts the light sources (input, probe / adjoint / injectors) over every exposure; "
        "power per unit |field|^2 is the ledger default 1 mW (saturation / reference power unknown to us)",
        "chip heater energy = sum V^2/R of the Haar-random initial phases (repo nominal P_pi 25 mW/pi, R 1 kOhm) "
        "times the step's model time",
        "electronics in the loop = modulator, weight device (SLM driver / heater bank), detectors + digitiser (ledger "
        "default powers, see device_figures) and heaters, each x its share of the model step time; they, not the "
        "optics, dominate every projected energy; host = host_power_w x host_compute_s (declared)",
    ]
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
