"""The `lightloop` command: train (and, as the bench grows, emulate, calibrate, sweep)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from lightloop.errors import LightloopError

__all__ = ["main", "default_config_path", "run_training"]


def default_config_path() -> Path:
    """lab_configs/free_space_sa.yaml of the source tree, else the copy shipped in the package."""
    here = Path(__file__).resolve().parent / "lab_configs" / "free_space_sa.yaml"
    if here.is_file():
        return here
    return Path(str(resources.files("lightloop").joinpath("lab_configs/free_space_sa.yaml")))


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return v


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network on a (simulated or real) bench",
                       description="On-hardware training: program, forward, error, backward, gradient, update.")
    p.add_argument("--config", type=Path, default=None, help="lab config YAML (default: simulated free-space SA bench)")
    p.add_argument("--dataset", default=None, help="digits | iris | mnist (and kinds' own sets)")
    p.add_argument("--data-dir", type=Path, default=None, help="directory holding dataset files (MNIST IDX)")
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=None, metavar="N", help="hidden layer sizes")
    p.add_argument("--optical-depth", type=_float, default=None, metavar="A0", help="vapor-cell optical depth a0 >= 0")
    p.add_argument("--gradient", default=None, help="exact | pump_probe | finite_difference | ...")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=None)
    p.add_argument("--loss", choices=["mse", "cross_entropy"], default=None,
                   help="output error: mse (delta = z - t, default) or cross_entropy (delta = softmax(z) - t)")
    p.add_argument("--epochs", type=_positive_int, default=None)
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--lr", type=_float, default=None)
    p.add_argument("--init-scale", type=_float, default=None, help="std of the initial weights")
    p.add_argument("--seed", type=int, default=None)
    twin = p.add_mutually_exclusive_group()
    twin.add_argument("--ideal", action="store_true", help="switch every twin imperfection off")
    twin.add_argument("--realistic", action="store_true",
                      help="switch the twin's imperfections on even where the config says ideal")
    p.add_argument("--out", type=Path, default=None, help="run directory (checkpoints, metrics.jsonl, PNG)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--json", action="store_true", help="print one JSON summary as the last stdout line")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--gradient-option", action="append", default=None, metavar="KEY=VALUE",
                   help="option of the gradient method, e.g. q=0.1 one_bit=true (repeatable)")


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    """Build the bench from the config, train, return the JSON summary."""
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.config import load_config
    from lightloop.errors import ConfigError
    from lightloop.training.datasets import load_dataset
    from lightloop.training.gradients import make_gradient
    from lightloop.training.optimizers import make_optimizer
    from lightloop.training.trainer import Trainer, TrainSettings

    cfg = load_config(args.config or default_config_path())
    t = cfg.training
    dataset = args.dataset or t.dataset
    gradient = args.gradient or t.gradient
    lr = args.lr if args.lr is not None else t.lr
    if lr <= 0:
        raise ConfigError(f"--lr: expected a positive learning rate, got {lr}")
    init_scale = args.init_scale if args.init_scale is not None else t.init_scale
    if init_scale <= 0:
        raise ConfigError(f"--init-scale: expected a positive std, got {init_scale}")
    options = {**(t.gradient_options if gradient == t.gradient else {}),
               **parse_key_values(getattr(args, "gradient_option", None) or [], "--gradient-option")}
    try:
        method = make_gradient(gradient, **options)
    except TypeError as exc:
        raise ConfigError(f"gradient options {sorted(options)}: not accepted by gradient '{gradient}' ({exc})") from None
    optimizer = make_optimizer(args.optimizer or t.optimizer, lr)
    data = load_dataset(dataset, args.data_dir)
    ideal = True if args.ideal else (False if getattr(args, "realistic", False) else None)
    ov = BuildOverrides(hidden=args.hidden, ideal=ideal, optical_depth=args.optical_depth)
    settings = TrainSettings(epochs=args.epochs or t.epochs, batch_size=args.batch_size or t.batch_size,
                             loss=getattr(args, "loss", None) or t.loss,
                             seed=t.seed if args.seed is None else args.seed, init_scale=init_scale,
                             progress=not args.no_progress and sys.stderr.isatty())
    out = args.out or Path("runs") / f"train-{time.strftime('%Y%m%d-%H%M%S')}"
    proc = build_processor(cfg, data.n_features, data.n_classes, ov)
    if cfg.feedback is not None and getattr(proc, "feedback_channel", None) is None:
        from lightloop.benches.digital import attach_photon_feedback

        attach_photon_feedback(proc, cfg.feedback, seed=settings.seed)
    with proc:
        trainer = Trainer(proc, method, optimizer, settings, out_dir=out,
                          tag=f"{cfg.bench} / {dataset} / {gradient}")
        result = trainer.fit(data, resume=args.resume)
    summary = {
        "bench": cfg.bench, "dataset": dataset, "gradient": gradient, **result.summary(),
        "layer_sizes": list(proc.layer_sizes), "hidden": list(proc.layer_sizes[1:-1]),
        "batch_size": settings.batch_size, "lr": lr, "loss": settings.loss, "seed": settings.seed, "out": str(out),
        "gradient_options": options,
    }
    summary.update(getattr(proc, "summary_fields", lambda: {})())
    return summary


def parse_key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """KEY=VALUE strings -> dict; values become bool (true/false), int, float or else str."""
    from lightloop.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ConfigError(f"{flag}: expected KEY=VALUE, got {item!r}")
        out[key] = parse_scalar(raw)
    return out


def parse_scalar(raw: str) -> bool | int | float | str:
    """'true'/'false' -> bool, '3' -> int, '1e-4' -> float, anything else stays a string."""
    text = raw.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


#: modules adding subcommands: each has register(subparsers) that calls set_defaults(handler=fn),
#: fn(args) -> int exit code (errors raised as LightloopError are printed in one line by main)
CLI_PLUGINS = ("lightloop.calibrate_cli", "lightloop.emulate_cli", "lightloop.sweep")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from lightloop.plugins import import_plugins

    parser = argparse.ArgumentParser(prog="lightloop", description="Hardware-in-the-loop training of photonic networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    import_plugins(CLI_PLUGINS)
    for name in CLI_PLUGINS:
        mod = sys.modules.get(name)
        if mod is not None:
            mod.register(sub)
    args = parser.parse_args(argv)
    try:
        if getattr(args, "handler", None) is not None:
            return int(args.handler(args))
        if args.command == "train":
            summary = run_training(args)
            if args.json:
                print(json.dumps(summary))
            else:
                print(f"test accuracy {summary['test_accuracy']:.4f} (best {summary['best_test_accuracy']:.4f} "
                      f"at epoch {summary['best_epoch']}), {summary['mean_epoch_seconds']:.2f} s/epoch; "
                      f"run in {summary['out']}")
        return 0
    except LightloopError as exc:
        print(f"lightloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lightloop: interrupted; devices left in their safe state", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
