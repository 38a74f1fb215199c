"""Figure functions over stored runs, in one consistent style, saved as PNG and PDF.

Each function takes an open store (or the tables of `analysis.statistics` / `analysis.separability`)
and returns a matplotlib Figure, built without pyplot so no global figure registry grows and no
display backend is needed; `save_figure` writes it in both formats. Token types keep one colour in
every figure (`TYPE_COLOURS`). May import matplotlib, seaborn, numpy, pandas, torch, numina and analysis.maps.

    concentration_by_type_figure   the diagnosis: a measure per token type across layers, with CIs
    separability_heatmap           layer x head heat map of S (or S1/S2/S3)
    token_maps_figure              labelled tokens' maps over frames (mean over heads and layers)
    token_grid_figure              one token's maps over frames (columns) and heads (rows)
    components_figure              a head's self-attention components and the grey image S scores
    layout_overlay_figure          instance labels over frames or maps
    planted_accuracy_figure        planted-attention benchmark: exact rate by k and difficulty
    planted_examples_figure        planted scenes: each extraction's layout over the truth
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from analysis.maps import word_maps
from numina.capture.names import CROSS_PROBS, SELF_COMPONENTS
from numina.metrics.separability import grey_image
from numina.store import AttentionStore

if TYPE_CHECKING:
    from numina.evaluation.planted import Example

STYLE = {
    "figure.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "image.cmap": "magma",
}
TYPE_COLOURS = {
    "numeral": "#d62728",
    "noun": "#1f77b4",
    "adjective": "#2ca02c",
    "other": "#7f7f7f",
    "eos": "#9467bd",
    "special": "#8c564b",
    "padding": "#bcbd22",
}
MEASURE_LABELS = {
    "mean_attention": "mean attention",
    "entropy": "normalised entropy (lower = sharper)",
    "top_mass": "top-5% mass",
    "peak_to_mean": "peak / mean",
    "spread": "spatial spread (lower = tighter)",
    "gini": "Gini coefficient",
    "padding_mass": "attention on padding",
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
    probs = store[CROSS_PROBS].sel(step=step, branch=branch)
    positions = [int(p) for p in probs.coords["token"]]
    frames = probs.coords["frame"]
    shown = _frames_shown(len(frames), max_frames)
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


def concentration_by_type_figure(
    summary: pd.DataFrame,
    measures: Sequence[str] = ("entropy", "top_mass", "peak_to_mean", "gini"),
    x: str = "layer",
    types: Sequence[str] = ("numeral", "noun", "adjective", "other"),
    title: str | None = None,
) -> Figure:
    """The diagnosis figure: each measure (one panel) per token type across `x`, with its interval.

    `summary` is `analysis.statistics.summarise(table, by=("token_type", x))`; the band is the
    confidence interval over prompts.
    """
    missing = [column for column in ("token_type", x, "measure", "mean") if column not in summary.columns]
    if missing:
        raise KeyError(
            f"summary lacks columns {missing}: make it with summarise(table, by=('token_type', '{x}'))"
        )
    measures = [m for m in measures if m in set(summary["measure"])]
    if not measures:
        raise ValueError(f"none of the measures are in the summary; it has {sorted(set(summary['measure']))}")
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(3.0 * len(measures), 2.6), layout="constrained")
        axes = figure.subplots(1, len(measures), squeeze=False)[0]
        for axis, measure in zip(axes, measures, strict=True):
            part = summary[summary["measure"] == measure]
            for kind in types:
                rows = part[part["token_type"] == kind].sort_values(x)
                if rows.empty:
                    continue
                colour = TYPE_COLOURS.get(kind)
                axis.plot(rows[x], rows["mean"], marker="o", markersize=3, color=colour, label=kind)
                if "ci_low" in rows and rows["ci_low"].notna().any():
                    axis.fill_between(rows[x], rows["ci_low"], rows["ci_high"], color=colour, alpha=0.2, lw=0)
            axis.set_xlabel(x)
            axis.set_title(MEASURE_LABELS.get(measure, measure))
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, title="token type", loc="outside right center", frameon=False)
        n_prompts = int(summary["n_prompts"].max()) if "n_prompts" in summary else None
        figure.suptitle(title or f"Cross-attention concentration by token type ({n_prompts} prompts, 95% CI)")
    return figure


def separability_heatmap(
    table: pd.DataFrame, term: str = "S", step: int | None = None, annotate: bool | None = None
) -> Figure:
    """Layer x head heat map of a separability term, averaged over frames (and steps unless `step`)."""
    if step is not None:
        table = table[table["step"] == step]
    if table.empty:
        raise ValueError(f"no separability rows{'' if step is None else f' at step {step}'}")
    grid = table.groupby(["layer", "head"])[term].mean().unstack("head")
    annotate = grid.size <= 64 if annotate is None else annotate
    with mpl.rc_context(STYLE):
        figure = Figure(
            figsize=(0.45 * grid.shape[1] + 2.0, 0.35 * grid.shape[0] + 1.4), layout="constrained"
        )
        axis = figure.subplots()
        sns.heatmap(grid, ax=axis, cmap="viridis", annot=annotate, fmt=".2g", cbar_kws={"label": term})
        variant = table["variant"].iloc[0] if "variant" in table else ""
        steps = "all captured steps" if step is None else f"step {step}"
        axis.set_title(f"Self-attention separability {term} ({variant}), mean over frames, {steps}")
    return figure


def _frames_shown(count: int, max_frames: int) -> np.ndarray:
    return np.unique(np.linspace(0, count - 1, min(max_frames, count)).round().astype(int))


def token_grid_figure(
    store: AttentionStore,
    positions: Sequence[int],
    step: int,
    layer: int,
    heads: Sequence[int] | None = None,
    max_frames: int = 6,
    normalisation: str = "all",
    branch: str = "cond",
    label: str | None = None,
) -> Figure:
    """One token's cross-attention maps: latent frames across, heads down (a word of several tokens is
    the mean over its `positions`). Each row has its own colour scale, so shapes compare across heads."""
    maps = word_maps(store, positions, step, layer, normalisation, branch)  # (head, frame, y, x)
    all_heads = [int(h) for h in store[CROSS_PROBS].coords["head"]]
    heads = all_heads if heads is None else list(heads)
    shown = _frames_shown(maps.shape[1], max_frames)
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(1.3 * len(shown) + 0.6, 1.2 * len(heads) + 0.6), layout="constrained")
        axes = figure.subplots(len(heads), len(shown), squeeze=False)
        for row, head in enumerate(heads):
            values = maps[all_heads.index(head)]
            high = float(np.nanmax(values[shown])) or 1.0
            for column, frame in enumerate(shown):
                axis = axes[row, column]
                axis.imshow(values[frame], vmin=0.0, vmax=high)
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0:
                    axis.set_title(f"frame {frame}")
                if column == 0:
                    axis.set_ylabel(f"head {head}")
        name = label or f"tokens {list(positions)}"
        figure.suptitle(f"Cross-attention of {name}, block {layer}, step {step} ({normalisation})")
    return figure


def components_figure(
    store: AttentionStore, step: int, layer: int, head: int, frame: int, branch: str = "cond"
) -> Figure:
    """A head's frame-local self-attention components as images, and the grey image S1/S2/S3 score."""
    components = store[SELF_COMPONENTS].sel(step=step, branch=branch, layer=layer, head=head, frame=frame)
    values = components.values.astype(np.float32)  # (y, x, component)
    height, width, count = values.shape
    grey = grey_image(torch.from_numpy(values).flatten(0, 1), height, width).numpy() if count >= 3 else None
    panels = [(f"component {k}", values[..., k], "coolwarm") for k in range(count)]
    if grey is not None:
        panels.append(("grey image (scored)", grey, "gray"))
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(1.9 * len(panels), 2.1), layout="constrained")
        axes = figure.subplots(1, len(panels), squeeze=False)[0]
        for axis, (title, image, cmap) in zip(axes, panels, strict=True):
            if cmap == "coolwarm":
                bound = float(np.abs(image).max()) or 1.0
                axis.imshow(image, cmap=cmap, vmin=-bound, vmax=bound)
            else:
                axis.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0)
            axis.set_title(title)
            axis.set_xticks([])
            axis.set_yticks([])
        figure.suptitle(f"Self-attention components: block {layer}, head {head}, frame {frame}, step {step}")
    return figure


def _label_colours(labels: np.ndarray) -> tuple[np.ndarray, ListedColormap, list[str]]:
    """Map labels (0 background, -1 removed, 1..99 detected, >= 100 added) to colour indices."""
    values = sorted(int(v) for v in np.unique(labels) if v != 0)
    palette = sns.color_palette("tab10", 10)
    colours, names = [(0, 0, 0, 0)], ["background"]
    for value in values:
        if value == -1:
            colours.append((0.2, 0.2, 0.2, 0.75))
            names.append("removed")
        else:
            rgb = palette[(value - 95 if value >= 100 else value - 1) % 10]  # added: other colours
            colours.append((*rgb, 0.55 if value < 100 else 0.8))
            names.append(f"added {value}" if value >= 100 else f"instance {value}")
    lookup = {value: k + 1 for k, value in enumerate(values)}
    indices = np.vectorize(lambda v: lookup.get(int(v), 0))(labels) if labels.size else labels
    return indices, ListedColormap(colours), names


def layout_overlay_figure(
    labels: np.ndarray,
    background: np.ndarray | None = None,
    frames: Sequence[int] | None = None,
    max_frames: int = 6,
    title: str = "Instance layout",
) -> Figure:
    """Instance labels (frame, y, x) over `background`, one panel per frame.

    Labels follow METHOD.md: 0 background, 1..99 detected instances, 100.. added, -1 removed.
    `background` is (frame, Y, X) maps or (frame, Y, X, 3) images of any size (the labels are
    stretched over it), e.g. decoded video frames at the latent frames' times.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None]
    if background is not None and len(background) != len(labels):
        raise ValueError(f"background has {len(background)} frames but the layout has {len(labels)}")
    shown = _frames_shown(len(labels), max_frames) if frames is None else np.asarray(frames)
    indices, colours, names = _label_colours(labels)
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(1.8 * len(shown) + 0.4, 2.0), layout="constrained")
        axes = figure.subplots(1, len(shown), squeeze=False)[0]
        for axis, frame in zip(axes, shown, strict=True):
            extent = (0, labels.shape[2], labels.shape[1], 0)
            if background is not None:
                axis.imshow(background[frame], extent=extent, cmap="gray" if background.ndim == 3 else None)
            axis.imshow(
                indices[frame],
                cmap=colours,
                vmin=0,
                vmax=len(names) - 1,
                interpolation="nearest",
                extent=extent,
            )
            counted = len({int(v) for v in np.unique(labels[frame]) if v > 0})
            axis.set_title(f"frame {frame}: {counted} instances")
            axis.set_xticks([])
            axis.set_yticks([])
        handles = [mpl.patches.Patch(color=colours(k), label=name) for k, name in enumerate(names) if k > 0]
        if handles:
            figure.legend(handles=handles, loc="outside right center", frameon=False)
        figure.suptitle(title)
    return figure


def planted_accuracy_figure(table: pd.DataFrame, title: str = "Planted layouts") -> Figure:
    """Exact rate (solid, 95% Wilson band) and right-count rate (dashed) against k, one panel per
    difficulty, one colour per extraction; `table` is `accuracy_table(rows, by=["difficulty", "k"])`.

    The gap between the dashed and the solid line is right counts made of wrong instances.
    """
    needed = {"extraction", "difficulty", "k", "exact", "exact_low", "exact_high", "count_right"}
    if not needed <= set(table.columns):
        raise ValueError(
            f"planted accuracy table needs the columns {sorted(needed)}, got {list(table.columns)}"
        )
    levels = list(dict.fromkeys(table["difficulty"]))
    extractions = list(dict.fromkeys(table["extraction"]))
    palette = sns.color_palette("tab10", max(len(extractions), 1))
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(2.6 * len(levels) + 0.6, 2.6), layout="constrained")
        axes = figure.subplots(1, len(levels), squeeze=False, sharey=True)[0]
        for axis, level in zip(axes, levels, strict=True):
            for colour, name in zip(palette, extractions, strict=False):
                rows = table[(table["difficulty"] == level) & (table["extraction"] == name)].sort_values("k")
                axis.plot(rows["k"], rows["exact"], "o-", color=colour, label=f"{name}: exact")
                axis.fill_between(rows["k"], rows["exact_low"], rows["exact_high"], color=colour, alpha=0.2)
                axis.plot(rows["k"], rows["count_right"], "--", color=colour, label=f"{name}: right count")
            axis.set_title(level)
            axis.set_xlabel("instances of the noun (k)")
            axis.set_ylim(-0.03, 1.03)
        axes[0].set_ylabel("fraction of cases")
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside right center", frameon=False)
        figure.suptitle(title)
    return figure


def planted_examples_figure(examples: Sequence[Example], title: str = "Planted scenes") -> Figure:
    """One row per example (its first frame): the noun map with the truth outlined, then each
    extraction's instances (colours) under the truth's outlines, titled with count and matches."""
    if not examples:
        raise ValueError("No examples to draw.")
    names = list(dict.fromkeys(name for example in examples for name in example.predicted))
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(2.4 * (len(names) + 1), 1.9 * len(examples)), layout="constrained")
        axes = figure.subplots(len(examples), len(names) + 1, squeeze=False)
        for row, example in zip(axes, examples, strict=True):
            truth = example.truth[0]
            spec = example.spec
            row[0].imshow(example.noun_maps[0], interpolation="nearest")
            row[0].set_title(
                f"{spec.grid} k={spec.k} {spec.difficulty}\n{spec.scenario}, {spec.noun_map} noun map"
            )
            for axis, name in zip(row[1:], names, strict=True):
                if name in example.predicted:
                    labels = example.predicted[name][0]
                    indices, colours, legend = _label_colours(labels)
                    axis.imshow(indices, cmap=colours, vmin=0, vmax=len(legend) - 1, interpolation="nearest")
                    match = example.matches[name]
                    axis.set_title(f"{name}: {match.count} found, {match.matched}/{match.target} matched")
                else:
                    axis.set_title(f"{name}: failed")
            for axis in row:
                if truth.any():
                    axis.contour(
                        truth > 0, levels=[0.5], colors="white" if axis is row[0] else "black", linewidths=0.8
                    )
                axis.set_xticks([])
                axis.set_yticks([])
        figure.suptitle(title)
    return figure
