"""An instance extraction that counts what the maps show: Ward segments of the components, kept by
the noun map's own contrast (`LayoutOptions(extraction="segments")`; the release's MeanShift stays the
default).

Why: on planted scenes the release's extraction (MeanShift on 3 components plus position, 20% of a
focus mask) shatters lone objects, merges neighbours once there are more objects than components and
counts the background when the noun is absent (benchmarks/RESULTS.md). Here:

    embedding  the frame's components C = U S (H*W, K), all K of them, divided by the largest column
               norm (sigma_1): a token's row of the map projected on the top K directions. Tokens of
               one group (an object, or the background) share a row; in these units two groups that
               each hold a singular direction are ~sqrt(2) apart in Ward's merge cost, whatever their
               sizes, so one threshold serves every object scale
    segments   Ward agglomerative clustering (scikit-learn) of every token's embedding, connected on
               the 4-neighbour grid, cut at `segment_threshold`: spatially connected regions of
               near-identical attention rows, so disjoint objects stay apart even when K directions
               cannot hold them all, and a gap of one background token splits neighbours
    instances  per noun, the segments of >= `min_tokens` tokens whose median noun map is >= `contrast`
               x the noun map's background level (its median over the largest segment);
               numbered 1, 2, ... by their first token in row-major order

A flat noun map (the noun is absent) has no segment above its own background, so it gives 0. K needs
to exceed the number of groups that touch one another (the capture's `components`; planted scenes at
k <= 8 need ~12). May import numpy and scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.feature_extraction.image import grid_to_graph

FLAT_NORM = 1e-6  # a map with no component above this (e.g. a uniform map after centring) has no segment
TINY = 1e-12  # floor of the noun map before its logarithm

# Components the extraction reads (the capture keeps these many under `extraction="segments"`): one
# direction per object, k <= 8 objects of the noun plus other nouns' objects in the frame.
COMPONENTS = 12


def embedding(components: np.ndarray) -> np.ndarray | None:
    """(H*W, K) components divided by their largest column norm; None for a map with no structure."""
    components = np.asarray(components, dtype=np.float64)
    scale = np.linalg.norm(components, axis=0).max(initial=0.0)
    return components / scale if scale > FLAT_NORM else None


def background_level(segments: np.ndarray, log_map: np.ndarray) -> float:
    """The noun map's level (log) off the objects: its median over the largest segment.

    Not a percentile of the frame: a diffuse noun map spills around its objects and lifts the
    background well above the frame's floor, while the largest segment is the background itself.
    """
    largest = np.bincount(segments.ravel()).argmax()
    return float(np.median(log_map[segments == largest]))


def segment(features: np.ndarray | None, height: int, width: int, threshold: float) -> np.ndarray:
    """(H, W) segment ids: Ward clusters of the tokens' embeddings, connected on the 4-neighbour grid."""
    if features is None:
        return np.zeros((height, width), dtype=np.int64)
    ward = AgglomerativeClustering(
        n_clusters=None,
        distance_threshold=threshold,
        linkage="ward",
        connectivity=grid_to_graph(height, width),
    )
    return ward.fit_predict(features).reshape(height, width)


def noun_instances(
    segments: np.ndarray, log_map: np.ndarray, log_contrast: float, min_tokens: int
) -> np.ndarray:
    """(H, W) int32 labels of the segments the noun attends `contrast` times above its background."""
    floor = background_level(segments, log_map)
    labels = np.zeros(segments.shape, dtype=np.int32)
    ids, first = np.unique(segments, return_index=True)
    order = ids[np.argsort(first)]  # segments in row-major order of their first token
    count = 0
    for segment_id in order:
        region = segments == segment_id
        if region.sum() >= min_tokens and np.median(log_map[region]) - floor >= log_contrast:
            count += 1
            labels[region] = count
    return labels


def segment_layouts(
    components: np.ndarray,
    cross_maps: Mapping[str, np.ndarray],
    threshold: float,
    contrast: float,
    min_tokens: int,
) -> dict[str, np.ndarray]:
    """One frame: (H, W) labels per noun from components (H*W, K) and each noun's (H, W) cross map."""
    log_contrast = float(np.log(contrast))
    log_maps = {
        noun: np.log(np.maximum(np.asarray(cross, np.float64), TINY)) for noun, cross in cross_maps.items()
    }
    height, width = next(iter(log_maps.values())).shape
    segments = segment(embedding(components), height, width, threshold)
    return {
        noun: noun_instances(segments, log_map, log_contrast, min_tokens)
        for noun, log_map in log_maps.items()
    }
