"""measure_write_throughput: MB/s of float16 writes through AttentionStoreWriter, end to end.

For benchmarks (e.g. on a GPU box, with ``device="cuda"`` so data starts on the device as in a real
capture). Timing starts at the first ``write`` and ends after ``close()`` returned, i.e. includes the
queue, device-to-host copies, HDF5 writes, the final flush, fsync and rename. May import numpy,
numina.store.writer, and torch only when ``device`` is not ``"cpu"``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from numina.store.writer import AttentionStoreWriter


def measure_write_throughput(
    path: str | os.PathLike[str],
    megabytes: float = 256.0,
    chunk_shape: Sequence[int] = (21, 30, 52),
    *,
    device: str = "cpu",
    queue_size: int = 16,
    compression: str | int | None = None,
    keep_file: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Write about `megabytes` MB of float16 maps of `chunk_shape` (one chunk per write) and time it.

    `path` is overwritten, and deleted afterwards unless `keep_file`. Random data barely compresses,
    so with `compression` the rate is a lower bound on speed and the file size an upper bound.

    Returns a dict: ``mb_per_s`` (1 MB = 1e6 bytes), ``seconds``, ``megabytes``, ``writes``,
    ``chunk_shape``, ``chunk_bytes``, ``producer_seconds`` (time spent inside ``write`` calls),
    ``producer_wait_seconds`` (of which blocked on the full queue), ``file_bytes``, ``device``,
    ``compression``, ``queue_size``.
    """
    path = Path(path)
    chunk_shape = tuple(int(size) for size in chunk_shape)
    chunk_bytes = math.prod(chunk_shape) * 2
    writes = max(1, round(megabytes * 1e6 / chunk_bytes))
    pool = _sources(chunk_shape, device, seed)
    dims = tuple(f"d{axis}" for axis in range(len(chunk_shape)))
    writer = AttentionStoreWriter(
        path, {"benchmark": "measure_write_throughput"}, queue_size=queue_size, overwrite=True
    )
    writer.create_group(
        "bench",
        {"item": range(writes), **{dim: range(size) for dim, size in zip(dims, chunk_shape, strict=True)}},
    )
    writer.create_dataset("bench/data", ("item", *dims), chunk_dims=("item",), compression=compression)
    writer.start()  # file creation is not part of the write rate
    producer = 0.0
    began = time.perf_counter()
    try:
        for item in range(writes):
            call = time.perf_counter()
            writer.write("bench/data", {"item": item}, pool[item % len(pool)])
            producer += time.perf_counter() - call
        writer.close()
    except BaseException:
        writer.abort()
        raise
    seconds = time.perf_counter() - began
    file_bytes = path.stat().st_size
    if not keep_file:
        path.unlink()
    total = writes * chunk_bytes / 1e6
    return {
        "mb_per_s": total / seconds,
        "seconds": seconds,
        "megabytes": total,
        "writes": writes,
        "chunk_shape": chunk_shape,
        "chunk_bytes": chunk_bytes,
        "producer_seconds": producer,
        "producer_wait_seconds": writer.stats["wait_seconds"],
        "file_bytes": file_bytes,
        "device": device,
        "compression": compression,
        "queue_size": queue_size,
    }


def _sources(shape: tuple[int, ...], device: str, seed: int, count: int = 8) -> list[Any]:
    """A few distinct float16 maps to cycle through (generated before timing starts)."""
    if device == "cpu":
        rng = np.random.default_rng(seed)
        return [rng.random(shape, dtype=np.float32).astype(np.float16) for _ in range(count)]
    import torch

    generator = torch.Generator(device=device).manual_seed(seed)
    pool = [torch.rand(shape, generator=generator, device=device, dtype=torch.float16) for _ in range(count)]
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return pool
