"""Planted attention: scenes with known instances, to measure how well a layout extraction counts.

NUMINA's layout (METHOD.md step 5) turns one frame's self-attention map and a noun's cross-attention
map into labelled instances. On a real model nobody knows which tokens make an instance, so an
extraction is measured here on maps generated around known instance masks, scored by count and by
instance-level IoU. It lives in `numina.evaluation` because, like the counters, it scores the method's
output against a truth; it is in the package, not in `benchmarks/`, because tests, the benchmark
script and the extraction sweeps share it. It is not exported by `numina.evaluation`, so importing
the evaluation package does not load the method.

Scene rules (`generate_case`), all in grid tokens:

    instance   a disc {(y, x): (y - cy)^2 + (x - cx)^2 <= r^2} lying fully inside the grid
    gap        positions of two different instances are at Chebyshev distance >= gap + 1, i.e. at
               least `gap` background tokens between them along every row, column and diagonal
               (never touching); the two members of an adjacent pair start with exactly one token
               between them (same row or column) and keep at least one, every other pair keeps `gap`
    placement  instance by instance, centres uniform over all centres that keep the rules, radius
               uniform in `radius`; a scene that cannot be completed is drawn again (50 tries), then
               a ValueError; instances 1..k are the noun's, k+1..k+others other nouns' objects
    motion     each later frame moves every instance by a step drawn uniformly from {-1, 0, 1}^2; a
               step that would break a rule is not taken (the instance stays)

Self-attention map of a frame, rows = queries, each row a softmax over the frame's tpf keys:

    logit(q, k) = beta_i [q and k both in instance i, or both background (i = 0)]
                  + locality * g(q, k)             g: Gaussian of the grid distance, sigma 1.5 tokens
                  + texture * <f(q), f(k)>         f: 4 smooth random fields (sigma 3), the scene's
                                                   appearance, fixed over the frames of a case
                  + noise * z(q, k)                z: iid N(0, 1), drawn per frame

    beta_i = max(0, log(m (tpf - n_i) / (n_i (1 - m)))) for a group of n_i tokens: without the other
    terms a query puts the level's `own_mass` m of its attention on its own instance (or on the
    background). `Difficulty` names the levels, from `clean` (block-structured maps) to `weak` (what a
    weak head looks like: little own mass, strong positional bias, texture and noise).

Noun cross-attention map (only the noun's instances, never the other nouns'):

    map = 0.3 (floor + sum_j a_j blur_j) * exp(noun_noise z - noun_noise^2 / 2)

    a_j ~ U(0.6, 1) per instance, blur_j its mask blurred with sigma 0.5 (`sharp`) or 2.5 (`diffuse`,
    spilling over the background and over neighbours), scaled to a peak of 1; `floor` and
    `noun_noise` come from the level.

Scores (`match_frame`): the count (positive labels), instances matched one to one by the Hungarian
assignment on IoU, a pair counting when IoU >= 0.5; a frame is exact with the right count and every
instance matched, a case with every frame exact. `accuracy_table` aggregates cases with Wilson
intervals (cases are independent Bernoulli trials; the percentile bootstrap of
`numina.evaluation.accuracy` gives an empty interval at 0% or 100%, which small cells often are).

May import numpy, scipy, scikit-learn, pandas, torch, numina.capture and numina.method (the capture's
reduction and the layout, so an extraction here is the method's own code path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from time import perf_counter
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage, stats
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import DBSCAN, MeanShift, estimate_bandwidth
from sklearn.utils.extmath import randomized_svd

from numina.capture.reductions import reduce_self_attention
from numina.capture.spec import SelfAttentionCapture
from numina.method.correct import disc
from numina.method.layout import LayoutOptions, build_layout
from numina.method.presets import preset

NOUN_MAP_STYLES = {"sharp": 0.5, "diffuse": 2.5}  # blur sigma of each instance's mask, in tokens
LOCALITY_SIGMA = 1.5  # tokens
TEXTURE_SIGMA = 3.0  # tokens
TEXTURE_FIELDS = 4
NOUN_SCALE = 0.3
AMPLITUDE = (0.6, 1.0)  # range of an instance's peak in the noun map, before the floor
PLACEMENT_TRIES = 50
MOTION_FRAMES = 3
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Difficulty:
    """How well a head separates instances: own-instance mass against positional bias, texture, noise."""

    name: str
    own_mass: float  # attention a query puts on its own group, before the nuisance terms
    locality: float  # logit weight of the positional Gaussian
    texture: float  # logit weight of the scene's smooth appearance fields
    noise: float  # standard deviation of iid logit noise
    noun_floor: float  # noun map background, relative to an instance's peak
    noun_noise: float  # log-normal noise of the noun map


DIFFICULTIES: dict[str, Difficulty] = {
    level.name: level
    for level in (
        Difficulty("clean", 0.95, 0.0, 0.0, 0.0, 0.01, 0.0),
        Difficulty("easy", 0.8, 0.5, 0.5, 0.3, 0.02, 0.2),
        Difficulty("medium", 0.5, 1.5, 1.0, 0.6, 0.05, 0.35),
        Difficulty("weak", 0.2, 3.0, 1.5, 1.0, 0.1, 0.5),
    )
}
SCENARIOS = ("separate", "adjacent", "others", "motion")


@dataclass(frozen=True)
class CaseSpec:
    """One planted scene to generate: grid, the noun's count k, other nouns' objects, rules, level."""

    height: int
    width: int
    k: int
    radius: tuple[int, int] = (2, 4)  # inclusive range of instance radii, in tokens
    others: int = 0  # other nouns' instances: in the self-attention map, not in the noun map
    adjacent_pairs: int = 0  # pairs of the noun's instances one token apart
    gap: int = 2  # background tokens between any two other instances, at least
    difficulty: str = "clean"
    noun_map: str = "sharp"
    frames: int = 1
    seed: int = 0
    scenario: str = "separate"  # a name for tables; the fields above decide the scene

    def __post_init__(self) -> None:
        problems = []
        if self.height < 4 or self.width < 4:
            problems.append(f"grid {self.height}x{self.width} is smaller than 4x4")
        if self.k < 0 or self.others < 0:
            problems.append(f"counts must be >= 0 (k={self.k}, others={self.others})")
        low, high = self.radius
        if not 1 <= low <= high:
            problems.append(f"radius range {self.radius} must satisfy 1 <= low <= high")
        if not 0 <= 2 * self.adjacent_pairs <= self.k:
            problems.append(f"{self.adjacent_pairs} adjacent pairs need 2 per pair of the noun's k={self.k}")
        if self.gap < 1:
            problems.append(f"gap must be >= 1 token (instances never touch), got {self.gap}")
        if self.difficulty not in DIFFICULTIES:
            problems.append(f"difficulty {self.difficulty!r} is not one of {list(DIFFICULTIES)}")
        if self.noun_map not in NOUN_MAP_STYLES:
            problems.append(f"noun map {self.noun_map!r} is not one of {list(NOUN_MAP_STYLES)}")
        if self.frames < 1:
            problems.append(f"frames must be >= 1, got {self.frames}")
        if problems:
            raise ValueError("Invalid planted case: " + "; ".join(problems) + ".")

    @property
    def grid(self) -> str:
        return f"{self.height}x{self.width}"


@dataclass(frozen=True, eq=False)
class PlantedCase:
    """A generated scene. `instances` (frames, H, W): 0 background, 1..k the noun's, k+1.. others'."""

    spec: CaseSpec
    radii: np.ndarray  # (n,) per instance
    centres: np.ndarray  # (frames, n, 2) (y, x)
    instances: np.ndarray  # (frames, H, W) int32
    self_maps: np.ndarray  # (frames, tpf, tpf) float32, rows = queries, each row sums to 1
    noun_maps: np.ndarray  # (frames, H, W) float32

    @property
    def truth(self) -> np.ndarray:
        """The noun's instances (frames, H, W): labels 1..k, other nouns' objects as background."""
        return np.where(self.instances <= self.spec.k, self.instances, 0).astype(np.int32)


def _stamp(shape: tuple[int, int], centre: Sequence[int], radius: int) -> np.ndarray:
    """The disc's mask on the grid (the caller keeps the disc inside)."""
    mask = np.zeros(shape, dtype=bool)
    cy, cx = centre
    mask[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1] = disc(radius)
    return mask


def _inside(shape: tuple[int, int], centre: Sequence[int], radius: int) -> bool:
    cy, cx = centre
    return radius <= cy < shape[0] - radius and radius <= cx < shape[1] - radius


def _blocked(masks: Iterable[np.ndarray], gap: int, shape: tuple[int, int]) -> np.ndarray:
    """Positions a new instance may not cover: the given instances grown by `gap` (Chebyshev)."""
    occupied = np.zeros(shape, dtype=bool)
    for mask in masks:
        occupied |= mask
    return ndimage.binary_dilation(occupied, np.ones((2 * gap + 1, 2 * gap + 1), dtype=bool))


def _valid_centres(blocked: np.ndarray, radius: int) -> np.ndarray:
    """(m, 2) centres whose disc stays inside the grid and off `blocked`."""
    free = ndimage.binary_erosion(~blocked, disc(radius), border_value=0)
    return np.argwhere(free)


def _partner(index: int, pairs: int) -> int | None:
    """The index of an instance's adjacent partner (pairs are instances 0-1, 2-3, ...), if any."""
    if index >= 2 * pairs:
        return None
    return index + 1 if index % 2 == 0 else index - 1


def _fits(
    spec: CaseSpec, centres: Sequence[tuple[int, int]], radii: np.ndarray, index: int, centre: tuple[int, int]
) -> bool:
    """Whether instance `index` may sit at `centre` next to the instances placed at `centres`."""
    shape = (spec.height, spec.width)
    radius = int(radii[index])
    if not _inside(shape, centre, radius):
        return False
    mask = _stamp(shape, centre, radius)
    partner = _partner(index, spec.adjacent_pairs)
    distant = [_stamp(shape, c, int(radii[j])) for j, c in enumerate(centres) if j not in (index, partner)]
    placed_partner = partner is not None and partner < len(centres)
    near = [_stamp(shape, centres[partner], int(radii[partner]))] if placed_partner else []
    return (
        not (_blocked(distant, spec.gap, shape) & mask).any() and not (_blocked(near, 1, shape) & mask).any()
    )


def _place(spec: CaseSpec, radii: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]] | None:
    """One try at placing every instance; None when one finds no room.

    The second of a pair goes one background token from the first, on a side drawn among those that
    keep the rules; every other instance goes to a centre drawn uniformly among the valid ones.
    """
    shape = (spec.height, spec.width)
    centres: list[tuple[int, int]] = []
    for index, radius in enumerate(radii):
        partner = _partner(index, spec.adjacent_pairs)
        if partner is not None and partner < index:
            step = int(radii[partner]) + int(radius) + 2
            cy, cx = centres[partner]
            sides = [(cy, cx + step), (cy, cx - step), (cy + step, cx), (cy - step, cx)]
            options = [c for c in sides if _fits(spec, centres, radii, index, c)]
        else:
            masks = [_stamp(shape, c, int(radii[j])) for j, c in enumerate(centres)]
            options = [
                tuple(int(v) for v in c) for c in _valid_centres(_blocked(masks, spec.gap, shape), radius)
            ]
        if not options:
            return None
        centres.append(options[rng.integers(len(options))])
    return centres


def _move(
    spec: CaseSpec, centres: list[tuple[int, int]], radii: np.ndarray, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """The next frame's centres: each instance in turn takes a random step when the rules allow it."""
    centres = list(centres)
    for index in range(len(radii)):
        dy, dx = (int(v) for v in rng.integers(-1, 2, size=2))
        moved = (centres[index][0] + dy, centres[index][1] + dx)
        if _fits(spec, centres, radii, index, moved):
            centres[index] = moved
    return centres


def _label_map(shape: tuple[int, int], centres: Sequence[tuple[int, int]], radii: np.ndarray) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    for label, (centre, radius) in enumerate(zip(centres, radii, strict=True), start=1):
        labels[_stamp(shape, centre, int(radius))] = label
    return labels


def _locality_kernel(height: int, width: int) -> np.ndarray:
    """(tpf, tpf) Gaussian of the grid distance between positions (row-major), as one Kronecker product."""
    gy, gx = (
        np.exp(-((np.arange(n)[:, None] - np.arange(n)[None, :]) ** 2) / (2 * LOCALITY_SIGMA**2))
        for n in (height, width)
    )
    return np.kron(gy, gx).astype(np.float32)


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(tpf, fields) smooth random appearance features, each standardised, scaled so <f, f> ~ 1."""
    fields = ndimage.gaussian_filter(
        rng.standard_normal((height, width, TEXTURE_FIELDS)), (TEXTURE_SIGMA, TEXTURE_SIGMA, 0)
    )
    fields = (fields - fields.mean(axis=(0, 1))) / fields.std(axis=(0, 1))
    return (fields.reshape(-1, TEXTURE_FIELDS) / np.sqrt(TEXTURE_FIELDS)).astype(np.float32)


def group_logits(labels: np.ndarray, own_mass: float) -> np.ndarray:
    """beta per label 0..n: the logit that gives a group of n_i tokens `own_mass` of a query's attention."""
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=int(flat.max()) + 1).astype(np.float64)
    rest = flat.size - sizes
    with np.errstate(divide="ignore"):
        beta = np.log(own_mass * rest / (np.maximum(sizes, 1) * (1 - own_mass)))
    return np.where(rest > 0, np.maximum(beta, 0.0), 0.0)


def self_attention_map(
    labels: np.ndarray,
    level: Difficulty,
    texture: np.ndarray,
    rng: np.random.Generator,
    locality: np.ndarray | None = None,
) -> np.ndarray:
    """One frame's (tpf, tpf) float32 map for instance labels (H, W) (module docstring, "Self-attention")."""
    flat = labels.ravel()
    beta = group_logits(labels, level.own_mass).astype(np.float32)
    logits = (flat[:, None] == flat[None, :]) * beta[flat][:, None]
    if level.locality:
        kernel = _locality_kernel(*labels.shape) if locality is None else locality
        logits += level.locality * kernel
    if level.texture:
        logits += level.texture * (texture @ texture.T)
    if level.noise:
        logits += level.noise * rng.standard_normal(logits.shape, dtype=np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def noun_attention_map(
    labels: np.ndarray,
    k: int,
    amplitudes: np.ndarray,
    style: str,
    level: Difficulty,
    rng: np.random.Generator,
) -> np.ndarray:
    """The noun's (H, W) float32 cross-attention map over its instances 1..k (module docstring)."""
    signal = np.full(labels.shape, level.noun_floor)
    for label in range(1, k + 1):
        blurred = ndimage.gaussian_filter((labels == label).astype(np.float64), NOUN_MAP_STYLES[style])
        signal += amplitudes[label - 1] * blurred / blurred.max()
    if level.noun_noise:
        signal *= np.exp(level.noun_noise * rng.standard_normal(labels.shape) - level.noun_noise**2 / 2)
    return (NOUN_SCALE * signal).astype(np.float32)


def generate_case(spec: CaseSpec) -> PlantedCase:
    """The scene, its self-attention maps and its noun maps, all from `spec.seed` (module docstring)."""
    rng = np.random.default_rng(spec.seed)
    shape = (spec.height, spec.width)
    count = spec.k + spec.others
    level = DIFFICULTIES[spec.difficulty]
    for _ in range(PLACEMENT_TRIES):
        radii = rng.integers(spec.radius[0], spec.radius[1] + 1, size=count)
        placed = _place(spec, radii, rng)
        if placed is not None:
            break
    else:
        raise ValueError(
            f"Could not place {count} instances of radius {spec.radius} with gap {spec.gap} on a "
            f"{spec.grid} grid in {PLACEMENT_TRIES} tries; use fewer or smaller instances or a larger grid."
        )
    centres = [placed]
    for _ in range(1, spec.frames):
        centres.append(_move(spec, centres[-1], radii, rng))
    instances = np.stack([_label_map(shape, frame, radii) for frame in centres])
    texture = _texture(*shape, rng)
    amplitudes = rng.uniform(*AMPLITUDE, size=spec.k)
    locality = _locality_kernel(*shape) if level.locality else None
    self_maps = np.stack([self_attention_map(labels, level, texture, rng, locality) for labels in instances])
    noun_maps = np.stack(
        [noun_attention_map(labels, spec.k, amplitudes, spec.noun_map, level, rng) for labels in instances]
    )
    return PlantedCase(
        spec,
        radii,
        np.array(centres, dtype=np.int64).reshape(spec.frames, count, 2),
        instances,
        self_maps,
        noun_maps,
    )


def own_instance_mass(case: PlantedCase) -> float:
    """Mean attention an instance query puts on its own instance: how sharp the head is, as measured."""
    masses = []
    for labels, self_map in zip(case.instances, case.self_maps, strict=True):
        flat = labels.ravel()
        for label in range(1, int(flat.max()) + 1):
            rows = np.flatnonzero(flat == label)
            masses.append(self_map[np.ix_(rows, rows)].sum(axis=1).mean())
    return float(np.mean(masses)) if masses else float("nan")


# --- scoring ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FrameMatch:
    """One frame's score: the count against the target, and instances matched at IoU >= threshold."""

    target: int
    count: int
    matched: int
    ious: np.ndarray  # IoU of each matched pair (>= threshold), in truth order

    @property
    def exact(self) -> bool:
        """The right count with every instance matched."""
        return self.count == self.target and self.matched == self.target


def iou_matrix(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU (truth instance, predicted instance) of two (H, W) label maps, and the labels of each side.

    Labels > 0 are instances; 0 and negative labels (e.g. `correct`'s removed -1) are background.
    """
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape or truth.ndim != 2:
        raise ValueError(
            f"Expected two (H, W) label maps of one shape, got {truth.shape} and {predicted.shape}."
        )
    truth_ids = np.unique(truth[truth > 0])
    predicted_ids = np.unique(predicted[predicted > 0])
    # Index 0 is the background of each side, 1.. the instances in increasing label order.
    t = np.where(truth > 0, np.searchsorted(truth_ids, truth) + 1, 0).ravel()
    p = np.where(predicted > 0, np.searchsorted(predicted_ids, predicted) + 1, 0).ravel()
    columns = len(predicted_ids) + 1
    joint = np.bincount(t * columns + p, minlength=(len(truth_ids) + 1) * columns).reshape(-1, columns)
    intersection = joint[1:, 1:].astype(np.float64)
    union = joint[1:].sum(axis=1)[:, None] + joint[:, 1:].sum(axis=0)[None, :] - intersection
    return intersection / np.maximum(union, 1), truth_ids, predicted_ids


def match_frame(truth: np.ndarray, predicted: np.ndarray, threshold: float = IOU_THRESHOLD) -> FrameMatch:
    """Count and one-to-one matches (Hungarian assignment maximising IoU, pairs >= `threshold`)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"IoU threshold must lie in (0, 1], got {threshold}.")
    iou, truth_ids, predicted_ids = iou_matrix(truth, predicted)
    rows, columns = linear_sum_assignment(iou, maximize=True)
    kept = iou[rows, columns] >= threshold
    return FrameMatch(len(truth_ids), len(predicted_ids), int(kept.sum()), iou[rows, columns][kept])


# --- extractions -----------------------------------------------------------------------------------

# An extraction reads a case's self-attention and noun maps and returns (frames, H, W) labels, > 0 for
# the noun's instances. It may not look at the case's instances (only `truth_extraction` does).
Extraction = Callable[[PlantedCase], np.ndarray]


def truth_extraction(case: PlantedCase) -> np.ndarray:
    """The ideal extraction: the truth itself (a check that the scoring gives 1.0)."""
    return case.truth


def layout_extraction(options: LayoutOptions, estimator: str = "converged") -> Extraction:
    """The method's own layout under `options`: the capture's reduction of each frame's self-attention
    map (`reduce_self_attention` with the capture's default settings but the components the extraction
    reads and `estimator`, float32) and `build_layout`."""
    capture = SelfAttentionCapture(
        layers=(0,), components=options.components, scores=False, estimator=estimator
    )

    def extract(case: PlantedCase) -> np.ndarray:
        height, width = case.spec.height, case.spec.width
        maps = torch.from_numpy(case.self_maps)[None]  # (head, frame, tpf, tpf)
        components = reduce_self_attention(maps, height, width, capture)["components"][0]
        components = components.reshape(case.spec.frames, height * width, -1).numpy()
        return build_layout(components, {"noun": case.noun_maps}, height, width, options)["noun"]

    return extract


def release_extraction(case: PlantedCase) -> np.ndarray:
    """The release's layout step written from METHOD.md's formulas with scikit-learn's own functions
    (randomized_svd of the float32 column-centred map, estimate_bandwidth, MeanShift, DBSCAN) and
    nothing of this project's: the reference `official` must reproduce. Slow (scikit-learn's MeanShift)."""
    height, width = case.spec.height, case.spec.width
    rows, cols = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    coordinates = 0.5 * np.stack([rows.ravel(), cols.ravel()], axis=1)
    labels = np.zeros(case.truth.shape, dtype=np.int32)
    for frame, (attention, noun_map) in enumerate(zip(case.self_maps, case.noun_maps, strict=True)):
        attention = attention.astype(np.float32)
        left, singular, _ = randomized_svd(attention - attention.mean(axis=0), 3, random_state=0)
        components = left * singular
        low, spread = components.min(axis=0), np.ptp(components, axis=0)
        varying = spread > 1e-8
        components[:, varying] = (components[:, varying] - low[varying]) / spread[varying]
        features = np.concatenate([components, coordinates], axis=1)
        bandwidth = estimate_bandwidth(
            features, quantile=0.2, n_samples=min(1000, len(features)), random_state=0
        )
        clusters = (
            MeanShift(bandwidth=bandwidth if bandwidth > 0 else 0.5, bin_seeding=True).fit(features).labels_
        )
        focused = np.argwhere(noun_map >= 0.05 * noun_map.max())
        focus = np.zeros((height, width), dtype=bool)
        kept = focused[DBSCAN(eps=3, min_samples=5).fit_predict(focused) >= 0]
        focus[kept[:, 0], kept[:, 1]] = True
        clusters = clusters.reshape(height, width)
        count = 0
        for cluster in np.unique(clusters):
            region = clusters == cluster
            if (region & focus).sum() / region.sum() >= 0.2:
                count += 1
                labels[frame][region] = count
    return labels


EXTRACTIONS: dict[str, Extraction] = {
    "release": release_extraction,
    "official": layout_extraction(preset("official").layout, estimator=preset("official").estimator),
    # The capture keeps 12 components instead of 3: one direction per object, k <= 8 plus others.
    "segments": layout_extraction(LayoutOptions(extraction="segments")),
    "truth": truth_extraction,
}


# --- the suite -------------------------------------------------------------------------------------

MAX_RADIUS = 8
FILL = 0.6  # the suite keeps n (2 r_max + 1 + gap)^2 <= FILL x grid area
OTHERS = 2  # other nouns' instances in the "others" scenario
NOUN_MAP_CYCLE = tuple(product(SCENARIOS, NOUN_MAP_STYLES))


def suite_geometry(height: int, width: int, instances: int) -> tuple[tuple[int, int], int] | None:
    """The radius range and gap the suite uses for `instances` objects on a grid; None if none fits.

    The range is (max(1, hi - 4), hi) with hi = min(H, W) // 6 clamped to 1..8 (objects scale with the
    frame), then hi is lowered (not below the low end) and, failing that, the gap from 2 to 1, until
    instances x (2 hi + 1 + gap)^2 <= 0.6 x H x W, so random placement finds room.
    """
    high = min(max(min(height, width) // 6, 1), MAX_RADIUS)
    low = max(1, high - 4)
    for gap in (2, 1):
        for top in range(high, low - 1, -1):
            if instances * (2 * top + 1 + gap) ** 2 <= FILL * height * width:
                return (low, top), gap
    if instances * 16 <= FILL * height * width:  # radius 1, gap 1
        return (1, 1), 1
    return None


def _case_seed(seed: int, height: int, width: int, k: int, level: int, index: int) -> int:
    """A case's own seed, from its place in the suite only (not from which other cells are run)."""
    return int(np.random.SeedSequence([seed, height, width, k, level, index]).generate_state(1)[0])


def benchmark_suite(
    grids: Sequence[tuple[int, int]],
    ks: Sequence[int],
    difficulties: Sequence[str],
    cases_per_cell: int,
    seed: int = 0,
) -> tuple[list[CaseSpec], list[str]]:
    """Seeded cases for every (grid, k, difficulty) cell, and a note for every cell left out.

    Case i of a cell takes the scenario and noun map style `NOUN_MAP_CYCLE[(i + k + level) % 8]`
    (level = the difficulty's index), so every combination appears equally often over the cells:
    `separate` (gap 2 where it fits), `adjacent` (k // 2 pairs of the noun's instances one token
    apart), `others` (2 other nouns' objects, or 1 where 2 do not fit), `motion` (3 frames). Radii and
    gaps follow `suite_geometry` for the case's total number of instances. A cell whose instances fit
    no geometry is left out and named in the notes.
    """
    if cases_per_cell < 1:
        raise ValueError(f"cases_per_cell must be >= 1, got {cases_per_cell}")
    unknown = [name for name in difficulties if name not in DIFFICULTIES]
    if unknown:
        raise ValueError(f"unknown difficulty {unknown}; choose from {list(DIFFICULTIES)}")
    specs, notes = [], []
    for (height, width), k in product(grids, ks):
        if suite_geometry(height, width, k) is None:
            notes.append(f"{height}x{width} k={k}: {k} instances do not fit the grid; cells left out")
            continue
        for name, index in product(difficulties, range(cases_per_cell)):
            level = list(DIFFICULTIES).index(name)
            scenario, style = NOUN_MAP_CYCLE[(index + k + level) % len(NOUN_MAP_CYCLE)]
            others = 0
            if scenario == "others":
                others = next((n for n in (OTHERS, 1) if suite_geometry(height, width, k + n)), 0)
                scenario = scenario if others else "separate"
            (radius, gap) = suite_geometry(height, width, k + others)
            specs.append(
                CaseSpec(
                    height,
                    width,
                    k,
                    radius=radius,
                    others=others,
                    adjacent_pairs=k // 2 if scenario == "adjacent" else 0,
                    gap=gap,
                    difficulty=name,
                    noun_map=style,
                    frames=MOTION_FRAMES if scenario == "motion" else 1,
                    seed=_case_seed(seed, height, width, k, level, index),
                    scenario=scenario,
                )
            )
    return specs, notes


# --- running and aggregating -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Example:
    """What the examples figure needs of one case: truth, noun map, each extraction's labels and the
    score of its first frame (extractions that failed on the case are absent)."""

    spec: CaseSpec
    truth: np.ndarray
    noun_maps: np.ndarray
    predicted: dict[str, np.ndarray]
    matches: dict[str, FrameMatch]


@dataclass(frozen=True, eq=False)
class BenchmarkRun:
    """Per-frame rows (one per extraction, case and frame), seconds spent per extraction, examples."""

    rows: pd.DataFrame
    seconds: dict[str, float]
    examples: list[Example] = field(default_factory=list)


def case_rows(case: PlantedCase, labels: np.ndarray, extraction: str, index: int) -> list[dict[str, Any]]:
    """One row per frame: the case's description and `match_frame`'s score of `labels`."""
    spec = case.spec
    if labels.shape != case.truth.shape:
        raise ValueError(f"Extraction {extraction!r} returned {labels.shape}; expected {case.truth.shape}.")
    rows = []
    for frame, (truth, predicted) in enumerate(zip(case.truth, labels, strict=True)):
        match = match_frame(truth, predicted)
        rows.append(
            {
                "extraction": extraction,
                "case": index,
                "grid": spec.grid,
                "k": spec.k,
                "difficulty": spec.difficulty,
                "scenario": spec.scenario,
                "noun_map": spec.noun_map,
                "others": spec.others,
                "radius_low": spec.radius[0],
                "radius_high": spec.radius[1],
                "seed": spec.seed,
                "frame": frame,
                "target": match.target,
                "count": match.count,
                "matched": match.matched,
                "exact": match.exact,
                "mean_iou": float(match.ious.mean()) if len(match.ious) else float("nan"),
                "error": "",
            }
        )
    return rows


def run_benchmark(
    specs: Sequence[CaseSpec],
    extractions: Mapping[str, Extraction],
    keep: Iterable[int] = (),
    progress: Callable[[Iterable[Any]], Iterable[Any]] = iter,
) -> BenchmarkRun:
    """Generate every case once, run every extraction on it, score it.

    An extraction that raises on a case gets rows with count -1 and the error's message (a wrong answer,
    not a crash of the whole run). Rows of the later extractions say whether their frame's labels are
    those of the first extraction (`same_as_first`), e.g. `official` against the literal `release`.
    `keep` names case indices whose maps and labels go to `examples`; `progress` wraps the loop over
    cases (e.g. tqdm).
    """
    if not extractions:
        raise ValueError("No extraction to run.")
    keep = set(keep)
    rows: list[dict[str, Any]] = []
    seconds = dict.fromkeys(extractions, 0.0)
    first = next(iter(extractions))
    examples = []
    for index, spec in enumerate(progress(specs)):
        case = generate_case(spec)
        predicted = {}
        for name, extraction in extractions.items():
            start = perf_counter()
            try:
                labels = np.asarray(extraction(case))
            except (ValueError, RuntimeError) as error:  # torch's LinAlgError is a RuntimeError
                seconds[name] += perf_counter() - start
                failed = case_rows(case, np.zeros_like(case.truth), name, index)
                for row in failed:
                    row.update(count=-1, matched=0, exact=False, error=f"{type(error).__name__}: {error}")
                rows.extend(failed)
                continue
            seconds[name] += perf_counter() - start
            scored = case_rows(case, labels, name, index)
            if first in predicted and predicted[first].shape == labels.shape:
                for row, ours, theirs in zip(scored, labels, predicted[first], strict=True):
                    row["same_as_first"] = bool(np.array_equal(ours, theirs))
            rows.extend(scored)
            predicted[name] = labels
        if index in keep:
            matches = {name: match_frame(case.truth[0], labels[0]) for name, labels in predicted.items()}
            examples.append(Example(spec, case.truth, case.noun_maps, predicted, matches))
    return BenchmarkRun(pd.DataFrame(rows), seconds, examples)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (scipy's `binomtest(...).proportion_ci`)."""
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def accuracy_table(
    rows: pd.DataFrame, by: str | Sequence[str] | None = None, confidence: float = 0.95
) -> pd.DataFrame:
    """Per extraction (and `by` group): cases, exact and right-count rates with Wilson intervals.

    A case is exact (right count) when every one of its frames is; `mean_abs_error` is the mean over
    cases of the mean over frames of |count - target| (a failed extraction, count -1, counts as wrong
    but is left out of the error). Columns: extraction, the `by` columns, cases, exact, exact_low,
    exact_high, count_right, count_low, count_high, mean_abs_error, errors.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    names = [] if by is None else [by] if isinstance(by, str) else list(by)
    missing = [name for name in ["extraction", "case", *names] if name not in rows.columns]
    if missing:
        raise ValueError(f"cannot group by {missing}: not columns of the rows ({list(rows.columns)})")
    table = rows.assign(
        right=rows["count"] == rows["target"],
        abs_error=(rows["count"] - rows["target"]).abs().where(rows["count"] >= 0),
        failed=rows["error"].fillna("").astype(str) != "",  # read back from CSV, no error is NaN
    )
    cases = table.groupby(["extraction", "case", *names], sort=True).agg(
        exact=("exact", "all"),
        right=("right", "all"),
        abs_error=("abs_error", "mean"),
        failed=("failed", "any"),
    )
    out = []
    for key, group in cases.groupby(["extraction", *names], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        n = len(group)
        exact, right = int(group["exact"].sum()), int(group["right"].sum())
        out.append(
            dict(zip(["extraction", *names], key, strict=True))
            | {"cases": n, "exact": exact / n}
            | dict(zip(("exact_low", "exact_high"), wilson_interval(exact, n, confidence), strict=True))
            | {"count_right": right / n}
            | dict(zip(("count_low", "count_high"), wilson_interval(right, n, confidence), strict=True))
            | {"mean_abs_error": float(group["abs_error"].mean()), "errors": int(group["failed"].sum())}
        )
    return pd.DataFrame(out)
