"""Command lines built from settings dataclasses: each field is a flag, its metadata ``help`` the help text and its
default the only default (``setting(default, help)``), so a setting cannot drift between the CLI and the library."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from typing import Any


def setting(default: Any = None, help: str = "", default_factory: Callable[[], Any] | None = None, **extra) -> Any:
    """A dataclass field with its help text, e.g. ``steps: int = setting(1000, "reverse steps")``.

    Args:
        default: the default value (ignored with ``default_factory``).
        help: the help text of the flag.
        default_factory: computes the default when the config is built (e.g. from the environment).
        **extra: more metadata (``repr=False`` is passed to the field).

    Returns:
        A ``dataclasses.field``.
    """
    repr_ = extra.pop("repr", True)
    metadata = {"help": help, **extra}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata, repr=repr_)
    return dataclasses.field(default=default, metadata=metadata, repr=repr_)


def int_list(text: str) -> tuple[int, ...]:
    """Parse ``"10,20,50"`` into ``(10, 20, 50)``."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def str_list(text: str) -> tuple[str, ...]:
    """Parse ``"ddpm,ddim"`` into ``("ddpm", "ddim")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _flag_type(annotation) -> Callable[[str], Any]:
    """The argparse ``type`` for a field annotation: int, float, str, or a comma list for tuples."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is tuple:
        return int_list if typing.get_args(annotation)[0] is int else str_list
    return annotation if annotation in (int, float) else str


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def add_flags(parser: argparse.ArgumentParser, config_cls: type) -> argparse.ArgumentParser:
    """Add one ``--name`` flag per field of ``config_cls`` to ``parser`` (bools are switches, ``list[str]`` fields
    repeat, fields whose metadata says ``positional=True`` are positional arguments).

    Args:
        parser: the parser (or subcommand parser) to extend.
        config_cls: a dataclass whose fields were made with ``setting``.

    Returns:
        ``parser``; ``vars(parser.parse_args())`` (less any subcommand name) builds ``config_cls``.
    """
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        text, default = field.metadata.get("help", ""), _default(field)
        if field.metadata.get("positional"):
            parser.add_argument(field.name, help=text)
        elif hints[field.name] is bool:
            parser.add_argument("--" + field.name, action="store_true", default=default, help=text)
        elif typing.get_origin(hints[field.name]) is list:
            parser.add_argument("--" + field.name, action="append", default=default, help=f"{text} (repeatable)")
        else:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            kind = _flag_type(hints[field.name])
            parser.add_argument("--" + field.name, type=kind, default=default, help=f"{text} (default: {shown})")
    return parser


def build_parser(config_cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with one ``--name`` flag per field of ``config_cls`` (``add_flags``).

    Args:
        config_cls: a dataclass whose fields were made with ``setting``.
        prog: the program name shown in usage and errors.
        description: the first line of ``--help``.

    Returns:
        The parser; ``vars(parser.parse_args())`` builds ``config_cls``.
    """
    return add_flags(argparse.ArgumentParser(prog=prog, description=description), config_cls)


def input_error(prog: str, error: Exception) -> int:
    """Report bad input as one line ``prog: error: ...`` on stderr; returns the exit code 2."""
    print(f"{prog}: error: {(str(error).splitlines() or [type(error).__name__])[0]}", file=sys.stderr)
    return 2
