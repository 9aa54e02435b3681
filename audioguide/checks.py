"""Checks every options object runs on its fields at construction.

Each raises OptionError naming the field in the library's words and saying what is accepted, so
a bad value fails at once, where it was given, not in the middle of a render. The CLI maps the
field to its flag (``cli.FLAGS``), so the CLI and the library cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import TypeVar

from .errors import OptionError

T = TypeVar("T")


def check_number(
    value: object,
    field: str,
    minimum: float,
    maximum: float,
    unit: str,
    *,
    hint: str = "",
) -> float:
    """``value`` as a float if it is a finite real number from ``minimum`` to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise OptionError(f"must be a number of {unit} (got {value!r})", field=field)
    number = float(value)
    if not (math.isfinite(number) and minimum <= number <= maximum):
        raise OptionError(
            f"must be between {minimum:g} and {maximum:g} {unit} (got {number:g}){hint}",
            field=field,
        )
    return number


def check_optional_number(
    value: object, field: str, minimum: float, maximum: float, unit: str, *, hint: str = ""
) -> float | None:
    """None (keep the routine's), or a number as ``check_number`` accepts it."""
    if value is None:
        return None
    return check_number(value, field, minimum, maximum, unit, hint=hint)


def check_whole(value: object, field: str, minimum: int, maximum: int, unit: str = "") -> int:
    """``value`` if it is a whole number (not a bool) from ``minimum`` to ``maximum``."""
    what = f"a whole number of {unit}" if unit else "a whole number"
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"must be {what} (got {value!r})", field=field)
    if not minimum <= value <= maximum:
        raise OptionError(f"must be {what} from {minimum} to {maximum} (got {value})", field=field)
    return value


def check_choice(value: T, field: str, choices: Sequence[T]) -> T:
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise OptionError(f"must be one of {listed} (got {value!r})", field=field)
    return value


def check_flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"must be True or False (got {value!r})", field=field)
    return value


def check_optional_text(value: object, field: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise OptionError(f"must be a non-empty text or None (got {value!r})", field=field)
    return value
