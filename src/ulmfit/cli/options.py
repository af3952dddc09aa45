"""Command-line flags generated from the dataclass configs, so the two never drift apart.

A nested config ``LMStageConfig.train.lr`` becomes ``--train.lr``; help text is the
comment beside each field; a config class with ``PRESETS`` also gets ``--PREFIX.preset``.
Values merge as: defaults < ``--config FILE.toml`` < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from ulmfit.config import field_docs, from_dict, load_toml


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one flag per (nested) field of ``cls``; nested configs get their own group."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    group: Any = parser if not prefix else parser.add_argument_group(f"[{prefix.rstrip('.')}]")
    presets = getattr(cls, "PRESETS", None)
    if presets is not None:  # a name for a set of this table's fields; other flags win
        group.add_argument(
            f"--{prefix}preset", dest=f"{prefix}preset", default=argparse.SUPPRESS,
            choices=list(presets), help="start from these named sizes; the flags given win",
        )  # fmt: skip
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            add_dataclass_options(parser, tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
            continue
        inner = typing.get_args(tp)
        if typing.get_origin(tp) is tuple and inner and dataclasses.is_dataclass(inner[0]):
            continue  # a list of tables ([[tasks]], [[classifier.stages]]): TOML only
        default = getattr(defaults, f.name)
        flag = f"--{prefix}{f.name}".replace("_", "-")
        help_text = f"{docs.get(f.name, '')} (default: {default!r})".strip()
        kwargs: dict[str, Any] = {"dest": f"{prefix}{f.name}", "default": argparse.SUPPRESS}
        base, optional = _unwrap_optional(tp)
        origin, args = typing.get_origin(base), typing.get_args(base)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is tuple:
            kwargs["nargs"] = "+" if args and args[-1] is Ellipsis else len(args)
            kwargs["type"] = args[0] if args and args[0] in (int, float) else str
        elif origin is typing.Literal:
            kwargs["choices"] = list(args)
        elif base in (int, float, str):
            kwargs["type"] = base
        else:
            kwargs["type"] = str
        if optional:
            help_text += "; 'none' to unset"
            inner = kwargs.get("type", str)
            kwargs["type"] = lambda s, _t=inner: None if s.lower() == "none" else _t(s)
        group.add_argument(flag, help=help_text, **kwargs)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def config_from_args(cls: type, args: argparse.Namespace, config_file: Path | None) -> Any:
    """Merge the TOML file (if any) and the given flags into an instance of ``cls``."""
    data: dict[str, Any] = load_toml(config_file) if config_file else {}
    skip = {"command", "config", "func", "verbose", "quiet"}
    for dest, value in vars(args).items():
        if dest in skip or dest.startswith("_"):
            continue
        node = data
        *parents, leaf = dest.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return from_dict(cls, data, where=str(config_file) if config_file else "command line")
