"""benchmarks/ledger_reconcile.py: the ledger's latency model beside measured wall time on the wire twin."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("ledger_reconcile_bench", REPO / "benchmarks" / "ledger_reconcile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _step(model: dict, measured: dict, io: float) -> dict:
    lat = {**model, "optics": 0.5 * model["acquire"]}
    lat["total"] = sum(model[k] for k in ("program", "acquire", "transfer", "host"))
    return {"latency_s": lat, "measured_groups_s": measured, "measured_s": sum(measured.values()),
            "instrument_io_s": io}


def test_reconcile_pairs_groups_and_residuals_by_hand():
    steps = [_step({"program": 0.02, "acquire": 0.004, "transfer": 0.009, "host": 0.001},
                   {"program": 0.002, "display": 0.003, "acquire": 0.012, "host": 0.0004}, 0.015),
             _step({"program": 0.02, "acquire": 0.004, "transfer": 0.009, "host": 0.001},
                   {"program": 0.004, "display": 0.005, "acquire": 0.010, "host": 0.0006}, 0.017)]
    r = _bench().reconcile(steps)
    assert r["measured_per_step_s"]["total"] == pytest.approx((0.0174 + 0.0196) / 2)
    assert r["residual_measured_minus_model_s"]["program"] == pytest.approx(0.003 - 0.02)
    assert r["residual_measured_minus_model_s"]["acquire+transfer"] == pytest.approx((0.003 + 0.012 + 0.005 + 0.010)
                                                                                     / 2 - 0.013)
    assert r["model_over_measured"]["host"] == pytest.approx(0.001 / 0.0005)
    assert r["emulated_model_s"] == pytest.approx(0.010)
    assert r["not_emulated_by_the_twin_s"] == {"optics_exposure": pytest.approx(0.002),
                                               "weight_frame_and_settle": pytest.approx(0.02)}
    assert r["instrument_io_share_of_measured"] == pytest.approx(0.016 / 0.0185)


def test_wire_twin_run_measures_every_group_and_its_instrument_io(capsys):
    out = _bench().main(["--steps", "3", "--batch", "4", "--hidden", "4"])
    assert out["steps"] == 3 and out["averaged_over_steps"] == 2
    for s in out["per_step"]:
        assert s["acquisitions"] == 5                     # pre[0], pre[1], post[0], error[0] at +delta and -delta
        g = s["measured_groups_s"]
        assert all(g[k] > 0 for k in ("program", "display", "acquire", "host"))
        assert sum(g.values()) == pytest.approx(s["measured_s"])
        assert 0 < s["instrument_io_s"] < s["measured_s"]   # driver round trips happen inside the step's HAL calls
        assert sum(s["model_groups_s"].values()) == pytest.approx(s["model_s"])
    m = out["model_per_step_s"]
    assert m["program"] == pytest.approx(1 / 60.0 + 0.01)        # the documented SLM defaults: frame + LC settle
    assert '"residual_measured_minus_model_s"' in capsys.readouterr().out
