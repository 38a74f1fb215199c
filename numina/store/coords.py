"""Coordinates of named dimensions: normalising their values and finding positions by value.

A coordinate is a 1-D array of unique labels for the positions along one dimension (steps
``[0..49]``, branches ``["cond", "uncond"]``, prompt token positions ``[3, 4, 7]``). Lookups are by
exact value and raise :class:`~numina.store.errors.CoordinateError` listing what is available.
May import numpy and numina.store.errors only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from numina.store.errors import CoordinateError

_SUMMARY_LIMIT = 12


def normalize_coord(dim: str, values: Any) -> np.ndarray:
    """Return the coordinate values of `dim` as a 1-D numpy array (numbers, bools or ``str``).

    Accepts any sequence (list, tuple, range, array). Values must be unique (selection is by value)
    and all of one kind: numbers or strings.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Iterable | np.ndarray):
        raise TypeError(
            f"coordinate {dim!r} must be a sequence of values (list, range, array), got {values!r}"
        )
    items = list(values.tolist() if isinstance(values, np.ndarray) else values)
    if not items:
        raise ValueError(f"coordinate {dim!r} is empty; every dimension needs at least one position")
    if all(isinstance(item, str | np.str_) for item in items):
        array = np.asarray([str(item) for item in items], dtype=np.str_)
    elif any(isinstance(item, str | bytes | np.str_ | np.bytes_) for item in items):
        raise TypeError(f"coordinate {dim!r} mixes strings with other values: {items[:_SUMMARY_LIMIT]}")
    else:
        array = np.asarray(items)
        if array.ndim != 1 or array.dtype.kind not in "biuf":
            raise TypeError(
                f"coordinate {dim!r} must be a flat list of numbers or strings, got dtype {array.dtype} "
                f"and shape {array.shape}"
            )
    unique, counts = np.unique(array, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"coordinate {dim!r} repeats values {unique[counts > 1].tolist()}; values must be unique"
        )
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise ValueError(f"coordinate {dim!r} contains NaN, which can never be selected")
    return array


def summarize_values(values: np.ndarray) -> str:
    """Short human-readable list of coordinate values for error messages."""
    items = values.tolist()
    if len(items) >= 4 and values.dtype.kind in "iu":
        steps = np.diff(values)
        if (steps == steps[0]).all() and steps[0] != 0:
            step = "" if steps[0] == 1 else f" every {steps[0]}"
            return f"{items[0]}..{items[-1]}{step} ({len(items)} values)"
    if len(items) > _SUMMARY_LIMIT:
        head = ", ".join(repr(item) for item in items[: _SUMMARY_LIMIT - 2])
        return f"{head}, ..., {items[-1]!r} ({len(items)} values)"
    return ", ".join(repr(item) for item in items)


class CoordIndex:
    """Value -> position lookup for one dimension's coordinate."""

    def __init__(self, dim: str, values: np.ndarray, where: str = "") -> None:
        self.dim = dim
        self.values = values
        self.where = where
        self._positions = {value: position for position, value in enumerate(values.tolist())}

    def __len__(self) -> int:
        return len(self.values)

    def position(self, value: Any) -> int:
        """Position of one coordinate value; CoordinateError listing the available values if absent."""
        key = value.item() if isinstance(value, np.generic) else value
        try:
            return self._positions[key]
        except (KeyError, TypeError):
            place = f" of {self.where}" if self.where else ""
            raise CoordinateError(
                f"{self.dim}={value!r} is not a coordinate value of dimension {self.dim!r}{place}; "
                f"available: {summarize_values(self.values)}"
            ) from None

    def positions(self, values: Iterable[Any]) -> np.ndarray:
        return np.asarray([self.position(value) for value in values], dtype=np.int64)


def is_scalar_label(value: Any) -> bool:
    """True for one coordinate value (number or string), False for a list/array/range of them."""
    return isinstance(value, str | bytes | np.generic) or np.ndim(value) == 0


def check_dims(dims: Iterable[str], available: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """Validate a tuple of dimension names against the coordinates that exist."""
    if isinstance(dims, str):
        raise TypeError(f"dims must be a tuple of dimension names, got the string {dims!r}")
    dims = tuple(dims)
    for dim in dims:
        if not isinstance(dim, str):
            raise TypeError(f"dimension names must be strings, got {dim!r} in {dims}")
        if dim not in available:
            raise CoordinateError(
                f"dimension {dim!r} has no coordinate in {where}; available dimensions: {list(available)}"
            )
    if len(set(dims)) != len(dims):
        raise ValueError(f"dims {dims} repeat a dimension")
    return dims
