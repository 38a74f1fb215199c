"""Count correction: remove or add instances in each frame's layout until it holds the target count.

METHOD.md, "Phase 2", step 7, as the release does it, per noun and per frame:

    too many  relabel the smallest instance (fewest positions, ties to the lower label) -1; repeat
    too few   add an instance labelled 100, 101, ...: the bounding-box crop of the smallest instance
              present at that moment (an earlier addition included), or a disc of radius 5 when there
              is none, placed at the candidate centre of lowest cost
                  C = C_o + 1.0 C_c + 8.0 C_t
              C_o  template positions on an instance (label > 0; removed -1 counts as free)
              C_c  squared distance to the centroid of the positions with label > 0
              C_t  squared distance to the centre of the previous frame's addition of the same index
                   (0 when the previous frame made no such addition)

Frames are corrected independently except for C_t, which links each frame to the one before. Every
change is recorded as an `Edit`. May import numpy and `numina.method.layout` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from numina.method.layout import ADDED_BASE, BACKGROUND, MAX_DETECTED, REMOVED, Layout

Weights = tuple[float, float, float]
Centre = tuple[float, float]
DEFAULT_WEIGHTS: Weights = (1.0, 1.0, 8.0)


@dataclass(frozen=True)
class Edit:
    """One change to a layout. `source` is the template's label or 'disc' (additions), None (removals).

    `centre` is where an addition's template was centred; `cost` its placement cost, None when no
    candidate fitted and the grid centre was used.
    """

    frame: int
    noun: str
    kind: Literal["remove", "add"]
    label: int
    source: int | str | None = None
    centre: tuple[int, int] | None = None
    cost: float | None = None


@dataclass(frozen=True)
class CostGrid:
    """Placement cost of every candidate centre: cost[i, j] for (rows[i], cols[j]), inf if it does not fit."""

    rows: np.ndarray
    cols: np.ndarray
    cost: np.ndarray

    def best(self) -> tuple[tuple[int, int], float] | None:
        """The first lowest finite cost in row-major order (the release's `<` scan) and that cost; None
        when no candidate fits."""
        if not np.isfinite(self.cost).any():
            return None
        i, j = np.unravel_index(np.argmin(self.cost), self.cost.shape)
        return (int(self.rows[i]), int(self.cols[j])), float(self.cost[i, j])


def smallest_instance(labels: np.ndarray) -> int | None:
    """Label of the instance (label > 0) with the fewest positions, ties to the lower label; None if none."""
    ids, sizes = np.unique(labels[labels > BACKGROUND], return_counts=True)
    return int(ids[np.argmin(sizes)]) if ids.size else None


def remove_smallest(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """A copy of the frame's labels (H, W) with its smallest instance relabelled -1, and that label."""
    label = smallest_instance(labels)
    if label is None:
        raise ValueError("The frame has no instance to remove.")
    labels = labels.copy()
    labels[labels == label] = REMOVED
    return labels, label


def disc(radius: int) -> np.ndarray:
    """The (2r+1) x (2r+1) bool disc of positions with dy^2 + dx^2 <= r^2 (81 positions at r = 5)."""
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def template_of(labels: np.ndarray, disc_radius: int = 5) -> tuple[np.ndarray, int | str]:
    """The shape to add: the smallest instance's mask cropped to its bounding box, else a disc."""
    label = smallest_instance(labels)
    if label is None:
        return disc(disc_radius), "disc"
    rows, cols = np.nonzero(labels == label)
    crop = labels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return crop == label, label


def centroid(labels: np.ndarray) -> Centre:
    """Mean (y, x) of the positions with label > 0; with none, (H / 2, W / 2) as in the release."""
    rows, cols = np.nonzero(labels > BACKGROUND)
    if rows.size == 0:
        return labels.shape[0] / 2, labels.shape[1] / 2
    return float(rows.mean()), float(cols.mean())


def placement_costs(
    labels: np.ndarray,
    template: np.ndarray,
    previous: Centre | None = None,
    weights: Weights = DEFAULT_WEIGHTS,
    stride: int = 2,
) -> CostGrid:
    """Cost of centring `template` (th, tw) at each candidate of the frame (H, W).

    Candidates: rows range(th//2, H - th//2 + 1, stride), columns likewise with tw; the template's
    top-left is (cy - th//2, cx - tw//2). For odd sizes the last candidate overhangs by one: inf.
    `previous` is the centre of the previous frame's addition of the same index, if any.
    """
    height, width = labels.shape
    th, tw = template.shape
    rows = np.arange(th // 2, height - th // 2 + 1, stride)
    cols = np.arange(tw // 2, width - tw // 2 + 1, stride)
    top, left = rows - th // 2, cols - tw // 2
    fits = (top[:, None] + th <= height) & (left[None, :] + tw <= width)
    occupied = (labels > BACKGROUND).astype(np.int64)
    overlap = np.zeros(fits.shape)
    if th <= height and tw <= width:
        windows = sliding_window_view(occupied, (th, tw))  # windows[y0, x0] = occupied[y0:y0+th, x0:x0+tw]
        per_corner = np.tensordot(windows, template.astype(np.int64), axes=([2, 3], [0, 1]))
        overlap[fits] = per_corner[np.ix_(np.minimum(top, height - th), np.minimum(left, width - tw))][fits]
    cy, cx = centroid(labels)
    spread = (rows[:, None] - cy) ** 2 + (cols[None, :] - cx) ** 2
    drift = np.zeros(fits.shape)
    if previous is not None:
        drift = (rows[:, None] - previous[0]) ** 2 + (cols[None, :] - previous[1]) ** 2
    cost = weights[0] * overlap + weights[1] * spread + weights[2] * drift
    return CostGrid(rows, cols, np.where(fits, cost, np.inf))


def place_template(
    labels: np.ndarray,
    template: np.ndarray,
    label: int,
    previous: Centre | None = None,
    weights: Weights = DEFAULT_WEIGHTS,
    stride: int = 2,
) -> tuple[np.ndarray, tuple[int, int], float | None]:
    """A copy of the frame with `template` written as `label` at the cheapest centre; centre; cost.

    The template's positions overwrite whatever they land on (instances, removed positions), as in the
    release. When no candidate fits (a template larger than the grid: only the disc on grids under
    2r+1), the centre is (H//2, W//2) and the part outside the grid is dropped; the release would index
    outside the grid there.
    """
    best = placement_costs(labels, template, previous, weights, stride).best()
    centre, cost = best if best is not None else ((labels.shape[0] // 2, labels.shape[1] // 2), None)
    rows, cols = np.nonzero(template)
    rows, cols = rows + centre[0] - template.shape[0] // 2, cols + centre[1] - template.shape[1] // 2
    inside = (rows >= 0) & (rows < labels.shape[0]) & (cols >= 0) & (cols < labels.shape[1])
    labels = labels.copy()
    labels[rows[inside], cols[inside]] = label
    return labels, centre, cost


def correct_frame(
    labels: np.ndarray,
    target: int,
    previous_added: Sequence[Centre] = (),
    weights: Weights = DEFAULT_WEIGHTS,
    stride: int = 2,
    disc_radius: int = 5,
    frame: int = 0,
    noun: str = "",
) -> tuple[np.ndarray, list[Centre], list[Edit]]:
    """One frame's labels (H, W) corrected to `target` instances; the added centres, in order; the edits.

    `previous_added` holds the centres of the previous frame's additions: the i-th addition here is
    pulled towards the i-th there. New labels start at 100 (above any addition already present).
    """
    labels = np.asarray(labels)
    edits: list[Edit] = []
    count = np.unique(labels[labels > BACKGROUND]).size
    for _ in range(count - target):
        labels, removed = remove_smallest(labels)
        edits.append(Edit(frame, noun, "remove", removed))
    added: list[Centre] = []
    next_label = max(ADDED_BASE, int(labels.max()) + 1)
    for index in range(target - count):
        template, source = template_of(labels, disc_radius)
        previous = previous_added[index] if index < len(previous_added) else None
        labels, centre, cost = place_template(labels, template, next_label, previous, weights, stride)
        edits.append(Edit(frame, noun, "add", next_label, source, centre, cost))
        added.append((float(centre[0]), float(centre[1])))
        next_label += 1
    return labels, added, edits


def check_correction(
    targets: Mapping[str, int], nouns: Sequence[str] | None = None, stride: int = 2, disc_radius: int = 5
) -> None:
    """What a correction can do, checked before it starts (and by the command line before any model
    work): whole targets from 0 to MAX_DETECTED (the layout numbers detected instances 1..99), for
    nouns the layout has (`nouns`, when known), a stride >= 1 and a disc radius >= 0."""
    if stride < 1 or disc_radius < 0:
        raise ValueError(f"Need stride >= 1 and disc_radius >= 0, got {stride} and {disc_radius}.")
    for noun, target in targets.items():
        if nouns is not None and noun not in nouns:
            raise ValueError(f"Target noun {noun!r} has no layout; the layout has nouns {list(nouns)}.")
        if int(target) != target or not 0 <= target <= MAX_DETECTED:
            raise ValueError(
                f"Target count of {noun!r} must be a whole number from 0 to {MAX_DETECTED}, got {target!r}."
            )


def correct_layout(
    layout: Layout,
    targets: Mapping[str, int],
    weights: Weights = DEFAULT_WEIGHTS,
    stride: int = 2,
    disc_radius: int = 5,
) -> tuple[Layout, list[Edit]]:
    """The layout with every targeted noun's count corrected in every frame, and what was changed.

    Each noun is corrected on its own label map; nouns without a target are kept as they are. Frames
    run in order because C_t looks at the previous frame's additions (only the one frame before).
    """
    check_correction(targets, layout.nouns, stride, disc_radius)
    labels = layout.to_dict()
    edits: list[Edit] = []
    for noun, target in targets.items():
        previous: list[Centre] = []
        for frame in range(labels[noun].shape[0]):
            corrected, previous, done = correct_frame(
                labels[noun][frame], int(target), previous, weights, stride, disc_radius, frame, noun
            )
            labels[noun][frame] = corrected
            edits.extend(done)
    return Layout(labels), edits
