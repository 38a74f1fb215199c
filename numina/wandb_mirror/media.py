"""The project's data as W&B media: config values as plain JSON, 2-D attention maps as colour-mapped
RGB images, figures as arrays, records as DataFrames, number-likes as Python numbers.

May import the standard library, then numpy, matplotlib and pandas only (each lazily, so that importing
this module stays cheap).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure


def to_plain(value: Any) -> Any:
    """A JSON-friendly copy of a config value, so any resolved config can be logged.

    Mappings keep their nesting (keys become strings), sequences become lists, paths and
    unknown objects (a torch dtype, a device) become their `str`, numpy scalars and arrays
    become Python numbers and lists, dataclasses become dicts and enums their value.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_plain(value.value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [to_plain(v) for v in items]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return to_plain(value.tolist())
    return str(value)


def colorize(
    values: np.ndarray,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """A 2-D map as an (H, W, 3) uint8 RGB image through a matplotlib colour map.

    The range defaults to the map's own finite minimum and maximum, so each attention map uses
    the full colour scale; pass vmin/vmax to compare maps on one scale. NaNs get the colour
    map's "bad" colour.
    """
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"colorize takes a 2-D map (height, width); got shape {data.shape}.")
    finite = data[np.isfinite(data)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    rgba = colormaps[cmap](Normalize(vmin=lo, vmax=hi, clip=True)(np.ma.masked_invalid(data)))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3|4) array -> uint8: integers must lie in [0, 255], floats in [0, 1] (no rescaling)."""
    import numpy as np

    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    integer = np.issubdtype(image.dtype, np.integer)
    data = image.astype(np.float64)
    top = 255.0 if integer else 1.0
    if data.size and (not np.all(np.isfinite(data)) or data.min() < 0.0 or data.max() > top):
        raise ValueError(
            "An RGB(A) image must be uint8, integers in [0, 255] or floats in [0, 1]; got "
            f"dtype {image.dtype} with range [{np.nanmin(data)}, {np.nanmax(data)}]. "
            "Scale it first, or pass a 2-D map to have it colour-mapped."
        )
    return image.astype(np.uint8) if integer else np.round(data * 255).astype(np.uint8)


def figure_to_array(figure: Figure, dpi: float | None = None) -> np.ndarray:
    """A matplotlib Figure rendered to an (H, W, 4) uint8 RGBA array.

    Renders through `savefig` into memory, so the figure's own canvas and backend (a notebook
    widget, say) are left untouched and no temporary file is needed.
    """
    import numpy as np
    from matplotlib.image import imread

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi if dpi is not None else "figure")
    buffer.seek(0)
    rgba = imread(buffer, format="png")
    return np.round(np.asarray(rgba) * 255).astype(np.uint8)


def records_frame(data: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A DataFrame from a DataFrame or from dict records (missing keys become empty cells)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    records = list(data)
    if not all(isinstance(r, Mapping) for r in records):
        raise TypeError("log_table takes a pandas DataFrame or a list of dict records.")
    return pd.DataFrame.from_records([dict(r) for r in records])


def python_number(key: str, value: Any) -> float | int | bool:
    """A Python number from a number-like value (numpy scalar, 0-d array or tensor)."""
    if isinstance(value, (bool, int, float)):
        return value
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, RuntimeError) as err:
            raise TypeError(f"Scalar {key!r} has more than one element: {value!r}") from err
        if isinstance(value, (bool, int, float)):
            return value
    raise TypeError(f"Scalar {key!r} must be a number; got {type(value).__name__}.")
