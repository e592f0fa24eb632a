"""`lightloop sweep`: grid parsing, resume without redoing finished points, results table, heatmap, Dask."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lightloop.cli import main
from lightloop.errors import ConfigError
from lightloop.sweep import SweepSpec, parse_grid, parse_set, point_key, run_sweep

ROOT = Path(__file__).resolve().parents[1]
DIGITAL = ROOT / "lab_configs" / "digital_mlp.yaml"
FAST = {"dataset": "digits", "hidden": [8], "epochs": 1, "batch_size": 8, "lr": 0.5}


def test_parse_grid_types_and_aliases():
    g = parse_grid(["q=1e-4,0.1,1", "hidden=500,64:32", "a0=0,10", "one_bit=true,false"])
    assert g == {"q": [1e-4, 0.1, 1], "hidden": [[500], [64, 32]], "optical_depth": [0.0, 10.0],
                 "one_bit": [True, False]}
    assert point_key({"q": 0.1, "hidden": [64, 32]}) == "q=0.1|hidden=64:32"
    assert parse_set(["epochs=2", "dataset=digits"]) == {"epochs": 2, "dataset": "digits"}


@pytest.mark.parametrize("items, match", [
    (["q"], "expected PARAM=v1,v2"),
    (["q=0.1,0.1"], "repeated value"),
    (["q=0.1", "q=0.2"], "given twice"),
    (["epochs=1,two"], "epochs: expected a positive integer"),
    (["hidden=0"], "hidden: expected layer sizes"),
    (["lr=0.1,"], "empty value"),
    ([], "at least one"),
])
def test_parse_grid_errors(items, match):
    with pytest.raises(ConfigError, match=match):
        parse_grid(items)


def test_unknown_parameter_and_bad_value_fail_before_any_run(tmp_path):
    with pytest.raises(ConfigError, match=r"qq: neither a training setting .* nor an option of gradient 'stochastic_photonic'"):
        SweepSpec(DIGITAL, {"qq": [0.1]}, FAST, 1, tmp_path, None)
    with pytest.raises(ConfigError, match="probability"):
        SweepSpec(DIGITAL, {"q": [0.1, 2.0]}, FAST, 1, tmp_path, None)
    with pytest.raises(ConfigError, match="both give"):
        SweepSpec(DIGITAL, {"lr": [0.1]}, FAST, 1, tmp_path, None)


def test_sweep_resumes_and_extends_without_redoing(tmp_path):
    out = tmp_path / "sw"
    spec = SweepSpec(DIGITAL, {"q": [1.0]}, FAST, 2, out, None)
    rep = run_sweep(spec, scheduler="synchronous", progress=False, log=lambda s: None)
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 2 and set(df["status"]) == {"ok"} and rep["failed"] == 0
    assert sorted(df["seed"]) == [0, 1]                            # repeat r -> seed + r
    assert (out / "heatmap.png").stat().st_size > 0 and (out / "curve.png").exists()
    assert set(rep["points"]) == {"q=1.0"} and rep["points"]["q=1.0"]["n"] == 2
    stamp = (out / "runs" / "q=1.0_r0" / "metrics.jsonl").stat().st_mtime_ns

    logs: list[str] = []
    spec2 = SweepSpec(DIGITAL, {"q": [1.0, 0.1]}, FAST, 2, out, None)
    run_sweep(spec2, scheduler="synchronous", progress=False, log=logs.append)
    assert "2 to run, 2 already finished" in logs[0]
    df2 = pd.read_csv(out / "results.csv")
    assert len(df2) == 4 and df2["point"].nunique() == 2
    assert (out / "runs" / "q=1.0_r0" / "metrics.jsonl").stat().st_mtime_ns == stamp  # not redone


def test_failed_point_recorded_and_retried(tmp_path):
    out = tmp_path / "sw"
    spec = SweepSpec(DIGITAL, {"optical_depth": [1.0]}, FAST, 1, out, None)  # digital bench has no a0
    rep = run_sweep(spec, scheduler="synchronous", progress=False, log=lambda s: None)
    df = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert rep["failed"] == 1 and df.loc[0, "status"] == "error" and "optical-depth" in df.loc[0, "error"]
    logs: list[str] = []
    run_sweep(spec, scheduler="synchronous", progress=False, log=logs.append)
    assert "1 to run" in logs[0]


def test_resume_refuses_changed_fixed_settings(tmp_path):
    out = tmp_path / "sw"
    run_sweep(SweepSpec(DIGITAL, {"q": [1.0]}, FAST, 1, out, None), scheduler="synchronous", progress=False,
              log=lambda s: None)
    with pytest.raises(ConfigError, match="--set values differ"):
        run_sweep(SweepSpec(DIGITAL, {"q": [1.0]}, {**FAST, "epochs": 2}, 1, out, None), scheduler="synchronous",
                  progress=False, log=lambda s: None)


def test_cli_sweep_on_dask_local_cluster_2d_parquet(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", "--config", str(DIGITAL), "--grid", "q=1,0.1", "--grid", "epsilon=0.5",
            "--set", "one_bit=true", "--set", "dataset=digits", "--set", "hidden=8", "--set", "epochs=1",
            "--set", "batch_size=8", "--workers", "2", "--format", "parquet", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 2 and set(df["status"]) == {"ok"}
    assert set(rep["points"]) == {"q=1|epsilon=0.5", "q=0.1|epsilon=0.5"}
    assert (out / "heatmap.png").exists() and not (out / "curve.png").exists()


def test_cli_sweep_bad_grid_is_one_line_error(capsys):
    assert main(["sweep", "--config", str(DIGITAL), "--grid", "epochs=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lightloop: error: --grid epochs") and "\n" not in err


@pytest.mark.parametrize("ideal", [True, False])
def test_ideal_false_forces_the_realistic_twin(tmp_path, ideal):
    """`--set ideal=false` must switch imperfections on, not fall back to the config's twin setting."""
    from lightloop.sweep import _namespace

    task = {"config": str(DIGITAL), "out": str(tmp_path), "data_dir": None, "train": {"ideal": ideal},
            "gradient_options": {}}
    args = _namespace(task)
    assert args.ideal is ideal and args.realistic is (not ideal)


FREE = ROOT / "lab_configs" / "free_space_sa.yaml"


def test_a_dotted_config_path_is_swept_and_reaches_the_bench(tmp_path):
    """--grid processor.probe_field=...: validated by the config schema, each run built with its value."""
    grid = parse_grid(["processor.probe_field=0.05,0.2"])
    assert grid == {"processor.probe_field": [0.05, 0.2]}
    fixed = {"dataset": "iris", "hidden": [4], "epochs": 1, "batch_size": 16, "ideal": True,
             "processor.vapor_cell.t_max_k": "150 degC"}
    spec = SweepSpec(FREE, grid, fixed, 1, tmp_path / "sw", None)
    rep = run_sweep(spec, scheduler="synchronous", progress=False, log=lambda s: None)
    rows = pd.read_csv(tmp_path / "sw" / "results.csv")
    assert list(rows["status"]) == ["ok", "ok"] and sorted(rows["processor.probe_field"]) == [0.05, 0.2]
    runs = json.loads((tmp_path / "sw" / "runs").joinpath(
        sorted(p.name for p in (tmp_path / "sw" / "runs").iterdir())[0], "run.json").read_text())
    assert "config_overrides" in json.dumps(runs)
    assert rep is not None


@pytest.mark.parametrize("item, match", [
    ("processor.probe_field=-1", r"--grid/--set processor.probe_field: .*probe_field: expected greater than 0"),
    ("processor.no_such_field=1", r"processor.no_such_field: unknown key"),
    ("processor.vapor_cell.t_max_k=5 parsec", r"t_max_k: expected a temperature"),
])
def test_a_bad_dotted_path_fails_before_any_run(tmp_path, item, match):
    with pytest.raises(ConfigError, match=match):
        SweepSpec(FREE, parse_grid([item]), {"dataset": "iris", "epochs": 1}, 1, tmp_path / "sw", None)
    assert not (tmp_path / "sw").exists()


def test_two_benches_share_a_cluster_but_each_runs_one_task_at_a_time(tmp_path):
    """The bench lock (Dask Lock 'bench:<name>'): the runs of two benches on one 2-worker cluster; within a bench the
    runs never overlap in time, and every run finishes (without the lock they overlap: checked by hand)."""
    import yaml
    from dask.distributed import Client, LocalCluster, wait

    from lightloop.sweep import bench_resource, run_point, run_point_on_bench

    tasks = {}
    for name in ("bench-a", "bench-b"):
        d = yaml.safe_load(DIGITAL.read_text())
        d["bench"] = name
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(d))
        spec = SweepSpec(path, {"seed": [1, 2, 3]}, dict(FAST), 1, tmp_path / name, None)
        assert bench_resource(spec.cfg, True) == f"bench:{name}"
        tasks[name] = spec.tasks()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        futures = {name: [client.submit(run_point_on_bench, run_point, t, f"bench:{name}", pure=False) for t in ts]
                   for name, ts in tasks.items()}
        done = wait([f for fs in futures.values() for f in fs], timeout=180)
        assert not done.not_done, "runs did not finish"
        rows = {name: client.gather(fs) for name, fs in futures.items()}
    for name, rs in rows.items():
        assert [r["status"] for r in rs] == ["ok"] * 3, rs
        spans = sorted((r["started_unix"], r["finished_unix"]) for r in rs)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), (name, spans)


def test_real_instrument_configs_lock_their_bench_by_default():
    from lightloop.config import load_config
    from lightloop.sweep import bench_resource

    assert bench_resource(load_config(ROOT / "lab_configs" / "real_free_space.yaml")) == "bench:free-space-sa-lab"
    assert bench_resource(load_config(ROOT / "lab_configs" / "wire_free_space.yaml")) is None   # a twin per run
    assert bench_resource(load_config(DIGITAL)) is None


def test_a_sweep_with_the_bench_lock_runs_on_a_local_cluster(tmp_path):
    spec = SweepSpec(DIGITAL, {"seed": [1, 2]}, dict(FAST), 1, tmp_path / "sw", None)
    rep = run_sweep(spec, workers=2, progress=False, log=lambda s: None, exclusive=True)
    rows = pd.read_csv(tmp_path / "sw" / "results.csv").sort_values("started_unix")
    assert rep["failed"] == 0 and list(rows["status"]) == ["ok", "ok"]
    spans = list(zip(rows["started_unix"], rows["finished_unix"]))
    assert spans[0][1] <= spans[1][0]                      # one at a time, although two workers were free
