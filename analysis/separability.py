"""Instance separability of self-attention heads across layers, steps and frames, and head rankings.

`separability_table(store)` gives S1/S2/S3/S (METHOD.md phase 1, step 3) for every captured
(step, layer, head, frame), `official` or `normalised`, with any weights: the scores the capture
computed on the device when they match the request, else recomputed from the stored (float32)
components. `rank_heads` ranks heads within layers and steps;
`choose_heads` applies a head-choice rule:

    per_frame   the release: the best head of the reference layer, separately for every latent frame
    per_video   one head for the whole video: the best mean S over frames, per layer
    per_layer   one (layer, head) for the whole video: the best mean S over frames and captured layers

May import numpy, pandas, torch and numina.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch

from numina.capture.names import SELF_COMPONENTS, SELF_SCORE_COMPONENTS, SELF_SCORES
from numina.method.identify import best_heads, captured_score_variant
from numina.metrics.separability import DEFAULT_WEIGHTS, TERMS, Variant, separability
from numina.store import AttentionStore

Rule = Literal["per_frame", "per_video", "per_layer"]
RULES = ("per_frame", "per_video", "per_layer")


def separability_table(
    store: AttentionStore,
    variant: Variant = "official",
    weights: tuple[float, float, float] = DEFAULT_WEIGHTS,
    steps: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    branch: str = "cond",
) -> pd.DataFrame:
    """S1, S2, S3 and S per (step, layer, head, frame); columns `step, branch, layer, head, frame,
    S1, S2, S3, S, variant`."""
    if SELF_COMPONENTS not in store:
        raise KeyError(f"{store} holds no self-attention components; capture self_attention first.")
    components = store[SELF_COMPONENTS]
    if SELF_SCORE_COMPONENTS in store:  # the release's estimators: scores had their own
        components = store[SELF_SCORE_COMPONENTS]
    # The stored S serves when it is S under this variant and weights (Phase1Data.scored's rule).
    stored = SELF_SCORES in store and (captured_score_variant(store.attrs), DEFAULT_WEIGHTS) == (
        variant,
        tuple(weights),
    )
    height, width = components.sizes["y"], components.sizes["x"]
    steps = [int(s) for s in components.coords["step"]] if steps is None else list(steps)
    layers = [int(layer) for layer in components.coords["layer"]] if layers is None else list(layers)
    heads = np.asarray(components.coords["head"], dtype=int)
    frames = np.asarray(components.coords["frame"], dtype=int)
    pieces = []
    for step in steps:
        for layer in layers:
            index = {"step": step, "branch": branch, "layer": layer}
            if stored:
                scores = store[SELF_SCORES].sel(index).values  # (head, frame, term)
            else:
                values = components.sel(index).values.astype(np.float32)  # (head, frame, y, x, component)
                flat = torch.from_numpy(values).flatten(2, 3)
                scores = separability(flat, height, width, variant, weights).numpy()
            head_grid, frame_grid = np.meshgrid(heads, frames, indexing="ij")
            piece = pd.DataFrame(
                {
                    "step": step,
                    "branch": branch,
                    "layer": layer,
                    "head": head_grid.ravel(),
                    "frame": frame_grid.ravel(),
                }
            )
            for k, term in enumerate(TERMS):
                piece[term] = scores[..., k].ravel()
            pieces.append(piece)
    table = pd.concat(pieces, ignore_index=True).dropna(subset=list(TERMS), how="all")
    table["variant"] = variant
    return table.reset_index(drop=True)


def rank_heads(
    table: pd.DataFrame, term: str = "S", within: Sequence[str] = ("step", "layer")
) -> pd.DataFrame:
    """Heads ranked by `term` averaged over frames, within each group of `within` (rank 1 = best).

    Columns: `*within, head, <term>, rank`, sorted by group and rank.
    """
    _check_term(table, term)
    within = list(within)
    means = table.groupby([*within, "head"], observed=True)[term].mean().reset_index()
    means["rank"] = (
        means.groupby(within, observed=True)[term].rank(ascending=False, method="first").astype(int)
    )
    return means.sort_values([*within, "rank"]).reset_index(drop=True)


def choose_heads(
    table: pd.DataFrame, rule: Rule = "per_frame", term: str = "S", layer: int | None = None
) -> pd.DataFrame:
    """The chosen head for every (step, frame) under `rule`; columns `step, frame, layer, head, <term>`.

    `per_frame` and `per_video` choose within one layer: `layer`, or the only captured one (the
    release's reference layer). Ties go to the lower head (and layer), as argmax does.
    """
    _check_term(table, term)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")
    if rule != "per_layer":
        layers = sorted(table["layer"].unique())
        if layer is None and len(layers) > 1:
            raise ValueError(f"rule {rule!r} chooses within one layer: pass layer= (captured: {layers}).")
        layer = layers[0] if layer is None else layer
        if layer not in layers:
            raise ValueError(f"layer {layer} was not captured; captured: {layers}")
        table = table[table["layer"] == layer]
    rows = []
    for step, scores in table.groupby("step"):
        # (layer, head, frame) array of the term, for the method's own rule (`best_heads`).
        grid = scores.pivot_table(index=["layer", "head"], columns="frame", values=term, aggfunc="first")
        layers, heads = grid.index.levels
        total = grid.to_numpy().reshape(len(layers), len(heads), len(grid.columns))
        layer_index, head_index = best_heads(total, list(layers), rule, layer)
        for f, frame in enumerate(grid.columns):
            value = total[layer_index[f], head_index[f], f]
            rows.append((step, frame, layers[layer_index[f]], heads[head_index[f]], value))
    return pd.DataFrame(rows, columns=["step", "frame", "layer", "head", term])


def _check_term(table: pd.DataFrame, term: str) -> None:
    if term not in TERMS or term not in table.columns:
        raise KeyError(f"term must be one of {TERMS} (a column of the separability table), got {term!r}.")
