"""The on-disk layout of an attention store: names, format markers, chunking, file names.

One HDF5 file per run::

    /                                  root attributes: the run's attributes, plus
                                       numina_store_format, numina_store_version
    /<group>/<dim>                     1-D coordinate of each dimension (an HDF5 dimension scale)
    /<group>/<dataset>                 data, its dimensions labelled and attached to the scales;
                                       attribute numina_store_index_dims
    /_numina/status                    b"writing" until the writer closes properly, then b"complete"
    /_numina/attrs_log                 uint8 JSON lines: attributes set after writing started
    /_numina/written/<group>/<dataset> uint8 mask over the index dims: 1 where a write landed

While being written the file is ``<name>.partial``; the writer renames it to ``<name>`` when it
closes properly. May import numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FORMAT_NAME = "numina.attention_store"
FORMAT_VERSION = 1
FORMAT_ATTR = "numina_store_format"
VERSION_ATTR = "numina_store_version"
INDEX_DIMS_ATTR = "numina_store_index_dims"
COORDS_ATTR = "numina_store_coords"

INTERNAL_GROUP = "_numina"
STATUS_PATH = "_numina/status"
ATTRS_LOG_PATH = "_numina/attrs_log"
WRITTEN_GROUP = "_numina/written"
STATUS_WRITING = b"writing"
STATUS_COMPLETE = b"complete"

PARTIAL_SUFFIX = ".partial"
LIBVER = ("v110", "v110")  # lowest format with SWMR; readable by HDF5 >= 1.10 (h5py >= 2.8)

CHUNK_TARGET_BYTES = 1 << 20
HDF5_MAX_CHUNK_BYTES = (1 << 32) - 1


def partial_path(path: str | Path) -> Path:
    """The name a store has while it is being written."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def final_path(path: str | Path) -> Path:
    """The name a store gets once closed properly (strips ``.partial``)."""
    path = Path(path)
    if path.name.endswith(PARTIAL_SUFFIX):
        return path.with_name(path.name[: -len(PARTIAL_SUFFIX)])
    return path


def written_path(group: str, name: str) -> str:
    return f"{WRITTEN_GROUP}/{group}/{name}"


def default_chunk_dims(dims: Sequence[str], shape: Sequence[int], itemsize: int) -> tuple[str, ...]:
    """Index dims when the caller names none: keep trailing dims whole while a chunk stays <= 1 MiB.

    The first dim is always an index dim (when there are two or more), so writes are recorded at
    least per position of it (usually the step).
    """
    nbytes = itemsize
    whole = 0
    for size in reversed(shape[1:]):
        if whole and nbytes * size > CHUNK_TARGET_BYTES:
            break
        nbytes *= size
        whole += 1
    return tuple(dims[: len(dims) - whole]) if len(dims) > 1 else ()


def chunk_shape(
    dims: Sequence[str], shape: Sequence[int], chunk_dims: Sequence[str], itemsize: int, where: str
) -> tuple[int, ...]:
    """Chunk of size 1 along the index dims and whole along the others."""
    chunks = tuple(1 if dim in chunk_dims else size for dim, size in zip(dims, shape, strict=True))
    nbytes = math.prod(chunks) * itemsize
    if nbytes > HDF5_MAX_CHUNK_BYTES:
        raise ValueError(
            f"{where}: a chunk of shape {chunks} would hold {nbytes / 2**30:.1f} GiB, over HDF5's 4 GiB "
            f"limit; name more index dims in chunk_dims"
        )
    return chunks


def fill_value(dtype: np.dtype) -> float | int:
    """What unwritten entries read as: NaN for floats, 0 for integers and booleans."""
    return float("nan") if dtype.kind == "f" else 0
