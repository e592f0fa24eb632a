"""The on-chip training loop (docs/architecture.md): program, forward, output error, backward, gradient, update."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from lightloop.errors import LightloopError, RunFolderError
from lightloop.hal.processor import OpticalProcessor
from lightloop.training.checkpoint import load_training_checkpoint, save_checkpoint
from lightloop.training.datasets import Dataset, one_hot
from lightloop.training.gradients import GradientMethod
from lightloop.training.losses import Loss, MSELoss, make_loss
from lightloop.training.optimizers import Optimizer
from lightloop.training.reporting import MetricsLog, plot_learning_curve
from lightloop.training.run_folder import RunFolder

_log = logging.getLogger("lightloop.training")
_clock = time.monotonic   # the checkpoint cadence's clock (s); tests replace it

__all__ = ["TrainSettings", "TrainResult", "Trainer", "evaluate", "predict", "targets_for", "classes_of"]


@dataclass
class TrainSettings:
    """Loop settings: epochs, batch size, seed (shuffling and init), init std of the parameters."""

    epochs: int = 10
    batch_size: int = 32
    loss: str = "mse"
    seed: int = 0
    init_scale: float = 0.1
    eval_batch_size: int = 1000
    progress: bool = True
    #: per-run learning-curve PNG (and the processor's own run figures) at the end of the run
    plot: bool = True
    #: checkpoint (checkpoint.npz, best.npz, metrics.jsonl fsync) after the first and last epoch of a fit and
    #: otherwise at most every this many wall seconds; 0: after every epoch. A killed run resumes from its last
    #: checkpoint and redoes the epochs since (a folder with results but no checkpoint could not be resumed).
    checkpoint_seconds: float = 0.0


@dataclass
class TrainResult:
    """Summary of a finished run."""

    test_accuracy: float
    best_test_accuracy: float
    best_epoch: int
    epochs: int
    mean_epoch_seconds: float
    samples_per_second: float
    measurements_per_step: float
    history: list[dict[str, Any]] = field(default_factory=list)
    params: list[NDArray] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no history, no arrays)."""
        d = asdict(self)
        d.pop("history")
        d.pop("params")
        pe = [h["prediction_error"] for h in self.history if h.get("prediction_error") is not None]
        if pe:   # the gradient method's model error (physics_aware): first / last epoch and run mean
            d["prediction_error"] = {"first": pe[0], "last": pe[-1], "mean": float(np.mean(pe))}
        return d


def targets_for(y: NDArray[np.integer], n_classes: int, n_out: int) -> NDArray[np.float32]:
    """Training targets (n, n_out): one-hot, or the class itself (0 or 1) for a binary task on a single output."""
    if n_out == 1 and n_classes == 2:
        return y.astype(np.float32)[:, None]
    return one_hot(y, n_classes)


def clip_in_place(p: NDArray, lo: float, hi: float) -> None:
    """np.clip(p, lo, hi, out=p), written only when some value lies outside or is NaN (two read-only passes tell)."""
    if p.size and not (lo <= p.min() and p.max() <= hi):
        np.clip(p, lo, hi, out=p)


def _no_state(method: Any) -> Callable[[Any], None]:
    """load_state_dict of a method without one: only an empty state fits."""
    def load(state: Any) -> None:
        if state:
            raise ValueError(f"{type(method).__name__} keeps no state; expected an empty object")
    return load


def classes_of(output: NDArray) -> NDArray[np.int64]:
    """Predicted classes of outputs (batch, n_out): argmax, or output >= 0.5 for a single output (binary)."""
    if output.shape[1] == 1:
        return (output[:, 0] >= 0.5).astype(np.int64)
    return output.argmax(1)


def predict(processor: OpticalProcessor, x: NDArray, y: NDArray, n_classes: int,
            batch_size: int = 1000, loss_fn: Loss | None = None) -> tuple[NDArray[np.int64], float]:
    """Predicted classes of the programmed processor on x, and the mean loss against y."""
    loss_fn = loss_fn or MSELoss()
    preds, loss = [], 0.0
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i: i + batch_size], y[i: i + batch_size]
        out = processor.forward(xb).output
        preds.append(classes_of(out))
        loss += loss_fn.value(out, targets_for(yb, n_classes, out.shape[1])) * xb.shape[0]
    return np.concatenate(preds), loss / x.shape[0]


def evaluate(processor: OpticalProcessor, x: NDArray, y: NDArray, n_classes: int,
             batch_size: int = 1000, loss_fn: Loss | None = None) -> tuple[float, float]:
    """(accuracy, loss) of the programmed processor on (x, y)."""
    pred, loss = predict(processor, x, y, n_classes, batch_size, loss_fn)
    return float(np.mean(pred == y)), loss


class Trainer:
    """Runs a gradient method on a processor with an optimizer; checkpoints every epoch (or every
    settings.checkpoint_seconds)."""

    def __init__(self, processor: OpticalProcessor, method: GradientMethod, optimizer: Optimizer,
                 settings: TrainSettings, out_dir: Path | str | None = None, tag: str = "",
                 hooks: Sequence[Callable[[dict[str, Any]], None]] = (),
                 eval_hooks: Sequence[Callable[[int, NDArray], None]] = (),
                 run: RunFolder | None = None, accept_change: bool = False):
        method.check(processor)
        method.loss = make_loss(settings.loss)
        self.processor, self.method, self.optimizer, self.settings = processor, method, optimizer, settings
        # the run folder: locked for the run, refused without resume if it holds results, fingerprint checked
        # on resume; a caller that opened (and locked) it already passes `run`, else fit() opens out_dir itself
        self.run = run
        self.out_dir = run.path if run is not None else (Path(out_dir) if out_dir else None)
        self.accept_change = accept_change
        self.tag = tag
        # called after every update with {epoch, step, global_step, loss, params}; a bench may attach its own
        # upkeep (e.g. scheduled re-calibration) as processor.step_hooks
        self.hooks = list(hooks) + list(getattr(processor, "step_hooks", ()))
        # called after every epoch's test evaluation with (epoch, predicted classes): per-sample analyses
        # without another acquisition (on a noisy bench an extra pass would also shift the noise stream)
        self.eval_hooks = list(eval_hooks)
        self.bounds = processor.parameter_bounds()

    # ---------------------------------------------------------------------------------------
    def _state(self, epoch: int, params: list[NDArray], rng: np.random.Generator,
               history: list[dict[str, Any]], best: dict[str, Any]) -> dict[str, Any]:
        state = {"epoch": epoch, "params": params, "optimizer": self.optimizer.state_dict(),
                 "rng": rng.bit_generator.state, "processor": self.processor.snapshot(),
                 "history": history, "best": best, "tag": self.tag}
        method_state = getattr(self.method, "state_dict", None)
        if method_state is not None:   # e.g. physics_aware's refined model and kept batches (exact resume)
            state["method"] = method_state()
        return state

    def fingerprint(self, data: Dataset) -> dict[str, Any]:
        """What a resume must match: data shape, layer sizes, gradient method, optimizer and loop settings."""
        s, opt = self.settings, self.optimizer
        return {"trainer": {
            "dataset": data.name, "n_train": int(data.x_train.shape[0]), "n_test": int(data.x_test.shape[0]),
            "n_features": int(data.n_features), "n_classes": int(data.n_classes),
            "parameter_shapes": [list(p) for p in self.processor.parameter_shapes()],
            "gradient_method": getattr(self.method, "name", type(self.method).__name__),
            "optimizer": type(opt).__name__, "lr": opt.lr,
            **{k: getattr(opt, k) for k in ("momentum", "b1", "b2", "eps") if hasattr(opt, k)},
            "loss": s.loss, "batch_size": s.batch_size, "seed": s.seed, "init_scale": s.init_scale}}

    def fit(self, data: Dataset, resume: bool = False) -> TrainResult:
        """Train for settings.epochs epochs (continuing from the checkpoint when resume is set)."""
        if self.run is not None:
            if resume != self.run.resume:
                raise RunFolderError(f"{self.run.path}: fit(resume={resume}) on a run folder opened with "
                                     f"resume={self.run.resume}")
            self.run.verify(self.fingerprint(data))
            return self._fit(data, resume)
        if self.out_dir is None:
            if resume:
                raise RunFolderError("resume: expected an output folder holding a checkpoint, got none")
            return self._fit(data, False)
        with RunFolder(self.out_dir, resume=resume, accept_change=self.accept_change) as run:
            run.verify(self.fingerprint(data))
            return self._fit(data, resume)

    def _fit(self, data: Dataset, resume: bool) -> TrainResult:
        s = self.settings
        rng = np.random.default_rng(s.seed)
        params = self.processor.init_parameters(rng, s.init_scale)
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"test_accuracy": -1.0, "epoch": 0}
        start = 1
        ckpt = self.out_dir / "checkpoint.npz" if self.out_dir else None
        log = MetricsLog(self.out_dir / "metrics.jsonl") if self.out_dir else None
        if resume and ckpt is not None:
            st = load_training_checkpoint(ckpt)
            if [tuple(p.shape) for p in st["params"]] != [tuple(p) for p in self.processor.parameter_shapes()]:
                raise RunFolderError(f"{ckpt}: params: checkpoint parameter shapes do not match this processor")
            params = [np.asarray(p, np.float32) for p in st["params"]]
            restores = [("optimizer", self.optimizer.load_state_dict), ("processor", self.processor.restore),
                        ("rng", lambda v: setattr(rng.bit_generator, "state", v))]
            if "method" in st:             # optional: checkpoints before the method state resume without it
                restores.append(("method", getattr(self.method, "load_state_dict", _no_state(self.method))))
            for key, restore in restores:
                try:
                    if key == "method" and not isinstance(st[key], dict):
                        raise TypeError(f"expected an object (the gradient method state), got {type(st[key]).__name__}")
                    restore(st[key])
                except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                    raise RunFolderError(f"{ckpt}: {key}: does not fit this run ({type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
            history, best, start = st["history"], st["best"], int(st["epoch"]) + 1
            if log:
                log.truncate_after(start - 1)
        targets = targets_for(data.y_train, data.n_classes, self.processor.layer_sizes[-1])
        n = data.x_train.shape[0]
        steps = (n + s.batch_size - 1) // s.batch_size
        if log:
            log.fsync = s.checkpoint_seconds <= 0      # with a cadence, lines reach the disk at each checkpoint
        last_save, best_params = _clock(), None
        try:
            for epoch in range(start, s.epochs + 1):
                rec = self._epoch(epoch, data, targets, params, rng, steps)
                history.append(rec)
                if rec["test_accuracy"] > best["test_accuracy"]:
                    best = {"test_accuracy": rec["test_accuracy"], "epoch": epoch}
                    best_params = {"epoch": epoch, "params": [p.copy() for p in params]}
                if log:
                    log.write(rec)
                due = (epoch in (start, s.epochs) or s.checkpoint_seconds <= 0   # the first: a resumable folder
                       or _clock() - last_save >= s.checkpoint_seconds)
                if self.out_dir and best_params is not None and due:
                    save_checkpoint(self.out_dir / "best.npz", best_params)
                    best_params = None
                _log.info("epoch %d/%d: train loss %.4g accuracy %.4f | test loss %s accuracy %.4f | %.2f s/epoch",
                          epoch, s.epochs, rec["train_loss"], rec["train_accuracy"],
                          "-" if rec.get("test_loss") is None else f"{rec['test_loss']:.4g}", rec["test_accuracy"],
                          rec["epoch_seconds"])
                if ckpt is not None and due:
                    if log:
                        log.sync()                     # the log holds every epoch the checkpoint names
                    save_checkpoint(ckpt, self._state(epoch, params, rng, history, best))
                    last_save = _clock()
        except BaseException:
            self.processor.safe_state()
            raise
        if self.out_dir and history and s.plot:
            st = self.settings
            plot_learning_curve(history, self.out_dir / "learning_curve.png", self.tag,
                                f"{self.method.name}, {type(self.optimizer).__name__} lr {self.optimizer.lr:g}, batch "
                                f"{st.batch_size}, {st.epochs} epochs, loss {st.loss}, seed {st.seed}, layers "
                                f"{list(self.processor.layer_sizes)}")
            artifacts = getattr(self.processor, "write_run_artifacts", None)
            if artifacts is not None:  # optional processor hook: its own figures in the run dir
                artifacts(self.out_dir)
        ledger = getattr(self.processor, "ledger", None)
        if self.out_dir and ledger is not None:  # energy / latency ledger (lightloop.ledger): ledger.json
            ledger.write(self.out_dir)
        times = [h["epoch_seconds"] for h in history] or [float("nan")]
        mean_t = float(np.mean(times))
        return TrainResult(
            test_accuracy=history[-1]["test_accuracy"] if history else float("nan"),
            best_test_accuracy=best["test_accuracy"], best_epoch=best["epoch"], epochs=len(history),
            mean_epoch_seconds=mean_t, samples_per_second=n / mean_t,
            measurements_per_step=float(np.mean([h["measurements_per_step"] for h in history])) if history else 0.0,
            history=history, params=params)

    def _epoch(self, epoch: int, data: Dataset, targets: NDArray, params: list[NDArray],
               rng: np.random.Generator, steps: int) -> dict[str, Any]:
        from tqdm.auto import tqdm

        s, proc, method, opt = self.settings, self.processor, self.method, self.optimizer
        perm = rng.permutation(data.x_train.shape[0])
        loss_sum, correct, seen, meas = 0.0, 0, 0, 0
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{s.epochs}", unit="batch", leave=False,
                   disable=not s.progress, mininterval=0.5)
        t0, cpu0 = time.perf_counter(), time.process_time()
        prepare = getattr(proc, "prepare_epoch", None)
        if prepare is not None:  # optional processor hook: per-epoch state from the training set (flow targets)
            proc.program(params)
            prepare(data.x_train, data.y_train)
        for k in bar:
            idx = perm[k * s.batch_size: (k + 1) * s.batch_size]
            xb, tb = data.x_train[idx], targets[idx]
            proc.program(params)                                  # 1. program
            res = method(proc, params, xb, tb)                    # 2-5. forward, error, backward, gradient
            if not math.isfinite(res.loss):
                raise LightloopError(f"training diverged at epoch {epoch}, step {k}: loss is {res.loss}; "
                                     f"lower the learning rate")
            opt.step(params, res.grads)                           # 6. update
            for p, (lo, hi) in zip(params, self.bounds):
                clip_in_place(p, lo, hi)
            if self.hooks:
                info = {"epoch": epoch, "step": k, "global_step": (epoch - 1) * steps + k + 1,
                        "loss": res.loss, "params": params}
                for hook in self.hooks:
                    hook(info)
            loss_sum += res.loss * idx.size
            correct += int(np.count_nonzero(classes_of(res.output) == data.y_train[idx]))
            seen += idx.size
            meas += res.measurements
            if k % 50 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", refresh=False)
        train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        bar.close()
        proc.program(params)
        pred, test_loss = predict(proc, data.x_test, data.y_test, data.n_classes, s.eval_batch_size, method.loss)
        test_acc = float(np.mean(pred == data.y_test))
        for hook in self.eval_hooks:
            hook(epoch, pred)
        return {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                "test_loss": test_loss, "test_accuracy": test_acc, "epoch_seconds": train_seconds,
                "epoch_cpu_seconds": train_cpu,
                "samples_per_second": seen / train_seconds, "measurements_per_step": meas / steps,
                **(method.epoch_metrics() if hasattr(method, "epoch_metrics") else {})}   # e.g. prediction error
