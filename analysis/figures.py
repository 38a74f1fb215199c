"""Figure functions over stored runs, in one consistent style, saved as PNG and PDF.

Each function takes an open store (or tables) and returns a matplotlib Figure (built without pyplot,
so no global figure registry grows and no display backend is needed); `save_figure` writes it in
both formats. May import matplotlib, numpy and numina.store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from numina.store import AttentionStore

STYLE = {
    "figure.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "image.cmap": "magma",
}


def save_figure(figure: Figure, path_without_suffix: str | Path) -> list[Path]:
    """Write `figure` as `<path>.png` and `<path>.pdf`; return both paths."""
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    for path in paths:
        figure.savefig(path, bbox_inches="tight")
    return paths


def token_maps_figure(
    store: AttentionStore,
    tokens: Mapping[str, Sequence[int]],
    step: int,
    branch: str = "cond",
    max_frames: int = 6,
) -> Figure:
    """Cross-attention of each labelled token over the video's latent frames, at one step.

    `tokens` maps a label (e.g. 'noun "cats"') to its text positions; a multi-token word is the mean
    over its positions. Each map is the mean over the captured heads and layers; every row shares
    one colour scale, so a weak, diffuse token looks weak next to a sharp one.
    """
    probs = store["cross_attention/probs"].sel(step=step, branch=branch)
    positions = [int(p) for p in probs.coords["token"]]
    frames = probs.coords["frame"]
    shown = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(1.6 * len(shown) + 0.8, 1.5 * len(tokens)))
        axes = figure.subplots(len(tokens), len(shown), squeeze=False)
        for row, (label, span) in enumerate(tokens.items()):
            missing = [p for p in span if p not in positions]
            if missing:
                raise KeyError(f"Token positions {missing} were not captured; captured: {positions}")
            stack = probs.sel(token=list(span)).values  # (layer, head, token, frame, y, x)
            maps = np.nanmean(stack.astype(np.float32), axis=(0, 1, 2))
            high = float(np.nanmax(maps[shown])) or 1.0
            for column, frame in enumerate(shown):
                axis = axes[row, column]
                image = axis.imshow(maps[frame], vmin=0.0, vmax=high)
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0:
                    axis.set_title(f"latent frame {frame}")
                if column == 0:
                    axis.set_ylabel(label)
            figure.colorbar(image, ax=axes[row, :].tolist(), fraction=0.02, pad=0.01, label="probability")
        figure.suptitle(f"Cross-attention at step {step} ({branch}), mean over heads and layers", y=1.04)
    return figure
