"""benchmarks/method_comparison.py: the --quick comparison end to end, the budget rule, the bench clone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import _method_runs as mr  # noqa: E402
import method_comparison as mc  # noqa: E402
from lightloop.training.gradients import GradientMethod, GradientResult  # noqa: E402

ROWS = ("backprop", "physics_aware", "physics_aware_refined", "offline_nominal", "finite_difference")
FIELDS = ("status", "error", "test_accuracy_mean", "test_accuracy_sd", "steps_mean", "steps_by_seed",
          "acquisitions_per_step", "acquisitions_used_max", "wall_seconds_per_step", "cpu_seconds_per_step",
          "budget", "gradient", "wall_per_step_vs_backprop", "cpu_per_step_vs_backprop")


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    """One --quick run of both benches (its JSON as written by --out)."""
    out = tmp_path_factory.mktemp("mc") / "quick.json"
    assert mc.main(["--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_quick_has_every_method_row_with_the_fields(quick):
    assert [b["bench"] for b in quick["benches"]] == ["free_space", "chip"]
    for b in quick["benches"]:
        assert [r["method"] for r in b["rows"]] == list(ROWS)
        assert b["budget_acquisitions"] == mc.QUICK_BUDGET[b["bench"]]
        for r in b["rows"]:
            assert set(FIELDS) <= set(r), (b["bench"], r["method"], set(FIELDS) - set(r))
        gradients = {r["method"]: r["gradient"] for r in b["rows"]}
        assert gradients["backprop"] == ("pump_probe" if b["bench"] == "free_space" else "adjoint")
        assert b["rows"][2]["options"] == {"refine_every": b["refine_every"]}
        ok = [r for r in b["rows"] if r["status"] == "ok"]
        assert {"backprop", "offline_nominal"} <= {r["method"] for r in ok}
        for r in ok:
            assert 0.0 <= r["test_accuracy_mean"] <= 1.0 and r["steps_mean"] > 0
            assert r["wall_seconds_per_step"] > 0 and r["cpu_seconds_per_step"] > 0
    table = quick["markdown"].splitlines()
    assert len(table) == 2 + 2 * len(ROWS) + 3 and table[0].startswith("| bench | method | test accuracy")


def test_budget_rule_holds_in_the_quick_run(quick):
    for b in quick["benches"]:
        budget = b["budget_acquisitions"]
        untrained = {s["seed"]: s["untrained_accuracy"] for s in b["seeds"]}
        for key, runs in b["runs"].items():
            for r in runs:
                assert r["status"] in ("ok", "over_budget"), (b["bench"], key, r.get("error"))
                assert r["acquisitions_used"] <= budget
                if key == "offline_nominal":
                    assert r["acquisitions_used"] == 0 and r["steps"] > 0
                    continue
                per = r["acquisitions_per_step_max"]
                if r["status"] == "over_budget":       # one step needs more than the budget: untrained
                    assert per > budget and r["steps"] == 0 and r["test_accuracy"] == untrained[r["seed"]]
                    continue
                assert per == r["acquisitions_per_step"] == r["expected_acquisitions_per_step"]  # constant cost
                assert r["steps"] == budget // per, (b["bench"], key)   # trained until the budget is used
                assert r["acquisitions_used"] == r["steps"] * per and not r["budget_overshoot"]
    fs = {r["method"]: r for r in quick["benches"][0]["rows"]}
    # 64-8-10 has 592 weights: one central-difference step = (2 x 592 + 1) forward passes of 3 acquisitions
    assert fs["finite_difference"]["status"] == "over_budget"
    assert fs["finite_difference"]["acquisitions_per_step"] == (2 * 592 + 1) * 3
    # pump_probe: 3 forward + 2 backward (differential probe); physics_aware: the 3 forward only
    assert fs["backprop"]["acquisitions_per_step"] == 5 and fs["physics_aware"]["acquisitions_per_step"] == 3
    # offline trains as many steps as the most-stepped budgeted row of the seed
    assert fs["offline_nominal"]["steps_mean"] == max(fs[k]["steps_mean"] for k in ROWS if k != "offline_nominal")


def test_markdown_from_json(quick, tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(quick))
    assert mc.main(["--from-json", str(path), "--markdown"]) == 0
    assert capsys.readouterr().out.strip() == quick["markdown"]
    # benches run in separate processes merge into one result and table
    parts = []
    for i, b in enumerate(quick["benches"]):
        parts.append(tmp_path / f"part{i}.json")
        parts[-1].write_text(json.dumps({**quick, "benches": [b], "markdown": "stale"}))
    assert mc.main(["--from-json", *map(str, parts), "--out", str(tmp_path / "merged.json")]) == 0
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert [b["bench"] for b in merged["benches"]] == ["free_space", "chip"]
    assert merged["markdown"] == quick["markdown"]


class _Costly(GradientMethod):
    """A fake method whose step k costs costs[k % len(costs)] acquisitions (zero gradients)."""

    name = "costly"

    def __init__(self, costs):
        self.costs, self.k = costs, 0

    def __call__(self, processor, params, x, targets):  # type: ignore[override]
        processor._count(self.costs[self.k % len(self.costs)])
        self.k += 1
        return GradientResult(0.0, np.zeros((x.shape[0], 10), np.float32), [np.zeros_like(p) for p in params], 0)


@pytest.fixture(scope="module")
def spec():
    return mc.free_space_spec(mc.parse_args(["--quick", "--benches", "free_space"]))


def test_budget_run_stops_before_the_budget_and_flags_an_underestimate(spec):
    proc = spec.build(True, 0)
    run = mr.budget_run(proc, _Costly([5]), spec, 0, budget=17, expected_cost=5)
    assert run["steps"] == 3 and run["acquisitions_used"] == 15 and not run["budget_overshoot"]
    # a dearer step every third step, announced: never over the budget
    run = mr.budget_run(proc, _Costly([2, 2, 9]), spec, 0, budget=20, expected_cost=9)
    assert run["acquisitions_used"] <= 20 and not run["budget_overshoot"]
    assert run["steps"] == 3 and run["acquisitions_used"] == 13       # 2 + 2 + 9; a fourth (9 expected) would pass 20
    # not announced: the run spends 2 + 2 + 9 + ... and says it went over
    run = mr.budget_run(proc, _Costly([2, 2, 9]), spec, 0, budget=12, expected_cost=2)
    assert run["steps"] == 3 and run["acquisitions_used"] == 13 and run["budget_overshoot"]
    run = mr.budget_run(proc, _Costly([5]), spec, 0, budget=4, expected_cost=5)
    assert run["steps"] == 0 and run["acquisitions_used"] == 0


def test_fresh_bench_reproduces_the_calibrated_state(spec):
    from lightloop.calibration.base import RunContext
    from lightloop.calibration.runner import calibrate

    direct = spec.build(False, 3)
    calibrate(direct, ["all"], RunContext(seed=3))
    params = direct.init_parameters(np.random.default_rng(0), 0.3)
    x = spec.data.x_test[:16]
    prepared = mr.PreparedBench(spec, 3)
    assert set(prepared.calibration.values()) == {"ok"} and prepared.calibration_acquisitions > 0
    outs = []
    for proc in (direct, prepared.fresh(), prepared.fresh()):
        proc.program(params)
        outs.append(proc.forward(x).output)
    np.testing.assert_array_equal(outs[1], outs[2])
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-6)
    uncalibrated = spec.build(False, 3)
    uncalibrated.program(params)
    assert np.abs(uncalibrated.forward(x).output - outs[0]).max() > 1e-3


def test_bad_budget_is_one_line():
    with pytest.raises(SystemExit, match=r"--budget 'chip=x': expected N or BENCH=N"):
        mc.free_space_spec(mc.parse_args(["--quick", "--budget", "chip=x"]))
    with pytest.raises(SystemExit, match=r"bench 'laser'"):
        mc.chip_spec(mc.parse_args(["--quick", "--budget", "laser=3"]))
