"""Command-line options generated from a documented config dataclass (cleanrl's `Args` read
by tyro, with the standard library): the fields are written once, with their help, and the
options and their parsing follow from them.

Each field becomes `--name-with-dashes` (or its `flag`), its value named `dest=field name`,
typed by its annotation:

- `int`, `float`, `str`: one value, converted; `X | None`: one value, or None when absent;
- `Literal[...]`: one of its values (argparse's choices);
- `tuple[X, ...]`: the option repeated, the values in order (`--budget 1 --budget 2`);
- `bool`: a flag, off unless given;
- no default: a required option.

A field's metadata holds its `help` (required), and optionally `flag` and `metavar`. Each
option's help shows its default, so a field defaulting to None or to nothing says in its
help what that means ("default: every route").
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

Config = TypeVar("Config")


def add_options(parser: argparse._ActionsContainer, config: type) -> None:
    """One option per field of the dataclass `config`, in field order (`parser` is a parser
    or one of its argument groups)."""
    hints = get_type_hints(config)
    for f in dataclasses.fields(config):
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        parser.add_argument(flag, **_option(f, hints[f.name]))


def from_options(config: type[Config], args: argparse.Namespace) -> Config:
    """The dataclass `config` from the options `add_options` added (its own checks run)."""
    values = {}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(args, f.name)
        if isinstance(value, list):
            value = tuple(value)
        elif value is None and f.default is not dataclasses.MISSING:
            value = f.default  # a repeated option never given
        values[f.name] = value
    return config(**values)


def _option(f: dataclasses.Field[Any], hint: Any) -> dict[str, Any]:
    text = f.metadata.get("help")
    if not text:
        raise TypeError(f"{f.name}: every option needs its help in the field's metadata")
    kind = _without_none(hint)
    required = f.default is dataclasses.MISSING
    option: dict[str, Any] = {"dest": f.name, "required": required}
    if kind is bool:
        if f.default is not False:
            raise TypeError(f"{f.name}: a flag is off by default")
        return {**option, "action": "store_true", "help": _escape(text)}
    if get_origin(kind) is tuple:
        (kind, _) = get_args(kind)
        option |= {"action": "append", "default": None}
    elif not required:
        option["default"] = f.default
    if get_origin(kind) is Literal:
        option["choices"] = list(get_args(kind))
        kind = type(option["choices"][0])
    elif kind not in (int, float, str):
        raise TypeError(f"{f.name}: no option for a field of type {hint}")
    if kind is not str:
        option["type"] = kind
    if "metavar" in f.metadata:
        option["metavar"] = f.metadata["metavar"]
    if not required and "default" not in text:
        if f.default is None or f.default == ():
            raise TypeError(f"{f.name}: say in the help what the absent default means")
        text += f" (default: {f.default})"
    return {**option, "help": _escape(text)}


def _without_none(hint: Any) -> Any:
    """X of `X | None`; any other type as it is."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _escape(text: str) -> str:
    """argparse %-formats help: a literal percent sign is doubled."""
    return text.replace("%", "%%")
