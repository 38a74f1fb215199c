"""numina.store: the HDF5 attention store, one file per run, with named dimensions.

A store holds groups of datasets that share coordinates. Every dimension has a coordinate (an HDF5
dimension scale, so h5py, HDFView and xarray-style tools see the names); data is float16 by default,
chunked one step/layer/token at a time, and entries never written read as NaN. The module is generic:
group, dimension and dataset names are the caller's. The layout used by the capture layer, as an
example::

    from numina.store import AttentionStoreWriter, open_store

    with AttentionStoreWriter("run/attention.h5", attrs={"prompt": "three cats", "seed": 0,
                                                          "config": {"steps": 50}}) as writer:
        writer.create_group("cross_attention", {
            "step": range(50), "branch": ["cond"], "layer": range(30), "head": range(12),
            "token": [3, 4, 7], "frame": range(21), "y": range(30), "x": range(52),
            "stat": ["entropy", "top5", "peak_mean"]})
        writer.create_dataset("cross_attention/probs",
                              ("step", "branch", "layer", "head", "token", "frame", "y", "x"),
                              chunk_dims=("step", "branch", "layer", "head", "token"))
        writer.create_dataset("cross_attention/stats",
                              ("step", "branch", "layer", "head", "token", "frame", "stat"),
                              dtype="float32", chunk_dims=("step", "branch", "layer"))
        writer.create_group("self_attention", {
            "step": range(50), "branch": ["cond"], "layer": range(30), "head": range(12),
            "frame": range(21), "y": range(30), "x": range(52), "component": [0, 1, 2],
            "term": ["S1", "S2", "S3", "S"]})
        writer.create_dataset("self_attention/components",
                              ("step", "branch", "layer", "head", "frame", "y", "x", "component"),
                              chunk_dims=("step", "branch", "layer", "head"))
        writer.create_dataset("self_attention/singular_values",
                              ("step", "branch", "layer", "head", "frame", "component"),
                              chunk_dims=("step", "branch", "layer"))
        writer.create_dataset("self_attention/scores",
                              ("step", "branch", "layer", "head", "frame", "term"),
                              chunk_dims=("step", "branch", "layer"))
        for step in range(50):
            for layer in capture_layers:
                # a (head, token, frame, y, x) tensor, still on the GPU: not synchronised here
                writer.write("cross_attention/probs", {"step": step, "branch": "cond", "layer": layer}, maps)
        writer.set_attrs(timesteps=scheduler.timesteps.tolist())  # known at the end

    with open_store("run/attention.h5") as store:
        probs = store["cross_attention/probs"]                # lazy NamedArray
        probs.dims, probs.shape, probs.coords["token"]
        one = probs.sel(step=20, branch="cond", layer=15, token=3)   # scalar: drops the dim
        some = probs.sel(layer=[15, 0], token=3).isel(head=0)        # list: keeps it, any order
        array = one.values                                    # reads only that hyperslab
        probs.sel(step=20).written()                          # [{"branch": "cond", "layer": 15, ...}, ...]

Completeness and crash safety: the writer writes ``<name>.partial`` and renames it to ``<name>`` only
in a proper ``close()`` (after marking ``/_numina/status`` complete, flushing and fsyncing), so a
killed or failed run never leaves a file under the final name. The reader refuses a ``.partial``
store (IncompleteStoreError) unless ``allow_incomplete=True``, a cut-off file (TruncatedStoreError)
and a damaged one (DamagedStoreError: every chunked dataset carries HDF5's per-chunk fletcher32
checksum, so flipped bytes fail on read, and metadata that no longer decodes is reported as such), each
with a message saying what happened and what to do.

Live reading: the file is in HDF5 SWMR mode from the first write, so another process can follow a
running capture with ``open_store(path, live=True)``: reads refresh, ``store.refresh()`` picks up new
attributes, ``store.complete`` says when the writer has finished. What a reader sees lags by at most
the writer's ``flush_interval`` (2 s default; ``writer.flush()`` forces it). SWMR cannot add objects,
so all groups and datasets are declared before the first write; attributes set after it go to a
small log dataset that the reader merges.

Modules: ``layout`` (on-disk names and chunking), ``coords``, ``attrs`` (attribute codec), ``errors``,
``integrity`` (opening, completeness, truncation), ``named_array``, ``writer``, ``reader``,
``throughput``. Imports nothing else from numina.
"""

from numina.store.errors import (
    CoordinateError,
    DamagedStoreError,
    IncompleteStoreError,
    StoreError,
    StoreWriteError,
    TruncatedStoreError,
)
from numina.store.named_array import NamedArray
from numina.store.reader import AttentionStore, StoreGroup, open_store
from numina.store.throughput import measure_write_throughput
from numina.store.writer import AttentionStoreWriter

__all__ = [
    "AttentionStore",
    "AttentionStoreWriter",
    "CoordinateError",
    "DamagedStoreError",
    "IncompleteStoreError",
    "NamedArray",
    "StoreError",
    "StoreGroup",
    "StoreWriteError",
    "TruncatedStoreError",
    "measure_write_throughput",
    "open_store",
]
