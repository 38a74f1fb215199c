"""AttentionStoreWriter: writes one run's attention store through one background thread.

Usage (declare everything, then write; see the package docstring for a full example)::

    with AttentionStoreWriter(run_dir / "attention.h5", attrs={"prompt": prompt}) as writer:
        writer.create_group("cross_attention", {"step": range(50), "branch": ["cond"], ...})
        writer.create_dataset("cross_attention/probs", ("step", "branch", "layer", ...),
                              chunk_dims=("step", "branch", "layer", "head", "token"))
        writer.write("cross_attention/probs", {"step": 20, "branch": "cond", "layer": 15}, maps)
        writer.set_attrs(timesteps=[...])

Lifecycle. Declarations are held in memory and checked at once. The first ``write`` (or
``start()``/``flush()``/``close()``) creates ``<path>.partial``, lays out every group, coordinate
scale, dataset and written-mask, and switches the file to HDF5 SWMR mode, so live readers and
post-mortem readers can open it; from then on no group or dataset can be added (an SWMR limit).
``close()`` waits for every queued write, sets ``/_numina/status`` to ``complete``, closes, fsyncs
and renames ``<path>.partial`` to ``<path>`` atomically. A run that dies (exception in the ``with``
body, error in the writer thread, SIGKILL) leaves only ``<path>.partial``, which the reader refuses
unless told ``allow_incomplete=True``.

Background writing. ``write`` validates the index and the data's shape in the caller, then hands
the data to one writer thread through a bounded queue (``queue_size`` items; ``write`` blocks while
it is full, so memory stays bounded). A torch tensor on a GPU is not copied or synchronised in the
caller: an asynchronous copy into pinned host memory is queued on a side CUDA stream (ordered after
the work that produced the tensor, overlapping the work that follows), and the thread waits on that
copy's event. So do not modify such a tensor in place after passing it (pass a fresh tensor or a
``.clone()``); the device memory is released once the copy has run. CPU data (numpy
arrays, CPU tensors, anything with ``__array__``) is copied in the caller, so it may be reused at
once. An error in the thread is raised in the caller at its next ``write``/``flush``/``close`` as a
StoreWriteError whose ``__cause__`` carries the original traceback. One producer thread per writer.

May import h5py, numpy and numina.store (attrs, coords, errors, integrity, schema); torch is
only touched through tensors the caller passes in.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from numina.store.attrs import encode_log_entry, encode_native, write_attrs
from numina.store.coords import CoordIndex, check_dims, normalize_coord
from numina.store.errors import CoordinateError, StoreError, StoreWriteError, os_error_of
from numina.store.integrity import fsync_path
from numina.store.schema import (
    ATTRS_LOG_PATH,
    COORDS_ATTR,
    FORMAT_ATTR,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_DIMS_ATTR,
    INTERNAL_GROUP,
    LIBVER,
    STATUS_COMPLETE,
    STATUS_PATH,
    STATUS_WRITING,
    VERSION_ATTR,
    chunk_shape,
    default_chunk_dims,
    fill_value,
    final_path,
    partial_path,
    written_path,
)

_STOP = object()
_FLUSH = object()
_CHUNK_CACHE_BYTES = 4 << 20
FREE_SPACE_MARGIN = 1 << 20  # the store's metadata, scales and masks, with room to spare


@dataclass
class _GroupSpec:
    name: str
    coords: dict[str, np.ndarray]
    index: dict[str, CoordIndex]


@dataclass
class _DatasetSpec:
    key: str
    group: str
    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    chunk_dims: tuple[str, ...]
    chunks: tuple[int, ...]
    compression: Any
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class _WriteJob:
    spec: _DatasetSpec
    index: dict[str, Any]
    selection: tuple[int | slice, ...]
    mask_selection: tuple[int | slice, ...]
    shape: tuple[int, ...]
    data: Any
    event: Any = None

    def describe(self) -> str:
        return f"write({self.spec.key!r}, index={self.index})"


@dataclass
class _AttrsJob:
    payload: bytes

    def describe(self) -> str:
        return "set_attrs(...)"


def tensor_to_numpy(tensor: Any) -> np.ndarray:
    """A CPU tensor as numpy, as the store writes it (dtypes numpy lacks, such as bfloat16, via float32)."""
    try:
        return tensor.numpy()
    except TypeError:  # bfloat16 and other dtypes numpy lacks
        return tensor.float().numpy()


_copy_streams: dict[Any, Any] = {}


def _copy_stream(torch: Any, device: Any) -> Any:
    """One side stream per CUDA device for device-to-host copies, so they overlap compute."""
    if device not in _copy_streams:
        _copy_streams[device] = torch.cuda.Stream(device)
    return _copy_streams[device]


def _snapshot(data: Any, dtype: np.dtype) -> tuple[Any, Any]:
    """What the caller hands to the thread: ``(data, cuda_event)``; never synchronises a device.

    A CUDA tensor is copied into pinned host memory on a side stream that first waits for the
    producing stream: the copy engine overlaps the compute queued after it, where a plain ``.cpu()``
    in the thread would sit in the compute stream and stall it.
    """
    device_type = getattr(getattr(data, "device", None), "type", None)
    if hasattr(data, "detach") and device_type == "cuda":
        torch = sys.modules["torch"]  # the caller passed a torch tensor, so torch is imported
        stream = _copy_stream(torch, data.device)
        stream.wait_stream(torch.cuda.current_stream(data.device))
        host = torch.empty(data.shape, dtype=data.dtype, pin_memory=True)
        with torch.cuda.stream(stream):
            host.copy_(data.detach(), non_blocking=True)
            data.record_stream(stream)  # the allocator keeps it until the copy has run
            event = torch.cuda.Event()
            event.record(stream)
        return host, event
    if hasattr(data, "detach") and device_type not in (None, "cpu"):
        return data, None  # other accelerators: converted (synchronously) in the thread
    if hasattr(data, "detach"):
        return tensor_to_numpy(data.detach()).astype(dtype, copy=True), None
    if isinstance(data, np.ndarray) or hasattr(data, "__array__") or not hasattr(data, "cpu"):
        return np.asarray(data).astype(dtype, copy=True), None
    return data, None  # has .cpu() only: converted in the thread


def _to_numpy(data: Any, event: Any) -> np.ndarray:
    """Runs in the writer thread."""
    if isinstance(data, np.ndarray):
        return data
    if event is not None:
        event.synchronize()
    if hasattr(data, "detach"):
        return tensor_to_numpy(data.detach().to("cpu"))
    host = data.cpu()
    return tensor_to_numpy(host) if hasattr(host, "numpy") else np.asarray(host)


class _Worker(threading.Thread):
    """The one thread that touches the HDF5 file between start() and close().

    Written-masks are kept in memory and written out at each flush, together with the data they
    describe, so a reader never sees a cell marked written before its flush.
    """

    def __init__(self, writer: AttentionStoreWriter, flush_interval: float | None) -> None:
        super().__init__(name=f"AttentionStoreWriter({writer.path.name})", daemon=True)
        self.writer = writer
        self.jobs: queue.Queue[Any] = writer._queue
        self.flush_interval = flush_interval
        self.error: BaseException | None = None
        self.failed_job: Any = None
        self.masks = {key: np.zeros(mask.shape, dtype=np.uint8) for key, mask in writer._masks.items()}
        self._masks_dirty: set[str] = set()
        self._dirty = False
        self._last_flush = time.monotonic()

    def run(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=self.flush_interval)
            except queue.Empty:
                self._flush_if_due(force=True)
                continue
            try:
                if job is _STOP:
                    self._flush_if_due(force=True, always=True)
                    return
                if self.error is None:
                    self._handle(job)
            except BaseException as error:  # handed to the caller, never lost
                self.error, self.failed_job = os_error_of(error), job
            finally:
                self.jobs.task_done()

    def _handle(self, job: Any) -> None:
        handle = self.writer._handle
        if job is _FLUSH:
            self._flush()
            return
        if isinstance(job, _AttrsJob):
            log = handle[ATTRS_LOG_PATH]
            start = log.shape[0]
            log.resize((start + len(job.payload),))
            log[start:] = np.frombuffer(job.payload, dtype=np.uint8)
        else:
            array = _to_numpy(job.data, job.event)
            job.data = job.event = None  # release device memory as soon as it is copied
            if array.shape != job.shape:
                raise ValueError(f"data converted to shape {array.shape}, expected {job.shape}")
            _write_block(self.writer._datasets[job.spec.key], job.spec.shape, job.selection, array)
            self.masks[job.spec.key][job.mask_selection] = 1
            self._masks_dirty.add(job.spec.key)
        self._dirty = True
        self._flush_if_due()

    def _flush(self) -> None:
        for key in sorted(self._masks_dirty):
            mask = self.masks[key]
            _write_block(self.writer._masks[key], mask.shape, (slice(None),) * mask.ndim, mask)
        self._masks_dirty.clear()
        self.writer._handle.flush()
        self._dirty, self._last_flush = False, time.monotonic()

    def _flush_if_due(self, force: bool = False, always: bool = False) -> None:
        if not self._dirty or (self.flush_interval is None and not always):
            return
        if self.error is not None and not always:
            return
        if force or time.monotonic() - self._last_flush >= self.flush_interval:
            try:
                self._flush()
            except BaseException as error:
                if self.error is None:
                    self.error, self.failed_job = os_error_of(error), _FLUSH


class AttentionStoreWriter:
    """Writes an attention store (HDF5, named dimensions) for one run; see the module docstring.

    Args:
        path: final file name (``.h5``); the file is ``<path>.partial`` until closed properly.
        attrs: run attributes (strings, numbers, arrays natively; dicts/lists as JSON).
        queue_size: most writes waiting for the thread; ``write`` blocks while this many are queued.
        flush_interval: seconds between HDF5 flushes while writing (what live readers and a
            post-mortem ``allow_incomplete`` reader can see); None flushes only on ``flush()``.
        overwrite: replace an existing complete store at ``path`` (only when this one closes).

    ``stats`` counts ``writes``, ``bytes`` (as stored) and ``wait_seconds`` (time ``write`` spent
    blocked on the full queue). Use from one producer thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        attrs: Mapping[str, Any] | None = None,
        *,
        queue_size: int = 16,
        flush_interval: float | None = 2.0,
        overwrite: bool = False,
    ) -> None:
        self.path = final_path(Path(path))
        self.partial_path = partial_path(self.path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"cannot write attention store {self.path}: folder {self.path.parent} does not exist"
            )
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"attention store {self.path} already exists; pass overwrite=True to replace it "
                f"(the old file stays until the new one closes properly)"
            )
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self._attrs: dict[str, Any] = {}
        self._groups: dict[str, _GroupSpec] = {}
        self._specs: dict[str, _DatasetSpec] = {}
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._flush_interval = flush_interval
        self._handle: h5py.File | None = None
        self._worker: _Worker | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._masks: dict[str, h5py.Dataset] = {}
        self._closed = False
        self.stats: dict[str, float] = {"writes": 0, "bytes": 0, "wait_seconds": 0.0}
        self.set_attrs(attrs or {})

    # ------------------------------------------------------------------ declaration

    @property
    def started(self) -> bool:
        return self._handle is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_declaring(self, what: str) -> None:
        self._check_open()
        if self.started:
            raise StoreError(
                f"cannot {what} after writing started: the file is in HDF5 SWMR mode (so it can be read "
                f"while written), which cannot add groups or datasets. Declare all of them before the "
                f"first write."
            )

    def create_group(self, name: str, coords: Mapping[str, Sequence[Any]]) -> None:
        """Declare a group of datasets sharing coordinates ``{dim: values}`` (ints, floats or strings)."""
        self._check_declaring(f"create group {name!r}")
        _check_name(name, "group")
        if name in self._groups:
            raise ValueError(f"group {name!r} is already declared")
        if not coords:
            raise ValueError(f"group {name!r} needs at least one coordinate")
        values: dict[str, np.ndarray] = {}
        for dim, coord in coords.items():
            _check_name(dim, "dimension")
            values[dim] = normalize_coord(dim, coord)
        index = {dim: CoordIndex(dim, coord, f"group {name!r}") for dim, coord in values.items()}
        self._groups[name] = _GroupSpec(name, values, index)

    def create_dataset(
        self,
        name: str,
        dims: Sequence[str],
        dtype: Any = "float16",
        chunk_dims: Sequence[str] | None = None,
        *,
        compression: str | int | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Declare dataset ``"group/name"`` over `dims` (each a coordinate of the group).

        Args:
            dtype: floating (unwritten entries read as NaN) or integer/bool (they read as 0).
            chunk_dims: the "index" dims: chunked with size 1 (one read per step/layer/token touches
                one chunk) and recorded in the written-mask; the others are whole in each chunk.
                Default: leading dims, keeping trailing dims whole while a chunk stays <= 1 MiB.
            compression: None (default; fastest), "lzf", "gzip" or a gzip level 0-9 (with shuffle).
        """
        self._check_declaring(f"create dataset {name!r}")
        group_name, _, short = name.partition("/")
        if group_name not in self._groups:
            raise CoordinateError(
                f"dataset {name!r}: no group {group_name!r} declared (name datasets 'group/dataset'); "
                f"groups: {list(self._groups)}"
            )
        _check_name(short, "dataset")
        group = self._groups[group_name]
        if name in self._specs:
            raise ValueError(f"dataset {name!r} is already declared")
        if short in group.coords:
            raise ValueError(f"dataset {name!r} has the name of a coordinate of group {group_name!r}")
        dims = check_dims(dims, group.coords, f"group {group_name!r}")
        if not dims:
            raise ValueError(f"dataset {name!r} needs at least one dimension")
        dtype = np.dtype(dtype)
        if dtype.kind not in "fiub":
            raise TypeError(f"dataset {name!r}: dtype must be a float, integer or bool type, got {dtype}")
        shape = tuple(len(group.coords[dim]) for dim in dims)
        if chunk_dims is None:
            chunk_dims = default_chunk_dims(dims, shape, dtype.itemsize)
        chunk_dims = check_dims(chunk_dims, dict.fromkeys(dims), f"dataset {name!r}")
        chunk_dims = tuple(dim for dim in dims if dim in chunk_dims)  # stored order
        chunks = chunk_shape(dims, shape, chunk_dims, dtype.itemsize, f"dataset {name!r}")
        if (
            compression is not None
            and compression not in ("lzf", "gzip")
            and not isinstance(compression, int)
        ):
            raise ValueError(f"dataset {name!r}: compression must be None, 'lzf', 'gzip' or a gzip level")
        for key, value in (attrs or {}).items():
            encode_native(key, value)
        self._specs[name] = _DatasetSpec(
            name, group_name, short, dims, shape, dtype, chunk_dims, chunks, compression, dict(attrs or {})
        )

    def set_attrs(self, attrs: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Add or replace run attributes; after writing started they go to the attribute log."""
        self._check_open()
        values = {**(attrs or {}), **more}
        if not values:
            return
        if not self.started:
            for key, value in values.items():
                encode_native(key, value)  # validates now, in the caller
            self._attrs.update(values)
            return
        self._raise_if_failed()
        self._put(_AttrsJob(encode_log_entry(values)))

    # ------------------------------------------------------------------ file creation

    def start(self) -> None:
        """Create ``<path>.partial`` with every declared object and switch it to SWMR mode."""
        self._check_open()
        if self.started:
            return
        self._check_free_space()
        handle = h5py.File(
            self.partial_path,
            "w",
            libver=LIBVER,
            locking="best-effort",
            rdcc_nbytes=_CHUNK_CACHE_BYTES,
            rdcc_w0=1.0,
        )
        try:
            self._lay_out(handle)
            handle.flush()
            handle.swmr_mode = True
        except BaseException as error:
            with contextlib.suppress(Exception):  # a full disk fails the close too: keep the first error
                handle.close()
            self.partial_path.unlink(missing_ok=True)
            translated = os_error_of(error)
            if translated is error:
                raise
            raise translated from error
        self._handle = handle
        self._worker = _Worker(self, self._flush_interval)
        self._worker.start()

    @property
    def declared_bytes(self) -> int:
        """Bytes of the declared uncompressed datasets: what the store holds once every entry is
        written (its metadata and compressed datasets not counted)."""
        return sum(
            int(np.prod(spec.shape)) * spec.dtype.itemsize
            for spec in self._specs.values()
            if spec.compression is None
        )

    def _check_free_space(self) -> None:
        """Refuse a store that cannot fit before the file exists: HDF5 keeps a file whose write failed
        for lack of space open in a broken state, and the process then crashes on exit (SIGSEGV,
        h5py issue 914), so a full disk must be met here, not halfway through the writes."""
        needed = self.declared_bytes + FREE_SPACE_MARGIN
        free = shutil.disk_usage(self.partial_path.parent).free
        if needed > free:
            raise OSError(
                errno.ENOSPC,
                f"No space left on device for {self.path.name}: it needs about {needed / 2**20:.1f} MiB "
                f"and {free / 2**20:.1f} MiB are free in {self.partial_path.parent}",
            )

    def _lay_out(self, handle: h5py.File) -> None:
        handle.attrs[FORMAT_ATTR] = FORMAT_NAME
        handle.attrs[VERSION_ATTR] = FORMAT_VERSION
        write_attrs(handle, self._attrs)
        internal = handle.create_group(INTERNAL_GROUP)
        internal.attrs["created_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
        status = handle.create_dataset(
            STATUS_PATH, shape=(1,), maxshape=(1,), chunks=(1,), dtype="S16", fletcher32=True
        )
        status[0] = STATUS_WRITING
        handle.create_dataset(
            ATTRS_LOG_PATH, shape=(0,), maxshape=(None,), chunks=(4096,), dtype=np.uint8, fletcher32=True
        )
        scales: dict[str, dict[str, h5py.Dataset]] = {}
        for group in self._groups.values():
            target = handle.create_group(group.name)
            target.attrs[COORDS_ATTR] = np.asarray(list(group.coords), dtype=h5py.string_dtype())
            scales[group.name] = {}
            for dim, values in group.coords.items():
                data = values.astype(object) if values.dtype.kind == "U" else values
                dtype = h5py.string_dtype() if values.dtype.kind == "U" else values.dtype
                scale = target.create_dataset(dim, data=data, dtype=dtype)
                scale.make_scale(dim)
                scales[group.name][dim] = scale
        for spec in self._specs.values():
            options: dict[str, Any] = {}
            if spec.compression is not None:
                level = spec.compression if isinstance(spec.compression, int) else None
                options = {"compression": "gzip" if level is not None else spec.compression, "shuffle": True}
                if level is not None:
                    options["compression_opts"] = level
            dataset = handle.create_dataset(
                spec.key,
                shape=spec.shape,
                dtype=spec.dtype,
                chunks=spec.chunks,
                fillvalue=fill_value(spec.dtype),
                fletcher32=True,
                **options,
            )
            _attach(dataset, spec.dims, scales[spec.group])
            dataset.attrs[INDEX_DIMS_ATTR] = np.asarray(spec.chunk_dims, dtype=h5py.string_dtype())
            write_attrs(dataset, spec.attrs)
            mask_shape = tuple(
                size for dim, size in zip(spec.dims, spec.shape, strict=True) if dim in spec.chunk_dims
            )
            mask = handle.create_dataset(
                written_path(spec.group, spec.name),
                shape=mask_shape,
                dtype=np.uint8,
                chunks=mask_shape
                if mask_shape and np.prod(mask_shape) <= 1 << 22
                else (True if mask_shape else None),
                fillvalue=0,
                fletcher32=bool(mask_shape),  # a checksum needs chunks; a scalar mask has none
            )
            _attach(mask, spec.chunk_dims, scales[spec.group])
            self._datasets[spec.key] = dataset
            self._masks[spec.key] = mask

    # ------------------------------------------------------------------ writing

    def write(self, name: str, index: Mapping[str, Any], data: Any) -> None:
        """Queue `data` for dataset `name` at `index` ``{dim: coordinate value}``.

        `data` covers the dataset's other dims, in the dataset's order: a numpy array, a torch tensor
        (any device; not synchronised here), or anything with ``__array__`` or ``.cpu()``.
        """
        self._check_open()
        self._raise_if_failed()
        spec = self._specs.get(name)
        if spec is None:
            raise CoordinateError(f"no dataset {name!r} declared; datasets: {list(self._specs)}")
        group = self._groups[spec.group]
        positions: dict[str, int] = {}
        for dim, value in index.items():
            if dim not in spec.dims:
                raise CoordinateError(
                    f"write({name!r}): {dim!r} is not a dimension of it; dimensions: {list(spec.dims)}"
                )
            positions[dim] = group.index[dim].position(value)
        rest = [dim for dim in spec.dims if dim not in positions]
        shape = tuple(len(group.coords[dim]) for dim in rest)
        given = getattr(data, "shape", None)
        if given is not None and tuple(int(size) for size in given) != shape:
            raise ValueError(
                f"write({name!r}, index={dict(index)}): data has shape {tuple(given)}, but the dims left "
                f"after the index, {tuple(rest)}, have sizes {shape}"
            )
        selection = tuple(positions.get(dim, slice(None)) for dim in spec.dims)
        mask_selection = tuple(positions.get(dim, slice(None)) for dim in spec.chunk_dims)
        payload, event = _snapshot(data, spec.dtype)
        if not self.started:
            self.start()
        self._put(_WriteJob(spec, dict(index), selection, mask_selection, shape, payload, event))
        self.stats["writes"] += 1
        self.stats["bytes"] += int(np.prod(shape, dtype=np.int64)) * spec.dtype.itemsize

    def _put(self, job: Any) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            began = time.perf_counter()
            self._queue.put(job)
            self.stats["wait_seconds"] += time.perf_counter() - began

    def flush(self) -> None:
        """Wait until everything queued is written and flushed to the file.

        After it returns, live readers see the data and a SIGKILL loses none of it (it is in the
        operating system's hands; ``close()`` also fsyncs against power loss).
        """
        self._check_open()
        self._raise_if_failed()
        if not self.started:
            self.start()
        self._queue.put(_FLUSH)
        self._queue.join()
        self._raise_if_failed()

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Write everything queued, mark the file complete, and rename it to its final name."""
        if self._closed:
            return
        try:
            self.flush()
        except BaseException:
            # A full disk fails the flush while aborting too: keep the writer's own error.
            with contextlib.suppress(Exception):
                self.abort()
            raise
        self._stop_worker()
        handle = self._handle
        assert handle is not None
        handle[STATUS_PATH][0] = STATUS_COMPLETE
        handle.flush()
        handle.close()
        self._closed = True
        fsync_path(self.partial_path)
        os.replace(self.partial_path, self.path)
        fsync_path(self.path.parent, directory=True)

    def abort(self) -> None:
        """Stop without marking the file complete: it stays ``<path>.partial`` with what was written."""
        if self._closed:
            return
        self._closed = True
        if self._handle is None:
            return
        self._stop_worker()
        try:
            self._handle.flush()
        finally:
            self._handle.close()

    def _stop_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            self._queue.put(_STOP)
            self._worker.join()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"attention store writer for {self.path} is closed")

    def _raise_if_failed(self) -> None:
        worker = self._worker
        if worker is None or worker.error is None:
            return
        error, job = worker.error, worker.failed_job
        what = job.describe() if hasattr(job, "describe") else "flushing the file"
        raise StoreWriteError(
            f"the background writer of {self.path.name} failed on {what}: {type(error).__name__}: {error}. "
            f"Nothing queued after it was written, and the file stays incomplete ({self.partial_path.name}); "
            f"fix the cause and re-run. The original traceback is shown above."
        ) from error

    def __enter__(self) -> AttentionStoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(Exception):  # do not hide the error that ended the run
                self.abort()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "writing" if self.started else "declaring"
        return f"<AttentionStoreWriter {self.path} ({state}; {len(self._specs)} datasets)>"


def _write_block(
    dataset: h5py.Dataset, shape: tuple[int, ...], selection: tuple[int | slice, ...], data: Any
) -> None:
    """``dataset[selection] = data`` for ints and full slices, through h5py's low-level API.

    The high-level ``__setitem__`` re-reads the dataset's shape on every call in SWMR mode and costs
    several times the write of a 64 KiB chunk; this path does one hyperslab write.
    """
    count = tuple(1 if isinstance(key, int) else size for key, size in zip(selection, shape, strict=True))
    array = np.broadcast_to(np.asarray(data, dtype=dataset.dtype), count) if np.ndim(data) == 0 else data
    array = np.ascontiguousarray(np.asarray(array, dtype=dataset.dtype).reshape(count))
    if not count:
        dataset[()] = array
        return
    start = tuple(key if isinstance(key, int) else 0 for key in selection)
    space = dataset.id.get_space()
    space.select_hyperslab(start, count)
    dataset.id.write(h5py.h5s.create_simple(count), space, array)


def _check_name(name: Any, what: str) -> None:
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or name.startswith(INTERNAL_GROUP)
        or name in (".", "..")
    ):
        raise ValueError(
            f"{what} name {name!r} must be a non-empty string without '/', "
            f"not starting with {INTERNAL_GROUP!r}"
        )


def _attach(dataset: h5py.Dataset, dims: Sequence[str], scales: Mapping[str, h5py.Dataset]) -> None:
    for axis, dim in enumerate(dims):
        dataset.dims[axis].label = dim
        dataset.dims[axis].attach_scale(scales[dim])
