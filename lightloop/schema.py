"""Config section models every layer may share (ground floor: imports nothing of lightloop above errors/units).

StrictModel (unknown keys are errors), the top level LabConfig, TrainingDefaults, BuildOverrides (command-line
overrides of a processor section) and FeedbackSettings (the optional photon-counting feedback channel).
Bench-specific sections live with their bench (``lightloop.benches.<kind>.Schema``), the station's with the
station (``lightloop.station``); ``lightloop.config`` loads a file and asks the bench module to validate them.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

__all__ = ["StrictModel", "TrainingDefaults", "LabConfig", "BuildOverrides", "FeedbackSettings", "CheckBounds",
           "CheckSettings", "validation_message",
           "Finite", "Fraction", "Seed", "LayerSize", "SEED_MAX", "BenchName", "check_seed", "check_bench_name",
           "LR_WARN", "INIT_SCALE_WARN", "warn_if_surely_a_mistake"]

#: largest seed (numpy's legacy seeding and the twins' seeds take 32-bit unsigned integers)
SEED_MAX = 2**32 - 1
#: a learning rate above this is legal but surely a mistake (a clear warning)
LR_WARN = 10.0
#: an initial-weight std above this is legal but surely a mistake (a clear warning)
INIT_SCALE_WARN = 10.0
_BENCH_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def check_seed(value: int) -> int:
    """A seed in 0..SEED_MAX (ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ValueError(f"expected a seed: an integer in 0..{SEED_MAX}, got {value!r}")
    return value


def check_bench_name(value: str) -> str:
    """A bench name that is safe as one path component (ValueError otherwise)."""
    if not _BENCH_NAME.match(value) or value in (".", ".."):
        raise ValueError(f"expected a bench name of 1-100 letters, digits, '-', '_' or '.' (no path separators, "
                         f"not starting with '.'), got {value!r}")
    return value


def _custom(fn: Any) -> Any:
    def check(value: Any) -> Any:
        try:
            return fn(value)
        except ValueError as exc:
            raise PydanticCustomError("lightloop", str(exc)) from None
    return check


#: a finite float (every float of a StrictModel is finite anyway: allow_inf_nan=False)
Finite = Annotated[float, Field(allow_inf_nan=False)]
#: a fraction in [0, 1]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
#: a random seed in 0..SEED_MAX
Seed = Annotated[int, Field(strict=True), AfterValidator(_custom(check_seed))]
#: a layer size (neurons); the upper bound keeps one weight matrix below ~400 MB
LayerSize = Annotated[int, Field(ge=1, le=10_000)]
#: a bench name: it becomes a directory name in calibration stores and run folders
BenchName = Annotated[str, Field(strict=True), AfterValidator(_custom(check_bench_name))]


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors; every float is finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML true/false is not a number: refused where a field takes numbers but no bool (epochs: true)."""
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            kinds = _base_types(cls.model_fields[info.field_name].annotation)
            if bool not in kinds and kinds & {int, float} and not kinds - {int, float, type(None)}:
                raise PydanticCustomError("lightloop", f"expected {'a number' if float in kinds else 'an integer'}, got "
                                          f"{str(value).lower()} (a YAML boolean)")
        return value


def _base_types(tp: Any) -> set[Any]:
    """The plain types a field annotation admits (through Optional / Union / Annotated); {object} for anything else."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _base_types(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_base_types(a) for a in typing.get_args(tp)))
    return {tp} if tp in (int, float, bool, type(None)) else {object}


class TrainingDefaults(StrictModel):
    """Training defaults of a bench (each can be overridden on the command line)."""

    dataset: str = "digits"
    gradient: str = "pump_probe"
    loss: Literal["mse", "cross_entropy"] = "mse"
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(5e-3, gt=0, le=1e3, description=f"learning rate; above {LR_WARN:g} a warning")
    epochs: int = Field(10, ge=1, le=1_000_000)
    batch_size: int = Field(32, ge=1, le=10_000_000)
    init_scale: float = Field(0.1, gt=0, le=1e3, description=f"std of the initial weights; above {INIT_SCALE_WARN:g} a warning")
    seed: Seed = 0
    gradient_options: dict[str, Any] = Field(default_factory=dict, description="keyword options of the gradient method")


class LabConfig(StrictModel):
    """A bench: its processor (with devices or twins) and training defaults."""

    bench: BenchName
    description: str = Field("", max_length=10_000)
    processor: Any
    training: TrainingDefaults = TrainingDefaults()
    feedback: Any = None  # optional photon-counting feedback channel (FeedbackSettings)
    ledger: Any = None  # optional energy / latency ledger and its timing model (lightloop.ledger.LedgerSettings)
    check: Any = None  # optional bounds of the bench error budget `lightloop check` (CheckSettings)
    # optional station (lightloop.station): instruments, the HAL roles they serve, the wire twin
    instruments: Any = None
    roles: Any = None
    emulator: Any = None
    source: str = Field("<memory>", exclude=True)


class FeedbackSettings(StrictModel):
    """Top-level `feedback:` section: the photon-counting backward channel (twin detectors).

    The nominal figures are the twin's truth (scattered per channel by `spread`) and, when
    `calibrated` is true, also what the HAL believes (otherwise the HAL assumes ideal detectors).
    q and n_p are not here: they are parameters of the gradient method (training.gradient_options).
    """

    device: Literal["twin"] = "twin"
    detection_efficiency: float = Field(1.0, gt=0, le=1)
    dark_count_probability: float = Field(0.0, ge=0, lt=1, description="per detector per gate")
    polarisation_error: float = Field(0.0, ge=0, lt=0.5, description="probability a photon's bit is misread")
    spread: float = Field(0.0, ge=0, le=1, description="relative channel-to-channel scatter of the truth")
    calibrated: bool = True
    max_emission_probability: float = Field(1.0, ge=0, le=1)
    max_background_probability: float = Field(1.0, ge=0, le=1)
    truth_seed: Seed = 11
    noise_seed: Seed = 0


class CheckBounds(StrictModel):
    """Pass/fail bounds of one error-budget path, relative to the rms of the path's model signal (phase in rad)."""

    max_gain_error: float = Field(0.05, gt=0, le=10, description="|fitted gain - 1| of measured vs model")
    max_phase_error_rad: float = Field(0.05, gt=0, le=math.pi, description="fitted phase of a complex path, rad")
    max_offset: float = Field(0.05, gt=0, le=10, description="|fitted offset| / rms(model)")
    max_residual: float = Field(0.1, gt=0, le=10, description="rms(measured - fit), noise removed, / rms(model)")
    max_noise: float = Field(1.0, gt=0, le=10, description="rms of repeat differences / sqrt 2 / rms(model); "
                             "1: a single acquisition's signal at least its noise (a weak backward probe is ~0.4)")


class CheckSettings(StrictModel):
    """Top-level `check:` section: samples and bounds of `lightloop check` (overrides: fnmatch path -> bounds)."""

    samples: int = Field(64, ge=4, le=100_000, description="random inputs per path")
    seed: Seed = 0
    bounds: CheckBounds = CheckBounds()
    overrides: dict[str, CheckBounds] = Field(default_factory=dict, description="path pattern -> bounds")


@dataclass
class BuildOverrides:
    """Command-line overrides of a config's processor section (None: keep the config's value)."""

    hidden: list[int] | None = None
    ideal: bool | None = None
    optical_depth: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _model_at(model: Any, loc: tuple[Any, ...]) -> Any:
    """The StrictModel class holding the field at loc (None when loc leaves the typed models)."""
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        fld = getattr(model, "model_fields", {}).get(part)
        if fld is None:
            return None
        model = _unwrap(fld.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _model_named(title: str) -> Any:
    """The one StrictModel subclass called title (None when none or several are)."""
    found, todo = [], list(StrictModel.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__name__ == title:
            found.append(cls)
    return found[0] if len(found) == 1 else None


def _unwrap(tp: Any) -> Any:
    """The model class inside Optional[...] / list[...] / dict[str, ...] / Annotated[...], else None."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType, list, dict, tuple, Annotated):
        for a in args:
            found = _unwrap(a)
            if found is not None:
                return found
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_FIELD_FIRST = re.compile(r"^([A-Za-z_]\w*): (.*)$", re.S)
_SHOULD = re.compile(r"^(\w+) should (be|have|match) (.*)$", re.S)


def _expected(msg: str) -> str:
    """Pydantic's 'Input should be X' -> 'expected X'; custom messages keep their own 'expected ...'."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    m = _SHOULD.match(msg)
    if m:
        noun, verb, rest = m.group(1).lower(), m.group(2), m.group(3)
        if noun == "input":
            return f"expected {rest}" if verb == "be" else f"expected a value that should {verb} {rest}"
        return f"expected a {noun} " + {"be": "that is ", "have": "with ", "match": "matching "}[verb] + rest
    if msg.lower() == "field required":
        return "missing; expected a value for this required field"
    return msg if "expected" in msg else f"{msg}; expected a valid value"


def validation_message(source: str, exc: ValidationError, prefix: str = "", model: Any = None) -> str:
    """One line: file: field: what was expected (got what)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "") or "(top level)"
    if err["type"] == "extra_forbidden":
        model = model if model is not None else _model_named(exc.title)
        parent = _model_at(model, tuple(err["loc"][:-1])) if model is not None else None
        if parent is None:
            return f"{source}: {loc}: unknown key; expected only the keys this section documents"
        keys = [k for k, f in parent.model_fields.items() if not f.exclude]
        close = difflib.get_close_matches(str(err["loc"][-1]), keys, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{source}: {loc}: unknown key{hint}; expected one of: {', '.join(keys)}"
    text = " ".join(_expected(err["msg"]).split())
    whole = isinstance(err.get("input"), (dict, list))
    m = _FIELD_FIRST.match(text) if whole and err["type"] == "value_error" else None
    if m:  # a section validator naming its field first: 'field: what; expected ...'
        loc, text = f"{loc}.{m.group(1)}" if loc != "(top level)" else m.group(1), m.group(2)
    if err["type"] in ("missing",) or "got " in text or whole:
        return f"{source}: {loc}: {text}"
    return f"{source}: {loc}: {text} (got {_short(err.get('input'))})"


def warn_if_surely_a_mistake(source: str, lr: float | None = None, init_scale: float | None = None) -> None:
    """One `lightloop: warning:` stderr line per legal value that is surely a mistake (lr, init_scale too large)."""
    if lr is not None and math.isfinite(lr) and lr > LR_WARN:
        print(f"lightloop: warning: {source}: lr {lr:g} is above {LR_WARN:g}; expected a learning rate of order "
              "1e-3..1 (training will likely diverge)", file=sys.stderr)
    if init_scale is not None and math.isfinite(init_scale) and init_scale > INIT_SCALE_WARN:
        print(f"lightloop: warning: {source}: init_scale {init_scale:g} is above {INIT_SCALE_WARN:g}; expected a "
              "std of the initial weights of order 0.01..1 (weights will clip)", file=sys.stderr)
