"""The Python bench API (lightloop.open_bench / Bench): packaged configs, geometry from the config, named roles,
calibrate, train, the safe state at the end of a `with` block; the README's Python block, the example scripts and
the example notebook are executed here (the notebook's code cells with exec, in order, in one namespace)."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import yaml

import lightloop
from lightloop.errors import ConfigError

from conftest import REPO


def test_top_level_exports_are_lazy_typed_and_listed():
    for name in ("open_bench", "Bench", "load_config", "build_processor", "BuildOverrides", "ConfigError",
                 "LightloopError", "SafetyLimitError", "packaged_configs", "station_instruments"):
        assert name in dir(lightloop) and getattr(lightloop, name) is not None, name
    assert lightloop.open_bench is __import__("lightloop.api").api.open_bench
    # `import lightloop` stays cheap: the API (config, builders, scipy) loads on first use only
    code = "import sys, lightloop; print(json.dumps(['lightloop.api' in sys.modules, 'lightloop.config' in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, False]
    assert (REPO / "lightloop" / "py.typed").is_file()
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["lightloop"]


def test_open_bench_by_packaged_name_roles_forward_and_detectors():
    with lightloop.open_bench("free_space_sa", hidden=[6], ideal=True) as bench:
        assert bench.sizes == (64, 6, 10)            # digits (the config's dataset) around the hidden override
        assert bench.kind == "free_space" and bench.station is None and bench.instruments == {}
        assert {"input", "probe", "w1", "w2", "cell1", "pre1", "pre2", "post1", "err1"} <= set(bench.roles)
        assert bench.w2 is bench.processor.weights[1] and bench.roles["cell1"] is bench.processor.absorbers[0]
        params = bench.init_parameters(seed=1)
        bench.program(params)
        x = bench.dataset.x_test[:5]
        out1 = bench.forward(x).output
        assert out1.shape == (5, 10)
        assert bench.pre1.acquire().shape == (5, 6)
        bench.w2.write(np.zeros_like(params[1]))     # a role write changes what the detectors measure
        assert not np.allclose(bench.forward(x).output, out1)
        with pytest.raises(AttributeError, match="roles: processor, input"):
            bench.w9


def test_geometry_from_emulator_layer_sizes_and_sizes_override():
    data = yaml.safe_load((REPO / "lab_configs" / "wire_free_space.yaml").read_text())
    data["emulator"]["layer_sizes"] = [5, 4, 3]      # the wire twin serves a fixed network: no dataset needed
    with lightloop.open_bench(data, ideal=True) as bench:
        assert bench.sizes == (5, 4, 3) and bench.dataset is None and bench.wire_server is not None
    with lightloop.open_bench("free_space_sa", sizes=[7, 3, 2], ideal=True) as bench:
        assert bench.sizes == (7, 3, 2)


def test_unknown_config_and_bad_sizes_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError) as exc:
        lightloop.open_bench("free_space_typo")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("free_space_typo: config:") and "free_space_sa" in msg
    with pytest.raises(ConfigError, match=r"sizes: \[3\]; expected \[inputs, \*hidden, outputs\]"):
        lightloop.open_bench("free_space_sa", sizes=[3])


def test_calibrate_and_train_return_the_runner_and_trainer_results(tmp_path):
    with lightloop.open_bench("free_space_sa", hidden=[6]) as bench:   # realistic twin: SLM weights with a LUT
        before = bench.w1.lut.phase_rad.copy()          # the nominal linear LUT
        [outcome] = bench.calibrate("slm_lut", store=tmp_path / "cal")
        assert outcome.routine == "slm_lut" and outcome.status == "ok"
        assert outcome.path is not None and (tmp_path / "cal").is_dir()
        assert not np.array_equal(before, bench.w1.lut.phase_rad)   # the measured LUT is installed in the HAL
        result = bench.train(epochs=1, batch_size=64, out=tmp_path / "run")
        assert result.epochs == 1 and len(result.history) == 1 and 0.0 <= result.test_accuracy <= 1.0
        assert (tmp_path / "run" / "metrics.jsonl").is_file()
        with pytest.raises(ConfigError, match="dataset 'iris': 4 features and 3 classes; expected 64 and 10"):
            bench.train(dataset="iris", epochs=1)


def test_the_with_block_ends_in_the_safe_state_even_on_error():
    data = yaml.safe_load((REPO / "lab_configs" / "wire_free_space.yaml").read_text())
    with pytest.raises(RuntimeError, match="boom"):
        with lightloop.open_bench(data, sizes=[6, 4, 3], ideal=True) as bench:
            server = bench.wire_server
            assert server is not None and server.running
            bench.program(bench.init_parameters())
            raise RuntimeError("boom")
    assert bench.closed and not server.running
    laser = server.log.commands("laser")
    on = max(i for i, c in enumerate(laser) if c.startswith("OUTP ON"))
    assert any(c.startswith("OUTP OFF") for c in laser[on:]), laser[-6:]       # the light went off last
    assert server.log.violations == []


def _python_block(markdown: str, heading: str) -> str:
    """The first ```python block after a heading."""
    section = markdown[markdown.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_block_runs(capsys):
    code = _python_block((REPO / "README.md").read_text(), "## Python API")
    exec(compile(code, "README.md#python-api", "exec"), {})
    accuracy = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= accuracy <= 1.0


def test_example_scripts_run():
    free = runpy.run_path(str(REPO / "examples" / "free_space_bench.py"))["main"](hidden=(6,))
    assert 0.0 <= free["test_accuracy"] <= 1.0 and free["pre1_volts_rms"] > 0
    chip = runpy.run_path(str(REPO / "examples" / "chip_bench.py"))["main"]()
    assert chip["mean_power"] > 0 and chip["n_taps"] > 0


def test_example_notebook_runs_cell_by_cell():
    nb = json.loads((REPO / "examples" / "bench_tour.ipynb").read_text())
    assert nb["nbformat"] == 4
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    text = "".join("".join(c["source"]) for c in cells)
    for call in ("program(", "forward(", "acquire_volts()", 'calibrate("slm_lut")', "train(epochs=1)",
                 "set_phases(", "receiver1.acquire()"):
        assert call in text, call
    ns: dict = {}
    for i, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"bench_tour.ipynb[{i}]", "exec"), ns)
    assert ns["bench"].closed and ns["outcome"].status == "ok"
    assert ns["result"].epochs == 1 and ns["fields"].shape[0] == 8
