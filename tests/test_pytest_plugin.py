"""The pytest plugin (lightloop.pytest_plugin, entry point `pytest11`): auto-loaded into this very session, its
fixtures work (in-process twin bench, wire twin with its command log, fault injection), their names clash with no
fixture of the project's own tests, and the README's plugin example runs with them."""

from __future__ import annotations

import ast
import re
from importlib import metadata

import numpy as np
import pytest

from conftest import REPO

PLUGIN_FIXTURES = {"lightloop_open_bench", "lightloop_bench_config", "lightloop_bench", "lightloop_wire_config",
                   "lightloop_wire_bench", "lightloop_command_log", "lightloop_faults"}


def test_plugin_is_registered_by_entry_point_and_loaded_in_this_session(request):
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="pytest11")}
    assert eps.get("lightloop") == "lightloop.pytest_plugin"
    import lightloop.pytest_plugin as plugin

    assert request.config.pluginmanager.get_plugin("lightloop") is plugin      # auto-loaded, not imported here
    names = {n for n in dir(plugin) if n.startswith("lightloop_")}
    assert names == PLUGIN_FIXTURES


def test_plugin_fixture_names_clash_with_no_project_fixture():
    project = set()
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    "fixture" in ast.unparse(d) for d in node.decorator_list):
                project.add(node.name)
    assert project and not (project & PLUGIN_FIXTURES)


def test_in_process_twin_bench_fixture(lightloop_bench):
    assert lightloop_bench.sizes == (64, 8, 10) and lightloop_bench.station is None
    lightloop_bench.program(lightloop_bench.init_parameters())
    assert lightloop_bench.forward(lightloop_bench.dataset.x_test[:3]).output.shape == (3, 10)


def test_open_bench_factory_closes_what_it_opened(lightloop_open_bench):
    chip = lightloop_open_bench("integrated_chip", ideal=True)
    assert chip.kind == "integrated_chip" and not chip.closed
    # teardown closes it; a second close is harmless
    chip.close()
    assert chip.closed


def test_wire_bench_command_log_and_faults(lightloop_wire_bench, lightloop_command_log, lightloop_faults):
    bench = lightloop_wire_bench
    assert lightloop_command_log.count() == 0                     # cleared when the test starts
    bench.program(bench.init_parameters())
    x = np.random.default_rng(1).random((4, 8)).astype(np.float32)
    clean = bench.forward(x).output
    assert any(c.startswith("DIG ") for c in lightloop_command_log.commands("scope"))
    lightloop_faults.random(0.3, seed=3, instruments=["scope"], reboot=0.0, drop=0.0)   # garbage, timeouts, bad numbers
    faulty = bench.forward(x).output
    lightloop_faults.off()
    counts = lightloop_faults.counts()
    assert sum(counts["total"].values()) > 0 and set(counts) <= {"scope", "total"}
    np.testing.assert_allclose(faulty, clean, rtol=1e-6, atol=1e-6)   # retried to the fault-free reading (ideal twin)
    assert bench.station.stats.retries + bench.station.stats.reconnects > 0


def test_readme_plugin_example_runs(lightloop_wire_bench, lightloop_faults, lightloop_command_log):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Testing your lab code"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns: dict = {}
    exec(compile(code, "README.md#testing-your-lab-code", "exec"), ns)
    [test] = [v for k, v in ns.items() if k.startswith("test_")]
    test(lightloop_wire_bench, lightloop_faults, lightloop_command_log)


@pytest.mark.parametrize("name", sorted(PLUGIN_FIXTURES))
def test_every_plugin_fixture_is_documented_in_the_readme(name):
    if name.endswith("_config"):
        name = name.removesuffix("_config")
    assert f"`{name}" in (REPO / "README.md").read_text()
