"""The `lightloop` command end to end: the default run, JSON summary, and one-line errors on bad input."""

import gzip
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, mnist_dir


def run(*args, env=None, timeout=300):
    e = {**os.environ, "LIGHTLOOP_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lightloop", *args], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=REPO)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lightloop: error:")
    for f in fragments:
        assert f in lines[0], lines[0]


def test_default_run_trains_the_simulated_bench_on_digits(tmp_path):
    p = run("train", "--json", "--out", str(tmp_path / "run"))
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout.strip().splitlines()[-1])
    for key in ("test_accuracy", "best_test_accuracy", "epochs", "mean_epoch_seconds", "samples_per_second",
                "gradient", "optical_depth", "hidden"):
        assert key in s
    assert s["gradient"] == "pump_probe" and s["dataset"] == "digits" and s["epochs"] == 15 and s["loss"] == "mse"
    assert s["best_test_accuracy"] >= 0.90
    assert s["optical_depth"] == pytest.approx(10.0, rel=1e-6)
    assert (tmp_path / "run" / "learning_curve.png").exists()


def test_overrides_reach_the_bench(tmp_path):
    p = run("train", "--json", "--no-progress", "--dataset", "iris", "--hidden", "6", "--optical-depth", "3",
            "--gradient", "exact", "--epochs", "2", "--ideal", "--lr", "0.02", "--loss", "cross_entropy",
            "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout.strip().splitlines()[-1])
    assert s["hidden"] == [6] and s["layer_sizes"] == [4, 6, 3] and s["epochs"] == 2
    assert s["gradient"] == "exact" and s["optical_depth"] == pytest.approx(3.0)
    assert s["loss"] == "cross_entropy"
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train_loss"] > 0.9  # softmax-CE of a near-chance 3-class net (~ln 3 = 1.1); MSE gives ~0.5


def test_negative_optical_depth():
    assert_one_line_error(run("train", "--optical-depth", "-1"), "--optical-depth", "a0 >= 0")


def test_unknown_gradient():
    assert_one_line_error(run("train", "--gradient", "telepathy"), "--gradient", "unknown gradient 'telepathy'; expected one of")


def test_unknown_config_key(tmp_path):
    cfg = (REPO / "lab_configs" / "free_space_sa.yaml").read_text().replace("  probe_field: 0.1",
                                                                           "  probe_field: 0.1\n  prob_feild: 2")
    f = tmp_path / "bad.yaml"
    f.write_text(cfg)
    assert_one_line_error(run("train", "--config", str(f)), str(f), "processor.prob_feild", "unknown key")


def test_config_value_out_of_range(tmp_path):
    cfg = (REPO / "lab_configs" / "free_space_sa.yaml").read_text().replace("optical_depth: 10.0",
                                                                           "optical_depth: -4")
    f = tmp_path / "neg.yaml"
    f.write_text(cfg)
    assert_one_line_error(run("train", "--config", str(f)), "processor.optical_depth", "greater than or equal to 0")


def test_missing_config_and_bad_yaml(tmp_path):
    assert_one_line_error(run("train", "--config", str(tmp_path / "nope.yaml")), "nope.yaml: config file not found")
    f = tmp_path / "broken.yaml"
    f.write_text("bench: [unclosed\n")
    assert_one_line_error(run("train", "--config", str(f)), "broken.yaml: invalid YAML")


def _copy_mnist(tmp_path):
    src = mnist_dir()
    if src is None:
        pytest.skip("MNIST not found (set LIGHTLOOP_DATA_DIR)")
    for f in src.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


def test_missing_dataset_file(tmp_path):
    d = _copy_mnist(tmp_path)
    (d / "train-labels-idx1-ubyte.gz").unlink()
    assert_one_line_error(run("train", "--dataset", "mnist", "--data-dir", str(d)),
                          "train-labels-idx1-ubyte.gz: file missing")


def test_wrong_checksum(tmp_path):
    d = _copy_mnist(tmp_path)
    p = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    p.write_bytes(gzip.compress(bytes(raw)))
    assert_one_line_error(run("train", "--dataset", "mnist", "--data-dir", str(d)),
                          "t10k-labels-idx1-ubyte.gz: SHA-256 mismatch")


def test_corrupt_dataset_file(tmp_path):
    d = _copy_mnist(tmp_path)
    (d / "SHA256SUMS").unlink()
    (d / "MD5SUMS").unlink(missing_ok=True)
    bad = d / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:5000])
    p = run("train", "--dataset", "mnist", "--data-dir", str(d))
    assert_one_line_error(p, "t10k-images-idx3-ubyte.gz")


def test_bad_cli_values_are_rejected_by_argparse():
    p = run("train", "--epochs", "0")
    assert p.returncode == 2 and "expected a positive integer" in p.stderr


def test_ideal_and_realistic_exclude_each_other():
    p = run("train", "--ideal", "--realistic")
    assert p.returncode == 2 and "not allowed with argument" in p.stderr


def test_version_names_lightloop_and_its_stack(capsys):
    import lightloop
    from lightloop.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"lightloop {lightloop.__version__} (python ") and "numpy" in out and "qcodes" in out


def test_help_shows_defaults_or_where_they_come_from(capsys):
    from lightloop.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: the config's training.epochs)" in text and "(default: the config's training.lr)" in text
    with pytest.raises(SystemExit):
        main(["emulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--fault-rate" in text
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    assert "(default:" in capsys.readouterr().out


def test_epoch_lines_off_a_terminal_and_log_level(tmp_path, capsys):
    """Off a terminal (capsys) every epoch is one `lightloop: epoch ...` line on stderr; --log-level WARNING hides them."""
    from lightloop.cli import main

    base = ["train", "--config", str(REPO / "lab_configs" / "digital_mlp.yaml"), "--dataset", "iris", "--hidden", "4",
            "--epochs", "2", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("lightloop: epoch ")]
    assert [ln.split(":")[1].strip() for ln in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "test loss" in lines[0] and "accuracy" in lines[0]
    assert main([*base, "--out", str(tmp_path / "b"), "--log-level", "WARNING"]) == 0
    assert "lightloop: epoch" not in capsys.readouterr().err
    assert "epoch 2/2" in (tmp_path / "b" / "run.log").read_text()      # the run's log file keeps every line
