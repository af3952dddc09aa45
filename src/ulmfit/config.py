"""Small helpers shared by the dataclass configs: dicts, TOML files and field help.

Every config is a frozen dataclass, saved as JSON beside the weights and readable from
a TOML file whose tables mirror the nesting (``[train]``, ``[model]`` ...).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


def to_dict(obj: Any) -> Any:
    """A JSON-ready copy of a (nested) dataclass config."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming
    ``where`` and the field, e.g. ``run.toml: [train]: unknown field(s) ['lrr']; ...``
    or ``run.toml: [train.lr]: expected float, got 'fast'``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    data = _with_preset(cls, data, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, _child(where, name))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def _with_preset(cls: type, data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``data`` with its ``preset`` key (a name in ``cls.PRESETS``) replaced by that
    preset's fields; the fields ``data`` gives itself win."""
    presets = getattr(cls, "PRESETS", None)
    if presets is None or "preset" not in data:
        return data
    name = data["preset"]
    if name not in presets:
        raise ConfigError(
            f"{_child(where, 'preset')}: unknown preset {name!r}; known: {', '.join(presets)}"
        )
    return {**to_dict(presets[name]), **{k: v for k, v in data.items() if k != "preset"}}


def _child(where: str, name: str) -> str:
    """``run.toml`` + ``train`` -> ``run.toml: [train]``; then ``run.toml: [train.lr]``.

    The file stays apart from the keys, so that ``bad.toml.train`` does not read as a
    file name.
    """
    source, sep, keys = where.partition(": [")
    if sep:
        return f"{source}: [{keys[:-1]}.{name}]"
    return f"{where}: [{name}]"


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value] if args and args[-1] is Ellipsis else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=False))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected float, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, str):
        if isinstance(value, tp) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a syntax error names the file and line."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such config file") from e
    except IsADirectoryError as e:
        raise ConfigError(f"{path}: is a directory, not a TOML config file") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text (UTF-8) TOML file ({e})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from e


_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#=]*(?:=[^#]*)?#\s*(.+)$")


def field_docs(cls: type) -> dict[str, str]:
    """Help text for each field, read from the ``# comment`` after it in the class source."""
    docs: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return docs
    for line in source.splitlines():
        m = _FIELD_COMMENT.match(line)
        if m:
            docs[m.group(1)] = m.group(2).strip()
    return docs
