"""Figures (issue 14 item 9): library code never changes the user's matplotlib backend; the learning curve shows
train and test, loss and accuracy, the best epoch and the settings; a sweep heatmap does not stretch seed noise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def test_no_library_module_selects_a_backend_or_uses_pyplot():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "lightloop").rglob("*.py")
                 if "matplotlib.use(" in p.read_text() or "pyplot" in p.read_text()]
    assert not offenders, offenders


def test_plots_leave_the_callers_backend_alone(tmp_path):
    code = f"""
import matplotlib
matplotlib.use("svg")
from lightloop.training.reporting import plot_learning_curve
from lightloop.calibration.base import CalibrationResult
from lightloop.calibration.runner import save_plots
hist = [dict(epoch=e, train_accuracy=0.5 + 0.1 * e, test_accuracy=0.45 + 0.1 * e, train_loss=1.0 / e,
             test_loss=1.2 / e) for e in (1, 2, 3)]
plot_learning_curve(hist, {str(tmp_path / 'curve.png')!r}, "bench / data / method", "adam lr 0.01")
res = CalibrationResult(routine="r", version="1")
res.plots.append(("fit", lambda fig: fig.subplots().plot([0, 1], [1, 0])))
save_plots(res, {str(tmp_path / 'plots')!r})
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "curve.png").stat().st_size > 10_000 and (tmp_path / "plots" / "fit.png").is_file()


def test_heatmap_colour_scale_is_not_stretched_by_seed_noise():
    from lightloop.sweep_plots import colour_limits

    mean = np.array([[0.950, 0.951, 0.952]])
    std = np.array([[0.01, 0.01, 0.01]])
    lo, hi, noise = colour_limits(mean, std)
    assert noise == 0.01 and hi - lo >= 0.04 - 1e-12           # +-2 std: three equal-within-noise cells look alike
    lo, hi, _ = colour_limits(np.array([[0.5, 0.9]]), np.array([[0.01, 0.01]]))
    assert (lo, hi) == (0.5, 0.9)                              # a real effect keeps the full contrast
