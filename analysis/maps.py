"""Reading attention maps out of a store in the views analysis needs: a word's cross-attention.

A word of several tokens is the mean of its tokens' maps (as NUMINA averages a noun's subword tokens);
`normalisation="prompt"` renormalises each map over the prompt's own tokens first (see
`numina.metrics.concentration.renormalise_over_prompt`). May import numpy, torch and numina.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from numina.capture.names import CROSS_PROBS, CROSS_PROMPT_MASS
from numina.metrics.concentration import renormalise_over_prompt
from numina.store import AttentionStore


def token_maps(
    store: AttentionStore,
    step: int,
    layer: int,
    positions: Sequence[int] | None = None,
    normalisation: str = "all",
    branch: str = "cond",
) -> np.ndarray:
    """(head, token, frame, y, x) float32 cross-attention of the captured tokens (`positions`, default
    all of them, in stored order) at one step and block."""
    if normalisation not in ("all", "prompt"):
        raise ValueError(f"normalisation must be 'all' or 'prompt', got {normalisation!r}")
    index = {"step": step, "branch": branch, "layer": layer}
    probs = store[CROSS_PROBS].sel(index)
    if positions is not None:
        probs = probs.sel(token=list(positions))
    maps = probs.values.astype(np.float32)
    return over_prompt(store, maps, step, layer, branch) if normalisation == "prompt" else maps


def over_prompt(
    store: AttentionStore, maps: np.ndarray, step: int, layer: int, branch: str = "cond"
) -> np.ndarray:
    """(head, token, frame, y, x) maps of one step and block renormalised over the prompt's tokens, with
    the share of each video position's attention that went to the prompt (stored beside the maps)."""
    index = {"step": step, "branch": branch, "layer": layer}
    mass = store[CROSS_PROMPT_MASS].sel(index).values.astype(np.float32)  # (head, frame, y, x)
    return renormalise_over_prompt(torch.from_numpy(maps), torch.from_numpy(mass)[:, None]).numpy()


def word_maps(
    store: AttentionStore,
    positions: Sequence[int],
    step: int,
    layer: int,
    normalisation: str = "all",
    branch: str = "cond",
) -> np.ndarray:
    """(head, frame, y, x) cross-attention of the word at token `positions`, at one step and block."""
    return token_maps(store, step, layer, positions, normalisation, branch).mean(axis=1)
