"""The `lightloop` command: train (and, as the bench grows, emulate, calibrate, sweep)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn, Sequence

from lightloop.errors import LightloopError

__all__ = ["main", "default_config_path", "run_training", "version_text", "configure_logging", "LOG_LEVELS"]


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


def _bounded(kind: str, lo: float, hi: float, lo_open: bool = False) -> Any:
    """argparse type: a finite number in [lo, hi] ((lo, hi] with lo_open)."""
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or v < lo or (lo_open and v == lo) or v > hi:
            raise argparse.ArgumentTypeError(f"expected {kind} {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, "
                                             f"got {s!r}")
        return v
    return parse


def int_in(kind: str, lo: int, hi: int) -> Any:
    """argparse type: an integer in lo..hi (what `kind` names)."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = lo - 1
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected {kind} in {lo}..{hi}, got {s!r}")
        return v
    return parse


def existing_dir(s: str) -> Path:
    """argparse type: an existing directory (dataset files are read from it)."""
    path = Path(s).expanduser()
    if not s.strip() or not path.is_dir():
        what = "not a directory" if path.exists() else "no such directory"
        raise argparse.ArgumentTypeError(f"{s!r}: {what}; expected an existing directory holding dataset files")
    return path


def writable_file(s: str) -> Path:
    """argparse type: a file path to write: not a directory, its folder existing (or creatable) and writable."""
    path = Path(s).expanduser()
    if not s.strip() or path.is_dir() or s.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{s!r} is a directory or empty; expected a file path to write")
    writable_dir(str(path.parent))
    return path


def _seed(s: str) -> int:
    """argparse type: a seed in 0..SEED_MAX."""
    from lightloop.schema import SEED_MAX

    try:
        v = int(s)
    except ValueError:
        v = -1
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected a seed: an integer in 0..{SEED_MAX}, got {s!r}")
    return v


def _layer_size(s: str) -> int:
    """argparse type: a hidden layer size in 1..10000 neurons."""
    v = _positive_int(s)
    if v > 10_000:
        raise argparse.ArgumentTypeError(f"expected a layer size in 1..10000, got {s!r}")
    return v


def _learning_rate(s: str) -> float:
    """argparse type: a learning rate in (0, 1000]; above LR_WARN a one-line warning."""
    from lightloop.schema import warn_if_surely_a_mistake

    v = _bounded("a learning rate", 0.0, 1e3, lo_open=True)(s)
    warn_if_surely_a_mistake("--lr", lr=v)
    return v


def _init_scale(s: str) -> float:
    """argparse type: a std of the initial weights in (0, 1000]; above INIT_SCALE_WARN a one-line warning."""
    from lightloop.schema import warn_if_surely_a_mistake

    v = _bounded("a std of the initial weights", 0.0, 1e3, lo_open=True)(s)
    warn_if_surely_a_mistake("--init-scale", init_scale=v)
    return v


def _registered(kind: str) -> Any:
    """argparse type: a registered dataset or gradient-method name."""
    def parse(s: str) -> str:
        from lightloop.plugins import import_plugins
        from lightloop.training import datasets, gradients

        import_plugins(gradients.GRADIENT_PLUGINS)
        names = sorted(datasets.dataset_names() if kind == "dataset" else gradients.gradient_names())
        if s not in names:
            raise argparse.ArgumentTypeError(f"unknown {kind} {s!r}; expected one of: {', '.join(names)}")
        return s
    return parse


def writable_dir(s: str) -> Path:
    """argparse type: a directory path that is a directory or can be created (probed) where it would go."""
    import tempfile

    path = Path(s).expanduser()
    if not s.strip():
        raise argparse.ArgumentTypeError("expected a directory path, got ''")
    try:
        path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:   # a symlink loop
        raise argparse.ArgumentTypeError(f"{s!r}: {exc}; expected a directory path without a symlink loop") from None
    if path.is_symlink() and not path.exists():
        raise argparse.ArgumentTypeError(f"{s!r} is a dangling or looping symlink; expected a directory (or a new path)")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{s!r} is an existing file; expected a directory (or a new path)")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{str(parent)!r} is a file; expected {s!r} to be creatable as a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lightloop-probe-", dir=parent))
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{str(parent)!r} is not writable ({exc.strerror}); expected a writable "
                                         "directory") from None
    return path


class _OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are ONE stderr line (`lightloop: error: ...`, exit 2)."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.replace("(choose from", "(expected one of").split())
        if "expected" not in message:
            message += f"; expected the arguments listed by `{self.prog} --help`"
        self.exit(2, f"lightloop: error: {self.prog}: {message}\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help with each option's default where it has a fixed one (None: taken from the config or computed)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS or "default" in text.lower()
                or action.option_strings == [] or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str | None = None) -> None:
    """The `lightloop` logger's stderr handler: `level`, else INFO off a terminal (per-epoch lines) and WARNING on
    one (progress bars show there). Replaces the handler a previous call installed (in-process callers, tests)."""
    import logging

    logger = logging.getLogger("lightloop")
    logger.setLevel(logging.DEBUG)          # handlers decide; a run's log file takes everything
    for h in [h for h in logger.handlers if getattr(h, "_lightloop_stderr", False)]:
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._lightloop_stderr = True        # type: ignore[attr-defined]
    handler.setLevel(level or ("WARNING" if sys.stderr.isatty() else "INFO"))
    handler.setFormatter(logging.Formatter("lightloop: %(message)s"))
    logger.addHandler(handler)


def version_text() -> str:
    """lightloop's version and the versions of the stack it runs on."""
    import platform
    from importlib import metadata

    def ver(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    from lightloop import __version__

    return (f"lightloop {__version__} (python {platform.python_version()}, numpy {ver('numpy')}, "
            f"qcodes {ver('qcodes')}, pyvisa {ver('pyvisa')})")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network on a (simulated or real) bench",
                       description="On-hardware training: program, forward, error, backward, gradient, update.")
    p.add_argument("--config", type=Path, default=None, help="lab config YAML (default: simulated free-space SA bench)")
    p.add_argument("--dataset", type=_registered("dataset"), default=None, help="digits | iris | mnist (and kinds' own sets)")
    p.add_argument("--data-dir", type=existing_dir, default=None, help="directory holding dataset files (MNIST IDX)")
    p.add_argument("--hidden", type=_layer_size, nargs="+", default=None, metavar="N", help="hidden layer sizes")
    p.add_argument("--optical-depth", type=_bounded("a0", 0.0, 1e6), default=None, metavar="A0", help="vapor-cell optical depth a0 >= 0")
    p.add_argument("--gradient", type=_registered("gradient"), default=None, help="exact | pump_probe | finite_difference | ...")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=None)
    p.add_argument("--loss", choices=["mse", "cross_entropy"], default=None,
                   help="output error: mse (delta = z - t, default) or cross_entropy (delta = softmax(z) - t)")
    p.add_argument("--epochs", type=int_in("a positive integer (epochs)", 1, 1_000_000), default=None)
    p.add_argument("--batch-size", type=int_in("a positive integer (batch size)", 1, 10_000_000), default=None)
    p.add_argument("--lr", type=_learning_rate, default=None)
    p.add_argument("--init-scale", type=_init_scale, default=None, help="std of the initial weights")
    p.add_argument("--seed", type=_seed, default=None)
    twin = p.add_mutually_exclusive_group()
    twin.add_argument("--ideal", action="store_true", help="switch every twin imperfection off")
    twin.add_argument("--realistic", action="store_true",
                      help="switch the twin's imperfections on even where the config says ideal")
    p.add_argument("--out", type=writable_dir, default=None, help="run directory (checkpoints, metrics.jsonl, PNG)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--accept-change", action="store_true",
                   help="with --resume: continue although settings differ from run.json (recorded there)")
    p.add_argument("--json", action="store_true", help="print one JSON summary as the last stdout line")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--gradient-option", action="append", default=None, metavar="KEY=VALUE",
                   help="option of the gradient method, e.g. q=0.1 one_bit=true (repeatable)")
    p.add_argument("--calibration-store", type=writable_dir, default=None, metavar="DIR",
                   help="calibration store whose newest matching records the bench loads (default: the config's "
                        "processor.calibration.store, else $LIGHTLOOP_CALIBRATION_STORE or ./runs/calibration, "
                        "where `lightloop calibrate` writes)")
    from_config = {"dataset": "training.dataset", "gradient": "training.gradient", "optimizer": "training.optimizer",
                   "loss": "training.loss", "epochs": "training.epochs", "batch_size": "training.batch_size",
                   "lr": "training.lr", "init_scale": "training.init_scale", "seed": "training.seed",
                   "hidden": "processor.hidden", "optical_depth": "processor.optical_depth",
                   "out": "a new runs/train-<time>-<id> folder"}
    for action in p._actions:
        if action.dest in from_config and action.default is None:
            where = from_config[action.dest]
            source = where if " " in where else f"the config's {where}"
            action.help = f"{action.help or ''} (default: {source})".strip()


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    """Build the bench from the config, train, return the JSON summary."""
    from lightloop.bench import BuildOverrides, build_processor
    from lightloop.config import load_config
    from lightloop.errors import ConfigError
    from lightloop.training.datasets import load_dataset
    from lightloop.training.gradients import make_gradient
    from lightloop.training.optimizers import make_optimizer
    from lightloop.training.trainer import Trainer, TrainSettings

    overrides = dict(getattr(args, "config_overrides", None) or {})   # dotted config paths (sweeps)
    cfg = load_config(args.config or default_config_path(), overrides)
    if getattr(args, "calibration_store", None) is not None:
        cal = getattr(cfg.processor, "calibration", None)
        if cal is None:
            raise ConfigError(f"--calibration-store: a {cfg.processor.kind!r} bench has no calibration routines; "
                              "expected it only with a bench that calibrates (free_space, integrated_chip)")
        cal.store = str(Path(args.calibration_store).expanduser().absolute())
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
        raise ConfigError(f"--gradient-option {sorted(options)}: not accepted by gradient '{gradient}' ({exc}); "
                          "expected only that method's options") from None
    except ConfigError as exc:  # a value the method refuses (config options were checked when the config loaded)
        raise ConfigError(f"--gradient-option: {exc}" + ("" if "expected" in str(exc) else
                                                          "; expected a value the method accepts")) from None
    optimizer = make_optimizer(args.optimizer or t.optimizer, lr)
    data = load_dataset(dataset, args.data_dir)
    ideal = True if args.ideal else (False if getattr(args, "realistic", False) else None)
    ov = BuildOverrides(hidden=args.hidden, ideal=ideal, optical_depth=args.optical_depth)
    settings = TrainSettings(epochs=args.epochs or t.epochs, batch_size=args.batch_size or t.batch_size,
                             loss=getattr(args, "loss", None) or t.loss,
                             seed=t.seed if args.seed is None else args.seed, init_scale=init_scale,
                             progress=not args.no_progress and sys.stderr.isatty(),
                             plot=getattr(args, "run_plots", True),                     # sweeps may turn these off
                             checkpoint_seconds=getattr(args, "checkpoint_seconds", 0.0))
    from lightloop.training.run_folder import RunFolder, file_digest, unique_run_dir

    config_path = Path(args.config or default_config_path())
    # what a --resume must match (run.json); --epochs may differ: continuing to more epochs is what resume is for
    fingerprint = {"config_sha256": file_digest(config_path), **({"config_overrides": {k: str(v) for k, v in
                                                                  sorted(overrides.items())}} if overrides else {}),
                   "dataset": dataset, "gradient": gradient,
                   "gradient_options": options, "loss": settings.loss, "optimizer": args.optimizer or t.optimizer,
                   "lr": lr, "batch_size": settings.batch_size, "seed": settings.seed, "init_scale": init_scale,
                   **_effective_build(cfg, args, ideal)}
    if getattr(args, "accept_change", False) and not args.resume:
        raise ConfigError("--accept-change: given without --resume; expected it only with --resume --out RUN")
    if args.resume and args.out is None:
        raise ConfigError("--resume: expected --out naming the run folder to continue")
    out = args.out or unique_run_dir(prefix="train")
    # locked before any instrument is touched: a second run on this folder fails here, at once
    from lightloop.records import RunRecording   # provenance, log file and QCoDeS DataSet of the run

    with RunFolder(out, resume=args.resume, accept_change=getattr(args, "accept_change", False)) as run, \
            RunRecording(run.path, "train", cfg=cfg, config_path=config_path, args=args,
                         settings={**fingerprint, "epochs": settings.epochs}) as record:
        run.verify(fingerprint, info={"config": str(config_path.resolve()), "argv": sys.argv[1:]})
        proc = build_processor(cfg, data.n_features, data.n_classes, ov)
        with proc:   # from here on every ending leaves the bench in its safe state
            record.attach(proc)   # station snapshot, calibration records loaded, per-step losses
            if getattr(args, "check", False):   # bench error budget first (lightloop.check); refuses on a fail
                from lightloop.check import gate_check

                gate_check(proc, cfg)
            if cfg.feedback is not None and getattr(proc, "feedback_channel", None) is None:
                from lightloop.benches.digital import attach_photon_feedback

                attach_photon_feedback(proc, cfg.feedback, seed=settings.seed)
            trainer = Trainer(proc, method, optimizer, settings, run=run,
                              tag=f"{cfg.bench} / {dataset} / {gradient}")
            result = trainer.fit(data, resume=args.resume)
    summary = {
        "bench": cfg.bench, "dataset": dataset, "gradient": gradient, **result.summary(),
        "layer_sizes": list(proc.layer_sizes), "hidden": list(proc.layer_sizes[1:-1]),
        "batch_size": settings.batch_size, "lr": lr, "loss": settings.loss, "seed": settings.seed, "out": str(out),
        "gradient_options": options,
    }
    summary.update(getattr(proc, "summary_fields", lambda: {})())
    record.finish(summary, result.history)
    return summary


def _effective_build(cfg: Any, args: argparse.Namespace, ideal: bool | None) -> dict[str, Any]:
    """Hidden sizes, ideal/realistic and optical depth as the run uses them (a flag equal to the config is no change)."""
    proc = cfg.processor
    twin = getattr(proc, "twin", None)
    hidden = args.hidden if args.hidden is not None else getattr(proc, "hidden", None)
    return {"hidden": list(hidden) if hidden is not None else None,
            "ideal": ideal if ideal is not None else getattr(twin, "ideal", None),
            "optical_depth": args.optical_depth if args.optical_depth is not None else getattr(proc, "optical_depth", None)}


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
CLI_PLUGINS = ("lightloop.calibrate_cli", "lightloop.emulate_cli", "lightloop.sweep", "lightloop.safe_cli",
               "lightloop.runs_cli", "lightloop.check_cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    from lightloop.plugins import import_plugins

    parser = _OneLineParser(prog="lightloop", description="Hardware-in-the-loop training of photonic networks.")
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    import_plugins(CLI_PLUGINS)
    for name in CLI_PLUGINS:
        mod = sys.modules.get(name)
        if mod is not None:
            mod.register(sub)
    for command in sub.choices.values():
        command.formatter_class = _HelpFormatter
        command.add_argument("--log-level", type=str.upper, default=None, choices=LOG_LEVELS,
                             help="stderr log level (default: INFO when stderr is not a terminal - one line per "
                                  "epoch -, WARNING on a terminal, where progress bars show instead)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    from lightloop.shutdown import Terminated, handle_signals

    try:
        with handle_signals():   # SIGTERM/SIGHUP/SIGINT unwind through the safe-state code like any error
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
        print(f"lightloop: error: {' '.join(str(exc).split())}", file=sys.stderr)   # one line, whatever the message
        return 2
    except KeyboardInterrupt:
        print("lightloop: interrupted; devices left in their safe state", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"lightloop: {exc}; devices left in their safe state", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug, not bad input: one line, exit 1, the traceback kept in a file
        import tempfile
        import traceback

        fd, tb_path = tempfile.mkstemp(prefix="lightloop-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(traceback.format_exc())
        msg = " ".join(str(exc).split())[:300]
        print(f"lightloop: internal error: {type(exc).__name__}: {msg} (please report; traceback in {tb_path})",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
