"""Numeric option checks, shared by the option records (settings, NUMINA options) and the scripts'
arguments, so that a NaN, an inf or an out-of-range number is refused before any work.

A NaN compares false with everything: `guidance > 1` is false for NaN, so a NaN guidance would switch
classifier-free guidance off without a word. Each check names the option, the range and the value.
`record_fields` does the same for a stored record of options (a run's attributes): it must name
exactly the record's fields, so nothing is read with a default the run did not use.
May import only the standard library.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import fields


def _range(low: float | None, high: float | None, low_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"<= {high}")
    return " and ".join(parts)


def check_real(
    name: str, value: object, low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> float:
    """`value` as a float when it is a finite real number in the range (`low_open`: strictly above
    `low`); otherwise a ValueError that names the option, the range and the value."""
    wanted = " ".join(filter(None, ["a finite number", _range(low, high, low_open)]))
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_real or not math.isfinite(value):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    if (low is not None and (value <= low if low_open else value < low)) or (
        high is not None and value > high
    ):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return float(value)


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int when it is an integer (not a bool) in [low, high]; otherwise a ValueError that
    names the option, the range and the value."""
    wanted = " ".join(filter(None, ["an integer", _range(low, high, False)]))
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def check_optional_int(name: str, value: object, low: int | None = None, high: int | None = None) -> None:
    """`check_int` unless `value` is None (an option whose None means "the default rule")."""
    if value is not None:
        check_int(name, value, low, high)


def check_reals(name: str, values: object, length: int, low: float | None = None) -> None:
    """A sequence of `length` finite real numbers, each >= `low` when given (weights)."""
    if isinstance(values, str) or not hasattr(values, "__len__") or len(values) != length:
        raise ValueError(f"{name} must be {length} finite numbers, got {values!r}")
    for k, value in enumerate(values):
        check_real(f"{name}[{k}]", value, low)


def record_fields(cls: type, values: object, what: str) -> dict[str, object]:
    """`values` when it names exactly the fields of the dataclass `cls`; else a ValueError naming the
    missing and unknown ones."""
    if not isinstance(values, dict):
        raise ValueError(f"{what}: expected a mapping of fields, got {type(values).__name__}")
    names = {f.name for f in fields(cls)}
    missing, unknown = sorted(names - set(values)), sorted(set(values) - names)
    problems = []
    if missing:
        problems.append(f"lacks {missing}")
    if unknown:
        problems.append(f"has unknown {unknown}")
    if problems:
        raise ValueError(
            f"{what}: the record {' and '.join(problems)}; it was written by another version of numina: "
            "give these options explicitly"
        )
    return values
