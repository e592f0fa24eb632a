"""The package's layout rules (docs/architecture.md), checked on every module.

* layers import one way: training -> hal <- simulators, hal <- drivers, calibration -> hal; the station
  (the instrument wing) sits on hal + drivers and is imported only by the bench builders and the commands;
* the ground floor (errors, units, addresses, schema, atomic_io, plugins, shutdown) imports nothing above it;
* only the command-line modules and the bench builder import ``lightloop.config``;
* no import circles (imports inside functions count), no module over 600 lines;
* importing the station, or loading a real-instrument config, loads no simulator code (checked in a
  fresh interpreter through ``sys.modules``, not only by reading the source).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "lightloop"

#: layer -> layers (first component below lightloop) it must never import
FORBIDDEN = {
    "training": {"simulators", "drivers", "calibration", "benches", "station", "config", "bench"},
    "hal": {"simulators", "drivers", "training", "calibration", "benches", "station", "config", "bench"},
    "calibration": {"simulators", "drivers", "training", "benches", "station", "config", "bench"},
    "simulators": {"drivers", "training", "calibration", "benches", "station", "bench"},
    "drivers": {"simulators", "training", "calibration", "hal", "physics", "benches", "station", "config", "bench"},
    "physics": {"simulators", "drivers", "training", "calibration", "hal", "benches", "station", "config", "bench"},
    "station": {"simulators", "training", "calibration", "benches", "config", "bench"},
}
#: ground-floor modules: shared contracts that every layer may import; they import only each other
GROUND = {"errors", "units", "addresses", "schema", "atomic_io", "plugins", "shutdown"}
#: modules allowed to import lightloop.config: the commands and the bench builder
CONFIG_USERS = {"lightloop.cli", "lightloop.calibrate_cli", "lightloop.emulate_cli", "lightloop.sweep", "lightloop.bench",
                "lightloop.safe_cli", "lightloop.check_cli",
                "lightloop.api"}   # the Python bench API: open_bench loads a config like the commands do
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(path: Path):
    """(line, imported module) for every absolute lightloop import, including those inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for a in node.names:  # `from lightloop.x import module`
                if f"{node.module}.{a.name}" in MODULES:
                    yield node.lineno, f"{node.module}.{a.name}"


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph = {}
    for mod, path in MODULES.items():
        deps = {_resolve(m) for _, m in _imports(path) if m.startswith("lightloop")}
        graph[mod] = {d for d in deps if d and d != mod and d != "lightloop"}
    return graph


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("mod", sorted(m for m in MODULES if _layer(m) in FORBIDDEN))
def test_no_layer_crossing(mod):
    layer = _layer(mod)
    bad = [(ln, m) for ln, m in _imports(MODULES[mod])
           if m.startswith("lightloop.") and m.split(".")[1] in FORBIDDEN[layer]]
    assert not bad, f"{mod} ({layer}) imports {bad}"


@pytest.mark.parametrize("mod", sorted(f"lightloop.{g}" for g in GROUND))
def test_ground_floor_imports_nothing_above_it(mod):
    assert mod in MODULES, f"{mod} is missing"
    bad = [(ln, m) for ln, m in _imports(MODULES[mod]) if m.startswith("lightloop.") and _layer(m) not in GROUND]
    assert not bad, f"{mod} (ground floor) imports {bad}"


def test_only_commands_and_the_bench_builder_import_config():
    users = {mod for mod, path in MODULES.items() if any(m == "lightloop.config" for _, m in _imports(path))}
    users.discard("lightloop.config")
    assert users <= CONFIG_USERS, f"modules importing lightloop.config: {sorted(users - CONFIG_USERS)}"


def test_no_lower_layer_imports_the_station():
    allowed = {"station", "benches", "bench", "cli", "calibrate_cli", "emulate_cli", "sweep", "safe_cli"}
    bad = {mod for mod, deps in _graph().items()
           if _layer(mod) not in allowed and any(_layer(d) == "station" for d in deps)}
    assert not bad, f"lower layers importing lightloop.station: {sorted(bad)}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_planted_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_module_over_the_size_limit(mod):
    n = len(MODULES[mod].read_text().splitlines())
    assert n <= MAX_LINES, f"{mod}: {n} lines (limit {MAX_LINES}); split it into rooms by concern"


def _fresh_modules(code: str) -> list[str]:
    """lightloop.* modules loaded after running `code` in a fresh interpreter."""
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('lightloop'))))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_station_loads_no_simulator_code():
    loaded = _fresh_modules("import lightloop.station, lightloop.station.adapters.slm, lightloop.station.adapters.dmd, "
                            "lightloop.station.adapters.qontrol_heater")
    assert "lightloop.station" in loaded
    assert not [m for m in loaded if m.startswith(("lightloop.simulators", "lightloop.training",
                                                   "lightloop.calibration", "lightloop.benches"))]


REAL_CONFIGS = [("real_free_space.yaml", 64, 10, "lightloop.benches.free_space"),
                ("real_integrated_chip.yaml", 2, 2, "lightloop.benches.integrated_chip")]


@pytest.mark.parametrize("name,n_in,n_out,bench", REAL_CONFIGS)
def test_a_real_instrument_config_loads_no_simulator_code(name, n_in, n_out, bench):
    loaded = _fresh_modules("from lightloop.config import load_config\n"
                            f"cfg = load_config('lab_configs/{name}')\n"
                            "assert cfg.instruments and cfg.emulator is None")
    assert "lightloop.station" in loaded and bench in loaded
    assert not [m for m in loaded if m.startswith("lightloop.simulators")]


def test_docstrings_cite_the_design_document_in_the_repository():
    assert (REPO / "docs" / "architecture.md").is_file()
    stale = [mod for mod, path in MODULES.items() if "DESIGN.md" in path.read_text()]
    assert not stale, f"modules citing DESIGN.md (not in the repository): {stale}"


#: the only modules that may read a twin's hidden truth (to grade a calibration routine)
TRUTH_READERS = {"lightloop.calibration.report", "lightloop.calibration.chip_report"}


def test_calibration_routines_never_touch_the_twin():
    readers = set()
    for mod, path in MODULES.items():
        if _layer(mod) != "calibration":
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.Attribute) and n.attr == "emulator" for n in ast.walk(tree)) or \
                any(isinstance(n, ast.Constant) and n.value == "emulator" for n in ast.walk(tree)):
            readers.add(mod)
    assert readers <= TRUTH_READERS, f"calibration modules reading the twin: {sorted(readers - TRUTH_READERS)}"
    assert TRUTH_READERS <= set(MODULES)


@pytest.mark.parametrize("name,n_in,n_out,bench", REAL_CONFIGS)
def test_building_a_real_instrument_bench_loads_no_simulator_code(tmp_path, name, n_in, n_out, bench):
    """A real config, its addresses pointed at a closed loopback port: the build tries the instruments, fails
    with one clear error, and no simulator module was ever imported."""
    import yaml

    data = yaml.safe_load((REPO / "lab_configs" / name).read_text())
    for spec in data["instruments"].values():
        if spec["driver"] == "slm":
            spec["address"] = "127.0.0.1:1"
        elif spec["driver"] in ("qontrol_heater",):
            spec["address"] = "socket://127.0.0.1:1"
        elif spec["driver"] != "dmd":
            spec["address"], spec["visalib"] = "TCPIP::127.0.0.1::1::SOCKET", "@py"
            spec["timeout"] = "0.5 s"
        spec["reconnect"] = {"attempts": 0}
    cfg = tmp_path / "real_closed.yaml"
    cfg.write_text(yaml.safe_dump(data))
    loaded = _fresh_modules(
        "from lightloop.bench import build_processor\n"
        "from lightloop.config import load_config\n"
        "from lightloop.errors import LightloopError\n"
        f"cfg = load_config({str(cfg)!r})\n"
        "try:\n"
        f"    build_processor(cfg, {n_in}, {n_out})\n"
        "    raise SystemExit('built a bench on a closed port')\n"
        "except LightloopError as exc:\n"
        "    assert 'instruments.' in str(exc), exc\n")
    assert "lightloop.station._station" in loaded and bench in loaded
    assert not [m for m in loaded if m.startswith("lightloop.simulators")]


def test_lightloop_safe_on_a_real_instrument_config_loads_no_simulator_code(tmp_path):
    """`lightloop safe` (the kill -9 recovery) reaches the instruments through the drivers alone."""
    import yaml

    data = yaml.safe_load((REPO / "lab_configs" / "real_free_space.yaml").read_text())
    for spec in data["instruments"].values():
        if spec["driver"] == "slm":
            spec["address"] = "127.0.0.1:1"
        elif spec["driver"] == "qontrol_heater":
            spec["address"] = "socket://127.0.0.1:1"
        elif spec["driver"] != "dmd":
            spec["address"], spec["visalib"], spec["timeout"] = "TCPIP::127.0.0.1::1::SOCKET", "@py", "0.5 s"
    cfg = tmp_path / "real_closed.yaml"
    cfg.write_text(yaml.safe_dump(data))
    loaded = _fresh_modules(
        "from lightloop.cli import main\n"
        f"rc = main(['safe', '--config', {str(cfg)!r}, '--timeout', '0.5'])\n"
        "assert rc == 1, rc\n")
    assert "lightloop.safe_cli" in loaded and "lightloop.station._safe" in loaded
    assert not [m for m in loaded if m.startswith("lightloop.simulators")]
