"""AttentionStore: reading a run's attention store back as lazy named arrays.

    with open_store(run_dir / "attention.h5") as store:
        store.attrs["prompt"]
        probs = store["cross_attention/probs"]            # lazy NamedArray, nothing read yet
        maps = probs.sel(step=20, branch="cond", token=3).values

Only complete stores open by default (see :mod:`numina.store.integrity`). ``allow_incomplete=True``
opens what a killed or failed writer left (up to its last flush); ``live=True`` follows a writer that
is still running (HDF5 SWMR): each read refreshes, ``refresh()`` updates attributes and ``complete``
turns True once the writer has closed. The writer must run in another process. A chunk that fails its
checksum or metadata that no longer decodes raises ``DamagedStoreError``. May import h5py, numpy
and numina.store (attrs, errors, integrity, named_array, schema).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from numina.store.attrs import decode_log, read_attrs
from numina.store.errors import CoordinateError, DamagedStoreError
from numina.store.integrity import open_store_file, read_complete
from numina.store.named_array import H5Source, NamedArray
from numina.store.schema import ATTRS_LOG_PATH, COORDS_ATTR, INDEX_DIMS_ATTR, INTERNAL_GROUP, written_path


@contextlib.contextmanager
def _metadata(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn what damaged metadata raises (a missing attribute, JSON or text that no longer decodes, a
    chunk that fails its checksum) into the store's own error, naming the file and what was read."""
    try:
        yield
    except CoordinateError:
        raise
    except (KeyError, ValueError, OSError) as error:
        raise DamagedStoreError(
            f"the {what} of {path} cannot be read ({type(error).__name__}: {error}): the file was damaged "
            "after writing. Copy the store again from its source, or re-run the capture."
        ) from error


def _strings(values: Any) -> list[str]:
    return [
        value.decode() if isinstance(value, bytes) else str(value) for value in np.asarray(values).tolist()
    ]


def _coord_values(dataset: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return np.asarray(dataset.asstr()[()], dtype=np.str_)
    return dataset[()]


class StoreGroup:
    """One group of a store: datasets sharing coordinates."""

    def __init__(self, store: AttentionStore, name: str) -> None:
        self.store = store
        self.name = name
        self._group = store._file[name]
        with _metadata(store.path, f"coordinates of group {name!r}"):
            self.dims: tuple[str, ...] = tuple(_strings(self._group.attrs[COORDS_ATTR]))
            self.coords: dict[str, np.ndarray] = {dim: _coord_values(self._group[dim]) for dim in self.dims}
        self.datasets: tuple[str, ...] = tuple(key for key in self._group if key not in self.coords)

    def __getitem__(self, name: str) -> NamedArray:
        if name not in self.datasets:
            raise CoordinateError(
                f"group {self.name!r} has no dataset {name!r}; datasets: {list(self.datasets)}"
            )
        dataset = self._group[name]
        with _metadata(self.store.path, f"dimensions and attributes of dataset {self.name}/{name!r}"):
            dims = tuple(dim.label for dim in dataset.dims)
            coords = {dim: self.coords[dim] for dim in dims}
            index_dims = tuple(_strings(dataset.attrs.get(INDEX_DIMS_ATTR, [])))
            attrs = read_attrs(dataset)
        mask = self.store._file.get(written_path(self.name, name))
        live = self.store.live
        return NamedArray(
            H5Source(dataset, refresh=live),
            dims,
            coords,
            name=f"{self.name}/{name}",
            attrs=attrs,
            index_dims=index_dims if mask is not None else (),
            written_source=H5Source(mask, refresh=live) if mask is not None else None,
        )

    def __contains__(self, name: object) -> bool:
        return name in self.datasets

    def __repr__(self) -> str:
        coords = ", ".join(f"{dim}: {len(values)}" for dim, values in self.coords.items())
        return f"<StoreGroup {self.name!r} ({coords}); datasets {list(self.datasets)}>"


class AttentionStore:
    """Read access to one attention store file; see the module docstring."""

    def __init__(
        self, path: str | os.PathLike[str], allow_incomplete: bool = False, live: bool = False
    ) -> None:
        opened = open_store_file(path, allow_incomplete=allow_incomplete, live=live)
        self._file = opened.file
        self.path: Path = opened.path
        self.live = live
        self._groups: dict[str, StoreGroup] = {}
        self._attrs: dict[str, Any] = {}
        try:
            self.refresh()
        except BaseException:
            self._file.close()
            raise

    def refresh(self) -> None:
        """Re-read attributes (and, in live mode, what the writer flushed since)."""
        with _metadata(self.path, "run attributes"):
            attrs = read_attrs(self._file)
            log = self._file[ATTRS_LOG_PATH]
            if self.live:
                log.refresh()
            attrs.update(decode_log(log[()].tobytes()))
        self._attrs = attrs

    @property
    def attrs(self) -> dict[str, Any]:
        """Run attributes, decoded (JSON ones back to dicts/lists), including those set while writing."""
        return dict(self._attrs)

    @property
    def complete(self) -> bool:
        """True once the writer closed the file properly."""
        return read_complete(self._file)

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(name for name in self._file if name != INTERNAL_GROUP)

    @property
    def datasets(self) -> tuple[str, ...]:
        """Every data dataset as ``"group/name"``."""
        return tuple(f"{group}/{name}" for group in self.groups for name in self.group(group).datasets)

    def group(self, name: str) -> StoreGroup:
        if name not in self.groups:
            raise CoordinateError(
                f"store {self.path.name} has no group {name!r}; groups: {list(self.groups)}"
            )
        if name not in self._groups:
            self._groups[name] = StoreGroup(self, name)
        return self._groups[name]

    def coords(self, group: str) -> dict[str, np.ndarray]:
        return dict(self.group(group).coords)

    def __getitem__(self, key: str) -> NamedArray | StoreGroup:
        group, _, name = key.partition("/")
        if not name:
            return self.group(group)
        if key not in self.datasets:
            raise CoordinateError(
                f"store {self.path.name} has no dataset {key!r}; datasets: {list(self.datasets)}"
            )
        return self.group(group)[name]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self.groups or key in self.datasets)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AttentionStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if not self._file.id.valid:
            return f"<AttentionStore {self.path} (closed)>"
        lines = [f"<AttentionStore {self.path}{'' if self.complete else ' (incomplete)'}>"]
        for name in self.groups:
            group = self.group(name)
            lines.append(
                f"  {name}: " + ", ".join(f"{dim}={len(values)}" for dim, values in group.coords.items())
            )
            for dataset in group.datasets:
                array = group[dataset]
                lines.append(f"    {dataset}{array.dims} {array.dtype}")
        return "\n".join(lines)


def open_store(
    path: str | os.PathLike[str], allow_incomplete: bool = False, live: bool = False
) -> AttentionStore:
    """Open an attention store for reading (same as ``AttentionStore(path, ...)``)."""
    return AttentionStore(path, allow_incomplete=allow_incomplete, live=live)
