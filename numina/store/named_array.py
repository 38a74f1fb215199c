"""NamedArray: a lazy array that knows its dimension names and coordinates.

``store["cross_attention/probs"]`` returns one; ``.sel(step=20, layer=[0, 15])`` (by coordinate value)
and ``.isel(head=0)`` (by position) return new lazy views, and only ``.values`` /
``np.asarray(view)`` reads, fetching exactly the selected hyperslab from disk. A scalar selection
drops the dimension (its value moves to ``.scalar_coords``); a list keeps it, in the order given
(any order, repeats allowed). Backed by an HDF5 dataset or, via :meth:`NamedArray.from_numpy`, by an
in-memory array. May import h5py, numpy, xarray (the optional `to_xarray`), numina.store.errors and
numina.store.coords.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import h5py
import numpy as np

from numina.store.coords import CoordIndex, is_scalar_label, normalize_coord, summarize_values
from numina.store.errors import CoordinateError, DamagedStoreError

Key = int | np.ndarray  # per stored dimension: one position (dimension dropped) or positions (kept)


class ArraySource(Protocol):
    """What a NamedArray reads from: full shape, dtype, and reading of a per-dimension selection."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def read(self, keys: Sequence[Key]) -> np.ndarray: ...


def _runs(positions: np.ndarray) -> list[tuple[int, int, int]]:
    """Split sorted unique positions into hyperslab pieces ``(start, stride, count)``."""
    if len(positions) == 1:
        return [(int(positions[0]), 1, 1)]
    steps = np.diff(positions)
    if (steps == steps[0]).all():
        return [(int(positions[0]), int(steps[0]), len(positions))]
    breaks = np.flatnonzero(steps != 1) + 1
    return [(int(run[0]), 1, len(run)) for run in np.split(positions, breaks)]


class H5Source:
    """Reads per-dimension selections from an h5py dataset in one HDF5 read."""

    def __init__(self, dataset: h5py.Dataset, refresh: bool = False) -> None:
        self.dataset = dataset
        self.shape = tuple(dataset.shape)
        self.dtype = dataset.dtype
        self.refresh = refresh

    def read(self, keys: Sequence[Key]) -> np.ndarray:
        try:
            return self._read(keys)
        except OSError as error:  # h5py's error for a chunk whose fletcher32 checksum fails
            raise DamagedStoreError(
                f"dataset {self.dataset.name!r} of {self.dataset.file.filename} could not be read ({error}): "
                "its bytes were damaged after writing (a failed checksum). Copy the store again from its "
                "source, or re-run the capture."
            ) from error

    def _read(self, keys: Sequence[Key]) -> np.ndarray:
        if self.refresh:
            self.dataset.refresh()
        if not keys:
            return np.asarray(self.dataset[()])
        uniques: list[np.ndarray] = []
        inverses: list[np.ndarray | None] = []
        for key in keys:
            if isinstance(key, np.ndarray):
                unique, inverse = np.unique(key, return_inverse=True)
                uniques.append(unique)
                same = len(unique) == len(key) and (unique == key).all()
                inverses.append(None if same else inverse.reshape(-1))
            else:
                uniques.append(np.asarray([key]))
                inverses.append(None)
        mem_shape = tuple(len(unique) for unique in uniques)
        out = np.empty(mem_shape, dtype=self.dtype)
        if out.size:
            space = self.dataset.id.get_space()
            pieces = [_runs(unique) for unique in uniques]
            for number, combo in enumerate(itertools.product(*pieces)):
                start, stride, count = zip(*combo, strict=True)
                space.select_hyperslab(
                    start, count, stride, op=h5py.h5s.SELECT_SET if number == 0 else h5py.h5s.SELECT_OR
                )
            self.dataset.id.read(h5py.h5s.create_simple(mem_shape), space, out)
        for axis, inverse in enumerate(inverses):
            if inverse is not None:
                out = np.take(out, inverse, axis=axis)
        return out.reshape([len(key) for key in keys if isinstance(key, np.ndarray)])


class NumpySource:
    """Reads per-dimension selections from an in-memory array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = np.asarray(array)
        self.shape = self.array.shape
        self.dtype = self.array.dtype

    def read(self, keys: Sequence[Key]) -> np.ndarray:
        index = np.ix_(*[key if isinstance(key, np.ndarray) else np.asarray([key]) for key in keys])
        kept = [len(key) for key in keys if isinstance(key, np.ndarray)]
        return self.array[index].reshape(kept)


class NamedArray:
    """Lazy view of an array with named dimensions and coordinates; read with ``.values``."""

    def __init__(
        self,
        source: ArraySource,
        dims: Sequence[str],
        coords: Mapping[str, Any],
        *,
        name: str = "",
        attrs: Mapping[str, Any] | None = None,
        index_dims: Sequence[str] = (),
        written_source: ArraySource | None = None,
        _keys: Sequence[Key] | None = None,
    ) -> None:
        self._source = source
        self._all_dims = tuple(dims)
        if len(self._all_dims) != len(source.shape):
            raise ValueError(
                f"{len(self._all_dims)} dims {self._all_dims} for an array of shape {source.shape}"
            )
        self._index = {
            dim: CoordIndex(dim, normalize_coord(dim, coords[dim]), name or "this array")
            for dim in self._all_dims
        }
        for dim, size in zip(self._all_dims, source.shape, strict=True):
            if len(self._index[dim]) != size:
                raise ValueError(
                    f"coordinate {dim!r} has {len(self._index[dim])} values for a dimension of {size}"
                )
        self._keys: list[Key] = [np.arange(size) for size in source.shape] if _keys is None else list(_keys)
        self.name = name
        self.attrs = dict(attrs or {})
        self.index_dims = tuple(index_dims)
        self._written_source = written_source

    @classmethod
    def from_numpy(
        cls, data: Any, dims: Sequence[str], coords: Mapping[str, Any] | None = None, name: str = ""
    ) -> NamedArray:
        """Wrap an in-memory array; coordinates default to positions ``0..n-1``."""
        array = np.asarray(data)
        coords = dict(coords or {})
        for dim, size in zip(dims, array.shape, strict=True):
            coords.setdefault(dim, np.arange(size))
        return cls(NumpySource(array), dims, coords, name=name)

    # ---------------------------------------------------------------- description

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(
            dim for dim, key in zip(self._all_dims, self._keys, strict=True) if isinstance(key, np.ndarray)
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(key) for key in self._keys if isinstance(key, np.ndarray))

    @property
    def sizes(self) -> dict[str, int]:
        return dict(zip(self.dims, self.shape, strict=True))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype(self) -> np.dtype:
        return self._source.dtype

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def coords(self) -> dict[str, np.ndarray]:
        """Coordinate values of the remaining dimensions."""
        return {
            dim: self._index[dim].values[key]
            for dim, key in zip(self._all_dims, self._keys, strict=True)
            if isinstance(key, np.ndarray)
        }

    @property
    def scalar_coords(self) -> dict[str, Any]:
        """Dimensions selected away by a scalar, with the value they were selected at."""
        return {
            dim: self._index[dim].values[key].item()
            for dim, key in zip(self._all_dims, self._keys, strict=True)
            if not isinstance(key, np.ndarray)
        }

    def __repr__(self) -> str:
        dims = ", ".join(f"{dim}: {size}" for dim, size in self.sizes.items())
        fixed = ", ".join(f"{dim}={value!r}" for dim, value in self.scalar_coords.items())
        label = f" {self.name!r}" if self.name else ""
        return f"<NamedArray{label} ({dims}) {self.dtype}{'; ' + fixed if fixed else ''}>"

    # ---------------------------------------------------------------- selection

    def _position_of(self, dim: str, method: str) -> int:
        if dim in self._index and dim not in self.dims:
            raise CoordinateError(
                f"{method}: dimension {dim!r} was already selected ({dim}={self.scalar_coords[dim]!r}); "
                f"remaining dimensions: {list(self.dims)}"
            )
        if dim not in self._all_dims:
            raise CoordinateError(
                f"{method}: {self.name or 'array'} has no dimension {dim!r}; dimensions: {list(self.dims)}"
            )
        return self._all_dims.index(dim)

    def _with_keys(self, keys: list[Key]) -> NamedArray:
        view = object.__new__(NamedArray)
        view.__dict__.update(self.__dict__)
        view._keys = keys
        return view

    def sel(self, indexers: Mapping[str, Any] | None = None, **kwargs: Any) -> NamedArray:
        """Select by coordinate value: a scalar drops the dim, a list keeps it, a slice is inclusive.

        ``slice(a, b)`` selects positions from value ``a`` to value ``b`` inclusive, like xarray/pandas.
        """
        keys = list(self._keys)
        for dim, value in {**(indexers or {}), **kwargs}.items():
            axis = self._position_of(dim, "sel")
            current = keys[axis]
            index = self._index[dim]
            if isinstance(value, slice):
                start = 0 if value.start is None else index.position(value.start)
                stop = len(index) - 1 if value.stop is None else index.position(value.stop)
                wanted = np.arange(start, stop + 1, value.step or 1)
                keys[axis] = current[np.isin(current, wanted)]
                continue
            if is_scalar_label(value):
                positions = np.asarray([index.position(value)])
            else:
                positions = index.positions(value)
            missing = positions[~np.isin(positions, current)]
            if missing.size:
                raise CoordinateError(
                    f"sel: {dim}={index.values[missing].tolist()} is outside the current view of "
                    f"{self.name or 'array'}; "
                    f"available: {summarize_values(index.values[current])}"
                )
            keys[axis] = int(positions[0]) if is_scalar_label(value) else positions
        return self._with_keys(keys)

    def isel(self, indexers: Mapping[str, Any] | None = None, **kwargs: Any) -> NamedArray:
        """Select by integer position in the current view (negative counts from the end)."""
        keys = list(self._keys)
        for dim, value in {**(indexers or {}), **kwargs}.items():
            axis = self._position_of(dim, "isel")
            current = keys[axis]
            size = len(current)
            if isinstance(value, slice):
                keys[axis] = current[value]
                continue
            array = np.asarray(value)
            if array.dtype.kind == "b":
                if array.shape != (size,):
                    raise IndexError(
                        f"isel: boolean mask for {dim!r} has shape {array.shape}, expected ({size},)"
                    )
                keys[axis] = current[array]
                continue
            if array.dtype.kind not in "iu":
                raise TypeError(
                    f"isel: {dim}={value!r} is not an integer position; use sel() to select by value"
                )
            bad = (array < -size) | (array >= size)
            if bad.any():
                raise IndexError(f"isel: {dim}={value!r} is out of range for a dimension of size {size}")
            keys[axis] = int(current[int(array)]) if array.ndim == 0 else current[array]
        return self._with_keys(keys)

    # ---------------------------------------------------------------- reading

    @property
    def values(self) -> np.ndarray:
        """Read the selection (only it) and return it as a numpy array in ``.dims`` order."""
        return self._source.read(self._keys)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        values = self.values
        return values if dtype is None else values.astype(dtype, copy=False)

    def written_mask(self) -> NamedArray:
        """Lazy uint8 NamedArray over the remaining index dims: 1 where a write landed."""
        if self._written_source is None:
            raise ValueError(
                f"{self.name or 'this array'} has no record of written entries (in-memory array?)"
            )
        keys = [key for dim, key in zip(self._all_dims, self._keys, strict=True) if dim in self.index_dims]
        coords = {dim: self._index[dim].values for dim in self.index_dims}
        mask = NamedArray(self._written_source, self.index_dims, coords, name=f"{self.name} written")
        return mask._with_keys(keys)

    def written(self) -> list[dict[str, Any]]:
        """Index cells written so far, as ``{dim: coordinate value}`` over the remaining index dims.

        Each dict can be passed back to ``.sel(**cell)``. ``[{}]`` means this view lies in one written
        cell (all its index dims selected away); ``[]`` that nothing in it was written.
        """
        mask = self.written_mask()
        values = np.asarray(mask.values)
        coords = mask.coords
        return [
            {dim: coords[dim][position].item() for dim, position in zip(mask.dims, cell, strict=True)}
            for cell in np.argwhere(values)
        ]

    def to_xarray(self) -> Any:
        """Read the selection into an ``xarray.DataArray`` (needs xarray installed)."""
        try:
            import xarray
        except ImportError as error:
            raise ImportError("to_xarray() needs xarray: pip install xarray") from error
        coords: dict[str, Any] = dict(self.coords)
        coords.update({dim: ((), value) for dim, value in self.scalar_coords.items()})
        return xarray.DataArray(
            self.values, dims=self.dims, coords=coords, name=self.name or None, attrs=self.attrs
        )
