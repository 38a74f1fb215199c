"""Phase 1's choices: the self-attention head that separates instances, and each noun's cross map.

Both read what the walk-through captured at the reference step (`Phase1Data`, from the in-memory sink
during a run or from a stored run's HDF5 file, the same arrays either way):

- self-attention head, by S (METHOD.md step 3): `per_frame` (the release: argmax over the reference
  block's heads, frame by frame), `per_video` (one head, best mean S over frames), `per_layer` (one
  block and head, best mean S over frames among the captured blocks) or `fixed` (a given head);
- a noun's cross-attention map (step 4), the mean over the noun's tokens, then over heads:
  `mean` (the release, all heads), `concentration` (the paper: the one head whose map is most
  concentrated by `measure`, averaged over frames) or `peak` (the release's unused path: the head
  with the largest map value).

May import numpy, torch, numina.capture, numina.metrics and numina.store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from numina.capture import MemoryStore
from numina.capture.names import CROSS_PROBS, SELF_COMPONENTS, SELF_SCORE_COMPONENTS, SELF_SCORES
from numina.metrics.concentration import STATS, concentration_stats
from numina.metrics.separability import DEFAULT_WEIGHTS, TERMS, separability
from numina.store import AttentionStore

HEAD_RULES = ("per_frame", "per_video", "per_layer", "fixed")
CROSS_HEADS = ("mean", "concentration", "peak")
# Measures where a smaller value means a more concentrated map.
LOWER_IS_SHARPER = ("entropy", "spread")
NOT_FINITE_HELP = (
    "NaN or inf would silently decide the head and the count (a NaN S wins argmax, an inf pixel empties "
    "the focus mask). It comes from a run whose activations overflowed (try --dtype float32) or from a "
    "store that is not complete (unwritten entries read as NaN): rerun the walk-through or read a "
    "complete store."
)


@dataclass(frozen=True)
class Phase1Data:
    """What identify and layout need from the walk-through's reference step, as host arrays.

    scores (layer, head, frame, term), components (layer, head, frame, H*W, k) for the captured
    self-attention blocks `layers`; cross (head, token, frame, H, W) at the reference block for the
    captured text `tokens` (positions). `score_components` (layer, head, frame, H*W, 3): what the
    scores were computed from, where that is not `components` (the release's estimators).
    `score_variant` and `score_weights`: what the scores are (a capture scores with its spec's variant
    and the release's weights).
    """

    layers: tuple[int, ...]
    scores: np.ndarray
    components: np.ndarray
    tokens: tuple[int, ...]
    cross: np.ndarray
    score_components: np.ndarray | None = None
    score_variant: str = "official"
    score_weights: tuple[float, float, float] = DEFAULT_WEIGHTS

    @classmethod
    def from_store(
        cls,
        store: AttentionStore | MemoryStore,
        step: int,
        cross_layer: int,
        layers: Sequence[int] | None = None,
    ) -> Phase1Data:
        """From a capture, in memory (a run's phase 1) or stored (a file, as the notebooks and analysis
        read it); the self-attention of `layers` only (default: every captured block)."""
        at = {"step": step, "branch": "cond"}
        if layers is not None:
            at["layer"] = list(layers)
        components = store[SELF_COMPONENTS].sel(at)  # (layer, head, frame, y, x, k)
        cross = store[CROSS_PROBS].sel(step=step, branch="cond", layer=cross_layer)
        scored = None
        if SELF_SCORE_COMPONENTS in store:
            scored = _flat(store[SELF_SCORE_COMPONENTS].sel(at).values.astype(np.float32))
        return cls(
            tuple(int(layer) for layer in components.coords["layer"]),
            store[SELF_SCORES].sel(at).values.astype(np.float32),
            _flat(components.values.astype(np.float32)),
            tuple(int(token) for token in cross.coords["token"]),
            cross.values.astype(np.float32),
            scored,
            captured_score_variant(store.attrs),
        )

    def scored(
        self,
        height: int,
        width: int,
        variant: str = "official",
        weights: tuple[float, float, float] = DEFAULT_WEIGHTS,
    ) -> Phase1Data:
        """This data with S under `variant` and `weights`: itself where its scores are those already,
        else recomputed (`rescored`). The one place that decides whether captured scores can be used."""
        if (self.score_variant, self.score_weights) == (variant, tuple(weights)):
            return self
        return self.rescored(height, width, variant, weights)

    def rescored(
        self,
        height: int,
        width: int,
        variant: str = "official",
        weights: tuple[float, float, float] = DEFAULT_WEIGHTS,
    ) -> Phase1Data:
        """The same data with S1/S2/S3/S recomputed (another variant or weights) from the components
        that made the stored scores."""
        scored = self.components if self.score_components is None else self.score_components
        terms = separability(torch.from_numpy(scored), height, width, variant, weights)
        return replace(self, scores=terms.numpy(), score_variant=variant, score_weights=tuple(weights))


def captured_score_variant(attrs: Mapping[str, Any]) -> str:
    """The S2 variant a capture scored heads with, from its store's attributes (its `capture_spec`)."""
    capture = attrs.get("capture_spec", {}).get("self_attention") or {}
    return capture.get("score_variant", "official")


def _flat(components: np.ndarray) -> np.ndarray:
    """(layer, head, frame, y, x, k) -> (layer, head, frame, y*x, k)."""
    return components.reshape(*components.shape[:3], -1, components.shape[-1])


@dataclass(frozen=True)
class HeadChoice:
    """The self-attention (block, head) chosen for every latent frame, and its S."""

    layer: np.ndarray  # (frame,) block index
    head: np.ndarray  # (frame,) head index (position among the captured heads)
    score: np.ndarray  # (frame,)

    def components(self, data: Phase1Data) -> np.ndarray:
        """(frame, H*W, k): each frame's components from its chosen block and head."""
        frames = np.arange(len(self.head))
        layer_index = np.array([data.layers.index(int(layer)) for layer in self.layer])
        return data.components[layer_index, self.head, frames]

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer.tolist(), "head": self.head.tolist(), "score": self.score.tolist()}


def _first_not_finite(values: np.ndarray) -> tuple[tuple[int, ...], float, int] | None:
    """(index, value, how many) of the first NaN/inf entry of `values`, or None when all are finite."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return index, float(values[index]), int(bad.sum())


def check_finite(data: Phase1Data, positions: Mapping[str, Sequence[int]]) -> None:
    """Refuse phase-1 data with a NaN/inf where a decision reads it: the S scores, the components (and
    the score components that rescoring reads) and the cross maps of the nouns' token `positions`; the
    error names the block, head, frame and noun.

    One `isfinite` pass over arrays already on the host, at the entry of phase 1's decisions.
    """
    found = _first_not_finite(data.scores)
    if found is not None:
        (layer, head, frame, term), value, n = found
        raise ValueError(
            f"the self-attention score {TERMS[term]} is {value} at block {data.layers[layer]}, head {head}, "
            f"frame {frame} ({n} such values). {NOT_FINITE_HELP}"
        )
    components = {"components": data.components, "score components": data.score_components}
    for name, values in components.items():  # the layout reads the first; rescoring reads the second
        found = None if values is None else _first_not_finite(values)
        if found is not None:
            (layer, head, frame, _, _), value, n = found
            raise ValueError(
                f"the self-attention {name} are {value} at block {data.layers[layer]}, head {head}, "
                f"frame {frame} ({n} such values). {NOT_FINITE_HELP}"
            )
    for noun, span in positions.items():
        for position in span:
            if position not in data.tokens:
                continue  # noun_cross_maps names positions that were not captured
            found = _first_not_finite(data.cross[:, data.tokens.index(position)])
            if found is not None:
                (head, frame, y, x), value, n = found
                raise ValueError(
                    f"the cross-attention map of noun {noun!r} (token {position}) is {value} at head {head}, "
                    f"frame {frame}, position (y={y}, x={x}) ({n} such values). {NOT_FINITE_HELP}"
                )


def best_heads(
    total: np.ndarray,
    layers: Sequence[int],
    rule: str = "per_frame",
    layer: int | None = None,
    head: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The rule itself on a score array `total` (layer, head, frame) whose first axis holds `layers`:
    per frame, the index of the chosen layer and head. Ties go to the lower index, as argmax does.

    `per_frame`: the best head of `layer` in each frame (the release); `per_video`: the head of `layer`
    with the best mean over frames; `per_layer`: the (layer, head) with the best mean; `fixed`: `head`
    of `layer` in every frame. `layer` defaults to the first of `layers`.
    """
    if rule not in HEAD_RULES:
        raise ValueError(f"head rule must be one of {HEAD_RULES}, got {rule!r}")
    if rule == "fixed" and (head is None or not 0 <= head < total.shape[1]):
        raise ValueError(f"the fixed head rule needs a head in 0..{total.shape[1] - 1}, got {head!r}")
    frames = total.shape[-1]
    if rule == "per_layer":
        means = total.mean(axis=-1)  # (layer, head)
        layer_index, best = np.unravel_index(int(np.argmax(means)), means.shape)
        return np.full(frames, layer_index), np.full(frames, best)
    layer = layers[0] if layer is None else layer
    if layer not in layers:
        raise ValueError(f"block {layer} was not captured; captured: {list(layers)}")
    layer_index = list(layers).index(layer)
    per_head = total[layer_index]  # (head, frame)
    if rule == "fixed":
        heads = np.full(frames, head)
    elif rule == "per_frame":
        heads = per_head.argmax(axis=0)
    else:
        heads = np.full(frames, per_head.mean(axis=1).argmax())
    return np.full(frames, layer_index), heads


def choose_head(
    data: Phase1Data, rule: str = "per_frame", layer: int | None = None, head: int | None = None
) -> HeadChoice:
    """The self-attention head per frame under `rule` (`best_heads`) on the stored S scores."""
    total = data.scores[..., TERMS.index("S")]  # (layer, head, frame)
    layer_index, heads = best_heads(total, data.layers, rule, layer, head)
    scores = total[layer_index, heads, np.arange(total.shape[-1])]
    chosen_layers = np.asarray(data.layers)[layer_index]
    return HeadChoice(chosen_layers.astype(int), heads.astype(int), scores)


def noun_cross_maps(
    data: Phase1Data,
    positions: Mapping[str, Sequence[int]],
    strategy: str = "mean",
    measure: str = "entropy",
) -> tuple[dict[str, np.ndarray], dict[str, int | None]]:
    """Each noun's (frame, H, W) cross-attention map and the head it came from (None: all heads).

    `positions[noun]` are the noun's token positions (its subword tokens, of one or every occurrence).
    """
    if strategy not in CROSS_HEADS:
        raise ValueError(f"cross-attention head strategy must be one of {CROSS_HEADS}, got {strategy!r}")
    if measure not in STATS:
        raise ValueError(f"concentration measure must be one of {STATS}, got {measure!r}")
    maps, heads = {}, {}
    for noun, span in positions.items():
        missing = [p for p in span if p not in data.tokens]
        if missing:
            raise KeyError(
                f"token positions {missing} of {noun!r} were not captured; captured: {list(data.tokens)}"
            )
        per_head = data.cross[:, [data.tokens.index(p) for p in span]].mean(axis=1)  # (head, frame, H, W)
        if strategy == "mean":
            maps[noun], heads[noun] = per_head.mean(axis=0), None
            continue
        if strategy == "peak":
            head = int(per_head.reshape(len(per_head), -1).max(axis=1).argmax())
        else:
            values = concentration_stats(torch.from_numpy(per_head))[..., STATS.index(measure)].mean(dim=-1)
            head = int(values.argmin() if measure in LOWER_IS_SHARPER else values.argmax())
        maps[noun], heads[noun] = per_head[head], head
    return maps, heads
