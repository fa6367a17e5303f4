"""Configuration: frozen dataclasses hold every default; users give overrides only.

A configuration is a tree of frozen dataclasses (sections). Overrides come from a YAML or
TOML file (``--config FILE``) and from repeatable ``--set section.key=value`` options, and
are applied by :func:`resolve`, which rejects unknown keys and values of the wrong type
with a :class:`~core.errors.ConfigError` naming the key. A run is identified by
:func:`config_hash`, a hash of the fully resolved configuration.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

from core.errors import ConfigError

__all__ = [
    "resolve",
    "to_dict",
    "config_hash",
    "load_overrides",
    "parse_set",
    "merge_overrides",
    "flatten",
]


def to_dict(cfg: Any) -> dict:
    """Nested plain-dict view of a configuration dataclass (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def flatten(d: Mapping, prefix: str = "") -> dict:
    """``{"model": {"width": 5}}`` -> ``{"model.width": 5}``."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_hash(cfg: Any, length: int = 10) -> str:
    """Stable hex digest of a resolved configuration (dataclass or dict)."""
    d = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    text = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def load_overrides(path: str | Path) -> dict:
    """Read a YAML (``.yml``/``.yaml``) or TOML (``.toml``) file of overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yml", ".yaml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path}: use .yaml, .yml, .toml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # parse errors of three libraries
        raise ConfigError(f"config file {path} could not be parsed: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return data


def parse_set(items: list[str] | None) -> dict:
    """Turn ``["model.width=1000", "task.name=mnist"]`` into a nested dict of raw strings."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is both a value and a section")
        node[parts[-1]] = _RawString(value.strip())
    return out


def merge_overrides(*layers: Mapping) -> dict:
    """Merge override dicts; later layers win key by key."""
    out: dict = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge_overrides(out[key], value)
            elif isinstance(value, Mapping):
                out[key] = merge_overrides(value)
            else:
                out[key] = value
    return out


class _RawString(str):
    """A value typed on the command line: parsed according to the field's type."""


def resolve(cls: type, overrides: Mapping | None = None, *, _prefix: str = "", _base: Any = None) -> Any:
    """Build a configuration of type ``cls`` from its defaults and ``overrides``.

    Parameters
    ----------
    cls : dataclass type
        The configuration schema; fields whose type is a dataclass are sections.
    overrides : mapping, optional
        Nested dict of values to change. Unknown keys raise ``ConfigError``.
    """
    overrides = dict(overrides or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        key = _prefix + unknown[0]
        known = ", ".join(_prefix + k for k in sorted(fields))
        raise ConfigError(f"unknown config key '{key}' (known keys here: {known})")
    kwargs = {}
    for name, value in overrides.items():
        tp = hints[name]
        key = _prefix + name
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{key}' is a section; set its keys, e.g. {key}.KEY=VALUE")
            # start from the section's default instance (which may differ from tp's own defaults)
            kwargs[name] = resolve(tp, value, _prefix=key + ".", _base=_section_default(fields[name], _base))
        else:
            kwargs[name] = _coerce(value, tp, key)
    try:
        return dataclasses.replace(_base, **kwargs) if _base is not None else cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration in section '{_prefix.rstrip('.') or cls.__name__}': {exc}") from None


def _section_default(f: dataclasses.Field, base: Any) -> Any:
    if base is not None:
        return getattr(base, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, _RawString) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key '{key}': bad value {value!r}")
    if origin is Literal:
        raw = str(value) if isinstance(value, _RawString) else value
        for choice in args:
            if raw == choice or (isinstance(value, _RawString) and str(choice) == raw):
                return choice
        raise ConfigError(f"config key '{key}' must be one of {list(args)}, got {value!r}")
    if origin is tuple:
        if isinstance(value, _RawString):
            value = _parse_scalar(value)
            if isinstance(value, (str, int, float)):
                value = [v for v in str(value).split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        item_tp = args[0] if args else Any
        return tuple(
            _coerce(_RawString(str(v)) if isinstance(v, str) else v, item_tp, key) for v in value
        )
    if tp is Any:
        return _parse_scalar(value) if isinstance(value, _RawString) else value
    if tp is str:
        if isinstance(value, str):
            return str(value)
        raise ConfigError(f"config key '{key}' expects text, got {value!r}")
    if isinstance(value, _RawString) or (tp in (int, float) and isinstance(value, str)):
        value = _parse_scalar(value)  # also YAML's '1e-4', which PyYAML reads as a string
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' expects true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()
        ):
            raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
        return float(value)
    raise ConfigError(f"config key '{key}' has an unsupported type {tp!r}")


def _parse_scalar(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return json.loads(t)
    except ValueError:
        pass
    try:
        return float(t)  # 1e-4, inf
    except ValueError:
        return t
