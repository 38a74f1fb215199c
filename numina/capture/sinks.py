"""Where the capture hooks write: the `Sink` protocol, a capture kept in memory and read as the HDF5
store is, and a sink that writes to several.

`MemoryStore(spec, geometry)` takes the capture hooks' writes as `AttentionStoreWriter` does (same
datasets, from `numina.capture.spec.store_layout`) and answers `store["cross_attention/probs"]` with
the same lazy `NamedArray` that `open_store` gives for the file: named dimensions, `.sel` / `.isel`,
`.values` in the dataset's dtype, NaN where nothing was written, `.written()`. So the method's phase 1,
the analysis and the notebooks read a capture one way, in memory or on disk. Tensors stay where they
were computed until they are read (no host copy while the model runs). May import numpy, torch,
numina.capture.spec, numina.models.geometry and numina.store.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from numina.capture.spec import CaptureSpec, DatasetDeclaration, store_layout
from numina.models.geometry import Geometry
from numina.store import CoordinateError, NamedArray
from numina.store.attrs import decode_log, encode_log_entry
from numina.store.named_array import Key, NumpySource
from numina.store.writer import tensor_to_numpy


class Sink(Protocol):
    """Where captured tensors go: `numina.store.AttentionStoreWriter` or `MemoryStore`.

    A sink may also have `start()`, which the capture calls when it is installed: the HDF5 store then
    creates and lays out its file before the model runs, not inside the first captured step, in the
    model's thread (where it cost the 1.3B shape's captured step 12-20 ms on an H100).
    """

    def write(self, name: str, index: dict[str, Any], data: Any) -> None: ...


def start_sink(sink: Any) -> None:
    """Call the sink's `start()`, if it has one (see `Sink`)."""
    start = getattr(sink, "start", None)
    if start is not None:
        start()


class _Records:
    """One dataset's writes: tensors keyed by the positions of the dims they were written at."""

    def __init__(self, declaration: DatasetDeclaration, coords: Mapping[str, list[Any]]) -> None:
        self.declaration = declaration
        self.dims = declaration.dims
        self.dtype = np.dtype(declaration.dtype)
        self.shape = tuple(len(coords[dim]) for dim in self.dims)
        self.positions = {dim: {value: i for i, value in enumerate(coords[dim])} for dim in self.dims}
        self.index_dims: tuple[str, ...] | None = None  # the dims every write gives, in dataset order
        self.tensors: dict[tuple[int, ...], torch.Tensor] = {}

    def put(self, index: Mapping[str, Any], data: torch.Tensor) -> None:
        name = self.declaration.name
        unknown = [dim for dim in index if dim not in self.dims]
        if unknown:
            raise CoordinateError(f"write({name!r}): {unknown} not among its dimensions {list(self.dims)}")
        dims = tuple(dim for dim in self.dims if dim in index)
        if self.index_dims is None:
            self.index_dims = dims
        elif dims != self.index_dims:
            raise CoordinateError(f"write({name!r}) at dims {dims}; earlier writes gave {self.index_dims}")
        try:
            key = tuple(self.positions[dim][index[dim]] for dim in dims)
        except KeyError as error:
            raise CoordinateError(f"write({name!r}): {error.args[0]!r} is not a coordinate value") from None
        shape = tuple(size for dim, size in zip(self.dims, self.shape, strict=True) if dim not in index)
        if tuple(data.shape) != shape:
            raise ValueError(
                f"write({name!r}, index={dict(index)}): data has shape {tuple(data.shape)}, not {shape}"
            )
        self.tensors[key] = data.detach()


class _MemorySource:
    """Reads per-dimension selections of one dataset from its records (NaN where none was written)."""

    def __init__(self, records: _Records) -> None:
        self.records = records
        self.shape, self.dtype = records.shape, records.dtype

    def read(self, keys: Sequence[Key]) -> np.ndarray:
        records = self.records
        selected = [np.atleast_1d(key) for key in keys]
        out = np.full([len(positions) for positions in selected], np.nan, dtype=self.dtype)
        index_dims = records.index_dims or ()
        axes = [records.dims.index(dim) for dim in index_dims]
        rest = np.ix_(*[selected[axis] for axis in range(len(keys)) if axis not in axes])
        for cells in itertools.product(*(range(len(selected[axis])) for axis in axes)):
            tensor = records.tensors.get(tuple(int(selected[a][c]) for a, c in zip(axes, cells, strict=True)))
            if tensor is None:
                continue
            where = [slice(None)] * len(keys)
            for axis, cell in zip(axes, cells, strict=True):
                where[axis] = cell
            values = tensor_to_numpy(tensor.to("cpu")).astype(self.dtype)  # as the file stores it
            out[tuple(where)] = values[rest] if rest else values
        return out.reshape([len(key) for key in keys if isinstance(key, np.ndarray)])


class _WrittenSource:
    """Which cells of a dataset's chunk dims hold a write, as the HDF5 store's written mask."""

    def __init__(self, records: _Records) -> None:
        self.records = records
        self.chunk_dims = records.declaration.chunk_dims
        self.shape = tuple(records.shape[records.dims.index(dim)] for dim in self.chunk_dims)
        self.dtype = np.dtype("uint8")

    def read(self, keys: Sequence[Key]) -> np.ndarray:
        mask = np.zeros(self.shape, dtype=self.dtype)
        for key in self.records.tensors:
            cell = dict(zip(self.records.index_dims, key, strict=True))
            mask[tuple(cell.get(dim, slice(None)) for dim in self.chunk_dims)] = 1
        return NumpySource(mask).read(keys)


class MemoryStore:
    """A resolved `spec`'s capture on `geometry`, in memory: the capture hooks' sink, read like a store.

    store = MemoryStore(spec, geometry)
    with AttentionCapture(pipeline.transformer, spec, geometry, store):
        pipeline(prompt, ...)
    store["cross_attention/probs"].sel(step=20, branch="cond", layer=15).values
    """

    def __init__(self, spec: CaptureSpec, geometry: Geometry, attrs: Mapping[str, Any] | None = None) -> None:
        layout = store_layout(spec, geometry)
        root = {"capture_spec": spec.to_dict(), "geometry": geometry.to_dict(), **(attrs or {})}
        self.attrs = decode_log(encode_log_entry(root))  # as the file reads them back (JSON: lists)
        self._coords = layout.coords
        self._records = {
            declaration.name: _Records(declaration, layout.coords[declaration.name.split("/")[0]])
            for declaration in layout.datasets
        }

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(self._records)

    def coords(self, group: str) -> dict[str, np.ndarray]:
        return {dim: np.asarray(values) for dim, values in self._coords[group].items()}

    def write(self, name: str, index: Mapping[str, Any], data: torch.Tensor) -> None:
        """Keep `data` (not copied, left on its device) for dataset `name` at `index` {dim: value}."""
        if name not in self._records:
            raise CoordinateError(f"no dataset {name!r} in this capture; datasets: {list(self._records)}")
        self._records[name].put(index, data if isinstance(data, torch.Tensor) else torch.as_tensor(data))

    def clear(self) -> None:
        """Drop every write (and so the device memory its tensors hold); the datasets stay, unwritten."""
        for records in self._records.values():
            records.tensors.clear()

    def __getitem__(self, name: str) -> NamedArray:
        if name not in self._records:
            raise CoordinateError(f"no dataset {name!r} in this capture; datasets: {list(self._records)}")
        records = self._records[name]
        group = self._coords[name.split("/")[0]]
        return NamedArray(
            _MemorySource(records),
            records.dims,
            {dim: group[dim] for dim in records.dims},
            name=name,
            index_dims=records.declaration.chunk_dims,
            written_source=_WrittenSource(records),
        )

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def __repr__(self) -> str:
        written = sum(len(records.tensors) for records in self._records.values())
        return f"<MemoryStore: {len(self._records)} datasets, {written} writes>"


class TeeSink:
    """Writes every capture to several sinks, e.g. memory (read at once by the method) and the HDF5 store."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def start(self) -> None:
        """Start each sink that has a `start()` (the HDF5 store creates its file)."""
        for sink in self.sinks:
            start_sink(sink)

    def write(self, name: str, index: dict[str, Any], data: torch.Tensor) -> None:
        for sink in self.sinks:
            sink.write(name, index, data)
