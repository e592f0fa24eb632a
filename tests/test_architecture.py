"""The import graph points one way (DESIGN.md): training -> hal <- simulators, hal <- drivers, calibration -> hal.

Checked statically on every module, including imports inside functions.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "lightloop"

#: layer -> layers it must never import
FORBIDDEN = {
    "training": {"simulators", "drivers", "calibration", "benches"},
    "hal": {"simulators", "drivers", "training", "calibration", "benches"},
    "calibration": {"simulators", "drivers", "training", "benches"},
    "simulators": {"drivers", "training", "calibration", "benches"},
    "drivers": {"simulators", "training", "calibration", "hal", "physics", "benches"},
    "physics": {"simulators", "drivers", "training", "calibration", "hal", "benches"},
}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if p.relative_to(PKG).parts[0] in FORBIDDEN)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_layer_crossing(path):
    layer = path.relative_to(PKG).parts[0]
    bad = [(ln, mod) for ln, mod in _imports(path)
           if mod.startswith("lightloop.") and mod.split(".")[1] in FORBIDDEN[layer]]
    # reports that reveal a twin's truth are the one sanctioned exception for calibration
    assert not bad, f"{path.relative_to(PKG)} ({layer}) imports {bad}"
