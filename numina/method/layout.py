"""Per-frame, per-noun instance layouts: which token positions belong to which instance of a noun.

NUMINA's layout step (METHOD.md, "Phase 1", step 5), as the release does it:

    features  = 3 min-max normalised components of the chosen self-attention map (a flat one left as
                it is) + 0.5 x (y, x) from linspace(0, 1, H) and linspace(0, 1, W), an ij grid  (5-D)
    clusters  = MeanShift(bin_seeding=True) on the features, bandwidth estimated at quantile 0.2 on at
                most 1000 samples (0.5 when the estimate is not positive)
    focus     = positions where the noun's cross map >= 0.05 x its max, minus DBSCAN noise (eps 3,
                min_samples 5) on their (y, x) grid coordinates
    instance  = a cluster with >= 20% of its positions in the focus mask; numbered 1, 2, ... in
                increasing cluster id

Labels: 0 background, 1..99 detected instances, -1 removed and >= 100 added (by `correct`). May import
numpy, scikit-learn, numina.checks, numina.method.meanshift and numina.method.segments.

`LayoutOptions(extraction="segments")` swaps the clustering and the instance rule for
`numina.method.segments` (Ward segments of all captured components, kept by the noun map's contrast).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import DBSCAN

from numina.checks import check_int, check_real
from numina.method.meanshift import estimate_bandwidth, mean_shift
from numina.method.segments import COMPONENTS, segment_layouts

BACKGROUND = 0
REMOVED = -1
ADDED_BASE = 100
MAX_DETECTED = ADDED_BASE - 1
RELEASE_COMPONENTS = 3  # the release's extraction reads the first three components
FLAT_RANGE = 1e-8
COORD_SCALE = 0.5
EXTRACTIONS = ("release", "segments")


@dataclass(frozen=True)
class LayoutOptions:
    """The layout's settings: the release's (METHOD.md step 5) by default, or the `segments` extraction."""

    threshold: float = 0.05  # focus: fraction of the cross map's maximum
    eps: float = 3.0  # focus: DBSCAN radius in grid positions
    min_samples: int = 5  # focus: DBSCAN core size
    min_overlap: float = 0.2  # fraction of a cluster's positions that must lie in the focus mask
    quantile: float = 0.2  # MeanShift bandwidth estimate
    n_samples: int = 1000  # positions the bandwidth estimate looks at, at most
    fallback_bandwidth: float = 0.5  # when the estimate is not positive
    # release: MeanShift, focus mask, 20% rule; segments: numina.method.segments (the fields below)
    extraction: str = "release"
    segment_threshold: float = 0.8  # Ward merge cost cut, in units of sigma_1 (groups lie ~1.41 apart)
    contrast: float = 3.0  # an instance's median noun map over the noun map's background level
    min_tokens: int = 3  # segments: smallest instance, in tokens

    def __post_init__(self) -> None:
        if self.extraction not in EXTRACTIONS:
            raise ValueError(
                f"layout extraction {self.extraction!r} is not one of {list(EXTRACTIONS)} (release: the "
                "release's MeanShift layout; segments: Ward segments kept by the noun map's contrast)"
            )
        check_real("layout threshold", self.threshold, 0, 1)
        check_real("layout eps", self.eps, 0, low_open=True)
        check_int("layout min_samples", self.min_samples, 1)
        check_real("layout min_overlap", self.min_overlap, 0, 1)
        check_real("layout quantile", self.quantile, 0, 1, low_open=True)
        check_int("layout n_samples", self.n_samples, 1)
        check_real("layout fallback_bandwidth", self.fallback_bandwidth, 0, low_open=True)
        check_real("layout segment_threshold", self.segment_threshold, 0, low_open=True)
        check_real("layout contrast", self.contrast, 1, low_open=True)
        check_int("layout min_tokens", self.min_tokens, 1)

    @property
    def components(self) -> int:
        """Self-attention components the extraction reads, so what a walk-through must capture (one
        rule for every capture that feeds a layout): the release's 3, or `segments.COMPONENTS`."""
        return COMPONENTS if self.extraction == "segments" else RELEASE_COMPONENTS


@dataclass(frozen=True, eq=False)
class Layout:
    """Per noun, a (frames, H, W) int32 label map; all nouns share one shape. The arrays are read-only.

    Compared by identity (`eq=False`): an element-wise `==` of arrays has no single truth value.
    """

    labels: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        frozen = {}
        shapes = set()
        for noun, labels in self.labels.items():
            array = np.asarray(labels)
            if array.ndim != 3 or array.dtype.kind not in "iu":
                raise ValueError(
                    f"Layout for {noun!r}: expected an integer (frames, H, W) label array, got "
                    f"{array.dtype} of shape {array.shape}."
                )
            array = array.astype(np.int32)  # a copy: later edits of the caller's array do not leak in
            array.setflags(write=False)
            frozen[noun] = array
            shapes.add(array.shape)
        if len(shapes) > 1:
            raise ValueError(f"All nouns of a layout need one (frames, H, W) shape, got {sorted(shapes)}.")
        object.__setattr__(self, "labels", frozen)

    @property
    def nouns(self) -> tuple[str, ...]:
        return tuple(self.labels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(frames, H, W); (0, 0, 0) for a layout without nouns."""
        return next(iter(self.labels.values())).shape if self.labels else (0, 0, 0)

    def __getitem__(self, noun: str) -> np.ndarray:
        if noun not in self.labels:
            raise KeyError(f"No layout for {noun!r}; the layout has nouns {list(self.labels)}.")
        return self.labels[noun]

    def counts(self, noun: str) -> np.ndarray:
        """Instances per frame (frames,): distinct labels > 0, so detected and added, not removed."""
        return np.array([np.unique(frame[frame > BACKGROUND]).size for frame in self[noun]], dtype=np.int64)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Writable copies of the label maps, keyed by noun (what the store writes)."""
        return {noun: labels.copy() for noun, labels in self.labels.items()}

    @classmethod
    def from_dict(cls, labels: Mapping[str, np.ndarray]) -> Layout:
        return cls(dict(labels))


def instance_features(components: np.ndarray, height: int, width: int) -> np.ndarray:
    """MeanShift's 5-D features (H*W, 5) from a map's components (H*W, k >= 3).

    Components are min-max normalised in their own floating dtype (the release normalises float32 in
    float32) and a flat one (range <= 1e-8) is left as it is, unlike the score's grey image, where it
    becomes 0.5. The coordinates pull clusters towards spatially contiguous regions.
    """
    components = np.asarray(components)
    if (
        components.ndim != 2
        or components.shape[0] != height * width
        or components.shape[1] < RELEASE_COMPONENTS
    ):
        raise ValueError(
            f"Expected components of shape ({height * width}, k >= {RELEASE_COMPONENTS}) for a "
            f"{height} x {width} grid, got {components.shape}."
        )
    first = components[:, :RELEASE_COMPONENTS]
    first = first.astype(first.dtype if first.dtype.kind == "f" else np.float64)  # always a copy
    low, high = first.min(axis=0), first.max(axis=0)
    spread = high - low
    varying = spread > FLAT_RANGE
    first[:, varying] = (first[:, varying] - low[varying]) / spread[varying]
    grid = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    coords = np.stack(grid, axis=-1).reshape(-1, 2) * COORD_SCALE
    return np.concatenate([first, coords], axis=1)


def segment_frame(
    features: np.ndarray,
    height: int,
    width: int,
    quantile: float = 0.2,
    n_samples: int = 1000,
    fallback_bandwidth: float = 0.5,
) -> np.ndarray:
    """MeanShift cluster id (H, W) of every position, from its features (H*W, d).

    The bandwidth estimate subsamples with `random_state=0`: scikit-learn's default, which the release
    gets by passing none; fixed here so the layout is reproducible whatever that default becomes.
    Clustering runs through `numina.method.meanshift`, scikit-learn's procedure without its overhead
    (same clusters, tested against `sklearn.cluster.MeanShift`).
    """
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] != height * width:
        raise ValueError(f"Expected features of shape ({height * width}, d), got {features.shape}.")
    bandwidth = estimate_bandwidth(features, quantile, min(n_samples, len(features)), seed=0)
    if bandwidth <= 0:
        bandwidth = fallback_bandwidth
    clusters = mean_shift(features, bandwidth)
    return clusters.reshape(height, width)


def focus_mask(
    cross_map: np.ndarray, threshold: float = 0.05, eps: float = 3.0, min_samples: int = 5
) -> np.ndarray:
    """Where the noun is attended (H, W) bool: positions >= threshold x max, minus DBSCAN noise.

    The comparison stays in the map's dtype (the release compares float32 maps to a float32 threshold).
    """
    cross_map = np.asarray(cross_map)
    if cross_map.ndim != 2:
        raise ValueError(f"Expected a (H, W) cross-attention map, got shape {cross_map.shape}.")
    coords = np.argwhere(cross_map >= threshold * cross_map.max())
    mask = np.zeros(cross_map.shape, dtype=bool)
    if len(coords) == 0:
        return mask
    kept = coords[DBSCAN(eps=eps, min_samples=min_samples).fit_predict(coords) >= 0]
    mask[kept[:, 0], kept[:, 1]] = True
    return mask


def frame_layout(clusters: np.ndarray, focus: np.ndarray, min_overlap: float = 0.2) -> np.ndarray:
    """Instance labels (H, W) int32: clusters with >= `min_overlap` of their positions in `focus`.

    Instances are numbered 1, 2, ... in increasing cluster id. The test is `overlap / size >=
    min_overlap`, as in the release (`overlap >= min_overlap * size` differs by rounding, e.g. 3 of 15).
    """
    clusters, focus = np.asarray(clusters), np.asarray(focus, dtype=bool)
    if clusters.shape != focus.shape:
        raise ValueError(f"Cluster map {clusters.shape} and focus mask {focus.shape} differ in shape.")
    labels = np.zeros(clusters.shape, dtype=np.int32)
    count = 0
    for cluster in np.unique(clusters):
        region = clusters == cluster
        if (region & focus).sum() / region.sum() >= min_overlap:
            count += 1
            labels[region] = count
    return check_detected(labels)


def check_detected(labels: np.ndarray) -> np.ndarray:
    """`labels` when its detected instances fit labels 1..99 (>= 100 are `correct`'s additions)."""
    count = int(labels.max(initial=0))
    if count > MAX_DETECTED:
        raise ValueError(
            f"{count} instances found in one frame; labels 1..{MAX_DETECTED} hold detected instances "
            f"(>= {ADDED_BASE} are additions). Check the cross map and the clustering settings."
        )
    return labels


def build_layout(
    components: np.ndarray,
    cross_maps: Mapping[str, np.ndarray],
    height: int,
    width: int,
    options: LayoutOptions | None = None,
) -> Layout:
    """The layout of every noun in every frame.

    Args:
        components: (frames, H*W, k >= 3) components of each frame's chosen self-attention map (the
            release's extraction reads the first 3; `segments` reads all k).
        cross_maps: noun -> (frames, H, W) cross-attention map of the chosen (or averaged) head.
        options: the release's settings when None.

    Each frame is segmented once and its clusters reused for every noun. The release re-runs MeanShift
    per noun on the same features, which gives the same clusters (the procedure is deterministic), at
    one clustering per noun and frame instead of one per frame.
    """
    options = options or LayoutOptions()
    components = np.asarray(components)
    if components.ndim != 3 or components.shape[1] != height * width:
        raise ValueError(
            f"Expected components of shape (frames, H*W = {height * width}, k), got {components.shape}."
        )
    if not cross_maps:
        raise ValueError("No cross-attention maps given: a layout needs at least one noun.")
    frames = components.shape[0]
    maps = {noun: np.asarray(cross) for noun, cross in cross_maps.items()}
    for noun, cross in maps.items():
        if cross.shape != (frames, height, width):
            raise ValueError(
                f"Cross map of {noun!r} has shape {cross.shape}; expected {(frames, height, width)} "
                "to match the components."
            )
    # A NaN would decide silently: an empty focus mask, or one segment and a count of 0.
    if not np.isfinite(components).all() or not all(np.isfinite(cross).all() for cross in maps.values()):
        raise ValueError("The components or a cross map hold NaN or inf: no layout can be read from them.")
    labels = {noun: np.zeros((frames, height, width), dtype=np.int32) for noun in maps}
    if options.extraction == "segments":
        for frame in range(frames):
            found = segment_layouts(
                components[frame],
                {noun: cross[frame] for noun, cross in maps.items()},
                options.segment_threshold,
                options.contrast,
                options.min_tokens,
            )
            for noun, frame_labels in found.items():
                labels[noun][frame] = check_detected(frame_labels)
        return Layout(labels)
    for frame in range(frames):
        features = instance_features(components[frame], height, width)
        clusters = segment_frame(
            features, height, width, options.quantile, options.n_samples, options.fallback_bandwidth
        )
        for noun, cross in maps.items():
            focus = focus_mask(cross[frame], options.threshold, options.eps, options.min_samples)
            labels[noun][frame] = frame_layout(clusters, focus, options.min_overlap)
    return Layout(labels)
