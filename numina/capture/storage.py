"""Opening an HDF5 attention store laid out for a capture spec.

Joins the capture layer to `numina.store`: one call declares every group, coordinate and dataset a
resolved `CaptureSpec` fills (see `numina.capture.spec.store_layout`) and returns the writer, which is
also the sink the capture hooks write into. May import numina.capture.spec, numina.models.geometry
and numina.store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from numina.capture.spec import CaptureSpec, store_layout
from numina.models.geometry import Geometry
from numina.store import AttentionStoreWriter


def open_capture_store(
    path: str | os.PathLike[str],
    spec: CaptureSpec,
    geometry: Geometry,
    attrs: Mapping[str, Any] | None = None,
    **writer_options: Any,
) -> AttentionStoreWriter:
    """A store writer at `path` with the datasets of `spec` declared; `attrs` become root attributes.

    The spec and geometry are recorded as attributes too (`capture_spec`, `geometry`), so a stored run
    says what it holds without its config file.
    """
    layout = store_layout(spec, geometry)
    root = {"capture_spec": spec.to_dict(), "geometry": geometry.to_dict(), **(attrs or {})}
    writer = AttentionStoreWriter(path, root, **writer_options)
    for group, coords in layout.coords.items():
        writer.create_group(group, coords)
    for declaration in layout.datasets:
        writer.create_dataset(
            declaration.name, declaration.dims, dtype=declaration.dtype, chunk_dims=declaration.chunk_dims
        )
    return writer
