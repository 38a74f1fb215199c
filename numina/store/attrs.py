"""Encoding run attributes for HDF5 and decoding them back.

Strings, numbers, booleans and numpy arrays are stored as native HDF5 attributes (so h5py and other
tools read them directly); dicts, lists, tuples and None are stored as JSON strings, and the names of
those are listed in the object's ``numina_store_json_attrs`` attribute so the reader decodes them.
Attributes set after writing started (when HDF5 SWMR forbids new attributes) go to a JSON-lines log
instead; :func:`encode_log_entry` / :func:`decode_log` handle that form. May import h5py and numpy only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

RESERVED_PREFIX = "numina_store"
JSON_KEYS_ATTR = "numina_store_json_attrs"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def to_json(key: str, value: Any) -> str:
    try:
        return json.dumps(value, default=_json_default, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"attribute {key!r} cannot be stored: {error}. "
            f"Use strings, numbers, arrays, or dicts/lists of them"
        ) from None


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or "/" in key:
        raise ValueError(f"attribute names must be non-empty strings without '/', got {key!r}")
    if key.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"attribute names starting with {RESERVED_PREFIX!r} are reserved for the store ({key!r})"
        )
    return key


def encode_native(key: str, value: Any) -> tuple[Any, bool]:
    """Return ``(value to store, stored_as_json)`` for one attribute."""
    if isinstance(value, bool | np.bool_ | int | float | np.integer | np.floating | str):
        return value, False
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            return value, False
        if value.dtype.kind in "UO" and all(isinstance(item, str) for item in value.ravel().tolist()):
            return np.asarray(value.tolist(), dtype=h5py.string_dtype()), False
        raise TypeError(f"attribute {key!r}: arrays must hold numbers or strings, got dtype {value.dtype}")
    return to_json(key, value), True


def write_attrs(target: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    """Write attributes on an HDF5 object (file root, group or dataset), JSON-encoding where needed."""
    json_keys = set(_json_keys(target))
    for key, value in attrs.items():
        stored, as_json = encode_native(check_key(key), value)
        target.attrs[key] = stored
        if as_json:
            json_keys.add(key)
        else:
            json_keys.discard(key)
    if json_keys or JSON_KEYS_ATTR in target.attrs:
        target.attrs[JSON_KEYS_ATTR] = json.dumps(sorted(json_keys))


def _json_keys(target: h5py.HLObject) -> list[str]:
    raw = target.attrs.get(JSON_KEYS_ATTR)
    return [] if raw is None else json.loads(raw)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return np.asarray([item.decode() if isinstance(item, bytes) else item for item in value.tolist()])
    return value


def read_attrs(target: h5py.HLObject) -> dict[str, Any]:
    """Decoded user attributes of an HDF5 object (store-internal ``numina_store*`` ones left out)."""
    json_keys = set(_json_keys(target))
    out: dict[str, Any] = {}
    for key in target.attrs:
        if key.startswith(RESERVED_PREFIX):
            continue
        value = _plain(target.attrs[key])
        out[key] = json.loads(value) if key in json_keys else value
    return out


def encode_log_entry(attrs: Mapping[str, Any]) -> bytes:
    """One JSON line recording attributes set while writing; arrays keep their dtype."""
    entry: dict[str, Any] = {}
    for key, value in attrs.items():
        check_key(key)
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biufU":
                raise TypeError(
                    f"attribute {key!r}: arrays must hold numbers or strings, got dtype {value.dtype}"
                )
            entry[key] = {"array": value.tolist(), "dtype": value.dtype.str}
        else:
            json.loads(to_json(key, value))  # validates early, in the caller
            entry[key] = {"value": value}
    return (to_json("attrs", entry) + "\n").encode("utf-8")


def decode_log(raw: bytes) -> dict[str, Any]:
    """Attributes recorded by :func:`encode_log_entry`, later entries overriding earlier ones."""
    out: dict[str, Any] = {}
    lines = [
        line for line in raw.decode("utf-8", errors="replace").strip("\x00").splitlines() if line.strip()
    ]
    for number, line in enumerate(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:  # a writer killed mid-append leaves a cut last line
                break
            raise
        for key, item in entry.items():
            out[key] = np.asarray(item["array"], dtype=item["dtype"]) if "array" in item else item["value"]
    return out
