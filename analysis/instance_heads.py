"""Do self-attention heads separate instances? The nats by which a query attends to its own instance over
another instance of the same kind, measured against the instances a video actually shows (gate G3 of
the counting model organism).

NUMINA reads instances off the most "separable" head (S1/S2/S3 score a map's look, not what it
separates). Here the truth is known: the instances the exact counter finds in the generated video. For
a head's frame-local map A (rows = queries) and token labels (0 = no instance), the separation is, over
ordered pairs (a, b) of distinct instances, the mean over queries q in a of

    log mean_{k in a} A[q, k]  -  log mean_{k in b} A[q, k]

(per-token densities, so an instance's area does not count; 2 nats: a query gives each token of its own
instance 7.4 times the attention it gives a token of the other). A head that only attends nearby
tokens scores high on that too, so a second number tells instances from mere locality: the nats of
own-instance tokens over the background ring around the instance (tokens of no instance of the kind,
2 to `RING` tokens away: the first token around is skipped, since the decoder blends an object's rim
into it), which a locality head cannot win. Float16-stored maps can hold exact zeros;
densities are floored at `DENSITY_FLOOR` and the floored share is reported.

The ring still sits farther from most of an instance's queries than the instance's own tokens, so a
sharp local head wins it too. `edge_nats` compares at equal distance: for a query q of an instance and
each distance d = 1..`EDGE_DISTANCES` (Manhattan, in tokens) where both exist,

    log mean_{k in own instance, |k - q| = d} A[q, k]  -  log mean_{k outside it, |k - q| = d} A[q, k]

averaged over (q, d). A head whose attention depends on distance alone scores 0 whatever its reach;
logits raised by b inside the query's instance score b: what an instance extraction can use.

May import numpy, pandas, scipy, numina and analysis.statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from analysis.statistics import confidence_interval

# The smallest positive float16 (a subnormal): a mean density below it was stored as zero.
DENSITY_FLOOR = float(np.finfo(np.float16).smallest_subnormal)
RING = 3  # the background ring: tokens 2..RING steps from an instance
EDGE_DISTANCES = 3  # edge_nats compares tokens 1..EDGE_DISTANCES steps from the query


def latent_frame_sources(latent_frames: int, temporal_stride: int = 4) -> list[int]:
    """The video frame whose instances stand for each latent frame of a causal VAE: frame 0 for latent
    frame 0, the last frame of its group (4f) for latent frame f."""
    return [0] + [temporal_stride * frame for frame in range(1, latent_frames)]


def instance_separation(attention: np.ndarray, labels: np.ndarray) -> dict | None:
    """The separation of each head's map in `attention` (heads, tpf, tpf) given (H, W) token `labels` of
    one kind's instances: {"nats": (heads,) own instance over another, "ring_nats": (heads,) own instance
    over its background ring (NaN where no instance has a ring), "pairs", "floored"} (see the module
    docstring). None when fewer than two instances cover a token (nothing to separate)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or attention.shape[-1] != labels.size or attention.shape[-2] != labels.size:
        raise ValueError(f"maps of {attention.shape[-2:]} tokens do not fit token labels of {labels.shape}")
    if not np.isfinite(attention).all():
        raise ValueError("the attention maps hold NaN or inf: read a complete store (unwritten maps are NaN)")
    instances = np.unique(labels[labels > 0])
    if len(instances) < 2:
        return None
    regions = [labels == instance for instance in instances]
    rings = [
        ndimage.binary_dilation(region, iterations=RING) & ~ndimage.binary_dilation(region) & (labels == 0)
        for region in regions
    ]
    members = np.stack([mask.reshape(-1) for mask in regions + rings], axis=1).astype(np.float64)
    density = np.asarray(attention, dtype=np.float64) @ (members / np.maximum(members.sum(axis=0), 1))
    queries = labels.reshape(-1) > 0
    floored = float((density[:, queries, : len(instances)] < DENSITY_FLOOR).mean())
    log_density = np.log(np.maximum(density, DENSITY_FLOOR))  # (heads, tpf, 2n)
    nats, ring_nats = np.zeros(attention.shape[0]), np.zeros(attention.shape[0])
    n = len(instances)
    ringed = [a for a, ring in enumerate(rings) if ring.any()]  # an instance walled in by others has none
    for a, region in enumerate(regions):
        own = log_density[:, region.reshape(-1), :]  # (heads, q, 2n)
        others = [b for b in range(n) if b != a]
        nats += (own[..., a : a + 1] - own[..., others]).mean(axis=1).sum(axis=-1)
        if a in ringed:
            ring_nats += (own[..., a] - own[..., n + a]).mean(axis=1)
    return {
        "nats": nats / (n * (n - 1)),
        "ring_nats": ring_nats / len(ringed) if ringed else np.full(attention.shape[0], np.nan),
        "edge_nats": edge_separation(attention, labels),
        "pairs": n * (n - 1),
        "floored": floored,
    }


def edge_separation(attention: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(heads,) nats of own-instance tokens over tokens outside the instance at the same distance from
    the query (module docstring); NaN for a head when no query has both at any distance."""
    height, width = labels.shape
    flat = labels.reshape(-1)
    rows, columns = np.divmod(np.arange(flat.size), width)
    distance = np.abs(rows[:, None] - rows[None]) + np.abs(columns[:, None] - columns[None])
    queries = np.flatnonzero(flat > 0)
    same = flat[queries, None] == flat[None, :]  # (q, tpf)
    maps = np.asarray(attention, dtype=np.float64)[:, queries, :]  # (heads, q, tpf)
    total, pairs = np.zeros(maps.shape[0]), 0
    for d in range(1, EDGE_DISTANCES + 1):
        ring = distance[queries] == d
        inside, outside = ring & same, ring & ~same
        both = inside.any(axis=1) & outside.any(axis=1)
        if not both.any():
            continue
        own = (maps[:, both] * inside[both]).sum(-1) / inside[both].sum(-1)
        other = (maps[:, both] * outside[both]).sum(-1) / outside[both].sum(-1)
        total += (np.log(np.maximum(own, DENSITY_FLOOR)) - np.log(np.maximum(other, DENSITY_FLOOR))).sum(-1)
        pairs += int(both.sum())
    return total / pairs if pairs else np.full(maps.shape[0], np.nan)


MEASURES = ("nats", "ring_nats", "edge_nats")


def separation_summary(rows: pd.DataFrame, by: Sequence[str] = ("layer", "head")) -> pd.DataFrame:
    """Mean separation (each of `MEASURES`) per `by` group with 95% bootstrap intervals over prompts (each
    prompt's frames and nouns averaged first, so a prompt with many frames weighs as one)."""
    per_prompt = rows.groupby([*by, "prompt_id"], as_index=False)[list(MEASURES)].mean()
    records = []
    for key, group in per_prompt.groupby(list(by)):
        record = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        for measure in MEASURES:
            low, high = confidence_interval(group[measure].to_numpy(), method="bootstrap")
            record |= {measure: group[measure].mean(), f"{measure}_low": low, f"{measure}_high": high}
        records.append(record | {"prompts": len(group)})
    return pd.DataFrame(records)
