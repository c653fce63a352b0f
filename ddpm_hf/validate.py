"""Checks of values that come from outside (flags, API calls, the app's inputs), each raising one ``ValueError`` that
names the value and what it may be: ``"<name> must be ..., got <value>"``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["check_choice", "check_float", "check_int"]


def check_int(name: str, value, low: int, high: int) -> int:
    """``value`` as an int when it is an integer (3, 3.0 or a numpy integer) in [low, high].

    Args:
        name: what the value is, for the message.
        value: the value to check; bools are refused.
        low: smallest allowed value.
        high: largest allowed value.

    Returns:
        ``int(value)``.

    Raises:
        ValueError: ``"{name} must be an integer in [low, high], got {value!r}"``.
    """
    ok = isinstance(value, (int, float, np.integer)) and not isinstance(value, bool) and float(value).is_integer()
    if not ok or not low <= int(value) <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def check_float(
    name: str, value, low: float, high: float, *, open_low: bool = False, open_high: bool = False
) -> float:
    """``value`` as a float when it is a finite number in the interval from ``low`` to ``high``.

    Args:
        name: what the value is, for the message.
        value: the value to check; bools are refused.
        low: the lower end (excluded with ``open_low``).
        high: the upper end (excluded with ``open_high``); ``math.inf`` for none.
        open_low: exclude ``low``.
        open_high: exclude ``high``.

    Returns:
        ``float(value)``.

    Raises:
        ValueError: ``"{name} must be a number in [low, high), got {value!r}"`` (brackets as the interval is).
    """
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    number = float(value) if ok else math.nan
    above = number > low if open_low else number >= low
    below = number < high if open_high else number <= high
    if not (math.isfinite(number) and above and below):
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return number


def check_choice(name: str, value, choices: Iterable):
    """``value`` when it is one of ``choices``; else ``ValueError("{name} must be one of a, b, got {value!r}")``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value
