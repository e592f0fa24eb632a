"""Lab-config loading. Strict: unknown keys, wrong types and out-of-range values are errors reported in one
line naming the file, the field and what was expected.

A config names its processor kind; the bench module ``lightloop.benches.<kind>`` owns the schema of its
``processor`` section (module attribute ``Schema``) and validates the sections it understands
(``validate_sections(cfg)``: e.g. the station's ``instruments`` / ``roles`` / ``emulator``). The shared
section models live on the ground floor (``lightloop.schema``). Only the command-line modules and the
bench builder (``lightloop.bench``) import this module (docs/architecture.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lightloop.errors import ConfigError
from lightloop.schema import (FeedbackSettings, LabConfig, StrictModel, TrainingDefaults, validation_message,
                              warn_if_surely_a_mistake)

__all__ = ["StrictModel", "TrainingDefaults", "LabConfig", "load_config", "parse_config", "apply_overrides", "validation_message",
           "bench_module", "load_yaml", "MAX_DEPTH", "MAX_BYTES", "MAX_NODES"]

#: deepest nesting of mappings/sequences a config may have
MAX_DEPTH = 32
#: largest config file (bytes)
MAX_BYTES = 1 << 20
#: most values in a config, aliases expanded
MAX_NODES = 100_000


def bench_module(kind: str, source: str = "<config>") -> Any:
    """The `lightloop.benches.<kind>` module that defines Schema and build() (public kinds only)."""
    from lightloop.benches import available_kinds

    kinds = available_kinds()
    if not isinstance(kind, str) or kind not in kinds:
        raise ConfigError(f"{source}: processor.kind: unknown kind {kind!r}; expected one of: {', '.join(kinds)}")
    from lightloop.benches import load_bench_module   # built-in module or a `lightloop.benches` entry point

    return load_bench_module(kind)


class _YamlProblem(Exception):
    """A structural problem found while composing (message: 'line N: field: what was expected')."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting depth and refuses duplicate keys at every level."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _YamlProblem(f"line {mark.line + 1}: nesting: deeper than {MAX_DEPTH} levels; expected a "
                                   f"config nested at most {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_document(self, node: Any) -> Any:
        _check_node(node)
        return super().construct_document(node)


def _check_node(root: Any) -> None:
    """Refuse duplicate keys (every mapping) and configs over MAX_NODES values (aliases expanded)."""
    stack, count = [(root, "")], 0
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise _YamlProblem(f"line {node.start_mark.line + 1}: {path or '(top level)'}: more than {MAX_NODES} "
                               f"values (aliases expanded); expected a config of at most {MAX_NODES} values")
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:merge":
                    stack.append((value, path))
                    continue
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else f"<{key.id} key>"
                where = f"{path}.{name}" if path else name
                if isinstance(key, yaml.ScalarNode) and name in seen:
                    raise _YamlProblem(f"line {key.start_mark.line + 1}: {where}: duplicate key (first at line "
                                       f"{seen[name]}); expected each key once per mapping")
                seen[name] = key.start_mark.line + 1
                stack.append((value, where))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node.value))


def load_yaml(path: Path) -> Any:
    """Parse a YAML file strictly: UTF-8 text, at most MAX_BYTES, MAX_DEPTH levels, no duplicate keys."""
    try:
        if not path.is_file():
            what = "is a directory" if path.is_dir() else ("not a regular file (a device, FIFO or socket)"
                                                          if path.exists() else "not found")
            raise ConfigError(f"{path}: config file {what}; expected an existing YAML file")
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: config file: {path.stat().st_size} bytes; expected a lab config of at most "
                              f"{MAX_BYTES} bytes")
        with open(path, "rb") as f:   # bounded even where st_size lies (/proc files report 0)
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ConfigError(f"{path}: config file: more than {MAX_BYTES} bytes; expected a lab config of at most "
                              f"{MAX_BYTES} bytes")
    except OSError as exc:
        raise ConfigError(f"{path}: config file: cannot be read ({exc.strerror or exc}); expected a readable "
                          "YAML file") from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise ConfigError(f"{path}: byte {nul}: a NUL byte (binary data); expected a UTF-8 text "
                          "YAML file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line} (byte {exc.start}): byte 0x{raw[exc.start]:02x} is not UTF-8; "
                          "expected a UTF-8 text YAML file") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _YamlProblem as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if mark is None and isinstance(getattr(exc, "position", None), int):
            where = f" at byte {exc.position}"
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or type(exc).__name__
        context = getattr(exc, "context", None)
        detail = " ".join(f"{context + ': ' if context else ''}{problem}".split())
        raise ConfigError(f"{path}: invalid YAML{where} ({detail}); expected valid YAML syntax") from None
    except RecursionError:
        raise ConfigError(f"{path}: nesting: too deep; expected a config nested at most {MAX_DEPTH} levels "
                          "deep") from None


def parse_config(data: Any, source: str = "<memory>") -> LabConfig:
    """Validate a config mapping (already parsed from YAML)."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{source}: (top level): {got}; expected a YAML mapping (bench, processor, training, ...)")
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{source}: {key!r}: a {type(key).__name__} key; expected text keys")
    if "source" in data:
        raise ConfigError(f"{source}: source: unknown key; expected one of: "
                          f"{', '.join(k for k in LabConfig.model_fields if k != 'source')}")
    try:
        cfg = LabConfig.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(validation_message(source, exc, model=LabConfig)) from None
    proc = cfg.processor
    if not isinstance(proc, dict) or "kind" not in proc:
        raise ConfigError(f"{source}: processor: expected a mapping with a 'kind' key, got {type(proc).__name__}")
    mod = bench_module(proc["kind"], source)
    try:
        cfg.processor = mod.Schema.model_validate(proc)
    except ValidationError as exc:
        raise ConfigError(validation_message(source, exc, "processor", model=mod.Schema)) from None
    if cfg.feedback is not None:
        try:
            cfg.feedback = FeedbackSettings.model_validate(cfg.feedback)
        except ValidationError as exc:
            raise ConfigError(validation_message(source, exc, "feedback", model=FeedbackSettings)) from None
    if cfg.check is not None:
        from lightloop.schema import CheckSettings

        try:
            cfg.check = CheckSettings.model_validate(cfg.check)
        except ValidationError as exc:
            raise ConfigError(validation_message(source, exc, "check", model=CheckSettings)) from None
    if cfg.ledger is not None:
        from lightloop.ledger import LedgerSettings

        try:
            cfg.ledger = LedgerSettings.model_validate(cfg.ledger)
        except ValidationError as exc:
            raise ConfigError(validation_message(source, exc, "ledger", model=LedgerSettings)) from None
    _check_training(cfg)
    validate_sections = getattr(mod, "validate_sections", None)
    if validate_sections is not None:
        validate_sections(cfg)
    elif cfg.instruments is not None or cfg.roles is not None or cfg.emulator is not None:
        raise ConfigError(f"{source}: instruments: a {proc['kind']!r} bench has no instrument station; expected no "
                          "instruments/roles/emulator sections")
    return cfg


def _check_training(cfg: LabConfig) -> None:
    """training: a known dataset, a known gradient method that accepts gradient_options; warn on surely-wrong values."""
    from lightloop.training.datasets import dataset_names
    from lightloop.training.gradients import make_gradient

    t, src = cfg.training, cfg.source
    names = dataset_names()
    if t.dataset not in names:
        raise ConfigError(f"{src}: training.dataset: unknown dataset {t.dataset!r}; expected one of: {', '.join(names)}")
    for key, value in t.gradient_options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{src}: training.gradient_options.{key}: expected a finite number, got {value!r}")
        if not isinstance(value, (bool, int, float, str)):
            raise ConfigError(f"{src}: training.gradient_options.{key}: expected a number, true/false or a name, "
                              f"got a {type(value).__name__}")
    try:
        make_gradient(t.gradient, **t.gradient_options)
    except TypeError as exc:
        raise ConfigError(f"{src}: training.gradient_options: not accepted by gradient {t.gradient!r} "
                          f"({exc}); expected only that method's options") from None
    except ConfigError as exc:
        field = "training.gradient" if "unknown gradient" in str(exc) else "training.gradient_options"
        msg = str(exc) if "expected" in str(exc) else f"{exc}; expected valid options of gradient {t.gradient!r}"
        raise ConfigError(f"{src}: {field}: {msg}") from None
    warn_if_surely_a_mistake(src, lr=t.lr, init_scale=t.init_scale)


def apply_overrides(data: Any, overrides: dict[str, Any], source: str, flag: str = "--grid") -> Any:
    """A deep copy of config `data` with dotted-path settings applied ({'processor.probe_field': 0.05}); the
    schema validates the result. One-line ConfigError for a path that leaves the mapping."""
    import copy

    out = copy.deepcopy(data) if isinstance(data, dict) else data
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for i, key in enumerate(parts[:-1]):
            nxt = node.get(key) if isinstance(node, dict) else None
            if nxt is None:
                nxt = node[key] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"{source}: {flag} {dotted}: {'.'.join(parts[: i + 1])} is not a section; expected a "
                                  "dotted path through config sections to one setting")
            node = nxt
        node[parts[-1]] = value
    return out


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> LabConfig:
    """Read and validate a YAML lab config, with dotted-path `overrides` applied before validation."""
    path = Path(path)
    data = load_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides, str(path))
    return parse_config(data, str(path))
