"""Command lines built from settings dataclasses: each field is a flag, its metadata ``help`` the help text and its
default the only default (``setting(default, help)``), so a setting cannot drift between the CLI and the library.

A setting may also name a default for the command line only (``cli_default``): the library takes that setting
explicitly, and the CLI fills it from the other flags, e.g. the classifier shipped in this checkout's ``models/``
for the dataset asked for (``shipped``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models"  # this checkout's models/: CLI defaults only


def shipped(name: str) -> str:
    """``models/<name>`` of this checkout, relative to the working directory (so a record of it names no home
    folder), for a CLI default; e.g. ``shipped("mnist-classifier")``."""
    return os.path.relpath(SHIPPED_MODELS / name)


def setting(default: Any = None, help: str = "", default_factory: Callable[[], Any] | None = None, **extra) -> Any:
    """A dataclass field with its help text, e.g. ``steps: int = setting(1000, "reverse steps")``.

    Args:
        default: the default value (ignored with ``default_factory``).
        help: the help text of the flag.
        default_factory: computes the default when the config is built (e.g. from the environment).
        **extra: more metadata: ``repr=False`` is passed to the field; ``positional=True`` makes the flag positional,
            ``required=True`` a flag that must be given; ``cli_default=f`` fills a flag left at None on the command
            line with ``f(parsed flags)``.

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


def float_list(text: str) -> tuple[float, ...]:
    """Parse ``"0,1,2.5"`` into ``(0.0, 1.0, 2.5)``."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def str_list(text: str) -> tuple[str, ...]:
    """Parse ``"ddpm,ddim"`` into ``("ddpm", "ddim")``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _flag_type(annotation) -> Callable[[str], Any]:
    """The argparse ``type`` for a field annotation: int, float, str, or a comma list for tuples."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is tuple:
        return {int: int_list, float: float_list}.get(typing.get_args(annotation)[0], str_list)
    return annotation if annotation in (int, float) else str


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


class SettingsParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that fills each flag left at None whose setting has a ``cli_default`` (after parsing,
    from the parsed flags)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cli_defaults: dict[str, Callable[[argparse.Namespace], Any]] = {}

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for name, derive in self.cli_defaults.items():
            if getattr(namespace, name, None) is None:
                setattr(namespace, name, derive(namespace))
        return namespace, extras


def add_flags(parser: SettingsParser, config_cls: type) -> SettingsParser:
    """Add one ``--name`` flag per field of ``config_cls`` to ``parser`` (bools are switches, ``list[str]`` fields
    repeat, fields whose metadata says ``positional=True`` are positional arguments, ``required=True`` must be given,
    ``cli_default`` fills a flag not given).

    Args:
        parser: the parser (or subcommand parser: ``add_subparsers`` makes them ``SettingsParser`` too) to extend.
        config_cls: a dataclass whose fields were made with ``setting``.

    Returns:
        ``parser``; ``vars(parser.parse_args())`` (less any subcommand name) builds ``config_cls``.
    """
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        text, default = field.metadata.get("help", ""), _default(field)
        if "cli_default" in field.metadata:
            parser.cli_defaults[field.name] = field.metadata["cli_default"]
        if field.metadata.get("positional"):
            parser.add_argument(field.name, help=text)
        elif hints[field.name] is bool:
            parser.add_argument("--" + field.name, action="store_true", default=default, help=text)
        elif typing.get_origin(hints[field.name]) is list:
            parser.add_argument("--" + field.name, action="append", default=default, help=f"{text} (repeatable)")
        else:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            kind = _flag_type(hints[field.name])
            if field.metadata.get("required"):
                parser.add_argument("--" + field.name, type=kind, required=True, help=text)
            else:
                parser.add_argument("--" + field.name, type=kind, default=default, help=f"{text} (default: {shown})")
    return parser


def build_parser(config_cls: type, prog: str, description: str) -> SettingsParser:
    """A ``SettingsParser`` with one ``--name`` flag per field of ``config_cls`` (``add_flags``).

    Args:
        config_cls: a dataclass whose fields were made with ``setting``.
        prog: the program name shown in usage and errors.
        description: the first line of ``--help``.

    Returns:
        The parser; ``vars(parser.parse_args())`` builds ``config_cls``.
    """
    return add_flags(SettingsParser(prog=prog, description=description), config_cls)


def build_commands(prog: str, description: str, commands: dict[str, tuple[type, str]]) -> SettingsParser:
    """A ``SettingsParser`` of subcommands, each with the flags of its settings dataclass (``add_flags``).

    Args:
        prog: the program name shown in usage and errors.
        description: the first line of ``--help``.
        commands: subcommand name → (its settings dataclass, its help line).

    Returns:
        The parser; ``parse_args`` gives the subcommand's name as ``command`` beside its flags.
    """
    parser = SettingsParser(prog=prog, description=description)
    subcommands = parser.add_subparsers(dest="command", required=True)
    for name, (config_cls, text) in commands.items():
        add_flags(subcommands.add_parser(name, help=text, description=text), config_cls)
    return parser


def input_error(prog: str, error: Exception) -> int:
    """Report bad input as one line ``prog: error: ...`` on stderr; returns the exit code 2."""
    print(f"{prog}: error: {(str(error).splitlines() or [type(error).__name__])[0]}", file=sys.stderr)
    return 2
